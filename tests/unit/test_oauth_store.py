"""
Tests for L{twisted_mcp.backends.oauth.store}: the records and their JSON,
L{MemoryStore} (compare-and-set, take, leases on the clock) and the sealing
facades L{TokenStore}, L{ClientStore} and L{PendingStore}.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.sealing import KeyRing
from twisted_mcp.backends.oauth.store import (
    ClientRecord,
    ClientStore,
    Conflict,
    MemoryStore,
    PendingStore,
    TokenRecord,
    TokenStore,
    Unreadable,
)

KEY = b"k" * 32
ALICE = ("jwt:alice", "https://as.example", "https://mcp.example/mcp")
BOB = ("jwt:bob", "https://as.example", "https://mcp.example/mcp")
ACCESS = "at-SECRET-0123456789"
REFRESH = "rt-SECRET-9876543210"


def token(**changes: Any) -> TokenRecord:
    record = TokenRecord(
        access_token=ACCESS,
        expires_at=1700003600.0,
        refresh_token=REFRESH,
        scope=("read", "write"),
        granted_at=1700000000.0,
        client_id="client-1",
        backend="github",
    )
    return attrs.evolve(record, **changes)


def client(**changes: Any) -> ClientRecord:
    record = ClientRecord(
        client_id="client-1",
        client_secret="cs-SECRET-555",
        auth_method="client_secret_basic",
        registered_at=1700000000.0,
        kind="dcr",
        redirect_uris=("http://127.0.0.1/callback",),
    )
    return attrs.evolve(record, **changes)


class _Results(SynchronousTestCase):
    def result(self, d: Deferred[Any]) -> Any:
        return self.successResultOf(d)


class RecordTests(SynchronousTestCase):
    def test_tokenRoundTrip(self) -> None:
        """A token record survives to_json/from_json, defaults and all; the JSON is format version 1."""
        record = token(refreshed_at=1700001000.0, rotation=2, last_error="invalid_grant")
        self.assertEqual(TokenRecord.from_json(record.to_json()), record)
        self.assertEqual(json.loads(record.to_json())["v"], 1)
        bare = token(refresh_token=None, expires_at=None)
        self.assertEqual(TokenRecord.from_json(bare.to_json()), bare)

    def test_clientRoundTrip(self) -> None:
        """A client record survives to_json/from_json."""
        self.assertEqual(ClientRecord.from_json(client().to_json()), client())
        public = client(client_secret=None, auth_method="none", kind="cimd", redirect_uris=())
        self.assertEqual(ClientRecord.from_json(public.to_json()), public)

    def test_reprsHideSecrets(self) -> None:
        """Neither repr shows a token or a client secret."""
        text = repr(token()) + repr(client())
        for secret in (ACCESS, REFRESH, "cs-SECRET-555"):
            self.assertNotIn(secret, text)
        self.assertIn("client-1", text)

    def test_badJsonRefused(self) -> None:
        """from_json raises ValueError for what is not a version 1 record, never quoting a value."""
        good = json.loads(token().to_json())
        for bad in [
            b"nope",
            b"[]",
            json.dumps(dict(good, v=2)).encode(),
            json.dumps(dict(good, access_token=5)).encode(),
            json.dumps(dict(good, expires_at="soon")).encode(),
            json.dumps(dict(good, granted_at=True)).encode(),
            json.dumps(dict(good, scope="read")).encode(),
            json.dumps(dict(good, rotation=1.5)).encode(),
            json.dumps(dict(good, refresh_token=["x"])).encode(),
        ]:
            with self.assertRaises(ValueError, msg=bad) as caught:
                TokenRecord.from_json(bad)
            self.assertNotIn(ACCESS, str(caught.exception))
        with self.assertRaises(ValueError):
            ClientRecord.from_json(json.dumps(dict(json.loads(client().to_json()), client_id=None)).encode())


class MemoryStoreTests(_Results):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(self.clock)

    def test_compareAndSet(self) -> None:
        """put(expect=None) creates; a second put(expect=None) conflicts; a
        stale version conflicts; the current version wins and bumps it."""
        self.assertEqual(self.result(self.store.put("token", ALICE, b"one", None)), 1)
        self.failureResultOf(self.store.put("token", ALICE, b"two", None), Conflict)
        self.assertEqual(self.result(self.store.put("token", ALICE, b"two", 1)), 2)
        self.failureResultOf(self.store.put("token", ALICE, b"three", 1), Conflict)
        self.failureResultOf(self.store.put("token", BOB, b"x", 3), Conflict)
        self.assertEqual(self.result(self.store.get("token", ALICE)), (b"two", 2))
        self.assertIsNone(self.result(self.store.get("token", BOB)))

    def test_versionsNeverRepeat(self) -> None:
        """After a delete, a new record gets a later version: an old version cannot win a CAS."""
        self.result(self.store.put("token", ALICE, b"one", None))
        self.assertTrue(self.result(self.store.delete("token", ALICE)))
        self.assertFalse(self.result(self.store.delete("token", ALICE)))
        self.assertEqual(self.result(self.store.put("token", ALICE, b"again", None)), 2)
        self.failureResultOf(self.store.put("token", ALICE, b"stale", 1), Conflict)

    def test_deleteWithExpect(self) -> None:
        """delete(expect=) removes only the version it names."""
        self.result(self.store.put("token", ALICE, b"one", None))
        self.failureResultOf(self.store.delete("token", ALICE, expect=7), Conflict)
        self.assertTrue(self.result(self.store.delete("token", ALICE, expect=1)))

    def test_kindsAreSeparate(self) -> None:
        """The same key under two kinds is two records."""
        self.result(self.store.put("token", ("a", "b", "c"), b"t", None))
        self.assertIsNone(self.result(self.store.get("client", ("a", "b", "c"))))

    def test_takeIsSingleUse(self) -> None:
        """take returns the record once, then None."""
        self.result(self.store.put("pending", ("state-1",), b"sealed", None))
        self.assertEqual(self.result(self.store.take("pending", ("state-1",))), b"sealed")
        self.assertIsNone(self.result(self.store.take("pending", ("state-1",))))
        self.assertIsNone(self.result(self.store.get("pending", ("state-1",))))

    def test_keys(self) -> None:
        """keys lists the records present of a kind, of one principal when asked."""
        for key in (ALICE, BOB, ("jwt:alice", "https://other.example", "https://x.example")):
            self.result(self.store.put("token", key, b"s", None))
        self.result(self.store.delete("token", BOB))
        self.result(self.store.put("client", ("https://as.example", "d"), b"s", None))
        self.assertEqual(
            self.result(self.store.keys("token")),
            sorted([ALICE, ("jwt:alice", "https://other.example", "https://x.example")]),
        )
        self.assertEqual(len(self.result(self.store.keys("token", "jwt:alice"))), 2)
        self.assertEqual(self.result(self.store.keys("token", "jwt:bob")), [])

    def test_leaseExclusiveUntilExpiry(self) -> None:
        """A lease keeps others out until it expires on the clock or is released; its holder may renew."""
        self.assertTrue(self.result(self.store.lease("token", ALICE, "replica-a", 30)))
        self.assertFalse(self.result(self.store.lease("token", ALICE, "replica-b", 30)))
        self.assertTrue(self.result(self.store.lease("token", BOB, "replica-b", 30)))
        self.clock.advance(29)
        self.assertFalse(self.result(self.store.lease("token", ALICE, "replica-b", 30)))
        self.assertTrue(self.result(self.store.lease("token", ALICE, "replica-a", 30)))
        self.clock.advance(30)
        self.assertTrue(self.result(self.store.lease("token", ALICE, "replica-b", 30)))
        self.result(self.store.release("token", ALICE, "replica-a"))  # not the holder: no effect
        self.assertFalse(self.result(self.store.lease("token", ALICE, "replica-a", 30)))
        self.result(self.store.release("token", ALICE, "replica-b"))
        self.assertTrue(self.result(self.store.lease("token", ALICE, "replica-a", 30)))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_watchNeverFires(self) -> None:
        """Nothing else changes a process's memory: watch callbacks are never called."""
        seen: list[Any] = []
        self.store.watch(lambda kind, key: seen.append((kind, key)))
        self.result(self.store.put("token", ALICE, b"s", None))
        self.result(self.store.delete("token", ALICE))
        self.assertEqual(seen, [])


