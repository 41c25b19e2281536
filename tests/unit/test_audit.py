"""
Tests for L{twisted_mcp.policy.audit}: the C{audit:} config section,
redaction, argument digests, the hash chain in the file and SQLite sinks,
C{verify}, failures of the sink (C{/dev/full}) and recovery, and the
promise that recording never blocks the reactor.

Writes run through L{SynchronousThreads} (at once, or when pumped) and
time through L{Clock}; one test uses the real worker thread.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import queue
import sqlite3
import threading
from typing import Any, Callable

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.mcp import errors
from twisted_mcp.policy import audit
from twisted_mcp.policy.audit import (
    REDACTED,
    AuditConfig,
    AuditLog,
    SynchronousThreads,
    VerifyResult,
    digest_arguments,
    parse_audit,
    redact,
    verify,
)
from twisted_mcp.policy.audit import keys as audit_keys
from twisted_mcp.policy.audit import records as audit_records


def fields(n: int, **extra: Any) -> dict[str, Any]:
    """What the pipeline passes to record() for one call."""
    record: dict[str, Any] = {
        "id": f"req-{n}",
        "time": 1700000000.0 + n,
        "principal": "alice",
        "roles": ["dev"],
        "session": "stdio-1",
        "method": "tools/call",
        "tool": "github__list_issues",
        "backend": "github",
        "decision": "allow",
        "reason": None,
        "outcome": "ok",
        "error_code": None,
        "latency_ms": 12.5,
        "result_bytes": 420,
        "arguments_digest": digest_arguments({"n": n}),
    }
    record.update(extra)
    return record


def read_lines(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]



@pytest.fixture(autouse=True)
def _write_at_once(monkeypatch):
    """These tests drive writes one record at a time; batching is tested on its own."""
    monkeypatch.setattr(AuditLog, "BATCH_DELAY", 0)


class ParseTests(SynchronousTestCase):
    def parse(self, data: Any, base_dir: str | None = "/etc/gw") -> tuple[AuditConfig | None, list[str]]:
        problems: list[str] = []
        return parse_audit(data, "audit", base_dir, problems), problems

    def assertProblem(self, problems: list[str], path: str, *words: str) -> None:
        for p in problems:
            if p.startswith(path + ": ") and all(w in p for w in words):
                return
        self.fail(f"no problem about {path!r} mentioning {words!r} in {problems!r}")

    def test_defaults(self) -> None:
        config, problems = self.parse({})
        self.assertEqual(problems, [])
        self.assertEqual(
            config,
            AuditConfig(sink="file", path="/etc/gw/twisted-mcp-audit.jsonl", recordArguments=False, onFailure="refuse", maxQueue=10000),
        )

    def test_everything(self) -> None:
        config, problems = self.parse(
            {"sink": "sqlite", "path": "audit/trail.db", "table": "Audit_2", "recordArguments": True, "onFailure": "allow", "maxQueue": 50}
        )
        self.assertEqual(problems, [])
        self.assertEqual(config, AuditConfig("sqlite", "/etc/gw/audit/trail.db", None, "Audit_2", True, "allow", 50))

    def test_spillFile(self) -> None:
        """Beside the trail's file; beside the config file for PostgreSQL; or where spillFile says."""
        for data, expected in (
            ({}, "/etc/gw/twisted-mcp-audit.jsonl.spill.jsonl"),
            ({"sink": "sqlite"}, "/etc/gw/twisted-mcp-audit.sqlite.spill.jsonl"),
            ({"sink": "postgres", "dsn": "postgresql://db/audit"}, "/etc/gw/twisted-mcp-audit.spill.jsonl"),
            ({"sink": "postgres", "dsn": "postgresql://db/audit", "spillFile": "spill/a.jsonl"}, "/etc/gw/spill/a.jsonl"),
            ({"spillFile": "/var/lib/gw/spill.jsonl"}, "/var/lib/gw/spill.jsonl"),
        ):
            config, problems = self.parse(data)
            self.assertEqual(problems, [])
            assert config is not None
            self.assertEqual(config.spill_path(), expected, data)
        _, problems = self.parse({"sink": "none", "spillFile": "x"})
        self.assertProblem(problems, "audit.spillFile", 'not used with sink "none"')
        _, problems = self.parse({"spillFile": 3})
        self.assertProblem(problems, "audit.spillFile")

    def test_sqliteDefaultPath(self) -> None:
        config, _ = self.parse({"sink": "sqlite"})
        assert config is not None
        self.assertEqual(config.path, "/etc/gw/twisted-mcp-audit.sqlite")

    def test_postgres(self) -> None:
        config, problems = self.parse({"sink": "postgres", "dsn": "postgresql://audit:s3cret@db/audit"})
        self.assertEqual(problems, [])
        assert config is not None
        self.assertEqual((config.sink, config.path, config.table), ("postgres", None, "twisted_mcp_audit"))
        self.assertNotIn("s3cret", repr(config))
        self.assertNotIn("s3cret", config.describe())

    def test_problemsWithKeyPaths(self) -> None:
        config, problems = self.parse(
            {"sink": "mysql", "onFailure": "ignore", "maxQueue": 0, "recordArguments": "yes", "colour": 1, "table": "x;drop"}
        )
        self.assertIsNone(config)
        self.assertProblem(problems, "audit.sink", "expected one of", '"file"', '"postgres"', '"mysql"')
        self.assertProblem(problems, "audit.onFailure", '"refuse"', '"allow"', '"ignore"')
        self.assertProblem(problems, "audit.maxQueue", "from 1 to")
        self.assertProblem(problems, "audit.recordArguments", "true or false")
        self.assertProblem(problems, "audit.colour", "unknown key", "recordArguments")
        self.assertProblem(problems, "audit.table", "table name")

    def test_sinkSpecificKeys(self) -> None:
        _, problems = self.parse({"sink": "file", "dsn": "host=x", "table": "t"})
        self.assertProblem(problems, "audit.dsn", 'only used with sink "postgres"')
        self.assertProblem(problems, "audit.table", 'only used with sink "sqlite" or "postgres"')
        _, problems = self.parse({"sink": "postgres", "path": "x.jsonl"})
        self.assertProblem(problems, "audit.path", 'only used with sink "file" or "sqlite"')
        self.assertProblem(problems, "audit.dsn", "missing")
        _, problems = self.parse({"sink": "postgres", "dsn": "not a dsn"})
        self.assertProblem(problems, "audit.dsn", "not a valid PostgreSQL connection string")
        _, problems = self.parse({"sink": "sqlite", "table": "t" * 49})
        self.assertProblem(problems, "audit.table", "at most 48")
        _, problems = self.parse({"sink": "sqlite", "table": "audit\n"})
        self.assertProblem(problems, "audit.table", "table name")

    def test_notAMapping(self) -> None:
        config, problems = self.parse(["file"])
        self.assertIsNone(config)
        self.assertProblem(problems, "audit", "expected a mapping")

    def test_modelValidates(self) -> None:
        """Built in code rather than parsed, the model still refuses a table name that is not an identifier."""
        for bad in ({"table": 'x"; DROP TABLE users; --'}, {"sink": "mysql"}, {"onFailure": "ignore"}, {"maxQueue": 0}):
            self.assertRaises(ValueError, AuditConfig, **bad)

    def test_othersProblemsKept(self) -> None:
        problems = ["gateway.x: earlier"]
        config = parse_audit({"sink": "none"}, "audit", None, problems)
        self.assertEqual(problems, ["gateway.x: earlier"])
        self.assertEqual(config, AuditConfig(sink="none"))


