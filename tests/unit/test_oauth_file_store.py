"""
Tests for L{twisted_mcp.backends.oauth.file_store}: sealed records on disk
in a private directory, across restarts; permissions; tampered and
malformed files set aside; atomic, serialised writes; the catalog.

Writes run at once through L{now}, or when released through L{Held}.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth import file_store
from twisted_mcp.backends.oauth.file_store import FileStore, record_name
from twisted_mcp.backends.oauth.sealing import KeyRing
from twisted_mcp.backends.oauth.store import ClientRecord, ClientStore, PendingStore, StoreUnusable, TokenRecord, TokenStore

KEY = b"k" * 32
ALICE = ("jwt:alice", "https://as.example", "https://mcp.example/mcp")
BOB = ("jwt:bob", "https://as.example", "https://mcp.example/mcp")
ACCESS = "at-SECRET-0123456789"
REFRESH = "rt-SECRET-9876543210"
CLIENT_SECRET = "cs-SECRET-555"


def now(job: Callable[[], None]) -> Deferred[None]:
    """A write runner that writes at once, in the calling thread."""
    job()
    return succeed(None)


class Held:
    """A write runner that holds each write until released, as a busy worker thread would."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], None], Deferred[None]]] = []

    def __call__(self, job: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.jobs.append((job, d))
        return d

    def release(self) -> None:
        job, d = self.jobs.pop(0)
        job()
        d.callback(None)


def token(**changes: Any) -> TokenRecord:
    record = TokenRecord(
        access_token=ACCESS,
        expires_at=1700003600.0,
        refresh_token=REFRESH,
        scope=("read",),
        granted_at=1700000000.0,
        client_id="client-1",
        backend="github",
    )
    return attrs.evolve(record, **changes)


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def all_bytes(root: str) -> bytes:
    found = b""
    for directory, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                found += f.read()
    return found


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1700000000)

    def open_store(self, write: Callable[[Callable[[], None]], Deferred[None]] = now) -> FileStore:
        store = FileStore(self.path, self.clock, write=write)
        store.check()
        return store

    def tokens(self, store: FileStore | None = None) -> TokenStore:
        return TokenStore(store or self.open_store(), KeyRing(KEY))

    def token_file(self, key: tuple[str, ...]) -> str:
        return os.path.join(self.path, "tokens", record_name(key))


class LayoutTests(_Base):
    def test_checkCreatesPrivateDirectories(self) -> None:
        """check() creates the store and its three subdirectories, each 0700."""
        self.open_store()
        for directory in ("", "tokens", "clients", "catalog"):
            self.assertEqual(mode(os.path.join(self.path, directory)), 0o700, directory)

    def test_fileNameAndFormat(self) -> None:
        """A token is written 0600 to tokens/<hex SHA-256 of the canonical key>.json
        as {version, record: envelope}; no user name appears in the file name."""
        self.successResultOf(self.tokens().put(ALICE, token(), None))
        canonical = json.dumps(list(ALICE), separators=(",", ":")).encode()
        path = os.path.join(self.path, "tokens", hashlib.sha256(canonical).hexdigest() + ".json")
        self.assertEqual(os.listdir(os.path.join(self.path, "tokens")), [os.path.basename(path)])
        self.assertEqual(mode(path), 0o600)
        with open(path, "rb") as f:
            content = json.load(f)
        self.assertEqual(content["version"], 1)
        self.assertEqual(content["record"]["k"], list(ALICE))
        self.assertEqual(sorted(content["record"]), ["c", "k", "kid", "n", "v"])

    def test_noSecretInClearOnDisk(self) -> None:
        """No token or client secret appears anywhere under the store's directory."""
        store = self.open_store()
        self.successResultOf(self.tokens(store).put(ALICE, token(), None))
        clients = ClientStore(store, KeyRing(KEY))
        record = ClientRecord("client-1", CLIENT_SECRET, "client_secret_basic", 1700000000.0, "dcr")
        self.successResultOf(clients.put(("https://as.example", "d"), record, None))
        written = all_bytes(self.path)
        self.assertTrue(written)
        for secret in (ACCESS, REFRESH, CLIENT_SECRET):
            self.assertNotIn(secret.encode(), written)

    def test_pendingStaysInMemory(self) -> None:
        """Pending records (they hold verifiers) are never written to disk."""
        store = self.open_store()
        pending = PendingStore(store, KeyRing(KEY))
        self.successResultOf(pending.put("state-1", {"verifier": "v-SECRET", "expires": self.clock.seconds() + 60}))
        self.assertEqual(all_bytes(self.path), b"")
        self.assertEqual(self.successResultOf(pending.take("state-1"))["verifier"], "v-SECRET")


