"""
C{audit.holdAnswers} and several replicas against a real PostgreSQL
server (TWISTED_MCP_TEST_POSTGRES; skipped when it cannot be reached unless
TWISTED_MCP_REQUIRE_POSTGRES=1, as in test_audit_postgres.py, whose
fixtures these tests share: a table per test, written by an INSERT-only
role).

- Through the real C{twistd -n mcp-gateway}: with C{holdAnswers: true}, the
  record of every call is in the table at the moment its answer reaches
  the client; without it, answers overtake their records (the control
  that shows the check can fail).
- Two audit logs, as two replicas (C{replica} set), writing one table at
  the same time from their own worker threads: one chain, every record in
  it, each naming its replica.
"""

from __future__ import annotations

import json
import threading

from twisted.internet.task import Clock

from twisted_mcp.policy.audit import AuditConfig, AuditLog, SynchronousThreads, VerifyResult, verify

from .conftest import server
from .test_audit_postgres import config, dsn, fields, psycopg, table, writer  # noqa: F401 (fixtures)


def run_calls(raw_gateway, tmp_path, config: AuditConfig, hold: bool, count: int) -> list[tuple[int, int]]:
    """
    C{count} tool calls one after the other; after each answer, at once,
    how many call records the table holds: (answers so far, records).
    """
    path = tmp_path / f"gateway-{hold}.yaml"
    audit = {"sink": "postgres", "dsn": config.dsn, "table": config.table, "holdAnswers": hold, "holdTimeout": 20}
    path.write_text(json.dumps({"mcpServers": {"echo": server("echo_fast")}, "audit": audit}))
    gw = raw_gateway(str(path))
    gw.initialize()
    seen = []
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        count_sql = f"SELECT count(*) FROM \"{config.table}\" WHERE method = 'tools/call'"
        before = conn.execute(count_sql).fetchone()[0]
        for n in range(1, count + 1):
            gw.send(
                {
                    "jsonrpc": "2.0",
                    "id": n,
                    "method": "tools/call",
                    "params": {"name": "echo__echo", "arguments": {"text": f"call {n}"}},
                }
            )
            answer = gw.response(n)
            stored = conn.execute(count_sql).fetchone()[0] - before
            assert answer["result"]["content"][0]["text"] == f"call {n}"
            seen.append((n, stored))
    gw.close_stdin()
    assert gw.wait(30) == 0, gw.stderr_text()[-3000:]
    return seen


def test_anAnsweredCallIsInTheTable(raw_gateway, tmp_path, config: AuditConfig) -> None:  # noqa: F811
    seen = run_calls(raw_gateway, tmp_path, config, hold=True, count=25)
    assert all(stored >= n for n, stored in seen), seen
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT result_bytes FROM \"{config.table}\" WHERE method = 'tools/call' ORDER BY seq").fetchall()
    expected = [
        len(
            json.dumps(
                {"jsonrpc": "2.0", "id": n, "result": {"content": [{"type": "text", "text": f"call {n}"}]}}, separators=(",", ":")
            )
        )
        + 1
        for n in range(1, 26)
    ]
    assert [r[0] for r in rows] == expected  # the size of the line the client got
    assert verify(config) == VerifyResult(True, 25, None, "25 record(s), seq 1 to 25: the hash chain is intact")


def test_withoutHoldAnswersAnswersOvertakeTheirRecords(raw_gateway, tmp_path, config: AuditConfig) -> None:  # noqa: F811
    """The control: the same check, without holdAnswers, sees answers before their records (batched 50 ms later)."""
    seen = run_calls(raw_gateway, tmp_path, config, hold=False, count=10)
    assert any(stored < n for n, stored in seen), seen


def test_twoReplicasWriteOneChain(config: AuditConfig) -> None:  # noqa: F811
    """
    Two audit logs (two replicas) write one table at the same time, each
    from its own thread and connection: PostgreSQL's advisory lock makes
    them take turns; the table holds one chain with every record, each
    naming the replica that wrote it, and C{audit verify} says so.
    """
    per_replica, errors = 60, []
    start = threading.Barrier(2)

    def replica(name: str) -> None:
        try:
            clock, threads = Clock(), SynchronousThreads()
            log = AuditLog(config, clock, threads, replica=name)
            log.BATCH_DELAY = 0
            log.start()
            start.wait(10)
            for n in range(per_replica):
                log.record(fields(n, id=f"{name}-{n}"))
            assert (log.healthy, log.queue_depth, log.failures) == (True, 0, 0)
            stopped = log.stop()
            assert stopped.called
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=replica, args=(name,)) for name in ("replica-a", "replica-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    total = 2 * per_replica
    assert verify(config) == VerifyResult(True, total, None, f"{total} record(s), seq 1 to {total}: the hash chain is intact")
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        rows = conn.execute(f'SELECT seq, id, record FROM "{config.table}" ORDER BY seq').fetchall()
    assert [r[0] for r in rows] == list(range(1, total + 1))
    by_replica: dict[str, list[str]] = {}
    for _, rid, record in rows:
        by_replica.setdefault(json.loads(record)["replica"], []).append(rid)
    assert {k: sorted(v) for k, v in by_replica.items()} == {
        name: sorted(f"{name}-{n}" for n in range(per_replica)) for name in ("replica-a", "replica-b")
    }
    # Interleaved: they really wrote at the same time (not one after the other).
    names = [json.loads(r[2])["replica"] for r in rows]
    assert sum(1 for a, b in zip(names, names[1:], strict=False) if a != b) > 1, names
