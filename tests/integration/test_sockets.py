"""
Daemon mode: `twistd --pidfile ... --logfile ... mcp-gateway --listen ...`,
many clients on one socket sharing warm backends, and `twisted-mcp connect`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

from tests import mcpclient as mc
from twisted_mcp.mcp import errors

from .conftest import LineClient, bin_path, descendants, free_port, gateway_env, server, wait_gone


def test_fifty_clients_share_backends_and_get_their_own_answers(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    pid, log = daemon({"echo": server("echo_fast"), "slow": server("slow")}, f"unix:{sock}")
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            c = LineClient(sock)
            c.request(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": f"c{n}", "version": "1"}})
            got = []
            for i in range(20):
                tool = "echo__echo" if i % 2 else "slow__echo"
                out = c.request(i + 1, "tools/call", {"name": tool, "arguments": {"text": f"{n}-{i}"}})
                got.append(out["result"]["content"][0]["text"])
            results[n] = got
            c.sock.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert results == {n: [f"{n}-{i}" for i in range(20)] for n in range(50)}
    tree = descendants(pid)
    assert len(tree) >= 2  # one child per backend, shared by all 50 clients
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid} | tree, 30) == set()
    with open(log) as f:
        assert "listening on unix:" in f.read()


def test_connect_bridges_an_sdk_client_to_the_daemon(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    pid, _ = daemon({"echo": server("echo_fast")}, f"unix:{sock}")
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    async def scenario():
        async with mc.connect([bin_path("twisted-mcp"), "connect", f"unix:path={sock}"], env=gateway_env()) as client:
            assert await mc.tool_names(client) == ["echo__echo"]
            assert await mc.call_text(client, "echo__echo", {"text": "bridged"}) == "bridged"

    mc.run(scenario, timeout=60)
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()


def test_a_listener_that_cannot_bind_stops_start_up(write_config, tmp_path):
    config = write_config({"echo": server("echo_fast")})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [bin_path("twistd"), "-n", "--pidfile=", "mcp-gateway", "--config", config, "--listen", f"tcp:{port}:interface=127.0.0.1"],
            env=gateway_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 69
    assert f"cannot listen on 'tcp:{port}:interface=127.0.0.1'" in proc.stderr


def test_connect_to_nothing_fails_clearly(tmp_path):
    proc = subprocess.run([bin_path("twisted-mcp"), "connect", f"unix:path={tmp_path}/none.sock"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 69
    assert "cannot connect" in proc.stderr


def test_check_config(write_config, tmp_path):
    good = write_config({"echo": server("echo_fast"), "remote": {"url": "http://127.0.0.1:9/mcp"}})
    out = subprocess.run([bin_path("twisted-mcp"), "check-config", good], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "OK, 2 server(s)" in out.stdout and "remote: Streamable HTTP" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcpServers:\n  a: {command: 1}\n  b: {url: ftp://x}\nroles: {dev: {allow: ['bad pattern']}}\n")
    out = subprocess.run([bin_path("twisted-mcp"), "check-config", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 78
    for fragment in ("mcpServers.a.command", "mcpServers.b.url", "roles.dev.allow[0]"):
        assert fragment in out.stderr


def test_a_client_that_does_not_read_is_disconnected_and_others_go_on(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    # Answers of 1 MB; a client may leave at most 4 x 2 MiB unread.
    pid, log = daemon({"echo": server("echo_fast")}, f"unix:{sock}", maxMessageBytes=2 * 1024 * 1024)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stuck = socket.socket(socket.AF_UNIX)
    stuck.connect(sock)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "stuck", "version": "1"}}}
    stuck.sendall(json.dumps(init).encode() + b"\n")
    for i in range(40):  # 40 MB of answers it never reads
        big = {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": "echo__echo", "arguments": {"text": "z" * 1000, "repeat": 1000}}}
        try:
            stuck.sendall(json.dumps(big).encode() + b"\n")
        except OSError:
            break  # already disconnected
    healthy = LineClient(sock)
    healthy.request(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "ok", "version": "1"}})
    deadline = time.monotonic() + 30
    while True:
        with open(log) as f:
            if "is not reading its answers" in f.read():
                break
        assert time.monotonic() < deadline, "the stuck client was never disconnected"
        time.sleep(0.1)
    out = healthy.request(1, "tools/call", {"name": "echo__echo", "arguments": {"text": "still served"}})
    assert out["result"]["content"][0]["text"] == "still served"
    stuck.close()
    healthy.sock.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()


def test_admin_endpoint(daemon, tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    monkeypatch.setenv("ADMIN_TOKEN", "let-me-in")
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    config = tmp_path / "admin.json"
    config.write_text(json.dumps({
        "gateway": {"adminToken": "${ADMIN_TOKEN}", "restartDelay": 60},
        "mcpServers": {"echo": server("echo_fast"), "crashy": server("crashy", required=True)},
    }))
    env = gateway_env()
    env["ADMIN_TOKEN"] = "let-me-in"
    proc = subprocess.Popen(
        [bin_path("twistd"), "-n", "--pidfile=", "--logfile", str(tmp_path / "admin.log"), "mcp-gateway",
         "--config", str(config), "--listen", f"unix:{sock}", "--admin", f"tcp:{port}:interface=127.0.0.1"],
        env=env, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
    )
    try:
        def get(path: str, token: str | None = "let-me-in") -> tuple[int, str]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        deadline = time.monotonic() + 30
        while True:
            try:
                if get("/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.2)
        assert get("/healthz") == (200, "ok\n")
        assert get("/healthz", token=None)[0] == 401
        assert get("/healthz", token="wrong")[0] == 401
        status, text = get("/metrics")
        metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert metrics[("twisted_mcp_backend_up", (("backend", "crashy"),))] == 1.0
        assert metrics[("twisted_mcp_backend_tools", (("backend", "echo"),))] == 1.0
        c = LineClient(sock)
        c.request(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "a", "version": "1"}})
        text = get("/metrics")[1]
        assert "twisted_mcp_clients 1.0" in text
        assert c.request(1, "tools/call", {"name": "crashy__crash", "arguments": {}})["error"]["code"] == errors.BACKEND_LOST
        status, text = get("/readyz")
        assert status == 503 and "required backend crashy is down" in text
        status, page = get("/status")
        assert status == 200 and "crashy" in page and "echo__echo" in page
        c.sock.close()
    finally:
        proc.terminate()
        proc.wait(30)