class RestartTests(_Base):
    def test_roundTripAcrossRestart(self) -> None:
        """What one FileStore wrote, a second one on the same directory reads,
        with its version, lists, and can compare-and-set against."""
        first = self.tokens()
        version = self.successResultOf(first.put(ALICE, token(), None))
        version = self.successResultOf(first.put(ALICE, token(rotation=1), version))
        self.successResultOf(first.put(BOB, token(client_id="b"), None))

        second = self.tokens()
        self.assertEqual(self.successResultOf(second.keys()), sorted([ALICE, BOB]))
        self.assertEqual(self.successResultOf(second.keys("jwt:alice")), [ALICE])
        self.assertEqual(self.successResultOf(second.get(ALICE)), (token(rotation=1), version))
        self.assertEqual(self.successResultOf(second.put(ALICE, token(rotation=2), version)), version + 1)
        self.assertEqual(self.successResultOf(self.tokens().get(ALICE))[0].rotation, 2)

    def test_deleteRemovesTheFile(self) -> None:
        """A deleted record is gone after a restart."""
        first = self.tokens()
        self.successResultOf(first.put(ALICE, token(), None))
        self.assertTrue(self.successResultOf(first.delete(ALICE)))
        self.assertFalse(os.path.exists(self.token_file(ALICE)))
        self.assertIsNone(self.successResultOf(self.tokens().get(ALICE)))


class PermissionTests(_Base):
    def test_openDirectoryRefused(self) -> None:
        """A 0755 store directory makes check() raise StoreUnusable naming the mode, the uid and the chmod."""
        os.makedirs(self.path, mode=0o700)
        os.chmod(self.path, 0o755)
        with self.assertRaises(StoreUnusable) as caught:
            FileStore(self.path, self.clock, write=now).check()
        self.assertEqual(
            str(caught.exception),
            f"token store {self.path} is mode 0755: it must be 0700 and owned by uid {os.getuid()} (chmod 700 {self.path})",
        )

    def test_openSubdirectoryRefused(self) -> None:
        """A subdirectory open to the group is refused the same way."""
        self.open_store()
        tokens = os.path.join(self.path, "tokens")
        os.chmod(tokens, 0o750)
        with self.assertRaises(StoreUnusable) as caught:
            FileStore(self.path, self.clock, write=now).check()
        self.assertIn(f"{tokens} is mode 0750", str(caught.exception))
        self.assertIn(f"chmod 700 {tokens}", str(caught.exception))

    def test_otherOwnerRefused(self) -> None:
        """A directory owned by another uid is refused, with a chown in the fix."""
        self.open_store()
        store = FileStore(self.path, self.clock, write=now)
        store._uid = os.getuid() + 1
        with self.assertRaises(StoreUnusable) as caught:
            store.check()
        self.assertIn(f"owned by uid {os.getuid()}: it must be 0700 and owned by uid {os.getuid() + 1}", str(caught.exception))
        self.assertIn("chown", str(caught.exception))

    def test_looseFileIgnored(self) -> None:
        """A 0644 record file is ignored (absent, counted, logged by name);
        the principal's new record replaces it, 0600 again; others are read."""
        first = self.tokens()
        self.successResultOf(first.put(ALICE, token(), None))
        self.successResultOf(first.put(BOB, token(client_id="b"), None))
        os.chmod(self.token_file(ALICE), 0o644)

        second = self.tokens()
        with capturedLogs() as events:
            self.assertIsNone(self.successResultOf(second.get(ALICE)))
        self.assertEqual(second.errors["permissions"], 1)
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn(self.token_file(ALICE), text)
        self.assertIn("0644", text)
        self.assertNotIn(ACCESS, text)
        self.assertEqual(self.successResultOf(second.get(BOB))[0].client_id, "b")
        self.assertEqual(self.successResultOf(second.keys()), [BOB])

        self.successResultOf(second.put(ALICE, token(client_id="again"), None))
        self.assertEqual(mode(self.token_file(ALICE)), 0o600)
        self.assertEqual(self.successResultOf(self.tokens().get(ALICE))[0].client_id, "again")

    def test_otherOwnersFileIgnored(self) -> None:
        """A record file not owned by the gateway's uid is ignored."""
        self.successResultOf(self.tokens().put(ALICE, token(), None))
        store = self.open_store()
        store._uid = os.getuid() + 1
        tokens = self.tokens(store)
        self.assertIsNone(self.successResultOf(tokens.get(ALICE)))
        self.assertEqual(tokens.errors["permissions"], 1)


