"""
The PostgreSQL audit sink against a real server.

The server comes from TWISTED_MCP_TEST_POSTGRES, a libpq connection string
(default postgresql://postgres@127.0.0.1:5432/test); the role needs to
create tables in that database.  When the server cannot be reached these
tests are skipped, unless TWISTED_MCP_REQUIRE_POSTGRES=1 (set it in CI),
which makes them fail instead.  Each test writes to its own table, dropped
at the end.

The audit log runs on a Clock with SynchronousThreads, so each write is one
synchronous round trip and every wait is bounded by the server's own
timeouts.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Iterator

import pytest
from twisted.internet.task import Clock

from twisted_mcp.policy.audit import AuditConfig, AuditLog, SynchronousThreads, VerifyResult, verify

psycopg = pytest.importorskip("psycopg", reason="the postgres audit sink needs psycopg: pip install 'psycopg[binary]'")
from psycopg.conninfo import make_conninfo  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"



@pytest.fixture(autouse=True)
def _write_at_once(monkeypatch):
    """These tests drive the AuditLog record by record: no batching delay."""
    from twisted_mcp.policy.audit import AuditLog

    monkeypatch.setattr(AuditLog, "BATCH_DELAY", 0)


@pytest.fixture(scope="module")
def dsn() -> str:
    dsn = os.environ.get("TWISTED_MCP_TEST_POSTGRES", DEFAULT_DSN)
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as e:
        reason = (
            f"PostgreSQL is not reachable at {AuditConfig(sink='postgres', dsn=dsn).describe().rsplit(' table ', 1)[0]} "
            f"({' '.join(str(e).split())}); set TWISTED_MCP_TEST_POSTGRES "
            "to a connection string for a server where the tests may create tables"
        )
        if os.environ.get("TWISTED_MCP_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (TWISTED_MCP_REQUIRE_POSTGRES=1 makes this a failure)")
        pytest.skip(reason + ", or set TWISTED_MCP_REQUIRE_POSTGRES=1 to fail instead of skipping")
    return dsn


@pytest.fixture
def table(dsn: str) -> Iterator[str]:
    name = f"audit_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        conn.execute(f'DROP TABLE IF EXISTS "{name}_schema"')


@pytest.fixture
def config(dsn: str, table: str) -> AuditConfig:
    # A unique application_name lets a test find (and kill) the log's connection.
    return AuditConfig(sink="postgres", dsn=make_conninfo(dsn, application_name=f"tmcp-{table}"), table=table)


def sql(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(query, params or None)
        return cursor.fetchall() if cursor.description else []


def fields(n: int, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"req-{n}",
        "time": 1700000000.0 + n,
        "principal": "alice",
        "roles": ["dev", "ops"],
        "session": "stdio-1",
        "method": "tools/call",
        "tool": "github__list_issues",
        "backend": "github",
        "decision": "allow",
        "reason": None,
        "outcome": "ok",
        "error_code": None,
        "latency_ms": 12.25,
        "result_bytes": 420,
        "arguments_digest": "sha256:" + "0" * 64,
    }
    record.update(extra)
    return record


class Harness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.threads = SynchronousThreads()

    def start(self, config: AuditConfig) -> AuditLog:
        log = AuditLog(config, self.clock, self.threads)
        d = log.start()
        assert d.called
        return log

    def stop(self, log: AuditLog) -> None:
        d = log.stop()
        assert d.called
        assert self.clock.getDelayedCalls() == []


def ok(count: int) -> VerifyResult:
    return VerifyResult(True, count, None, f"{count} record(s), seq 1 to {count}: the hash chain is intact")


def test_schemaCreatedAtStart(dsn: str, table: str, config: AuditConfig) -> None:
    h = Harness()
    log = h.start(config)
    assert log.healthy
    assert sql(dsn, "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL", table, f"{table}_schema") == [(True, True)]
    assert sql(dsn, f'SELECT version FROM "{table}_schema"') == [(1,)]
    indexes = {row[0] for row in sql(dsn, "SELECT indexname FROM pg_indexes WHERE tablename = %s", table)}
    assert {f"{table}_time", f"{table}_principal", f"{table}_id"} <= indexes
    h.stop(log)
    # A second start finds the schema as it is.
    log = h.start(config)
    assert log.healthy
    assert sql(dsn, f'SELECT version FROM "{table}_schema"') == [(1,)]
    h.stop(log)
    assert verify(config) == VerifyResult(True, 0, None, "no records yet")


def test_chainAndRestart(dsn: str, table: str, config: AuditConfig) -> None:
    h = Harness()
    log = h.start(config)
    for n in range(5):
        log.record(fields(n, principal=f"user{n}"))
    assert (log.healthy, log.queue_depth, log.failures) == (True, 0, 0)
    h.stop(log)
    assert verify(config) == ok(5)
    rows = sql(dsn, f'SELECT seq, id, principal, roles, latency_ms, result_bytes FROM "{table}" ORDER BY seq')
    assert rows == [(n + 1, f"req-{n}", f"user{n}", '["dev","ops"]', 12.25, 420) for n in range(5)]

    log = h.start(config)
    log.record(fields(5))
    log.record(fields(6, outcome="error", error_code=-32603))
    h.stop(log)
    assert verify(config) == ok(7)
    assert sql(dsn, f'SELECT seq, error_code FROM "{table}" WHERE seq > 5 ORDER BY seq') == [(6, None), (7, -32603)]


def test_twoGatewaysShareOneChain(dsn: str, table: str, config: AuditConfig) -> None:
    h = Harness()
    one, two = h.start(config), h.start(config)
    for n in range(6):
        (one if n % 2 else two).record(fields(n))
    h.stop(one)
    h.stop(two)
    assert verify(config) == ok(6)


def test_tamperedRowCaught(dsn: str, table: str, config: AuditConfig) -> None:
    h = Harness()
    log = h.start(config)
    for n in range(4):
        log.record(fields(n))
    h.stop(log)
    assert verify(config) == ok(4)

    sql(dsn, f"UPDATE \"{table}\" SET principal = 'mallory' WHERE seq = 3")
    assert verify(config) == VerifyResult(False, 2, 3, "seq 3: column principal does not match the record (the row was modified)")
    sql(dsn, f"UPDATE \"{table}\" SET principal = 'alice' WHERE seq = 3")
    assert verify(config) == ok(4)

    sql(dsn, f"UPDATE \"{table}\" SET record = replace(record, '\"alice\"', '\"mallory\"'), principal = 'mallory' WHERE seq = 2")
    assert verify(config) == VerifyResult(False, 1, 2, "seq 2: digest does not match its content (the record was modified)")

    sql(dsn, f'DELETE FROM "{table}" WHERE seq = 2')
    assert verify(config) == VerifyResult(False, 1, 3, "seq 1 -> 3: record 2 is missing")


def test_databaseGoesAwayAndComesBack(dsn: str, table: str, config: AuditConfig) -> None:
    h = Harness()
    log = h.start(config)
    log.record(fields(0))
    assert log.healthy

    pids = [row[0] for row in sql(dsn, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", f"tmcp-{table}")]
    assert len(pids) == 1
    assert sql(dsn, "SELECT pg_terminate_backend(%s)", pids[0]) == [(True,)]
    deadline = time.monotonic() + 10
    while sql(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", pids[0]):
        assert time.monotonic() < deadline, "the terminated backend did not go away"
        time.sleep(0.05)

    log.record(fields(1))
    log.record(fields(2))
    assert (log.healthy, log.queue_depth, log.failures) == (False, 2, 0)
    assert len(h.clock.getDelayedCalls()) == 1  # the retry

    h.clock.advance(AuditLog.RETRY_DELAY)  # reconnects and writes the queue
    assert (log.healthy, log.queue_depth, log.failures) == (True, 0, 0)
    log.record(fields(3))
    h.stop(log)
    assert verify(config) == ok(4)
    assert [row[0] for row in sql(dsn, f'SELECT id FROM "{table}" ORDER BY seq')] == ["req-0", "req-1", "req-2", "req-3"]


def test_unreachableAtStart(table: str) -> None:
    """Nothing listens on the port: start still succeeds, unhealthy, and keeps retrying."""
    config = AuditConfig(sink="postgres", dsn="postgresql://postgres@127.0.0.1:1/test?connect_timeout=2", table=table)
    h = Harness()
    log = h.start(config)
    assert not log.healthy
    log.record(fields(0))
    assert log.queue_depth == 1
    h.clock.advance(AuditLog.RETRY_DELAY)
    assert not log.healthy
    d = log.stop()
    h.clock.advance(AuditLog.STOP_TIMEOUT)
    assert d.called and log.failures == 1
    assert h.clock.getDelayedCalls() == []
    result = verify(config)
    assert not result.ok and result.message.startswith("cannot connect to host=127.0.0.1 port=1 dbname=test user=postgres")
