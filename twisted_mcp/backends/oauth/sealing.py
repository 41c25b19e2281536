"""
Records sealed at rest (C{docs/design/oauth.md} §6.4): AES-256-GCM under a
data key derived by HKDF-SHA256 from the configured key, with the record's
kind and key as associated data, so a record moved to another principal, or
a client record put in a token's place, does not open.

The envelope is one JSON object::

    {"v": 1, "kid": "<8 hex>", "k": [key...], "n": "<b64 nonce>", "c": "<b64 ciphertext>"}

C{kid} names the data key (the first 8 hex of its SHA-256), so a ring of the
current key and older ones opens records written before a rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from typing import Any, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: The envelope format this gateway writes and reads.
ENVELOPE_VERSION = 1
#: The shortest configured key accepted, in bytes.
MIN_KEY_BYTES = 32

_HKDF_INFO = b"twisted-mcp oauth store v1"
_AAD_PREFIX = b"tmcp-oauth/1\n"
_NONCE_BYTES = 12


class Tampered(Exception):
    """The envelope failed authentication: altered, moved to another key, or malformed."""


class UnknownKey(Exception):
    """The envelope was sealed under a key the ring does not hold."""


class UnknownVersion(Exception):
    """The envelope's C{v} is one this gateway does not know (a newer one wrote it)."""


def canonical_key(key: Sequence[str]) -> bytes:
    """
    The canonical JSON of a record key: a compact array of strings, ASCII
    only, so the same key always gives the same bytes (and file name).
    """
    return json.dumps(list(key), separators=(",", ":"), ensure_ascii=True).encode("ascii")


def key_digest(key: Sequence[str]) -> str:
    """The first 8 hex of the SHA-256 of C{key}'s canonical JSON: the only form of a key that is logged."""
    return hashlib.sha256(canonical_key(key)).hexdigest()[:8]


def associated_data(kind: str, key: Sequence[str]) -> bytes:
    """What binds a ciphertext to its slot: C{"tmcp-oauth/1\\n" + kind + "\\n" + canonical key}."""
    return _AAD_PREFIX + kind.encode("utf-8") + b"\n" + canonical_key(key)


def derive_data_key(configured: bytes) -> bytes:
    """
    HKDF-SHA256 of the configured key (no salt, info
    C{"twisted-mcp oauth store v1"}, 32 bytes): the configured secret itself
    never keys the cipher.

    @raise ValueError: C{configured} is shorter than L{MIN_KEY_BYTES}.
    """
    if len(configured) < MIN_KEY_BYTES:
        raise ValueError(f"the token store key has {len(configured)} bytes: it needs at least {MIN_KEY_BYTES}")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(configured)


def key_id(data_key: bytes) -> str:
    """The C{kid} of a data key: the first 8 hex of its SHA-256."""
    return hashlib.sha256(data_key).hexdigest()[:8]


def _b64decode(value: object) -> bytes:
    if not isinstance(value, str):
        raise Tampered("envelope field is not a string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise Tampered("envelope field is not base64") from None


class KeyRing:
    """
    The current key, which seals, and older ones, which only open.

    The ring's repr names key ids, never keys.
    """

    def __init__(self, current: bytes, old: Sequence[bytes] = ()) -> None:
        """
        @param current: the configured key new records are sealed with (at
            least L{MIN_KEY_BYTES} bytes).
        @param old: keys from before a rotation, still accepted for opening.
        @raise ValueError: a key is too short.
        """
        data_key = derive_data_key(current)
        self._current_id = key_id(data_key)
        self._ciphers: dict[str, AESGCM] = {self._current_id: AESGCM(data_key)}
        for configured in old:
            older = derive_data_key(configured)
            self._ciphers.setdefault(key_id(older), AESGCM(older))

    def __repr__(self) -> str:
        return f"<KeyRing current={self._current_id} keys={len(self._ciphers)}>"

    @property
    def current_id(self) -> str:
        """The C{kid} new envelopes carry."""
        return self._current_id

    def seal(self, kind: str, key: tuple[str, ...], plaintext: bytes) -> bytes:
        """The JSON envelope of C{plaintext}, sealed with the current key for slot (C{kind}, C{key})."""
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._ciphers[self._current_id].encrypt(nonce, plaintext, associated_data(kind, key))
        envelope = {
            "v": ENVELOPE_VERSION,
            "kid": self._current_id,
            "k": list(key),
            "n": base64.b64encode(nonce).decode("ascii"),
            "c": base64.b64encode(ciphertext).decode("ascii"),
        }
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    def open(self, kind: str, key: tuple[str, ...], sealed: bytes) -> tuple[bytes, bool]:
        """
        The plaintext of an envelope read from slot (C{kind}, C{key}), and
        whether it was sealed with an old key (to be re-sealed on its next write).

        @raise UnknownVersion: the envelope's C{v} is not 1.
        @raise UnknownKey: its C{kid} is not in the ring.
        @raise Tampered: it is malformed, names another key, or fails GCM
            authentication.
        """
        try:
            envelope: Any = json.loads(sealed)
        except (ValueError, RecursionError):
            raise Tampered("envelope is not JSON") from None
        if not isinstance(envelope, dict):
            raise Tampered("envelope is not a JSON object")
        version = envelope.get("v")
        if version != ENVELOPE_VERSION or isinstance(version, bool):
            if isinstance(version, int) and not isinstance(version, bool):
                raise UnknownVersion(f"envelope version {version} (this gateway reads {ENVELOPE_VERSION})")
            raise Tampered("envelope has no valid version")
        if envelope.get("k") != list(key):
            raise Tampered("envelope names another key")
        kid = envelope.get("kid")
        if not isinstance(kid, str):
            raise Tampered("envelope has no key id")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownKey(f"sealed under key id {kid[:16]!r}, not configured")
        nonce = _b64decode(envelope.get("n"))
        ciphertext = _b64decode(envelope.get("c"))
        if len(nonce) != _NONCE_BYTES:
            raise Tampered("envelope nonce has the wrong length")
        try:
            plaintext = cipher.decrypt(nonce, ciphertext, associated_data(kind, key))
        except InvalidTag:
            raise Tampered("envelope failed authentication") from None
        return plaintext, kid != self._current_id


__all__ = [
    "ENVELOPE_VERSION",
    "KeyRing",
    "MIN_KEY_BYTES",
    "Tampered",
    "UnknownKey",
    "UnknownVersion",
    "associated_data",
    "canonical_key",
    "derive_data_key",
    "key_digest",
    "key_id",
]
