"""
Limits toward clients, through the real `twistd ... mcp-gateway` command:
what the gateway queues for a client that does not read, calls in flight
per session, connections to the sockets and to the admin endpoint.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time

from twisted_mcp.mcp import errors

from .conftest import LineClient, bin_path, gateway_env, read_until_closed, result_text, server, until, wait_for_path, wait_gone


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


# -- defect 7: progress toward a client that does not read -----------------------


def test_progress_flood_toward_a_stdio_client_that_does_not_read_stays_bounded(raw_gateway, write_config):
    """100 MB of progress for one call, while the client reads nothing: the
    gateway keeps only the latest progress (its memory stays bounded), says
    so in its log, and the answer arrives whole once the client reads."""
    gw = raw_gateway(write_config({"flood": server("progress_flood")}))
    gw.initialize()
    gw.request("tools/list")
    pid = gw.proc.pid
    base = _status_kb(pid, "VmRSS")
    gw.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "flood__flood", "arguments": {"count": 2000, "size": 50_000}, "_meta": {"progressToken": "tok"}}})
    gw.wait_for_log("flood done", timeout=120)
    time.sleep(1)  # the last of the backend's pipe
    grown = _status_kb(pid, "VmHWM") - base  # the peak, not only what is left
    assert grown < 40_000, f"the gateway grew {grown} KB for progress its client did not read"
    assert "keeping only the latest progress notification of each call" in gw.stderr_text()

    answer = gw.response(1, timeout=60)
    assert result_text(answer) == "flooded 2000"
    progress = [m["params"] for m in gw.seen if m.get("method") == "notifications/progress"]
    assert 0 < len(progress) < 2000
    assert all(p["progressToken"] == "tok" for p in progress)
    steps = [p["progress"] for p in progress]
    assert steps == sorted(steps)  # dropped, never reordered
    assert "progress notification(s) were dropped" in gw.wait_for_log("were dropped")


# -- defect 21: calls in flight per session -------------------------------------------


def test_calls_in_flight_per_session_are_capped(raw_gateway, write_config):
    gw = raw_gateway(write_config({"slow": server("slow")}, maxCallsInFlight=3))
    gw.initialize()
    gw.request("tools/list")
    for rid in (1, 2, 3):
        gw.send({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                 "params": {"name": "slow__sleep", "arguments": {"seconds": 60}}})
    refused = gw.request("tools/call", {"name": "slow__echo", "arguments": {"text": "one too many"}})
    assert refused["error"]["code"] == errors.TOO_MANY_CALLS
    assert refused["error"]["data"] == {"limit": 3}
    assert "maxCallsInFlight" in refused["error"]["message"]
    assert "maxCallsInFlight" in gw.wait_for_log("refusing more until some are answered")
    gw.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
    answer = until(lambda: (lambda a: a if "result" in a else None)(
        gw.request("tools/call", {"name": "slow__echo", "arguments": {"text": "room again"}})), what="room")
    assert result_text(answer) == "room again"


# -- defect 8: connections to the sockets -----------------------------------------------


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(15)
    s.connect(path)
    return s


def test_connection_caps_keep_identified_clients_served(daemon, tmp_path):
    """Idle connections up to maxClientsPerPeer: the next is refused with
    -31011; the client already identified keeps working, a crashed backend
    still restarts, and connections that never initialize are dropped."""
    sock = str(tmp_path / "gw.sock")
    pid, log = daemon(
        {"crashy": server("crashy")}, f"unix:{sock}", maxClientsPerPeer=4, handshakeTimeout=3, restartDelay=0.1
    )
    wait_for_path(sock)
    client = LineClient(sock)
    client.initialize()
    first = int(result_text(client.request(1, "tools/call", {"name": "crashy__pid", "arguments": {}})))
    idle = [_connect(sock) for _ in range(3)]
    refused = LineClient("", sock=_connect(sock))
    error = refused.read()["error"]
    assert error["code"] == errors.TOO_MANY_CONNECTIONS and error["data"] == {"limit": "maxClientsPerPeer", "value": 4}
    assert f"uid {os.getuid()}" in error["message"]
    assert read_until_closed(refused.sock) == b""  # and closed
    refused.close()

    assert client.request(2, "tools/call", {"name": "crashy__crash", "arguments": {}})["error"]["code"] == errors.BACKEND_LOST
    restarted = until(
        lambda: (lambda a: "result" in a and int(result_text(a)))(client.request(3, "tools/call", {"name": "crashy__pid", "arguments": {}})),
        what="the backend to restart",
    )
    assert restarted != first

    for s in idle:  # never initialized: dropped after handshakeTimeout
        assert b"handshakeTimeout" in read_until_closed(s)
        s.close()
    late = LineClient(sock)
    assert late.initialize()["result"]["serverInfo"]
    late.close()
    client.close()
    with open(log) as f:
        text = f.read()
    assert "refusing client connections" in text and "maxClientsPerPeer" in text
    assert "no initialize (or a 2026-07-28 request) within 3 s (handshakeTimeout)" in text
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()


def test_descriptors_are_kept_for_backends(write_config, tmp_path):
    """With a small open-file limit, client connections stop while
    descriptorReserve descriptors are left, and a crashed backend still
    restarts with them."""
    limit, reserve = 256, 216
    sock = str(tmp_path / "gw.sock")
    config = write_config({"crashy": server("crashy")}, descriptorReserve=reserve, restartDelay=0.1)
    logfile = tmp_path / "fd.log"

    def small_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, limit))

    proc = subprocess.Popen(
        [bin_path("twistd"), "-n", "--pidfile=", "--logfile", str(logfile), "mcp-gateway", "--config", config, "--listen", f"unix:{sock}"],
        env=gateway_env(), cwd=str(tmp_path), stdin=subprocess.DEVNULL, preexec_fn=small_limit,
    )
    clients: list[LineClient] = []
    try:
        wait_for_path(sock)
        client = LineClient(sock)
        clients.append(client)
        client.initialize()
        first = int(result_text(client.request(1, "tools/call", {"name": "crashy__pid", "arguments": {}})))
        error = None
        for _ in range(limit):
            c = LineClient(sock)
            clients.append(c)
            c.send({"jsonrpc": "2.0", "id": 0, "method": "ping"})
            answer = c.read()
            if "error" in answer:
                error = answer["error"]
                break
        assert error is not None, "every connection was taken"
        assert error["code"] == errors.TOO_MANY_CONNECTIONS and error["data"] == {"limit": "descriptorReserve", "value": reserve}
        assert len(clients) > 2  # some were admitted before the reserve was reached
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) <= limit - reserve + 1

        assert client.request(2, "tools/call", {"name": "crashy__crash", "arguments": {}})["error"]["code"] == errors.BACKEND_LOST
        restarted = until(
            lambda: (lambda a: "result" in a and int(result_text(a)))(client.request(3, "tools/call", {"name": "crashy__pid", "arguments": {}})),
            what="the backend to restart",
        )
        assert restarted != first
        text = logfile.read_text()
        assert f"open-file limit raised from 64 to {limit}" in text
        assert "kept for the backends (gateway.descriptorReserve)" in text
    finally:
        for c in clients:
            c.close()
        proc.terminate()
        proc.wait(30)
