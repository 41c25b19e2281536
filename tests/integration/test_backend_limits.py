"""
Backends under pressure, through the real daemonized `twistd ... mcp-gateway
--listen ...`: credentials in an HTTP backend's address, a busy shared
stdio backend, caps on per-session instances, and descendants that start
sessions of their own.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time

from twisted_mcp.mcp import errors

from .conftest import (
    LineClient,
    alive,
    bin_path,
    free_port,
    gateway_env,
    processes,
    result_text,
    server,
    until,
    wait_for_path,
    wait_gone,
)
from .test_daemon_ops import ADMIN_TOKEN, _admin, _servers_below
from .test_http import http_server  # noqa: F401 (a fixture)


def test_url_credentials_authenticate_and_are_never_shown(daemon, http_server, write_config, tmp_path):  # noqa: F811
    remote = http_server("http_faults")
    closed = free_port()
    secrets = ("s3cret-pw", "SECRETPATHTOKEN", "QUERYSECRET")
    servers = {
        "auth": {"url": f"http://alice:s3cret-pw@127.0.0.1:{remote.port}/mcp"},
        "hidden": {"url": f"http://bob:s3cret-pw@127.0.0.1:{closed}/mcp/SECRETPATHTOKEN?key=QUERYSECRET"},
    }
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    pid, log = daemon(servers, f"unix:{sock}", admin=f"tcp:{port}:interface=127.0.0.1", adminToken=ADMIN_TOKEN)
    wait_for_path(sock)
    client = LineClient(sock)
    client.initialize()
    assert result_text(client.request(1, "tools/call", {"name": "auth__echo", "arguments": {"text": "hi"}})) == "hi"
    assert remote.admin("stats")["last_authorization"] == "Basic " + base64.b64encode(b"alice:s3cret-pw").decode()

    status = until(lambda: (s := _admin(port, "/status"))[0] == 200 and "cannot connect" in s[1] and s[1], what="/status")
    _, page = _admin(port, "/status?format=html")
    _, metrics = _admin(port, "/metrics")
    with open(log) as f:
        logged = f.read()
    assert "cannot connect to http://127.0.0.1" in logged
    checked = subprocess.run(
        [bin_path("twisted-mcp"), "check-config", write_config(servers)],
        capture_output=True, text=True, timeout=60, env=gateway_env(),
    )
    assert checked.returncode == 0, checked.stderr
    for where, text in (("/status", status), ("status page", page), ("/metrics", metrics), ("log", logged),
                        ("check-config", checked.stdout + checked.stderr)):
        for secret in secrets:
            assert secret not in text, f"{secret} shown in {where}"
    client.close()


def _call(rid, name: str, **arguments) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def test_a_busy_shared_backend_refuses_calls_instead_of_being_restarted(daemon, tmp_path):
    """One client's large requests to a backend that is busy (not reading its
    stdin) are refused at once beyond the queue bound (-31007); the backend
    is not killed, and every call it accepted, anyone's, is answered."""
    sock = str(tmp_path / "gw.sock")
    pid, log = daemon({"w": server("wedged")}, f"unix:{sock}", maxMessageBytes=256 * 1024, callTimeout=60)
    wait_for_path(sock)
    a, b = LineClient(sock), LineClient(sock)
    a.initialize("a")
    b.initialize("b")
    first = result_text(b.request(1, "tools/call", {"name": "w__pid", "arguments": {}}))
    b.send(_call(2, "w__busy", seconds=4))
    time.sleep(0.5)  # the backend is now asleep, not reading
    for i in range(30):
        a.send(_call(f"big{i}", "w__echo", text="z" * 60000))
    answers = [a.read() for _ in range(30)]  # the refusals come first, at once
    assert {x["id"] for x in answers} == {f"big{i}" for i in range(30)}
    refused = [x for x in answers if "error" in x]
    assert refused, "nothing was refused"
    assert {x["error"]["code"] for x in refused} == {errors.BUSY}, refused
    assert "'w' is busy" in refused[0]["error"]["message"]
    assert refused[0]["error"]["data"] == {"backend": "w", "limit": 1 << 20}
    assert all(result_text(x) == "z" * 60000 for x in answers if "error" not in x)
    assert result_text(b.answer(2)) == "done"
    assert result_text(b.request(3, "tools/call", {"name": "w__pid", "arguments": {}})) == first
    with open(log) as f:
        assert "restarting" not in f.read()
    a.close()
    b.close()