class TokenStoreTests(_Results):
    def setUp(self) -> None:
        self.clock = Clock()
        self.records = MemoryStore(self.clock)
        self.tokens = TokenStore(self.records, KeyRing(KEY))

    def test_roundTripSealed(self) -> None:
        """A record put comes back with its version; the engine holds no token in clear."""
        version = self.result(self.tokens.put(ALICE, token(), None))
        self.assertEqual(self.result(self.tokens.get(ALICE)), (token(), version))
        sealed, _ = self.result(self.records.get("token", ALICE))
        for secret in (ACCESS, REFRESH):
            self.assertNotIn(secret.encode(), sealed)
        self.assertIsNone(self.result(self.tokens.get(BOB)))

    def test_compareAndSet(self) -> None:
        """put(expect=None) on an existing record and put with a stale version raise Conflict."""
        first = self.result(self.tokens.put(ALICE, token(), None))
        self.failureResultOf(self.tokens.put(ALICE, token(rotation=1), None), Conflict)
        second = self.result(self.tokens.put(ALICE, token(rotation=1), first))
        self.failureResultOf(self.tokens.put(ALICE, token(rotation=2), first), Conflict)
        self.assertEqual(self.result(self.tokens.get(ALICE)), (token(rotation=1), second))

    def test_deleteAndKeys(self) -> None:
        """keys lists a principal's keys; delete says whether there was a record."""
        self.result(self.tokens.put(ALICE, token(), None))
        self.result(self.tokens.put(BOB, token(), None))
        self.assertEqual(self.result(self.tokens.keys()), sorted([ALICE, BOB]))
        self.assertEqual(self.result(self.tokens.keys("jwt:bob")), [BOB])
        self.assertTrue(self.result(self.tokens.delete(BOB)))
        self.assertFalse(self.result(self.tokens.delete(BOB)))
        self.assertEqual(self.result(self.tokens.keys()), [ALICE])

    def test_movedRecordIsAbsentAndCounted(self) -> None:
        """Alice's sealed record copied into Bob's slot reads as absent for
        Bob, counts as tampered, is logged without secrets, and is dropped so
        Bob can authorize again."""
        self.result(self.tokens.put(ALICE, token(), None))
        sealed, _ = self.result(self.records.get("token", ALICE))
        self.result(self.records.put("token", BOB, sealed, None))
        with capturedLogs() as events:
            self.assertIsNone(self.result(self.tokens.get(BOB)))
        self.assertEqual(self.tokens.errors["tampered"], 1)
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn("failed authentication", text)
        self.assertNotIn("jwt:bob", text)
        self.assertNotIn(ACCESS, text)
        self.assertEqual(self.result(self.tokens.keys()), [ALICE])
        self.result(self.tokens.put(BOB, token(client_id="b"), None))
        self.assertEqual(self.result(self.tokens.get(BOB))[0].client_id, "b")

    def test_newerRecordKeptButReplaceable(self) -> None:
        """A record from a newer gateway (envelope v 2) reads as absent,
        counted as version, logged once; a new authorization overwrites it
        with put(expect=None)."""
        ring = KeyRing(KEY)
        newer = dict(json.loads(ring.seal("token", ALICE, token().to_json())), v=2)
        self.result(self.records.put("token", ALICE, json.dumps(newer).encode(), None))
        with capturedLogs() as events:
            self.assertIsNone(self.result(self.tokens.get(ALICE)))
            self.assertIsNone(self.result(self.tokens.get(ALICE)))
        self.assertEqual(self.tokens.errors["version"], 2)
        self.assertEqual(sum("newer twisted-mcp" in formatEvent(e) for e in events), 1)
        version = self.result(self.tokens.put(ALICE, token(), None))
        self.assertEqual(self.result(self.tokens.get(ALICE)), (token(), version))

    def test_unknownRecordFormat(self) -> None:
        """An envelope that opens but holds no version 1 record reads as absent, counted as version."""
        sealed = KeyRing(KEY).seal("token", ALICE, b'{"v": 9}')
        self.result(self.records.put("token", ALICE, sealed, None))
        self.assertIsNone(self.result(self.tokens.get(ALICE)))
        self.assertEqual(self.tokens.errors["version"], 1)

    def test_unreadableCounted(self) -> None:
        """An engine's Unreadable is counted by its kind and reads as absent."""

        class Broken(MemoryStore):
            def get(self, kind: Any, key: Any) -> Deferred[Any]:
                from twisted.internet.defer import fail

                return fail(Unreadable("permissions", "file is mode 0644"))

        tokens = TokenStore(Broken(self.clock), KeyRing(KEY))
        self.assertIsNone(self.result(tokens.get(ALICE)))
        self.assertEqual(tokens.errors, {"tampered": 0, "permissions": 1, "version": 0, "io": 0})

    def test_oldKeyReSealedOnWrite(self) -> None:
        """A record sealed under an old key opens; its next write uses the current key."""
        old = b"o" * 32
        self.result(TokenStore(self.records, KeyRing(old)).put(ALICE, token(), None))
        rotated = TokenStore(self.records, KeyRing(KEY, old=[old]))
        record, version = self.result(rotated.get(ALICE))
        self.result(rotated.put(ALICE, record, version))
        self.assertEqual(self.result(TokenStore(self.records, KeyRing(KEY)).get(ALICE))[0], token())