class TamperTests(_Base):
    def flip(self, key: tuple[str, ...]) -> None:
        path = self.token_file(key)
        with open(path, "rb") as f:
            content = json.load(f)
        c = content["record"]["c"]
        content["record"]["c"] = ("B" if c[5] == "A" else "A").join((c[:5], c[6:]))
        with open(path, "w") as f:
            json.dump(content, f)

    def test_tamperedFileSetAside(self) -> None:
        """A file whose ciphertext was altered reads as absent, is renamed
        <h>.json.bad-<time>, counted and logged without secrets; other
        records still read; the principal can store a new record."""
        first = self.tokens()
        self.successResultOf(first.put(ALICE, token(), None))
        self.successResultOf(first.put(BOB, token(client_id="b"), None))
        self.flip(ALICE)

        second = self.tokens()
        with capturedLogs() as events:
            self.assertIsNone(self.successResultOf(second.get(ALICE)))
        self.assertEqual(second.errors["tampered"], 1)
        name = record_name(ALICE)
        aside = os.path.join(self.path, "tokens", f"{name}.bad-1700000000")
        self.assertTrue(os.path.exists(aside))
        self.assertFalse(os.path.exists(self.token_file(ALICE)))
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn("failed authentication", text)
        self.assertIn(name[:8], text)
        self.assertNotIn(ACCESS, text)
        self.assertNotIn("jwt:alice", text)

        self.assertEqual(self.successResultOf(second.get(BOB))[0].client_id, "b")
        self.assertEqual(self.successResultOf(second.keys()), [BOB])
        self.successResultOf(second.put(ALICE, token(client_id="again"), None))
        self.assertEqual(self.successResultOf(self.tokens().get(ALICE))[0].client_id, "again")

    def test_secondSetAsideKeepsFirst(self) -> None:
        """Two records of one key set aside in the same second are both kept."""
        for _ in range(2):
            self.successResultOf(self.tokens().put(ALICE, token(), None))
            self.flip(ALICE)
            self.assertIsNone(self.successResultOf(self.tokens().get(ALICE)))
        name = record_name(ALICE)
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.path, "tokens"))), [f"{name}.bad-1700000000", f"{name}.bad-1700000000.1"]
        )

    def test_fileMovedToAnotherKey(self) -> None:
        """Alice's file copied over Bob's does not give Bob Alice's token."""
        store = self.tokens()
        self.successResultOf(store.put(ALICE, token(), None))
        self.successResultOf(store.put(BOB, token(client_id="b"), None))
        os.replace(self.token_file(ALICE), self.token_file(BOB))
        fresh = self.tokens()
        self.assertIsNone(self.successResultOf(fresh.get(BOB)))
        self.assertEqual(fresh.errors["tampered"], 1)

    def test_malformedFileSetAside(self) -> None:
        """A record file that is not the store's JSON is set aside and counted."""
        self.open_store()
        with open(os.open(self.token_file(ALICE), os.O_CREAT | os.O_WRONLY, 0o600), "w") as f:
            f.write("{not json")
        tokens = self.tokens()
        self.assertIsNone(self.successResultOf(tokens.get(ALICE)))
        self.assertEqual(tokens.errors["tampered"], 1)
        self.assertEqual(os.listdir(os.path.join(self.path, "tokens")), [record_name(ALICE) + ".bad-1700000000"])


