"""
How the merged catalog names a backend's tool or prompt for clients:
C{<prefix><tool>}, where the prefix is the backend's C{prefix} setting or,
by default, C{<backend><separator>}; valid for the spec and for Claude
(C{^[A-Za-z0-9_-]{1,64}$}), stable and unique when cut to length.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 64
_INVALID = re.compile(r"[^A-Za-z0-9_-]")


def name_prefix(backend: str, prefix: str | None, separator: str) -> str:
    """
    What comes before a tool's own name in the names clients see: the
    backend's configured C{prefix} (which may be empty), or
    C{<backend><separator>} when none is configured.
    """
    return f"{backend}{separator}" if prefix is None else prefix


def prefixed_name(prefix: str, tool: str) -> str:
    """
    The name a client sees for C{tool} under C{prefix}.

    Characters outside C{[A-Za-z0-9_-]} become C{_}; a name longer than 64
    characters is cut to 55 and given C{_} and 8 hex digits of the SHA-256
    of the full, unmodified name, so that it stays unique and stable.
    """
    full = f"{prefix}{tool}"
    name = _INVALID.sub("_", full)
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(full.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}_{digest}"
    return name


def exposed_name(backend: str, tool: str, separator: str) -> str:
    """The name a client sees for C{tool} of C{backend} under the default
    prefix, C{<backend><separator>} (see L{prefixed_name})."""
    return prefixed_name(name_prefix(backend, None, separator), tool)


def untruncated_name(backend: str, tool: str, separator: str) -> str:
    """The exposed name under the default prefix before the 64-character limit cuts it."""
    return _INVALID.sub("_", f"{backend}{separator}{tool}")


__all__ = ["MAX_NAME", "exposed_name", "name_prefix", "prefixed_name", "untruncated_name"]
