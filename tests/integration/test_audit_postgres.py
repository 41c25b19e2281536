"""
The PostgreSQL audit sink against a real server.

The server comes from TWISTED_MCP_TEST_POSTGRES, a libpq connection string
(default postgresql://postgres@127.0.0.1:5432/test); the role needs to
create tables and roles in that database (the tests create a writer role
with INSERT and SELECT only, as an operator would).  When the server cannot be reached these
tests are skipped, unless TWISTED_MCP_REQUIRE_POSTGRES=1 (set it in CI),
which makes them fail instead.  Each test writes to its own table, dropped
at the end.

The audit log runs on a Clock with SynchronousThreads, so each write is one
synchronous round trip and every wait is bounded by the server's own
timeouts.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from typing import Any, Iterator

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from twisted_mcp.policy.audit import (
    AuditConfig,
    AuditLog,
    SynchronousThreads,
    VerifyResult,
    init_postgres,
    postgres_setup_sql,
    verify,
)

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
def writer(dsn: str) -> Iterator[str]:
    """A role that may log in and nothing more (init_postgres grants it INSERT and SELECT)."""
    name = f"tmcp_writer_{uuid.uuid4().hex[:12]}"
    sql(dsn, f'CREATE ROLE "{name}" LOGIN')
    yield name
    sql(dsn, f'DROP OWNED BY "{name}"')
    sql(dsn, f'DROP ROLE "{name}"')


@pytest.fixture
def config(dsn: str, table: str, writer: str) -> AuditConfig:
    """The sink as the writer role, on tables set up by the privileged role."""
    init_postgres(dsn, table, writer)
    # A unique application_name lets a test find (and kill) the log's connection.
    return AuditConfig(sink="postgres", dsn=make_conninfo(dsn, user=writer, application_name=f"tmcp-{table}"), table=table)


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


def test_schemaCreatedByInitDb(dsn: str, table: str, config: AuditConfig) -> None:
    assert sql(dsn, "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL", table, f"{table}_schema") == [(True, True)]
    assert sql(dsn, f'SELECT version FROM "{table}_schema"') == [(2,)]
    indexes = {row[0] for row in sql(dsn, "SELECT indexname FROM pg_indexes WHERE tablename = %s", table)}
    assert {f"{table}_time", f"{table}_principal", f"{table}_id"} <= indexes
    h = Harness()
    log = h.start(config)
    assert log.healthy
    h.stop(log)
    init_postgres(dsn, table)  # a second run changes nothing
    assert sql(dsn, f'SELECT version FROM "{table}_schema"') == [(2,)]
    assert verify(config) == VerifyResult(True, 0, None, "no records yet")


def test_theWriterMayOnlyInsertAndSelect(dsn: str, table: str, writer: str, config: AuditConfig) -> None:
    """The gateway's role adds to the trail and reads it; it cannot change, erase or recreate it (defect 6)."""
    h = Harness()
    with capturedLogs() as events:
        log = h.start(config)
        for n in range(3):
            log.record(fields(n))
        assert (log.healthy, log.queue_depth, log.failures) == (True, 0, 0)
        h.stop(log)
    assert not any("may change or erase" in formatEvent(e) for e in events)
    assert verify(config) == ok(3)
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        for statement in (
            f'DELETE FROM "{table}"',
            f"UPDATE \"{table}\" SET principal = 'mallory'",
            f'TRUNCATE "{table}"',
            f'DELETE FROM "{table}_schema"',
            f'DROP TABLE "{table}"',
            f'CREATE TABLE "{table}_x" (a int)',
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert verify(config) == ok(3)


def test_noTableNoWrites(dsn: str, table: str, writer: str) -> None:
    """The gateway never creates its table: without init-db it says what to run, and keeps retrying."""
    config = AuditConfig(sink="postgres", dsn=make_conninfo(dsn, user=writer), table=table)
    h = Harness()
    with capturedLogs() as events:
        log = h.start(config)
    assert not log.healthy
    assert any(f"table {table} does not exist" in formatEvent(e) and "audit init-db" in formatEvent(e) for e in events)
    init_postgres(dsn, table, writer)
    log.record(fields(0))
    h.clock.advance(AuditLog.RETRY_DELAY)
    assert log.healthy
    h.stop(log)
    assert verify(config) == ok(1)


def test_aPrivilegedGatewayIsWarned(dsn: str, table: str) -> None:
    init_postgres(dsn, table)
    config = AuditConfig(sink="postgres", dsn=dsn, table=table)
    h = Harness()
    with capturedLogs() as events:
        log = h.start(config)
    h.stop(log)
    assert any("may change or erase the audit table" in formatEvent(e) for e in events)


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


def test_gatewaysRunAsAnInsertOnlyRole(dsn: str, table: str, writer: str, raw_gateway, tmp_path) -> None:
    """
    Through the real commands: `twisted-mcp audit init-db` (as the privileged
    role) creates the table and grants the writer role INSERT and SELECT;
    two gateways run as that role, write one table at the same time, and
    the chain verifies; the role cannot erase what they wrote.
    """
    from .conftest import bin_path, gateway_argv, gateway_env, server

    def write(name: str, audit: dict[str, Any]) -> str:
        path = tmp_path / name
        path.write_text(json.dumps({"mcpServers": {"echo": server("echo_fast")}, "audit": {"sink": "postgres", "table": table, **audit}}))
        return str(path)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([bin_path("twisted-mcp"), *args], capture_output=True, text=True, timeout=60, env=gateway_env())

    writer_dsn = make_conninfo(dsn, user=writer)
    config = write("gateway.yaml", {"dsn": writer_dsn})
    printed = command("audit", "init-db", "--config", config, "--grant", writer, "--print")
    assert printed.returncode == 0, printed.stderr
    assert f'GRANT SELECT, INSERT ON "{table}", "{table}_schema" TO "{writer}"' in printed.stdout
    assert sql(dsn, "SELECT to_regclass(%s)", table) == [(None,)]  # --print changes nothing

    denied = command("audit", "init-db", "--config", config)  # as the writer: it may not create tables
    assert denied.returncode == 69, denied.stdout + denied.stderr
    assert "permission denied" in denied.stderr
    created = command("audit", "init-db", "--config", config, "--dsn", dsn, "--grant", writer)
    assert created.returncode == 0, created.stderr
    assert f"{writer} may INSERT and SELECT" in created.stdout

    gateways = [raw_gateway(config, argv=gateway_argv(config)) for _ in range(2)]
    for gw in gateways:
        gw.initialize()
    pending = []
    for n in range(20):
        for gw in gateways:
            gw.send({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "echo__echo", "arguments": {"text": str(n)}}})
            pending.append((gw, n))
    for gw, n in pending:
        assert "result" in gw.response(n)
    for gw in gateways:
        gw.close_stdin()
        assert gw.wait(30) == 0
        assert "may change or erase" not in gw.stderr_text()
    assert sql(dsn, f"SELECT count(*) FROM \"{table}\" WHERE method = 'tools/call'") == [(40,)]
    verified = command("audit", "verify", "--config", config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with psycopg.connect(writer_dsn, autocommit=True) as conn:
        for statement in (f'DELETE FROM "{table}"', f"UPDATE \"{table}\" SET principal = 'x'", f'TRUNCATE "{table}"'):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_keyedChainInPostgres(dsn: str, table: str, config: AuditConfig) -> None:
    """A keyed chain in a table; the privileged role (which may UPDATE) still cannot rewrite it unseen."""
    import attrs

    keyed = attrs.evolve(config, key=b"k" * 32, keySource="test")
    h = Harness()
    log = h.start(keyed)
    for n in range(3):
        log.record(fields(n))
    h.stop(log)
    assert verify(keyed).ok
    assert not verify(config).ok  # no key: it says it needs one
    rows = sql(dsn, f'SELECT seq, record FROM "{table}" ORDER BY seq')
    assert all(json.loads(r[1])["digest"].startswith("hmac-sha256:") for r in rows)
    record = json.loads(rows[1][1])
    record["principal"] = "mallory"
    sql(dsn, f'UPDATE "{table}" SET principal = %s, record = %s WHERE seq = 2', "mallory", json.dumps(record))
    result = verify(keyed)
    assert (result.ok, result.first_bad) == (False, 2), result
    assert "the record was modified" in result.message


def downgrade(dsn: str, table: str) -> None:
    """Make a table what `audit init-db` of schema version 1 left (before records had `protocol`)."""
    sql(dsn, f'ALTER TABLE "{table}" DROP COLUMN protocol')
    sql(dsn, f'UPDATE "{table}_schema" SET version = 1')


def test_aTableOfTheFirstSchemaIsWrittenUntilInitDbMigratesIt(dsn: str, table: str, writer: str, config: AuditConfig) -> None:
    """
    A table written before records had `protocol` verifies as it is.  A
    gateway that knows the field goes on writing to it (whole records,
    without the column it lacks, and a warning naming `audit init-db`);
    `init-db` adds the column and fills it from those records, and the
    same gateway writes it from then on: old and new rows verify as one
    chain, and the column is checked against the record like the others.
    """
    h = Harness()
    log = h.start(config)
    log.record(fields(0))
    log.record(fields(1))
    h.stop(log)
    downgrade(dsn, table)
    assert verify(config) == ok(2)

    with capturedLogs() as events:
        log = h.start(config)
        log.record(fields(2, protocol="2025-11-25"))
    assert (log.healthy, log.failures, log.queue_depth) == (True, 0, 0)
    assert any(
        f"audit table {table} has schema version 1" in formatEvent(e) and "(protocol)" in formatEvent(e) and "audit init-db" in formatEvent(e)
        for e in events
    )
    assert verify(config) == ok(3)

    init_postgres(dsn, table, writer)  # while that gateway runs
    assert sql(dsn, f'SELECT version FROM "{table}_schema"') == [(2,)]
    log.record(fields(3, protocol="2026-07-28"))
    assert (log.healthy, log.failures) == (True, 0)
    h.stop(log)
    assert verify(config) == ok(4)
    assert sql(dsn, f'SELECT seq, protocol FROM "{table}" ORDER BY seq') == [(1, None), (2, None), (3, "2025-11-25"), (4, "2026-07-28")]

    sql(dsn, f"UPDATE \"{table}\" SET protocol = '2024-11-05' WHERE seq = 4")
    assert verify(config) == VerifyResult(False, 3, 4, "seq 4: column protocol does not match the record (the row was modified)")
    sql(dsn, f"UPDATE \"{table}\" SET record = replace(record, '\"2026-07-28\"', '\"2024-11-05\"') WHERE seq = 4")
    assert verify(config) == VerifyResult(False, 3, 4, "seq 4: digest does not match its content (the record was modified)")


def test_aNewerSchemaIsNotWritten(dsn: str, table: str, config: AuditConfig) -> None:
    sql(dsn, f'UPDATE "{table}_schema" SET version = 3')
    h = Harness()
    with capturedLogs() as events:
        log = h.start(config)
    assert not log.healthy
    assert any(f"table {table} has schema version 3, this gateway writes version 2" in formatEvent(e) for e in events)
    h.stop(log)


def test_thePrintedSetupSqlMigratesAnOldTableToo(dsn: str, table: str, writer: str, config: AuditConfig) -> None:
    """`audit init-db --print` is for operators who run the SQL themselves: run twice, on an old table, it migrates it."""
    h = Harness()
    log = h.start(config)
    log.record(fields(0))
    h.stop(log)
    downgrade(dsn, table)
    log = h.start(config)
    log.record(fields(1, protocol="2025-11-25"))  # written to the old table: no column for it yet
    h.stop(log)
    for _ in range(2):
        for statement in postgres_setup_sql(table, writer):
            sql(dsn, statement)
    assert sql(dsn, f'SELECT version FROM "{table}_schema"') == [(2,)]
    log = h.start(config)
    log.record(fields(2, protocol="2026-07-28"))
    assert (log.healthy, log.failures) == (True, 0)
    h.stop(log)
    assert sql(dsn, f'SELECT seq, protocol FROM "{table}" ORDER BY seq') == [(1, None), (2, "2025-11-25"), (3, "2026-07-28")]
    assert verify(config) == ok(3)
