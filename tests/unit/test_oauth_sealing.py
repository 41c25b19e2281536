"""
Tests for L{twisted_mcp.backends.oauth.sealing}: the AES-256-GCM envelope
of the OAuth store, bound to its record's kind and key, and the key ring.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.sealing import (
    KeyRing,
    Tampered,
    UnknownKey,
    UnknownVersion,
    associated_data,
    canonical_key,
    key_digest,
)

KEY = b"k" * 32
OLD_KEY = b"o" * 40
ALICE = ("jwt:alice", "https://as.example", "https://mcp.example/mcp")
BOB = ("jwt:bob", "https://as.example", "https://mcp.example/mcp")
SECRET = b'{"access_token":"at-0123456789abcdef"}'


def envelope(sealed: bytes) -> dict:
    return json.loads(sealed)


def reencode(value: dict) -> bytes:
    return json.dumps(value).encode()


class SealTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """What is sealed for a slot opens for that slot, with the current key."""
        ring = KeyRing(KEY)
        sealed = ring.seal("token", ALICE, SECRET)
        self.assertEqual(ring.open("token", ALICE, sealed), (SECRET, False))

    def test_envelopeFormat(self) -> None:
        """The envelope is {v, kid, k, n, c}: version 1, the key in clear, a
        96-bit nonce, no plaintext; kid is the first 8 hex of SHA-256 of the
        HKDF-derived data key, and the ciphertext opens with that key and the
        documented associated data."""
        sealed = KeyRing(KEY).seal("token", ALICE, SECRET)
        value = envelope(sealed)
        self.assertEqual(sorted(value), ["c", "k", "kid", "n", "v"])
        self.assertEqual(value["v"], 1)
        self.assertEqual(value["k"], list(ALICE))
        data_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"twisted-mcp oauth store v1").derive(KEY)
        self.assertEqual(value["kid"], hashlib.sha256(data_key).hexdigest()[:8])
        nonce = base64.b64decode(value["n"])
        self.assertEqual(len(nonce), 12)
        aad = b"tmcp-oauth/1\ntoken\n" + json.dumps(list(ALICE), separators=(",", ":")).encode()
        self.assertEqual(associated_data("token", ALICE), aad)
        self.assertEqual(AESGCM(data_key).decrypt(nonce, base64.b64decode(value["c"]), aad), SECRET)
        self.assertNotIn(b"at-0123456789abcdef", sealed)

    def test_freshNonceEachTime(self) -> None:
        """Two seals of the same plaintext differ (a random nonce per write)."""
        ring = KeyRing(KEY)
        self.assertNotEqual(envelope(ring.seal("token", ALICE, SECRET))["n"], envelope(ring.seal("token", ALICE, SECRET))["n"])

    def test_flipAnyByte(self) -> None:
        """Flipping any bit of the nonce or of the ciphertext (tag included) makes the envelope fail: Tampered."""
        ring = KeyRing(KEY)
        value = envelope(ring.seal("token", ALICE, SECRET))
        for field in ("n", "c"):
            raw = base64.b64decode(value[field])
            for index in range(len(raw)):
                flipped = bytearray(raw)
                flipped[index] ^= 0x01
                altered = dict(value, **{field: base64.b64encode(bytes(flipped)).decode()})
                with self.assertRaises(Tampered, msg=f"{field}[{index}]"):
                    ring.open("token", ALICE, reencode(altered))

    def test_movedToAnotherPrincipal(self) -> None:
        """Alice's envelope put in Bob's slot does not open, whether its k
        still names Alice or was edited to name Bob."""
        ring = KeyRing(KEY)
        sealed = ring.seal("token", ALICE, SECRET)
        with self.assertRaises(Tampered):
            ring.open("token", BOB, sealed)
        edited = dict(envelope(sealed), k=list(BOB))
        with self.assertRaises(Tampered):
            ring.open("token", BOB, reencode(edited))

    def test_kindSwap(self) -> None:
        """A client record's envelope does not open as a token record of the same key."""
        ring = KeyRing(KEY)
        key = ("https://as.example", "abcd1234")
        sealed = ring.seal("client", key, SECRET)
        with self.assertRaises(Tampered):
            ring.open("token", key, sealed)
        self.assertEqual(ring.open("client", key, sealed)[0], SECRET)

    def test_unknownKid(self) -> None:
        """An envelope sealed under a key the ring lacks: UnknownKey."""
        sealed = KeyRing(b"x" * 32).seal("token", ALICE, SECRET)
        with self.assertRaises(UnknownKey):
            KeyRing(KEY).open("token", ALICE, sealed)

    def test_unknownVersion(self) -> None:
        """v = 2 is a newer gateway's envelope: UnknownVersion, not Tampered."""
        ring = KeyRing(KEY)
        newer = dict(envelope(ring.seal("token", ALICE, SECRET)), v=2)
        with self.assertRaises(UnknownVersion):
            ring.open("token", ALICE, reencode(newer))

    def test_malformedEnvelopes(self) -> None:
        """Whatever is not an envelope is Tampered: not JSON, not an object, no v, bad base64, a short nonce."""
        ring = KeyRing(KEY)
        good = envelope(ring.seal("token", ALICE, SECRET))
        for bad in [
            b"not json",
            b"[]",
            reencode({k: v for k, v in good.items() if k != "v"}),
            reencode(dict(good, v=True)),
            reencode(dict(good, n="!!!")),
            reencode(dict(good, c=5)),
            reencode(dict(good, n=base64.b64encode(b"short").decode())),
            reencode(dict(good, kid=None)),
        ]:
            with self.assertRaises(Tampered, msg=bad):
                ring.open("token", ALICE, bad)


