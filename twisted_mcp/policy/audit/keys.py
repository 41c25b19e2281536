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
from typing import Any

from twisted_mcp.config.keys import KEY_SOURCES, MIN_KEY_BYTES
from twisted_mcp.config.keys import read_key as load_key

KEYED = "hmac-sha256:"
UNKEYED = "sha256:"
CHECKPOINT_VERSION = 1
_CHECKPOINT_CONTEXT = b"twisted-mcp audit checkpoint\n"  # a checkpoint's MAC is never a record's

# The key sources are read in the config layer (the OAuth store uses them
# too); C{load_key(source, value, environ)} stays this module's name for
# L{twisted_mcp.config.keys.read_key}.
__all__ = [
    "CHECKPOINT_VERSION",
    "KEYED",
    "KEY_SOURCES",
    "MIN_KEY_BYTES",
    "UNKEYED",
    "chain_digest",
    "load_key",
    "make_checkpoint",
    "read_checkpoint",
]


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
