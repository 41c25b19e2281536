"""
Keys the configuration names rather than holds: the audit trail's HMAC key
and the OAuth store's sealing key are each given by exactly one of
L{KEY_SOURCES}, read here when the config loads.

A key never appears in a message, a log line or a repr: errors name where
it came from, never what it is.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

__all__ = ["KEY_SOURCES", "MIN_KEY_BYTES", "load_key", "read_key"]

#: What a key source is called in the config, and what it holds.
KEY_SOURCES = ("keyFile", "keyEnv", "keyCredential")
#: The shortest key accepted unless the caller asks for more.
MIN_KEY_BYTES = 16
_MAX_KEY_FILE_BYTES = 1 << 16


def read_key(source: str, value: str, environ: Mapping[str, str], min_bytes: int = MIN_KEY_BYTES) -> bytes:
    """
    Read the key named by one of L{KEY_SOURCES}: C{keyFile} (a file's
    contents), C{keyEnv} (an environment variable's value), C{keyCredential}
    (a systemd credential: the file of that name in C{$CREDENTIALS_DIRECTORY}).
    Surrounding whitespace (a trailing newline) is not part of the key.

    @param min_bytes: the shortest key accepted.
    @raise ValueError: the key cannot be read or is too short; the message
        says why and never holds the key.
    """
    if source == "keyEnv":
        if value not in environ:
            raise ValueError(f"the environment variable {value} is not set")
        key = environ[value].strip().encode("utf-8", "surrogateescape")
    else:
        path = value
        if source == "keyCredential":
            directory = environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise ValueError(
                    "$CREDENTIALS_DIRECTORY is not set (systemd sets it for a unit with "
                    f"LoadCredential={value}:PATH or SetCredentialEncrypted=)"
                )
            if "/" in value or value in (".", ".."):
                raise ValueError(f"expected a credential name, not a path: {value!r}")
            path = os.path.join(directory, value)
        try:
            with open(path, "rb") as f:
                key = f.read(_MAX_KEY_FILE_BYTES).strip()
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if len(key) < min_bytes:
        raise ValueError(
            f"the key is {len(key)} byte(s); it needs at least {min_bytes} "
            "(make one with: head -c 32 /dev/urandom | base64)"
        )
    return key


def load_key(
    config_section: Mapping[str, Any] | object,
    where: str,
    *,
    environ: Mapping[str, str] | None = None,
    min_bytes: int = MIN_KEY_BYTES,
) -> bytes:
    """
    Read the key of a config section that gives exactly one of
    L{KEY_SOURCES}, as a mapping's keys or as attributes (an attrs model
    whose absent sources are C{None}).

    @param where: the section's key path (C{oauth.store}), named in errors.
    @param environ: the environment to read (default: C{os.environ}).
    @param min_bytes: the shortest key accepted.
    @raise ValueError: no source, more than one, or one that cannot be
        read; the message names C{where} and the source, never the key.
    """
    if isinstance(config_section, Mapping):
        given = {source: config_section.get(source) for source in KEY_SOURCES}
    else:
        given = {source: getattr(config_section, source, None) for source in KEY_SOURCES}
    named = [(source, value) for source, value in given.items() if value is not None]
    if not named:
        raise ValueError(f"{where} needs a key ({', '.join(KEY_SOURCES[:-1])} or {KEY_SOURCES[-1]})")
    if len(named) > 1:
        raise ValueError(f"{where}: only one of {', '.join(KEY_SOURCES)} may be given")
    source, value = named[0]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.{source}: expected a non-empty string")
    try:
        return read_key(source, value, os.environ if environ is None else environ, min_bytes)
    except ValueError as e:
        raise ValueError(f"{where}.{source}: {e}") from None
