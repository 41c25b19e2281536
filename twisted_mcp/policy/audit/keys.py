"""
The audit trail's key: a keyed hash chain, and signed checkpoints of its head.

With a key, each record's digest is C{"hmac-sha256:"} and the HMAC-SHA256,
under the key, of the record's canonical JSON (which holds the digest of the
record before it).  Whoever can write the trail but does not hold the key
cannot rewrite, insert or delete a record without C{verify} noticing: they
cannot compute the digests that would have to change.  What the chain alone
cannot show is a tail cut off, or a trail emptied: a checkpoint does.  It
names the head (the last record's seq and digest) and is signed with the
same key; exported somewhere the gateway's host cannot write, it proves that
the trail once reached that record, which C{verify --checkpoint} checks.

What it does not prove: anyone holding the key can rewrite everything and
sign new checkpoints, and records written after the last exported
checkpoint can still be cut.  Trails written before a key was configured
(C{"sha256:"} digests, a plain hash chain) stay verifiable, with or
without a key.

The key never appears in a message, a log line or a repr: errors name
where it came from, never what it is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any, Mapping

KEYED = "hmac-sha256:"
UNKEYED = "sha256:"
MIN_KEY_BYTES = 16
#: What a key source is called in the config, and what it holds.
KEY_SOURCES = ("keyFile", "keyEnv", "keyCredential")
CHECKPOINT_VERSION = 1
_CHECKPOINT_CONTEXT = b"twisted-mcp audit checkpoint\n"  # a checkpoint's MAC is never a record's


def load_key(source: str, value: str, environ: Mapping[str, str]) -> bytes:
    """
    Read the key named by one of L{KEY_SOURCES}: C{keyFile} (a file's
    contents), C{keyEnv} (an environment variable's value), C{keyCredential}
    (a systemd credential: the file of that name in C{$CREDENTIALS_DIRECTORY}).
    Surrounding whitespace (a trailing newline) is not part of the key.

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
                key = f.read(1 << 16).strip()
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"the key is {len(key)} byte(s); it needs at least {MIN_KEY_BYTES} "
            "(make one with: head -c 32 /dev/urandom | base64)"
        )
    return key


def chain_digest(body: bytes, key: bytes | None) -> str:
    """The digest a record with this canonical JSON carries."""
    if key is None:
        return UNKEYED + hashlib.sha256(body).hexdigest()
    return KEYED + hmac.new(key, body, hashlib.sha256).hexdigest()


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _checkpoint_mac(fields: dict[str, Any], key: bytes) -> str:
    return KEYED + hmac.new(key, _CHECKPOINT_CONTEXT + _canonical(fields), hashlib.sha256).hexdigest()


def make_checkpoint(seq: int, digest: str, trail: str, now: float, key: bytes) -> dict[str, Any]:
    """A signed checkpoint of the head of a trail (C{seq}, C{digest})."""
    fields = {"version": CHECKPOINT_VERSION, "trail": trail, "seq": seq, "digest": digest, "time": now}
    return {**fields, "mac": _checkpoint_mac(fields, key)}


def read_checkpoint(data: bytes, key: bytes) -> tuple[int, str]:
    """
    The (seq, digest) a checkpoint vouches for, once its signature checks.

    @raise ValueError: not a checkpoint, or its signature does not match
        (forged, altered, or signed with another key).
    """
    try:
        checkpoint = json.loads(data)
    except (ValueError, RecursionError):
        raise ValueError("not a checkpoint (not JSON)") from None
    if (
        not isinstance(checkpoint, dict)
        or checkpoint.get("version") != CHECKPOINT_VERSION
        or type(checkpoint.get("seq")) is not int
        or not isinstance(checkpoint.get("digest"), str)
        or not isinstance(checkpoint.get("mac"), str)
    ):
        raise ValueError(f"not a checkpoint of version {CHECKPOINT_VERSION} (expected version, seq, digest, mac)")
    fields = {k: v for k, v in checkpoint.items() if k != "mac"}
    if not hmac.compare_digest(_checkpoint_mac(fields, key), checkpoint["mac"]):
        raise ValueError("its signature does not match (it was altered, or signed with another key)")
    return checkpoint["seq"], checkpoint["digest"]
