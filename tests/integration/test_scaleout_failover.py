"""
A replica killed under load (issue 15): three replicas of the real daemon
behind HAProxy, sharing the machine's Redis (C{state:}, so handshake-era
HTTP sessions are shared) and one PostgreSQL audit table
(C{audit.holdAnswers: true}: an answer leaves only once its record is
committed).  Stateless-era clients (threads, plain HTTP) and handshake-era
sessions (the official SDK's Streamable HTTP client) call C{cluster__echo}
with a unique text each, taking 0.2 s; the replica serving the first
session is killed with SIGKILL halfway through.

It shows: no answer carries another call's text; the stateless calls that
fail are only calls that were in flight on the dead replica; every session
goes on through another replica with the same SDK client (the session's
record in Redis lets the replica rebuild it: no re-initialization); and
`twisted-mcp audit verify` passes over the one table every replica wrote,
which holds a record of every call that was answered.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from typing import Any

import anyio
import pytest
from mcp import MCPError

from tests import mcpclient as mc

from .cluster import (  # noqa: F401  (fixtures)
    Load,
    audit_records,
    audit_table,
    call_direct,
    cluster,
    redis_namespace,
    state_section,
)
from .conftest import bin_path, gateway_env

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

SESSIONS = 3
THREADS = 6
CALL_SECONDS = 0.2
BEFORE_KILL = 2.5
AFTER_KILL = 4.0


class SessionCalls:
    """What the handshake-era sessions did: per session, (text, sent, done, answer text or the error)."""

    def __init__(self) -> None:
        self.pids: dict[int, str] = {}
        self.pids_after: dict[int, str] = {}
        self.calls: dict[int, list[tuple[str, float, float, str | None, str | None]]] = {k: [] for k in range(SESSIONS)}
        self.stop = threading.Event()

    async def one(self, url: str, k: int) -> None:
        # A new connection to the proxy for every request (no keep-alive): HAProxy answers a request
        # that was in flight on a replica that died with 502 only when it is the first request on its
        # client connection; on a kept-alive one it closes the connection without an answer (so that
        # the client retries), and the SDK's transport lets that one POST's exception end the whole
        # client.  With 502 the SDK fails that call alone and the session goes on.
        import httpx2

        limits = httpx2.Limits(max_keepalive_connections=0)
        async with (
            httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(30, read=60)) as http_client,
            mc.connect_http(url, read_timeout=15, http_client=http_client) as client,
        ):
            self.pids[k] = await mc.call_text(client, "cluster__pid")
            n = 0
            while not self.stop.is_set():
                text = f"h{k}-{n}-{uuid.uuid4().hex[:8]}"
                sent = time.monotonic()
                try:
                    got: str | None = await mc.call_text(client, "cluster__echo", {"text": text, "seconds": CALL_SECONDS})
                    error = None
                except (MCPError, mc.ToolCallError) as e:
                    got, error = None, f"{type(e).__name__}: {e}"
                self.calls[k].append((text, sent, time.monotonic(), got, error))
                n += 1
            # The same client (same session id), at the end: which replica's backend answers now.
            self.pids_after[k] = await mc.call_text(client, "cluster__pid")

    async def all(self, url: str) -> None:
        async with anyio.create_task_group() as group:
            for k in range(SESSIONS):
                group.start_soon(self.one, url, k)


def test_a_replica_killed_under_load(cluster, redis_namespace, audit_table, tmp_path):  # noqa: F811
    url, namespace = redis_namespace
    dsn, table = audit_table
    config = {
        "state": state_section(url, namespace),
        "audit": {"sink": "postgres", "dsn": dsn, "table": table, "holdAnswers": True, "recordArguments": True},
    }
    c = cluster(config)
    backend_pid = {call_direct(r, "cluster__pid", {}).text: r for r in c.replicas}
    assert len(backend_pid) == 3

    sessions = SessionCalls()
    failure: list[BaseException] = []

    def run_sessions() -> None:
        try:
            mc.run(sessions.all, f"{c.url}/mcp", timeout=90)
        except BaseException as e:  # noqa: BLE001 - reported below
            failure.append(e)

    session_thread = threading.Thread(target=run_sessions, daemon=True)
    session_thread.start()
    load = Load(
        c.port, THREADS, "cluster__echo", lambda i, n: {"text": f"s{i}-{n}-{uuid.uuid4().hex[:8]}", "seconds": CALL_SECONDS}
    ).start()

    deadline = time.monotonic() + 30
    while len(sessions.pids) < SESSIONS and not failure:
        assert time.monotonic() < deadline, "the sessions never started"
        time.sleep(0.05)
    assert not failure, failure
    time.sleep(BEFORE_KILL)
    victim = backend_pid[sessions.pids[0]]
    killed_at = victim.kill()
    time.sleep(AFTER_KILL)
    sessions.stop.set()
    calls = load.stop()
    session_thread.join(60)
    assert not session_thread.is_alive(), "the sessions did not finish"
    assert not failure, failure

    # Stateless-era clients: nothing misdelivered; only calls in flight on the dead replica failed.
    answered = [(args, a) for args, a in calls if a.ok]
    assert all(a.text == args["text"] for args, a in answered), [(args, a) for args, a in answered if a.text != args["text"]][:5]
    failed = [a for _, a in calls if not a.ok]
    shown = [(f"sent {a.sent - killed_at:+.3f} s", f"done {a.done - killed_at:+.3f} s", a) for a in failed]
    # In flight at the kill: sent before the replica was gone (it takes a moment to die), answered after the signal.
    gone_at = victim.gone_at
    assert gone_at is not None
    assert all(a.sent < gone_at and killed_at <= a.done for a in failed), f"calls not in flight at the kill failed: {shown}"
    assert all(a.served_by in (victim.name, None) for a in failed), shown
    assert len(failed) <= THREADS, shown
    survivors = {r.name for r in c.replicas} - {victim.name}
    assert {a.served_by for _, a in answered if a.sent > killed_at + 1} == survivors

    # Sessions: nothing misdelivered; at most the call in flight at the kill failed; each went on.
    for k, made in sessions.calls.items():
        assert all(got == text for text, _, _, got, error in made if error is None), made
        lost = [(text, error) for text, sent, done, got, error in made if error is not None]
        in_flight = [text for text, sent, done, got, error in made if error is not None and sent < killed_at <= done]
        assert len(lost) == len(in_flight) <= 1, (k, lost)
        after = [text for text, sent, done, got, error in made if error is None and sent > killed_at]
        assert len(after) >= 5, (k, made[-10:])
    # The victim's session is now served by a survivor's backend, through the same client.
    assert backend_pid[sessions.pids_after[0]] is not victim
    assert all(backend_pid[pid].name in survivors for pid in sessions.pids_after.values())

    # One trail from every replica: it verifies, and every answered call is in it.
    verified = subprocess.run(
        [bin_path("twisted-mcp"), "audit", "verify", "--config", str(c.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=gateway_env(),
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    recorded: dict[str, dict[str, Any]] = {}
    for record in audit_records(dsn, table):
        arguments = record.get("arguments")
        if record.get("method") == "tools/call" and isinstance(arguments, dict) and "text" in arguments:
            recorded[arguments["text"]] = record
    texts = [args["text"] for args, _ in answered]
    texts += [text for made in sessions.calls.values() for text, _, _, got, error in made if error is None]
    missing = [t for t in texts if t not in recorded]
    assert not missing, f"{len(missing)} of {len(texts)} answered calls have no audit record, e.g. {missing[:5]}"
    assert all(recorded[t]["outcome"] == "ok" for t in texts)
    replicas_seen = {record.get("replica") for record in recorded.values()}
    assert replicas_seen == {r.name for r in c.replicas}, replicas_seen