class RedactTests(SynchronousTestCase):
    def test_nestedCaseInsensitiveLists(self) -> None:
        arguments = {
            "query": "open issues",
            "Authorization": "Bearer abc",
            "headers": {"X-Api-Key": "k1", "Accept": "json", "COOKIE": {"a": 1}},
            "accounts": [{"user": "bob", "Password": "pw"}, {"user": "eve", "refresh_token": ["t"]}],
            "sessionId": 7,
            "apikey": "k2",
            "db": {"private_key": "---", "passwd": "x", "client_secret": "y", "credentials": "z", "api_key": "w"},
            "tuple": ("a", {"token": "t"}),
        }
        self.assertEqual(
            redact(arguments),
            {
                "query": "open issues",
                "Authorization": REDACTED,
                "headers": {"X-Api-Key": REDACTED, "Accept": "json", "COOKIE": REDACTED},
                "accounts": [{"user": "bob", "Password": REDACTED}, {"user": "eve", "refresh_token": REDACTED}],
                "sessionId": REDACTED,
                "apikey": REDACTED,
                "db": {k: REDACTED for k in ("private_key", "passwd", "client_secret", "credentials", "api_key")},
                "tuple": ["a", {"token": REDACTED}],
            },
        )

    def test_deepCopy(self) -> None:
        arguments = {"a": {"b": [1, {"c": 2}]}, "token": "t"}
        copy = redact(arguments)
        copy["a"]["b"][1]["c"] = 3
        self.assertEqual(arguments, {"a": {"b": [1, {"c": 2}]}, "token": "t"})

    def test_scalarsAndDeepNesting(self) -> None:
        self.assertEqual(redact("token"), "token")
        self.assertIsNone(redact(None))
        deep: Any = {"password": "x"}
        for _ in range(5000):
            deep = {"next": [deep]}
        out = redact(deep)
        for _ in range(5000):
            out = out["next"][0]
        self.assertEqual(out, {"password": REDACTED})


class DigestTests(SynchronousTestCase):
    def test_canonical(self) -> None:
        expected = "sha256:" + hashlib.sha256('{"a":"é","b":[1,2.5,null,true]}'.encode("utf-8")).hexdigest()
        self.assertEqual(digest_arguments({"b": [1, 2.5, None, True], "a": "é"}), expected)

    def test_keyOrder(self) -> None:
        one = {"z": {"y": 1, "x": [{"b": 1, "a": 2}]}, "a": "q"}
        two = {"a": "q", "z": {"x": [{"a": 2, "b": 1}], "y": 1}}
        self.assertEqual(digest_arguments(one), digest_arguments(two))
        self.assertNotEqual(digest_arguments(one), digest_arguments({**two, "a": "r"}))
        self.assertRegex(digest_arguments(one), r"^sha256:[0-9a-f]{64}$")

    def test_neverRaises(self) -> None:
        """Values that are not JSON (a caller's mistake) still get a digest."""
        self.assertRegex(digest_arguments({"x": object(), 1: float("nan")}), r"^sha256:[0-9a-f]{64}$")
        self.assertEqual(digest_arguments({"x": {1, 2}}), digest_arguments({"x": {1, 2}}))
        self.assertRegex(digest_arguments(10**5000), r"^sha256:[0-9a-f]{64}$")

    def test_deepAndOdd(self) -> None:
        """Deeper than the C encoder goes, and lone surrogates: same text, no exception."""
        value: Any = {"é": ["\ud800", -0.0, 1e300, 10**30, "\x00\n\""]}
        shallow = audit_records._dumps_lenient(value)
        self.assertEqual(audit_records._dumps_iterative(value), shallow)
        deep: Any = value
        for _ in range(3000):
            deep = [deep]
        self.assertEqual(digest_arguments(deep), "sha256:" + hashlib.sha256(("[" * 3000 + shallow + "]" * 3000).encode("utf-8", "surrogatepass")).hexdigest())


class AuditTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.threads = SynchronousThreads()
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "audit.jsonl")

    def config(self, **kw: Any) -> AuditConfig:
        kw.setdefault("path", self.path)
        return AuditConfig(**kw)

    def started(self, config: AuditConfig) -> AuditLog:
        log = AuditLog(config, self.clock, self.threads)
        self.assertIsNone(self.successResultOf(log.start()))
        return log

    def stopped(self, log: AuditLog) -> None:
        d = log.stop()
        self.threads.pump()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def assertChain(self, records: list[dict[str, Any]], ids: list[str]) -> None:
        self.assertEqual([r["id"] for r in records], ids)
        prev = ""
        for seq, r in enumerate(records, 1):
            self.assertEqual((r["seq"], r["prev"]), (seq, prev))
            body = json.dumps({k: v for k, v in r.items() if k != "digest"}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            self.assertEqual(r["digest"], "sha256:" + hashlib.sha256(body.encode("utf-8")).hexdigest())
            prev = r["digest"]

    def assertVerified(self, config: AuditConfig, count: int) -> None:
        self.assertEqual(verify(config), VerifyResult(True, count, None, f"{count} record(s), seq 1 to {count}: the hash chain is intact"))


class ChainTests(AuditTestCase):
    def test_file(self) -> None:
        config = self.config()
        log = self.started(config)
        for n in range(3):
            log.record(fields(n))
        self.assertEqual((log.healthy, log.failures, log.queue_depth), (True, 0, 0))
        records = read_lines(self.path)
        self.assertChain(records, ["req-0", "req-1", "req-2"])
        self.assertEqual({k: v for k, v in records[1].items() if k not in ("seq", "prev", "digest")}, fields(1))
        self.stopped(log)
        self.assertVerified(config, 3)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)

    def test_sqlite(self) -> None:
        config = self.config(sink="sqlite", path=os.path.join(self.directory, "audit.db"))
        log = self.started(config)
        for n in range(3):
            log.record(fields(n, principal=f"p{n}"))
        self.stopped(log)
        conn = sqlite3.connect(config.path)
        rows = conn.execute("SELECT seq, id, principal, latency_ms, record FROM twisted_mcp_audit ORDER BY seq").fetchall()
        self.assertEqual([r[:4] for r in rows], [(n + 1, f"req-{n}", f"p{n}", 12.5) for n in range(3)])
        self.assertChain([json.loads(r[4]) for r in rows], ["req-0", "req-1", "req-2"])
        self.assertEqual(conn.execute("SELECT version FROM twisted_mcp_audit_schema").fetchall(), [(2,)])
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        self.assertTrue({"twisted_mcp_audit_time", "twisted_mcp_audit_principal"} <= indexes)
        conn.close()
        self.assertVerified(config, 3)

    def test_restartContinues(self) -> None:
        for config in (self.config(), self.config(sink="sqlite", path=os.path.join(self.directory, "a.db"))):
            for run in range(2):
                log = self.started(config)
                log.record(fields(2 * run))
                log.record(fields(2 * run + 1))
                self.stopped(log)
            self.assertVerified(config, 4)
        self.assertChain(read_lines(self.path), ["req-0", "req-1", "req-2", "req-3"])

    def test_argumentsRedactedOnlyWhenRecorded(self) -> None:
        secret = {"q": "x", "auth": {"api_key": "k"}, "password": "p"}
        log = self.started(self.config())
        log.record(fields(0, arguments=secret))
        self.stopped(log)
        self.assertNotIn("arguments", read_lines(self.path)[0])
        config = self.config(path=os.path.join(self.directory, "b.jsonl"), recordArguments=True)
        log = self.started(config)
        log.record(fields(0, arguments=secret))
        secret["q"] = "changed later"
        self.stopped(log)
        self.assertEqual(read_lines(config.path or "")[0]["arguments"], {"q": "x", "auth": REDACTED, "password": REDACTED})

    def test_oddValuesAreStoredAndVerify(self) -> None:
        """Values JSON cannot carry become text; the record is kept and the chain holds."""
        config = self.config(recordArguments=True)
        log = self.started(config)
        log.record(fields(0, latency_ms=float("nan"), principal="bad \ud800", extra=object(), arguments={1: "int key", "x": float("inf")}))
        log.record({"method": "tools/list"})
        self.stopped(log)
        first, second = read_lines(self.path)
        self.assertEqual((first["latency_ms"], first["principal"], first["arguments"]), ("nan", "bad \\ud800", {"1": "int key", "x": "inf"}))
        self.assertRegex(second["id"], "^[0-9a-f]{32}$")
        self.assertEqual(second["time"], 0.0)
        self.assertVerified(config, 2)

    def test_callerCannotSetChainFields(self) -> None:
        config = self.config()
        log = self.started(config)
        log.record(fields(0, seq=99, prev="forged", digest="sha256:0"))
        self.stopped(log)
        self.assertChain(read_lines(self.path), ["req-0"])

    def test_none(self) -> None:
        log = AuditLog(AuditConfig(sink="none"), self.clock, self.threads)
        self.assertIsNone(self.successResultOf(log.start()))
        log.record(fields(0))
        self.assertEqual((log.healthy, log.queue_depth, log.failures), (True, 0, 0))
        self.stopped(log)
        self.assertEqual(verify(AuditConfig(sink="none")).ok, True)