class ClientStoreTests(_Results):
    def test_roundTripAndKeys(self) -> None:
        """Client records seal, open, list by issuer; the secret is not stored in clear."""
        records = MemoryStore(Clock())
        clients = ClientStore(records, KeyRing(KEY))
        key = ("https://as.example", "d1g3st")
        version = self.result(clients.put(key, client(), None))
        self.assertEqual(self.result(clients.get(key)), (client(), version))
        self.assertEqual(self.result(clients.keys("https://as.example")), [key])
        self.assertNotIn(b"cs-SECRET-555", self.result(records.get("client", key))[0])
        self.failureResultOf(clients.put(key, client(), None), Conflict)

    def test_tokenEnvelopeIsNoClient(self) -> None:
        """A token envelope placed in the client slot of the same key does not open (kind in the AAD)."""
        records = MemoryStore(Clock())
        key = ("https://as.example", "d1g3st")
        records.put("client", key, KeyRing(KEY).seal("token", key, client().to_json()), None)
        clients = ClientStore(records, KeyRing(KEY))
        self.assertIsNone(self.result(clients.get(key)))
        self.assertEqual(clients.errors["tampered"], 1)


class PendingStoreTests(_Results):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1700000000)
        self.records = MemoryStore(self.clock)
        self.pending = PendingStore(self.records, KeyRing(KEY))

    def test_takeOnce(self) -> None:
        """A pending record is taken once; it is sealed in the engine."""
        data = {"verifier": "v-SECRET-abc", "principal": "local", "expires": self.clock.seconds() + 600}
        self.result(self.pending.put("state-1", data))
        self.assertNotIn(b"v-SECRET-abc", self.result(self.records.get("pending", ("state-1",)))[0])
        self.assertEqual(self.result(self.pending.take("state-1")), data)
        self.assertIsNone(self.result(self.pending.take("state-1")))
        self.assertIsNone(self.result(self.pending.take("never-put")))

    def test_expires(self) -> None:
        """After data["expires"] on the clock, take returns None."""
        self.result(self.pending.put("state-1", {"expires": self.clock.seconds() + 600}))
        self.result(self.pending.put("state-2", {"expires": self.clock.seconds() + 600}))
        self.clock.advance(599)
        self.assertIsNotNone(self.result(self.pending.take("state-1")))
        self.clock.advance(1)
        self.assertIsNone(self.result(self.pending.take("state-2")))

    def test_expiredDroppedOnLaterPut(self) -> None:
        """Abandoned flows do not pile up: a later put drops the expired ones."""
        self.result(self.pending.put("old", {"expires": self.clock.seconds() + 10}))
        self.clock.advance(11)
        self.result(self.pending.put("new", {"expires": self.clock.seconds() + 10}))
        self.assertEqual(self.result(self.records.keys("pending")), [("new",)])

    def test_stateTaken(self) -> None:
        """A second put under the same state is a Conflict."""
        self.result(self.pending.put("state-1", {}))
        self.failureResultOf(self.pending.put("state-1", {}), Conflict)

    def test_needsAClock(self) -> None:
        """Without a clock of its own or the engine's, PendingStore refuses to start."""

        class NoClock:
            pass

        with self.assertRaises(TypeError):
            PendingStore(NoClock(), KeyRing(KEY))  # type: ignore[arg-type]
        self.assertIsNotNone(PendingStore(NoClock(), KeyRing(KEY), clock=Clock()))  # type: ignore[arg-type]


def _result(d: Deferred[Any]) -> Any:
    got: list[Any] = []
    d.addBoth(got.append)
    assert got, "not fired"
    return got[0]


def test_nothing_is_kept_of_taken_or_forged_pending_states() -> None:
    """A pending record taken, or a state that names none (a forged callback), leaves no slot behind."""
    store = MemoryStore(Clock())
    store.put("pending", ("s1",), b"sealed", None)
    assert _result(store.take("pending", ("s1",))) == b"sealed"
    for i in range(100):
        assert _result(store.take("pending", (f"forged-{i}",))) is None
    assert store._slots == {}