class WriteTests(_Base):
    def test_crashBeforeRenameLeavesOldRecord(self) -> None:
        """A crash after the temporary file was written but before the
        rename: a restart reads the old record, and check() clears the leftover."""
        self.successResultOf(self.tokens().put(ALICE, token(), None))
        leftover = self.token_file(ALICE) + ".tmp-0123456789ab"
        with open(os.open(leftover, os.O_CREAT | os.O_WRONLY, 0o600), "w") as f:
            f.write('{"version": 2, "rec')
        tokens = self.tokens()
        self.assertEqual(self.successResultOf(tokens.get(ALICE))[0], token())
        self.assertEqual(self.successResultOf(tokens.keys()), [ALICE])
        self.assertFalse(os.path.exists(leftover))

    def test_failedRenameKeepsOldFile(self) -> None:
        """When the rename fails the put fails (counted as io), the old file
        is intact and the temporary file is removed."""
        self.successResultOf(self.tokens().put(ALICE, token(), None))
        tokens = self.tokens()
        version = self.successResultOf(tokens.get(ALICE))[1]

        def broken_rename(source: str, target: str) -> None:
            raise OSError(28, "No space left on device")

        self.patch(file_store.os, "rename", broken_rename)
        self.failureResultOf(tokens.put(ALICE, token(rotation=5), version), OSError)
        self.assertEqual(tokens.errors["io"], 1)
        self.assertEqual(os.listdir(os.path.join(self.path, "tokens")), [record_name(ALICE)])
        self.assertEqual(self.successResultOf(self.tokens().get(ALICE))[0].rotation, 0)

    def test_writesSerialisedMemoryAuthoritative(self) -> None:
        """While writes are in flight the in-memory record is what get
        returns; writes for a key run one at a time, in order."""
        held = Held()
        tokens = self.tokens(self.open_store(write=held))
        first = tokens.put(ALICE, token(rotation=1), None)
        second = tokens.put(ALICE, token(rotation=2), 1)
        self.assertEqual(self.successResultOf(tokens.get(ALICE)), (token(rotation=2), 2))
        self.assertEqual(len(held.jobs), 1)  # the second waits for the first
        self.assertNoResult(first)
        held.release()
        self.assertEqual(self.successResultOf(first), 1)
        self.assertNoResult(second)
        self.assertEqual(self.successResultOf(self.tokens().get(ALICE))[0].rotation, 1)
        held.release()
        self.assertEqual(self.successResultOf(second), 2)
        self.assertEqual(self.successResultOf(self.tokens().get(ALICE)), (token(rotation=2), 2))
        self.assertEqual(held.jobs, [])


class CatalogTests(_Base):
    def test_saveLoad(self) -> None:
        """A listing saved is loaded by the same store and after a restart, from catalog/<backend>.json in clear, 0600."""
        listing = {"tools": [{"name": "list_issues", "inputSchema": {"type": "object"}}]}
        store = self.open_store()
        self.assertIsNone(store.load_catalog("github"))
        store.save_catalog("github", listing)
        self.assertEqual(store.load_catalog("github"), listing)
        path = os.path.join(self.path, "catalog", "github.json")
        self.assertEqual(mode(path), 0o600)
        with open(path) as f:
            self.assertEqual(json.load(f), listing)
        self.assertEqual(self.open_store().load_catalog("github"), listing)

    def test_pathSeparatorsRefused(self) -> None:
        """A backend name that would leave the catalog directory is refused."""
        store = self.open_store()
        for name in ("../tokens/x", "a/b", "a\\b", "..", ".", ""):
            with self.assertRaises(ValueError, msg=name):
                store.save_catalog(name, {})
            with self.assertRaises(ValueError, msg=name):
                store.load_catalog(name)

    def test_badCatalogFileIgnored(self) -> None:
        """A catalog file that is not a JSON object reads as no catalog."""
        self.open_store()
        with open(os.open(os.path.join(self.path, "catalog", "github.json"), os.O_CREAT | os.O_WRONLY, 0o600), "w") as f:
            f.write("[1, 2]")
        with capturedLogs():
            self.assertIsNone(self.open_store().load_catalog("github"))