def test_per_session_instances_are_capped_and_stopped_when_idle(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    own = server("slow", perSession=True, maxInstances=2, idleTimeout=2)
    pid, log = daemon({"own": own}, f"unix:{sock}")
    wait_for_path(sock)
    a, b, c = LineClient(sock), LineClient(sock), LineClient(sock)
    for client, name in ((a, "a"), (b, "b"), (c, "c")):
        client.initialize(name)
    own_a = int(result_text(a.request(1, "tools/call", {"name": "own__pid", "arguments": {}})))
    own_b = int(result_text(b.request(1, "tools/call", {"name": "own__pid", "arguments": {}})))
    refused = c.request(1, "tools/call", {"name": "own__pid", "arguments": {}})
    assert refused["error"]["code"] == errors.BUSY, refused
    assert refused["error"]["data"] == {"backend": "own", "limit": 2, "cap": "maxInstances"}
    assert _servers_below(pid, "slow") == {own_a, own_b}
    a.close()  # a's session ends: its instance stops, and c may have one
    assert wait_gone({own_a}, 15) == set()
    own_c = int(result_text(c.request(2, "tools/call", {"name": "own__pid", "arguments": {}})))
    # Idle for idleTimeout: stopped; the session stays, the next call starts a new one.
    assert wait_gone({own_b, own_c}, 15) == set()
    again = int(result_text(b.request(2, "tools/call", {"name": "own__pid", "arguments": {}})))
    assert again not in (own_a, own_b, own_c)
    with open(log) as f:
        assert "its instance of backend own had no call for 2 s; stopping it" in f.read()
    b.close()
    c.close()


def test_per_session_instances_are_capped_per_principal(daemon, tmp_path):
    first, second = str(tmp_path / "one.sock"), str(tmp_path / "two.sock")
    identity = {
        "identity": {"listeners": {f"unix:{first}": {"name": "ci", "roles": ["all"]}, f"unix:{second}": {"name": "ops", "roles": ["all"]}}},
        "roles": {"all": {"allow": ["*"]}},
    }
    pid, _ = daemon({"own": server("slow", perSession=True, maxInstancesPerPrincipal=1)}, f"unix:{first}", f"unix:{second}", extra=identity)
    wait_for_path(first)
    wait_for_path(second)
    ci, ci2, ops = LineClient(first), LineClient(first), LineClient(second)
    for client in (ci, ci2, ops):
        client.initialize()
    assert result_text(ci.request(1, "tools/call", {"name": "own__pid", "arguments": {}}))
    refused = ci2.request(1, "tools/call", {"name": "own__pid", "arguments": {}})
    assert refused["error"]["code"] == errors.BUSY, refused
    assert refused["error"]["data"] == {"backend": "own", "limit": 1, "cap": "maxInstancesPerPrincipal"}
    assert "for ci" in refused["error"]["message"]
    assert result_text(ops.request(1, "tools/call", {"name": "own__pid", "arguments": {}}))
    for client in (ci, ci2, ops):
        client.close()


def test_a_daemonized_descendant_ends_with_its_backend(raw_gateway, write_config):
    """A backend's helper that double-forks into a session of its own is
    ended when the backend restarts, and when the gateway stops."""
    gw = raw_gateway(write_config({"d": server("daemonizer")}, restartDelay=0.2))
    gw.initialize()
    first = int(gw.request("tools/call", {"name": "d__daemon_pid", "arguments": {}})["result"]["content"][0]["text"])
    assert alive(first)
    assert "error" in gw.request("tools/call", {"name": "d__crash", "arguments": {}})
    assert wait_gone({first}, 15) == set()  # the restart ended it
    second = until(
        lambda: (out := gw.request("tools/call", {"name": "d__daemon_pid", "arguments": {}})).get("result")
        and int(out["result"]["content"][0]["text"]),
        what="the restarted backend",
    )
    assert alive(second)
    gw.close_stdin()
    assert gw.wait(30) == 0
    assert wait_gone({second}, 15) == set()


def test_a_daemonized_descendant_ends_with_the_daemon(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    pid, _ = daemon({"d": server("daemonizer")}, f"unix:{sock}")
    wait_for_path(sock)
    client = LineClient(sock)
    client.initialize()
    helper = int(result_text(client.request(1, "tools/call", {"name": "d__daemon_pid", "arguments": {}})))
    assert alive(helper)
    client.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid, helper}, 30) == set()


def _zombie_children(pid: int) -> set[int]:
    """The children of C{pid} that exited and were never waited on."""
    return {child for child, state, parent in processes() if state == b"Z" and parent == pid}


def test_an_adopted_descendant_that_exits_is_reaped(daemon, tmp_path):
    """A backend's helper that daemonizes (so is reparented to the gateway)
    and exits on its own does not stay a zombie of the gateway."""
    sock = str(tmp_path / "gw.sock")
    pid, _ = daemon({"d": server("daemonizer")}, f"unix:{sock}")
    wait_for_path(sock)
    client = LineClient(sock)
    client.initialize()
    helpers = {int(result_text(client.request(i, "tools/call", {"name": "d__short_daemon", "arguments": {}}))) for i in (1, 2)}
    assert wait_gone(helpers, 15) == set()
    deadline = time.monotonic() + 20
    while _zombie_children(pid) & helpers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _zombie_children(pid) == set()
    # The backend itself (spawned by Twisted) still answers: its status was not taken.
    assert int(result_text(client.request(3, "tools/call", {"name": "d__daemon_pid", "arguments": {}})))
    client.close()