class VerifyTests(AuditTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.conf = self.config()
        log = self.started(self.conf)
        for n in range(5):
            log.record(fields(n))
        self.stopped(log)
        with open(self.path, "rb") as f:
            self.lines = f.read().splitlines(keepends=True)

    def rewrite(self, lines: list[bytes]) -> VerifyResult:
        with open(self.path, "wb") as f:
            f.write(b"".join(lines))
        return verify(self.conf)

    def assertBroken(self, result: VerifyResult, records: int, first_bad: int, message: str) -> None:
        self.assertEqual(result, VerifyResult(False, records, first_bad, message))

    def test_ok(self) -> None:
        self.assertVerified(self.conf, 5)
        self.assertEqual(self.rewrite([]), VerifyResult(True, 0, None, "no records yet"))

    def test_modified(self) -> None:
        self.lines[2] = self.lines[2].replace(b'"alice"', b'"mallory"')
        self.assertBroken(self.rewrite(self.lines), 2, 3, "line 3 (seq 3): digest does not match its content (the record was modified)")

    def test_resealed(self) -> None:
        """A record replaced with a fresh, self-consistent digest breaks the next link."""
        record = json.loads(self.lines[1])
        record["principal"] = "mallory"
        del record["digest"]
        record["digest"] = audit_records._record_digest(record)
        self.lines[1] = json.dumps(record).encode() + b"\n"
        self.assertBroken(
            self.rewrite(self.lines), 2, 3, "line 3 (seq 3): prev does not match the digest of the record before it (a record was replaced)"
        )

    def test_deleted(self) -> None:
        del self.lines[2]
        self.assertBroken(self.rewrite(self.lines), 2, 3, "line 3: seq 2 -> 4: record 3 is missing")

    def test_deletedSeveral(self) -> None:
        del self.lines[1:3]
        self.assertBroken(self.rewrite(self.lines), 1, 2, "line 2: seq 1 -> 4: records 2 to 3 are missing")

    def test_deletedFirst(self) -> None:
        self.assertBroken(self.rewrite(self.lines[1:]), 0, 1, "line 1 (seq 2): the trail starts at seq 2: record 1 is missing")

    def test_reordered(self) -> None:
        self.lines[1], self.lines[2] = self.lines[2], self.lines[1]
        self.assertBroken(self.rewrite(self.lines), 1, 2, "line 2 (seq 3): records out of order (seq 3 comes before seq 2)")

    def test_duplicated(self) -> None:
        self.lines.insert(2, self.lines[1])
        self.assertBroken(self.rewrite(self.lines), 2, 3, "line 3 (seq 2): seq goes back from 2 to 2 (a record was duplicated or moved)")

    def test_truncated(self) -> None:
        self.lines[4] = self.lines[4][:40]
        self.assertBroken(self.rewrite(self.lines), 4, 5, "line 5: incomplete last line (the file was cut short, or a write was interrupted)")

    def test_garbage(self) -> None:
        self.lines[2] = b"#### not json\n"
        result = self.rewrite(self.lines)
        self.assertEqual((result.ok, result.records, result.first_bad), (False, 2, 3))
        self.assertTrue(result.message.startswith("line 3: not valid JSON ("), result.message)
        self.lines[2] = b"\xff\xfe\n"
        self.assertBroken(self.rewrite(self.lines), 2, 3, "line 3: not valid UTF-8")
        self.lines[2] = b'{"seq": "3"}\n'
        self.assertBroken(self.rewrite(self.lines), 2, 3, "line 3: not an audit record (expected a JSON object with seq, prev and digest)")

    def test_missingFile(self) -> None:
        result = verify(self.config(path=os.path.join(self.directory, "nope.jsonl")))
        self.assertEqual((result.ok, result.first_bad), (False, None))
        self.assertIn("No such file", result.message)

    def test_sqliteTampering(self) -> None:
        config = self.config(sink="sqlite", path=os.path.join(self.directory, "audit.db"), table="trail")
        log = self.started(config)
        for n in range(4):
            log.record(fields(n))
        self.stopped(log)
        tamper = functools.partial(tamper_sqlite, config)
        self.assertVerified(config, 4)
        self.assertBroken(
            tamper("UPDATE trail SET principal = 'mallory' WHERE seq = 2"), 1, 2, "seq 2: column principal does not match the record (the row was modified)"
        )
        tamper("UPDATE trail SET principal = 'alice' WHERE seq = 2")
        self.assertBroken(
            tamper("UPDATE trail SET record = replace(record, '\"alice\"', '\"bob\"') WHERE seq = 3"),
            2,
            3,
            "seq 3: digest does not match its content (the record was modified)",
        )
        tamper("UPDATE trail SET record = replace(record, '\"bob\"', '\"alice\"') WHERE seq = 3")
        self.assertVerified(config, 4)
        self.assertBroken(tamper("DELETE FROM trail WHERE seq = 2"), 1, 3, "seq 1 -> 3: record 2 is missing")
        result = verify(self.config(sink="sqlite", path=config.path, table="other"))
        self.assertFalse(result.ok)
        self.assertIn("no such table", result.message)


class ProtocolFieldTests(AuditTestCase):
    """
    Records gained C{protocol} (the MCP version of the request): trails
    written before it, after it, and across the upgrade verify, and the
    field is covered by the chain like any other.
    """

    def assertBroken(self, result: VerifyResult, records: int, first_bad: int, message: str) -> None:
        self.assertEqual(result, VerifyResult(False, records, first_bad, message))

    def upgrade(self, config: AuditConfig, between: Callable[[], None] = lambda: None) -> None:
        """
        Two records as the gateway wrote them before the field (none has
        it), C{between()}, then two after (each has it).
        """
        log = self.started(config)
        log.record(fields(0))
        log.record(fields(1))
        self.stopped(log)
        between()
        log = self.started(config)
        log.record(fields(2, protocol="2025-11-25"))
        log.record(fields(3, protocol="2026-07-28"))
        self.stopped(log)

    def test_aFileTrailVerifiesAcrossTheUpgrade(self) -> None:
        config = self.config()
        self.upgrade(config)
        records = read_lines(self.path)
        self.assertEqual([r.get("protocol", "absent") for r in records], ["absent", "absent", "2025-11-25", "2026-07-28"])
        self.assertVerified(config, 4)
        with open(self.path, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        lines[2] = lines[2].replace(b'"2025-11-25"', b'"2024-11-05"')
        with open(self.path, "wb") as f:
            f.write(b"".join(lines))
        self.assertBroken(verify(config), 2, 3, "line 3 (seq 3): digest does not match its content (the record was modified)")

    def test_aSqliteTableOfTheFirstSchemaVerifiesAndIsMigrated(self) -> None:
        config = self.config(sink="sqlite", path=os.path.join(self.directory, "audit.db"), table="trail")

        def old_table() -> None:
            downgrade_sqlite(config.path or "", "trail")
            self.assertVerified(config, 2)  # not migrated yet: verify reads it as it is

        self.upgrade(config, old_table)  # the SQLite sink migrates its own table at start
        conn = sqlite3.connect(config.path)
        self.assertEqual(conn.execute("SELECT version FROM trail_schema").fetchall(), [(2,)])
        self.assertEqual(
            conn.execute("SELECT seq, protocol FROM trail ORDER BY seq").fetchall(),
            [(1, None), (2, None), (3, "2025-11-25"), (4, "2026-07-28")],
        )
        conn.close()
        self.assertVerified(config, 4)
        tamper = functools.partial(tamper_sqlite, config)
        self.assertBroken(
            tamper("UPDATE trail SET protocol = '2024-11-05' WHERE seq = 3"),
            2,
            3,
            "seq 3: column protocol does not match the record (the row was modified)",
        )
        self.assertBroken(
            tamper("UPDATE trail SET record = replace(record, '\"2025-11-25\"', '\"2024-11-05\"') WHERE seq = 3"),
            2,
            3,
            "seq 3: digest does not match its content (the record was modified)",
        )

    def test_aNewerSchemaIsRefused(self) -> None:
        config = self.config(sink="sqlite", path=os.path.join(self.directory, "audit.db"), table="trail")
        self.stopped(self.started(config))
        conn = sqlite3.connect(config.path)
        with conn:
            conn.execute("UPDATE trail_schema SET version = 3")
        conn.close()
        with capturedLogs() as events:
            log = self.started(config)
        self.assertFalse(log.healthy)
        self.assertTrue(any("schema version 3, newer than this gateway's (2)" in formatEvent(e) for e in events))
        self.stopped(log)


def tamper_sqlite(config: AuditConfig, sql: str) -> VerifyResult:
    """Run C{sql} on an SQLite trail, then verify it."""
    conn = sqlite3.connect(config.path or "")
    with conn:
        conn.execute(sql)
    conn.close()
    return verify(config)


def downgrade_sqlite(path: str, table: str) -> None:
    """Make a table what a gateway of schema version 1 left: no protocol column."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN protocol")
        conn.execute(f"UPDATE {table}_schema SET version = 1")
    conn.close()


class FileRecoveryTests(AuditTestCase):
    def test_cutOffLastLineRemovedAtStart(self) -> None:
        config = self.config()
        log = self.started(config)
        log.record(fields(0))
        log.record(fields(1))
        self.stopped(log)
        with open(self.path, "ab") as f:
            f.write(b'{"id":"req-2","prev":"sha')  # a crash in the middle of a write
        with capturedLogs() as events:
            log = self.started(config)
        self.assertTrue(any("incomplete record" in formatEvent(e) for e in events))
        log.record(fields(2))
        self.stopped(log)
        self.assertVerified(config, 3)

    def test_completeLastLineWithoutNewlineKept(self) -> None:
        config = self.config()
        log = self.started(config)
        log.record(fields(0))
        self.stopped(log)
        with open(self.path, "rb+") as f:
            f.truncate(os.path.getsize(self.path) - 1)
        log = self.started(config)
        log.record(fields(1))
        self.stopped(log)
        self.assertVerified(config, 2)

    def test_corruptLastLineRefusesToContinue(self) -> None:
        with open(self.path, "w") as f:
            f.write("garbage\n")
        with capturedLogs() as events:
            log = self.started(self.config())
        self.assertFalse(log.healthy)
        self.assertTrue(any("not an audit record" in formatEvent(e) for e in events), [formatEvent(e) for e in events])
        self.stopped(log)

    def test_rotated(self) -> None:
        config = self.config()
        log = self.started(config)
        log.record(fields(0))
        os.rename(self.path, self.path + ".1")
        log.record(fields(1))
        log.record(fields(2))
        self.stopped(log)
        self.assertChain(read_lines(self.path + ".1"), ["req-0"])
        self.assertChain(read_lines(self.path), ["req-1", "req-2"])

    def test_oneWriterPerFile(self) -> None:
        config = self.config()
        first = self.started(config)
        with capturedLogs() as events:
            second = self.started(config)
        self.assertFalse(second.healthy)
        self.assertTrue(any("in use by another process" in formatEvent(e) for e in events))
        self.stopped(second)
        self.stopped(first)


class OutageTestCase(AuditTestCase):
    def setUp(self) -> None:
        super().setUp()
        # A path whose target the test switches between /dev/full and a file.
        self.link = os.path.join(self.directory, "current.jsonl")
        os.symlink("/dev/full", self.link)

    def point(self, target: str) -> None:
        os.remove(self.link)
        os.symlink(target, self.link)


class FailureTests(OutageTestCase):

    def test_diskFullAndRecovery(self) -> None:
        """Records of calls that ran are never dropped: the queue outgrows maxQueue and the gate refuses calls."""
        config = self.config(path=self.link, maxQueue=3, onFailure="allow")
        with capturedLogs() as events:
            log = self.started(config)
            self.assertTrue(log.healthy)  # /dev/full opens fine
            log.record(fields(0))
            self.assertEqual((log.healthy, log.queue_depth, log.failures), (False, 1, 0))
            self.assertFalse(log.refuses_calls)  # onFailure: allow
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            for n in range(1, 5):
                log.record(fields(n))
            self.assertEqual((log.healthy, log.queue_depth, log.failures), (False, 5, 0))
            self.assertTrue(log.refuses_calls)  # full of calls that ran: fail closed, even with onFailure: allow
            self.clock.advance(1)  # still full
            self.assertFalse(log.healthy)
            self.point(self.path)
            self.clock.advance(1)
        self.assertEqual((log.healthy, log.queue_depth, log.failures, log.refuses_calls), (True, 0, 0, False))
        messages = [formatEvent(e) for e in events]
        failed = [m for m in messages if "failed: No space left on device" in m]
        self.assertEqual(len(failed), 1, messages)  # once, not on every retry
        log.record(fields(5))
        self.stopped(log)
        self.assertChain(read_lines(self.path), [f"req-{n}" for n in range(6)])
        self.assertVerified(self.config(), 6)

    def test_refusalsNeverCrowdOutCallsThatRan(self) -> None:
        """
        During an outage refusals fill the queue; each record of a call that
        ran then pushes out the oldest refusal, the refusals dropped are
        counted and written, once the sink is back, as one gap record that
        verify reports.
        """
        config = self.config(path=self.link, maxQueue=3)
        with capturedLogs() as events:
            log = self.started(config)
            log.record(fields(0))  # ran
            self.assertTrue(log.refuses_calls)  # onFailure: refuse, and the sink fails
            for n in range(1, 6):
                log.record(fields(n, decision="deny", error_code=errors.AUDIT_UNAVAILABLE, outcome=None))
            log.record(fields(6))  # a call that was in flight finishes
            log.record(fields(7, decision="deny", error_code=errors.ACCESS_DENIED, outcome=None))
        self.assertEqual((log.queue_depth, log.failures, log.dropped), (3, 5, 5))
        self.assertTrue(any("dropping records of refusals and listings" in formatEvent(e) for e in events))
        self.point(self.path)
        self.clock.advance(1)
        self.assertEqual((log.healthy, log.queue_depth, log.refuses_calls), (True, 0, False))
        self.stopped(log)
        records = read_lines(self.path)
        self.assertEqual([r["id"] for r in records[1:]], ["req-0", "req-6", "req-7"])  # the oldest refusals went
        gap = records[0]
        self.assertEqual((gap["method"], gap["lost"], gap["lostBy"]), ("audit/gap", 5, {str(errors.AUDIT_UNAVAILABLE): 5}))
        self.assertEqual((gap["firstLostTime"], gap["lastLostTime"]), (fields(1)["time"], fields(5)["time"]))
        result = verify(self.config())
        self.assertTrue(result.ok)
        self.assertEqual(result.lost, 5)
        self.assertIn("5 record(s) of refusals and listings were dropped", result.message)
        self.assertIn("seq 1", result.message)

    def test_toolListingsAreDroppedAndCountedToo(self) -> None:
        """A client listing tools in a loop during an outage cannot grow the queue: listings reached no backend."""
        log = self.started(self.config(path=self.link, maxQueue=3))
        log.record(fields(0))
        for n in range(1, 1000):
            log.record(fields(n, method="tools/list", tool=None, backend=None))
        self.assertEqual((log.queue_depth, log.dropped), (3, 997))
        self.point(self.path)
        self.clock.advance(1)
        self.stopped(log)
        records = read_lines(self.path)
        self.assertEqual((records[0]["lostBy"], records[1]["id"]), ({"tools/list": 997}, "req-0"))

    def test_everyKindOfListingIsDroppedAndCountedButServerRequestsAreKept(self) -> None:
        """
        Prompt, resource and template listings reached no backend either:
        dropped and counted like tool listings.  A sampling request a
        backend sent a client did run: it is kept, like a call.
        """
        log = self.started(self.config(path=self.link, maxQueue=3))
        log.record(fields(0))
        methods = ["prompts/list", "resources/list", "resources/templates/list"]
        for n in range(1, 301):
            log.record(fields(n, method=methods[n % 3], kind=None, tool=None, backend=None))
        log.record(fields(301, method="sampling/createMessage", kind="server_request", tool=None))
        self.assertEqual((log.queue_depth, log.dropped), (3, 299))
        self.point(self.path)
        self.clock.advance(1)
        self.stopped(log)
        records = read_lines(self.path)
        self.assertEqual(records[0]["lostBy"], {"prompts/list": 99, "resources/list": 100, "resources/templates/list": 100})
        self.assertEqual([r["id"] for r in records[1:]], ["req-0", "req-300", "req-301"])

    def test_aLongOutageKeepsEveryCallThatRan(self) -> None:
        config = self.config(path=self.link, maxQueue=100, onFailure="allow")
        log = self.started(config)
        ran = []
        for n in range(5000):
            if n % 97 == 0:
                ran.append(f"req-{n}")
                log.record(fields(n))
            else:
                log.record(fields(n, decision="deny", error_code=errors.ACCESS_DENIED, outcome=None))
        self.assertEqual(log.queue_depth, 100)
        self.assertEqual(log.dropped, 5000 - 100)
        self.point(self.path)
        self.clock.advance(1)
        self.stopped(log)
        records = read_lines(self.path)
        self.assertEqual([r["id"] for r in records if r.get("outcome") == "ok"], ran)
        self.assertEqual(sum(r.get("lost", 0) for r in records), 4900)
        self.assertEqual(verify(self.config()).lost, 4900)

    def test_overflowKeepsTheBatchBeingWritten(self) -> None:
        """A full queue drops the oldest refusal not being written: the batch in flight stays whole."""
        self.threads.paused = True
        log = AuditLog(self.config(path=self.link, maxQueue=3), self.clock, self.threads)
        log.start()
        self.threads.pump()
        refused = {"decision": "deny", "outcome": None, "error_code": errors.ACCESS_DENIED}
        log.record(fields(0, **refused))  # in flight (to /dev/full)
        self.assertTrue(log.healthy)
        for n in range(1, 4):
            log.record(fields(n, **refused))
        self.assertEqual((log.queue_depth, log.failures, log.healthy), (3, 1, False))  # full is unhealthy
        self.threads.pump()  # the write fails: req-0 stays queued
        self.point(self.path)
        self.clock.advance(1)
        self.threads.pump()
        self.assertTrue(log.healthy)
        self.stopped(log)
        records = read_lines(self.path)
        self.assertEqual([r.get("lost") for r in records[:1]] + [r["id"] for r in records[1:]], [1, "req-0", "req-2", "req-3"])

    def test_failureAfterGoodWritesKeepsTheChain(self) -> None:
        good = os.path.join(self.directory, "good.jsonl")
        self.point(good)
        config = self.config(path=self.link)
        log = self.started(config)
        log.record(fields(0))
        self.point("/dev/full")
        log.record(fields(1))
        self.assertFalse(log.healthy)
        self.point(good)
        self.clock.advance(1)
        self.assertTrue(log.healthy)
        self.stopped(log)
        self.assertChain(read_lines(good), ["req-0", "req-1"])

    def test_partialWriteRolledBack(self) -> None:
        """ENOSPC half-way through a batch leaves no half record behind."""
        config = self.config()
        log = self.started(config)
        log.record(fields(0))
        real_write = os.write
        calls: list[int] = []

        def short_write(fd: int, data: Any) -> int:
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[:30]))
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "write", short_write)
        log.record(fields(1))
        self.assertFalse(log.healthy)
        self.assertEqual(len(read_lines(self.path)), 1)
        self.patch(os, "write", real_write)
        self.clock.advance(1)
        self.stopped(log)
        self.assertVerified(config, 2)

    def test_failedWriteThatLandedIsNotRepeated(self) -> None:
        """fsync fails after the data reached the file (and cannot be cut back): the retry writes no duplicate."""
        config = self.config()
        log = self.started(config)
        log.record(fields(0))

        def fail(*args: Any) -> None:
            raise OSError(errno.EIO, "Input/output error")

        real = {name: getattr(os, name) for name in ("fsync", "ftruncate")}
        self.patch(os, "fsync", fail)
        self.patch(os, "ftruncate", fail)
        log.record(fields(1))
        log.record(fields(2))
        self.assertEqual((log.healthy, log.queue_depth), (False, 2))
        self.assertEqual(len(read_lines(self.path)), 2)  # req-1 did land; req-2 waits for the retry
        for name, function in real.items():
            self.patch(os, name, function)
        log.record(fields(3))  # waits for the retry
        self.assertEqual(log.queue_depth, 3)
        self.clock.advance(1)
        self.assertEqual((log.healthy, log.queue_depth, log.failures), (True, 0, 0))
        self.stopped(log)
        self.assertChain(read_lines(self.path), ["req-0", "req-1", "req-2", "req-3"])

    def test_missingDirectoryAtStart(self) -> None:
        missing = os.path.join(self.directory, "logs")
        config = self.config(path=os.path.join(missing, "audit.jsonl"))
        with capturedLogs() as events:
            log = self.started(config)
        self.assertFalse(log.healthy)
        self.assertTrue(any(f"the directory {missing} does not exist" in formatEvent(e) for e in events))
        log.record(fields(0))
        self.assertEqual(log.queue_depth, 1)
        os.makedirs(missing)
        self.clock.advance(1)
        self.assertTrue(log.healthy)
        self.stopped(log)
        self.assertVerified(config, 1)

    def test_stopGivesUpAfterItsBound(self) -> None:
        log = self.started(self.config(path=self.link))
        log.record(fields(0))
        log.record(fields(1))
        with capturedLogs() as events:
            d = log.stop()
            self.assertNoResult(d)
            self.clock.advance(AuditLog.STOP_TIMEOUT)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual((log.failures, log.queue_depth), (0, 0))  # kept in the spill file
        spill = self.link + ".spill.jsonl"
        self.assertTrue(any(f"2 audit record(s) could not be written to file {self.link} before shutdown (2 of them of calls "
                            f"that ran); kept in the spill file {spill}" in formatEvent(e) for e in events))
        self.assertEqual([r["id"] for r in read_lines(spill)], ["req-0", "req-1"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        log.record(fields(2))  # after stop: counted, not queued
        self.assertEqual((log.failures, log.queue_depth), (1, 0))


class SpillTests(OutageTestCase):
    """Records that could not be written before shutdown survive in the
    spill file and go to the trail first at the next start."""

    def outage_stop(self, ids: range, **kw: Any) -> AuditLog:
        log = self.started(self.config(path=self.link, **kw))
        for n in ids:
            log.record(fields(n))
        d = log.stop()
        self.clock.advance(AuditLog.STOP_TIMEOUT)
        self.successResultOf(d)
        return log

    def test_spilledRecordsAreWrittenFirstAtTheNextStart(self) -> None:
        spill = self.link + ".spill.jsonl"
        self.outage_stop(range(3))
        self.assertEqual(os.stat(spill).st_mode & 0o777, 0o600)
        self.assertEqual(read_lines(spill), [fields(n) for n in range(3)])  # as recorded, sealed when written
        self.point(self.path)  # the sink is back, empty
        open(self.path, "wb").close()
        result = verify(self.config(path=self.link))
        self.assertEqual(result.spilled, 3)
        self.assertIn(f"3 record(s) in the spill file {spill} are not in the trail yet", result.message)

        with capturedLogs() as events:
            log = self.started(self.config(path=self.link))
            log.record(fields(3))
        self.assertChain(read_lines(self.path), ["req-0", "req-1", "req-2", "req-3"])
        self.assertFalse(os.path.exists(spill))
        self.assertTrue(any("writing 3 audit record(s) kept in the spill file" in formatEvent(e) for e in events))
        self.stopped(log)
        self.assertVerified(self.config(path=self.link), 4)

    def test_aSecondOutageBeforeTheReplayKeepsEachRecordOnce(self) -> None:
        spill = self.link + ".spill.jsonl"
        self.outage_stop(range(2))
        self.outage_stop(range(2, 4))  # replays req-0, req-1: not written either
        self.assertEqual([r["id"] for r in read_lines(spill)], ["req-0", "req-1", "req-2", "req-3"])
        self.point(self.path)
        self.stopped(self.started(self.config(path=self.link)))
        self.assertChain(read_lines(self.path), [f"req-{n}" for n in range(4)])
        self.assertFalse(os.path.exists(spill))

    def test_aSpillFileThatCannotBeReplayedIsLeftAndAppendedTo(self) -> None:
        spill = self.link + ".spill.jsonl"
        with open(spill, "wb") as f:
            f.write(b"not json\n")
        with capturedLogs() as events:
            self.outage_stop(range(1))
        self.assertTrue(any(f"the audit spill file {spill} cannot be replayed (line 1 is not a JSON record)" in formatEvent(e) for e in events))
        with open(spill, "rb") as f:
            first, *spilled = f.read().splitlines()
        self.assertEqual((first, [json.loads(line)["id"] for line in spilled]), (b"not json", ["req-0"]))

    def test_theGapRecordIsSpilledFirst(self) -> None:
        spill = self.link + ".spill.jsonl"
        log = self.started(self.config(path=self.link, maxQueue=1, onFailure="allow"))
        log.record(fields(0))
        log.record(fields(1, decision="deny", outcome="refused"))  # dropped: the queue is full
        d = log.stop()
        self.clock.advance(AuditLog.STOP_TIMEOUT)
        self.successResultOf(d)
        records = read_lines(spill)
        self.assertEqual((records[0]["method"], records[0]["lost"]), ("audit/gap", 1))
        self.assertEqual([r["id"] for r in records[1:]], ["req-0"])

    def test_noSpillFileMeansLost(self) -> None:
        log = self.started(self.config(path=self.link, spillFile=os.path.join(self.directory, "missing", "spill.jsonl")))
        log.record(fields(0))
        with capturedLogs() as events:
            d = log.stop()
            self.clock.advance(AuditLog.STOP_TIMEOUT)
        self.successResultOf(d)
        self.assertEqual(log.failures, 1)
        self.assertTrue(any("nor kept in the spill file" in formatEvent(e) and "they are lost" in formatEvent(e) for e in events))


class NonBlockingTests(AuditTestCase):
    def test_recordOnlyQueues(self) -> None:
        self.threads.paused = True
        log = AuditLog(self.config(), self.clock, self.threads)
        d = log.start()
        self.assertNoResult(d)
        self.threads.pump()
        self.successResultOf(d)
        log.record(fields(0))
        log.record(fields(1))
        self.assertEqual(log.queue_depth, 2)
        self.assertEqual(os.path.getsize(self.path), 0)
        self.assertEqual(len(self.threads.pending), 1)  # one batch in flight, the rest waits
        self.threads.pump()
        self.assertEqual(log.queue_depth, 0)
        self.assertChain(read_lines(self.path), ["req-0", "req-1"])
        self.stopped(log)

    def test_batches(self) -> None:
        """What queues up while a batch is written goes in the next one, in order, with one fsync."""
        self.threads.paused = True
        log = AuditLog(self.config(), self.clock, self.threads)
        log.start()
        self.threads.pump()
        fsyncs: list[int] = []
        real_fsync = os.fsync
        self.patch(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
        log.record(fields(0))
        for n in range(1, 6):
            log.record(fields(n))
        self.threads.pump()
        self.assertEqual(len(fsyncs), 2)
        self.assertChain(read_lines(self.path), [f"req-{n}" for n in range(6)])
        self.stopped(log)

    def test_stalledWriteIsUnhealthy(self) -> None:
        self.threads.paused = True
        log = AuditLog(self.config(), self.clock, self.threads)
        log.start()
        self.threads.pump()
        log.record(fields(0))
        self.clock.advance(AuditLog.STALL_AFTER + 1)
        self.assertFalse(log.healthy)
        self.threads.pump()
        self.assertTrue(log.healthy)
        self.stopped(log)

    def test_stopFlushes(self) -> None:
        self.threads.paused = True
        log = AuditLog(self.config(), self.clock, self.threads)
        log.start()
        self.threads.pump()
        log.record(fields(0))
        log.record(fields(1))
        d = log.stop()
        self.assertNoResult(d)
        self.threads.pump()
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertChain(read_lines(self.path), ["req-0", "req-1"])

    def test_recordNeverRaises(self) -> None:
        log = self.started(self.config())
        log.record(None)  # type: ignore[arg-type]
        log.record({"id": "ok"})
        self.assertEqual(log.failures, 1)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.stopped(log)
        self.assertEqual([r["id"] for r in read_lines(self.path)], ["ok"])

    def test_realWorkerThread(self) -> None:
        """With the real thread pool: record() returns while the write is stuck in fsync, off the calling thread."""
        results: queue.Queue[Callable[[], Any]] = queue.Queue()

        class Reactor:
            def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
                results.put(lambda: f(*args))

        def run_until(d: Any) -> None:
            while not d.called:
                results.get(timeout=10)()

        release = threading.Event()
        threads: list[str] = []
        real_fsync = os.fsync

        def slow_fsync(fd: int) -> None:
            threads.append(threading.current_thread().name)
            release.wait(10)
            real_fsync(fd)

        self.patch(os, "fsync", slow_fsync)
        log = AuditLog(self.config(), self.clock, Reactor())
        run_until(log.start())
        log.record(fields(0))
        results_before = results.qsize()
        log.record(fields(1))  # the worker is blocked: this only queues
        self.assertEqual(log.queue_depth, 2)
        self.assertEqual(results_before, 0)
        release.set()
        stopping = log.stop()
        run_until(stopping)
        self.successResultOf(stopping)
        self.assertNotIn(threading.current_thread().name, threads)
        self.assertTrue(all("twisted-mcp-audit" in name for name in threads), threads)
        self.assertChain(read_lines(self.path), ["req-0", "req-1"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class BatchingTests(SynchronousTestCase):
    def test_recordsAreGatheredIntoOneBatch(self) -> None:
        from twisted_mcp.policy.audit import AuditConfig, SynchronousThreads, verify

        AuditLog.BATCH_DELAY = 0.05  # (the autouse fixture restores it)
        clock = Clock()
        path = self.mktemp()
        log = AuditLog(AuditConfig(sink="file", path=path), clock, SynchronousThreads())
        log.start()
        writes = []
        sink_write = log._sink.write
        log._sink.write = lambda batch: (writes.append(len(batch)), sink_write(batch))[1]
        for i in range(5):
            log.record({"id": f"r{i}", "time": 1.0, "method": "tools/call", "decision": "allow"})
        self.assertEqual(writes, [])
        clock.advance(0.05)
        self.assertEqual(writes, [5])
        self.assertTrue(verify(AuditConfig(sink="file", path=path)).ok)
        self.successResultOf(log.stop())


class BoundTests(AuditTestCase):
    """What one record stores is bounded, whatever a client sends (defect 5 of issue 9)."""

    def test_boundText(self) -> None:
        self.assertEqual(audit.bound_text("short", 256), "short")
        long = "é" * 3000  # 6000 bytes
        bounded = audit.bound_text(long, 256)
        digest = hashlib.sha256(long.encode("utf-8")).hexdigest()
        self.assertLessEqual(len(bounded.encode("utf-8")), 256)
        self.assertTrue(bounded.startswith("éé"))
        self.assertTrue(bounded.endswith(f"…[6000 bytes, sha256:{digest}]"), bounded)

    def test_hugeToolNameStoredBounded(self) -> None:
        """A 4 MiB tool name (in the tool and in the reason) costs about 1 KiB per field."""
        name = "x" * (4 << 20)
        config = self.config()
        log = self.started(config)
        log.record(fields(0, tool=name, decision="deny", reason=f"Unknown tool: {name!r}", principal="p" * 5000, roles=["r" * 5000]))
        self.stopped(log)
        [record] = read_lines(self.path)
        size = os.path.getsize(self.path)
        self.assertLess(size, 8 * 1024, size)
        digest = hashlib.sha256(name.encode()).hexdigest()
        self.assertTrue(record["tool"].endswith(f"…[{4 << 20} bytes, sha256:{digest}]"))
        for key in ("tool", "reason", "principal"):
            self.assertLessEqual(len(record[key].encode()), 1024, key)
        self.assertLessEqual(len(record["roles"][0].encode()), 1024)
        self.assertVerified(config, 1)

    def test_recordArgumentsBoundedPerFieldAndPerRecord(self) -> None:
        config = self.config(recordArguments=True, maxFieldBytes=256, maxRecordBytes=8192)
        log = self.started(config)
        arguments = {f"k{i}": "v" * 300 for i in range(100)}  # each value over the field bound, 30 KB in all
        arguments["y" * 1000] = "short"
        log.record(fields(0, arguments=arguments))
        log.record(fields(1, arguments={"a": "b" * 1000, "token": "s3cret"}))
        self.stopped(log)
        first, second = read_lines(self.path)
        self.assertTrue(first["arguments"].startswith("[omitted: "), first["arguments"][:80])
        self.assertEqual(first["principal"], "alice")  # the small fields stay whole
        self.assertLessEqual(len(json.dumps(first).encode()), 8192 + 200)  # + the digest added when sealed
        self.assertLessEqual(len(second["arguments"]["a"].encode()), 256)
        self.assertEqual(second["arguments"]["token"], REDACTED)
        self.assertVerified(config, 2)

    def test_configKeys(self) -> None:
        problems: list[str] = []
        config = parse_audit({"maxFieldBytes": 512, "maxRecordBytes": 16384}, "audit", "/etc", problems)
        assert config is not None
        self.assertEqual((config.maxFieldBytes, config.maxRecordBytes), (512, 16384))
        self.assertEqual((AuditConfig().maxFieldBytes, AuditConfig().maxRecordBytes), (1024, 65536))
        for bad, key in (({"maxFieldBytes": 10}, "audit.maxFieldBytes"), ({"maxRecordBytes": "big"}, "audit.maxRecordBytes"),
                         ({"maxFieldBytes": 8192, "maxRecordBytes": 4096}, "audit.maxFieldBytes")):
            problems = []
            self.assertIsNone(parse_audit(bad, "audit", "/etc", problems))
            self.assertTrue(problems and problems[0].startswith(key + ": "), problems)


KEY = b"k" * 32


def rechain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What someone who can write the trail but lacks the key can do: renumber and recompute every digest."""
    out, prev = [], ""
    for seq, record in enumerate(records, 1):
        body = {k: v for k, v in record.items() if k != "digest"}
        body.update(seq=seq, prev=prev)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        prev = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
        out.append({**body, "digest": prev})
    return out


def write_lines(path: str, records: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


class KeyedChainTests(AuditTestCase):
    """Tampering by someone who can write the trail but does not hold the key (defect 4 of issue 9)."""

    def keyed(self, count: int, **kw: Any) -> tuple[AuditConfig, list[dict[str, Any]]]:
        config = self.config(key=KEY, keySource="test", **kw)
        log = self.started(config)
        for n in range(count):
            log.record(fields(n))
        self.stopped(log)
        return config, read_lines(self.path) if config.sink == "file" else []

    def assertBroken(self, result: VerifyResult, *words: str) -> None:
        self.assertFalse(result.ok, result)
        for word in words:
            self.assertIn(word, result.message)

    def test_keyedDigests(self) -> None:
        config, records = self.keyed(3)
        self.assertTrue(all(r["digest"].startswith("hmac-sha256:") for r in records))
        result = verify(config)
        self.assertEqual((result.ok, result.records, result.head), (True, 3, (3, records[-1]["digest"])))
        self.assertBroken(verify(self.config()), "no key was given")
        self.assertBroken(verify(self.config(key=b"another key, 16+ bytes")), "the key is not the one")

    def test_rewrittenWithRecomputedHashesIsCaught(self) -> None:
        config, records = self.keyed(4)
        records[1]["principal"] = "mallory"
        write_lines(self.path, rechain(records))
        self.assertTrue(verify(self.config()).ok)  # the plain chain of old could not tell
        self.assertBroken(verify(config), "none of the 4 record(s) is keyed")

    def test_deletedOrInsertedRecordIsCaught(self) -> None:
        config, records = self.keyed(4)
        original = [dict(r) for r in records]
        # Keep the keyed records, renumbered: their HMACs no longer match.
        del records[1]
        for seq, record in enumerate(records, 1):
            record["seq"] = seq
        write_lines(self.path, records)
        self.assertBroken(verify(config), "line 2 (seq 2)", "the record was modified")
        # A forged record slipped in after seq 2, chained as well as one can without the key.
        forged = {**original[1], "id": "forged", "seq": 3, "prev": original[1]["digest"]}
        forged["digest"] = audit_records._record_digest({k: v for k, v in forged.items() if k != "digest"})
        write_lines(self.path, original[:2] + [forged])
        self.assertBroken(verify(config), "line 3 (seq 3)", "an unkeyed record after keyed ones")

    def test_cutTailAndEmptiedTrailCaughtByACheckpoint(self) -> None:
        config, records = self.keyed(5)
        result = verify(config)
        assert result.head is not None
        checkpoint = json.dumps(audit_keys.make_checkpoint(*result.head, config.describe(), 1.0, KEY)).encode()
        ok = verify(config, checkpoint)
        self.assertTrue(ok.ok, ok)
        self.assertIn("still holds seq 5", ok.message)

        write_lines(self.path, records[:3])  # the tail cut off: the chain itself is intact
        self.assertTrue(verify(config).ok)
        self.assertBroken(verify(config, checkpoint), "ends at seq 3", "seq 5", "cut")
        write_lines(self.path, [])
        self.assertBroken(verify(config, checkpoint), "ends at seq 0")

        write_lines(self.path, records)
        forged = json.loads(checkpoint)
        forged["seq"] = 3
        self.assertBroken(verify(config, json.dumps(forged).encode()), "cannot be trusted", "signature does not match")
        other = json.dumps(audit_keys.make_checkpoint(5, records[-1]["digest"], "x", 1.0, b"another key, 16+ bytes")).encode()
        self.assertBroken(verify(config, other), "signature does not match")
        self.assertBroken(verify(self.config(), checkpoint), "none is configured")

    def test_sqliteKeyed(self) -> None:
        config, _ = self.keyed(3, sink="sqlite", path=os.path.join(self.directory, "a.db"))
        self.assertTrue(verify(config).ok)
        conn = sqlite3.connect(config.path)
        rows = conn.execute("SELECT seq, record FROM twisted_mcp_audit ORDER BY seq").fetchall()
        records = rechain([json.loads(r[1]) for r in rows])
        conn.execute("DELETE FROM twisted_mcp_audit")
        conn.executemany(
            "INSERT INTO twisted_mcp_audit (seq, prev, digest, record, id, principal, roles, session, method, tool, backend, "
            "decision, outcome, latency_ms, result_bytes, arguments_digest, time) VALUES "
            "(?, ?, ?, ?, ?, ?, '[\"dev\"]', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r["seq"], r["prev"], r["digest"], json.dumps(r, sort_keys=True, separators=(",", ":")), r["id"], r["principal"],
                 r["session"], r["method"], r["tool"], r["backend"], r["decision"], r["outcome"], r["latency_ms"],
                 r["result_bytes"], r["arguments_digest"], r["time"])
                for r in records
            ],
        )
        conn.commit()
        conn.close()
        self.assertTrue(verify(self.config(sink="sqlite", path=config.path)).ok)
        self.assertBroken(verify(config), "none of the 3 record(s) is keyed")

    def test_anOldUnkeyedTrailGoesOnKeyed(self) -> None:
        """A trail written before the key stays verifiable; once keyed records follow, they protect it too."""
        old = self.started(self.config())
        old.record(fields(0))
        old.record(fields(1))
        self.stopped(old)
        self.assertTrue(verify(self.config()).ok)
        config = self.config(key=KEY, keySource="test")
        self.assertBroken(verify(config), "has not written since the key was configured")
        log = self.started(config)
        log.record(fields(2))
        self.stopped(log)
        result = verify(config)
        self.assertTrue(result.ok, result)
        self.assertIn("records 1 to 2 were written before the key", result.message)
        records = read_lines(self.path)
        records[0]["principal"] = "mallory"
        write_lines(self.path, rechain(records[:2]) + records[2:])
        self.assertBroken(verify(config), "line 3 (seq 3)", "prev does not match")


class KeySourceTests(SynchronousTestCase):
    def parse(self, data: dict[str, Any], environ: dict[str, str] | None = None) -> tuple[AuditConfig | None, list[str]]:
        self.patch(os, "environ", environ if environ is not None else {})
        problems: list[str] = []
        return parse_audit(data, "audit", self.directory, problems), problems

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, "audit.key"), "w") as f:
            f.write("s3cret-audit-key-0123456789\n")

    def test_sources(self) -> None:
        secret = b"s3cret-audit-key-0123456789"
        config, problems = self.parse({"keyFile": "audit.key"})
        self.assertEqual((problems, config.key if config else None), ([], secret))
        config, _ = self.parse({"keyEnv": "AUDIT_KEY"}, {"AUDIT_KEY": secret.decode()})
        self.assertEqual(config.key if config else None, secret)
        config, _ = self.parse({"keyCredential": "audit.key"}, {"CREDENTIALS_DIRECTORY": self.directory})
        assert config is not None
        self.assertEqual((config.key, config.keySource), (secret, "keyCredential audit.key"))
        self.assertNotIn("s3cret", repr(config))

    def test_problemsNameTheKeyAndNeverShowIt(self) -> None:
        with open(os.path.join(self.directory, "short.key"), "w") as f:
            f.write("s3cret")
        cases = [
            ({"keyFile": "missing.key"}, {}, "audit.keyFile: cannot read", "No such file"),
            ({"keyFile": "short.key"}, {}, "audit.keyFile: the key is 6 byte(s); it needs at least 16", ""),
            ({"keyEnv": "AUDIT_KEY"}, {}, "audit.keyEnv: the environment variable AUDIT_KEY is not set", ""),
            ({"keyEnv": "AUDIT_KEY"}, {"AUDIT_KEY": "s3cret"}, "audit.keyEnv: the key is 6 byte(s)", ""),
            ({"keyCredential": "audit.key"}, {}, "audit.keyCredential: $CREDENTIALS_DIRECTORY is not set", ""),
            ({"keyCredential": "../audit.key"}, {"CREDENTIALS_DIRECTORY": self.directory}, "audit.keyCredential: expected a credential name", ""),
            ({"keyFile": "audit.key", "keyEnv": "X"}, {}, "audit.keyEnv: only one of keyFile, keyEnv, keyCredential", ""),
        ]
        for data, environ, start, more in cases:
            config, problems = self.parse(data, environ)
            self.assertIsNone(config)
            self.assertEqual(len(problems), 1, problems)
            self.assertTrue(problems[0].startswith(start) and more in problems[0], problems)
            self.assertNotIn("s3cret", problems[0])