class KeyRingTests(SynchronousTestCase):
    def test_oldKeyOpensAndSaysSo(self) -> None:
        """After a rotation the old key, kept in the ring, opens what it
        sealed and reports it; new seals use the current key."""
        before = KeyRing(OLD_KEY).seal("token", ALICE, SECRET)
        ring = KeyRing(KEY, old=[OLD_KEY])
        self.assertEqual(ring.open("token", ALICE, before), (SECRET, True))
        after = ring.seal("token", ALICE, SECRET)
        self.assertEqual(ring.open("token", ALICE, after), (SECRET, False))
        self.assertEqual(envelope(after)["kid"], ring.current_id)
        self.assertNotEqual(envelope(before)["kid"], ring.current_id)

    def test_shortKeysRefused(self) -> None:
        """A key under 32 bytes, current or old, is refused; the message gives its length, not its bytes."""
        with self.assertRaises(ValueError) as caught:
            KeyRing(b"short-secret-key")
        self.assertIn("16 bytes", str(caught.exception))
        self.assertNotIn("short-secret-key", str(caught.exception))
        with self.assertRaises(ValueError):
            KeyRing(KEY, old=[b"y" * 31])

    def test_reprHidesKeys(self) -> None:
        """The ring's repr names key ids only."""
        text = repr(KeyRing(KEY, old=[OLD_KEY]))
        self.assertNotIn("kkkk", text)
        self.assertNotIn("oooo", text)
        self.assertIn("keys=2", text)

    def test_errorsHoldNoSecret(self) -> None:
        """Exceptions from open never quote the plaintext or the ciphertext."""
        ring = KeyRing(KEY)
        sealed = ring.seal("token", ALICE, SECRET)
        for attempt in (lambda: ring.open("token", BOB, sealed), lambda: KeyRing(b"z" * 32).open("token", ALICE, sealed)):
            try:
                attempt()
            except Exception as e:
                self.assertNotIn("at-0123", str(e))
                self.assertNotIn(envelope(sealed)["c"][:16], str(e))
            else:
                self.fail("opened")


class KeyTextTests(SynchronousTestCase):
    def test_canonicalKey(self) -> None:
        """The canonical key is compact ASCII JSON; its digest is the first 8 hex of its SHA-256."""
        key = ("jwt:zoë", "https://as.example")
        self.assertEqual(canonical_key(key), b'["jwt:zo\\u00eb","https://as.example"]')
        self.assertEqual(key_digest(key), hashlib.sha256(canonical_key(key)).hexdigest()[:8])
