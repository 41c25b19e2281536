"""
HTTP backends through the real `twistd ... mcp-gateway` command: real HTTP
MCP servers (server-everything in Streamable HTTP mode, servers built with
the official SDK in each of its modes, the legacy HTTP+SSE transport), and a
fault-injecting server for everything that can go wrong.  Every server
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request

import anyio
import pytest

from tests import mcpclient as mc
from twisted_mcp.mcp import errors

from .conftest import NODE_DIR, SERVERS, gateway_argv, gateway_env, time_server


class HttpServer:
    """An HTTP MCP server child that prints `LISTENING <port>` when ready."""

    def __init__(self, argv: list[str], tmp_path, name: str, env: dict | None = None, port: int = 0) -> None:
        self.argv = argv
        self.tmp_path = tmp_path
        self.name = name
        self.env = env
        self.port = port
        self.start()

    def start(self) -> None:
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        env = dict(os.environ)
        env.update(self.env or {})
        if "{port}" not in " ".join(self.argv):
            env["PORT"] = str(self.port)
        self.err = open(os.path.join(str(self.tmp_path), f"{self.name}.stderr"), "ab")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=env
        )
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(30):
            raise TimeoutError(f"{self.name} did not start")
        line = self.proc.stdout.readline().decode()
        sel.close()
        assert line.startswith("LISTENING "), line
        self.port = int(line.split()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.err.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.stop()

    def admin(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/admin/{path}", timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture
def http_server(tmp_path):
    started: list[HttpServer] = []

    def start(kind: str, *args: str, env: dict | None = None, port: int = 0) -> HttpServer:
        if kind == "everything":
            argv = [
                "node",
                "--require",
                os.path.join(SERVERS, "loopback_preload.cjs"),
                os.path.join(NODE_DIR, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js"),
                *(args or ("streamableHttp",)),
            ]
        else:
            argv = [sys.executable, os.path.join(SERVERS, f"{kind}.py"), "--port", "{port}", *args]
        server = HttpServer(argv, tmp_path, f"{kind}{len(started)}", env=env, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def connect(config: str, tmp_path, **kwargs):
    return mc.connect(
        gateway_argv(config),
        env=gateway_env(),
        cwd=str(tmp_path),
        errlog=str(tmp_path / "gateway.stderr"),
        **kwargs,
    )


def test_http_servers_of_every_kind_beside_stdio(http_server, write_config, tmp_path):
    everything = http_server("everything")
    stateful = http_server("http_sdk")
    stateless_json = http_server("http_sdk", "--stateless", "--json")
    legacy = http_server("http_sdk", "--transport", "sse")
    config = write_config(
        {
            "ev": {"type": "http", "url": f"{everything.url}/mcp"},
            "sdk": {"url": f"{stateful.url}/mcp"},
            "plain": {"type": "streamable-http", "url": f"{stateless_json.url}/mcp"},
            "old": {"type": "sse", "url": f"{legacy.url}/sse"},
            "time": time_server(),
        }
    )

    async def scenario():
        async with connect(config, tmp_path) as client:
            names = await mc.tool_names(client)
            for expected in ("ev__echo", "sdk__sleep", "plain__add", "old__echo", "time__get_current_time"):
                assert expected in names, names
            assert await mc.call_text(client, "ev__echo", {"message": "a"}) == "Echo: a"
            assert await mc.call_text(client, "sdk__echo", {"text": "b"}) == "b"
            assert await mc.call_text(client, "plain__add", {"a": 2, "b": 3}) == "5"
            assert await mc.call_text(client, "old__echo", {"text": "c"}) == "c"

            # Progress over HTTP reaches the client before the result.
            order: list[str] = []

            async def on_progress(progress, total, message):
                order.append("progress")

            result = await client.call_tool(
                "ev__trigger-long-running-operation", {"duration": 1, "steps": 4}, progress_callback=on_progress
            )
            order.append("result")
            assert not result.is_error
            assert order == ["progress"] * 4 + ["result"]
            _, events = await mc.call_with_progress(client, "sdk__sleep", {"seconds": 0.5})
            assert len(events) >= 3
            _, events = await mc.call_with_progress(client, "old__sleep", {"seconds": 0.5})
            assert len(events) >= 3

            # Concurrency across HTTP backends.
            results = {}

            async def one(i):
                results[i] = await mc.call_text(client, "sdk__echo" if i % 2 else "old__echo", {"text": str(i)})

            async with anyio.create_task_group() as tg:
                for i in range(40):
                    tg.start_soon(one, i)
            assert results == {i: str(i) for i in range(40)}

    mc.run(scenario, timeout=120)
    log = (tmp_path / "gateway.stderr").read_text()
    assert "backend ev is up" in log and "backend old is up" in log


def test_cancellation_reaches_an_http_backend(http_server, write_config, tmp_path):
    cancel_log = tmp_path / "cancelled.log"
    server = http_server("http_sdk", env={"HTTP_CANCEL_LOG": str(cancel_log)})
    # The handshake era's notifications/cancelled (a 2026-07-28 backend's
    # cancel is the POST's abort: test_modern_http_backends).
    config = write_config({"sdk": {"url": f"{server.url}/mcp", "protocol": "legacy"}})

    async def scenario():
        async with connect(config, tmp_path) as client:
            await mc.tool_names(client)
            await mc.cancel_call(client, "sdk__sleep", {"seconds": 30})
            await mc.wait_until(lambda: cancel_log.exists() and "cancelled" in cancel_log.read_text(), 10)
            assert await mc.call_text(client, "sdk__echo", {"text": "after"}) == "after"

    mc.run(scenario, timeout=60)


def test_faults_fail_only_what_they_must(http_server, write_config, raw_gateway, monkeypatch):
    faults = http_server("http_faults", "--get-stream")
    monkeypatch.setenv("TEST_TOKEN", "s3cret")
    config = write_config(
        {
            "f": {
                "url": f"{faults.url}/mcp",
                "headers": {"X-Test-Token": "${TEST_TOKEN}"},
                "callTimeout": 2,
            }
        },
        maxMessageBytes=256 * 1024,
    )
    gw = raw_gateway(config)
    gw.initialize()
    names = [t["name"] for t in gw.request("tools/list")["result"]["tools"]]
    assert "f__echo" in names

    def call(tool, args=None, meta=None):
        params = {"name": f"f__{tool}", "arguments": args or {}}
        if meta:
            params["_meta"] = meta
        return gw.request("tools/call", params, timeout=30)

    def ok():
        out = call("echo", {"text": "ok"})
        assert out["result"]["content"][0]["text"] == "ok", out

    ok()
    stats = faults.admin("stats")
    assert stats["last_x_test_token"] == "s3cret"
    assert stats["last_protocol_version"] == "2025-11-25"

    err = call("fail500")["error"]
    assert err["code"] == errors.BACKEND_HTTP_ERROR and err["data"]["status"] == 500 and err["data"]["backend"] == "f"
    ok()

    err = call("hang_headers")["error"]
    assert err["code"] == errors.BACKEND_TIMEOUT
    ok()

    gw.seen.clear()
    err = call("hang_stream", meta={"progressToken": "p1"})["error"]
    assert err["code"] == errors.BACKEND_TIMEOUT
    assert any(m.get("method") == "notifications/progress" and m["params"]["progressToken"] == "p1" for m in gw.seen)
    ok()

    err = call("cut_stream")["error"]
    assert err["code"] == errors.BACKEND_LOST and "f" == err["data"]["backend"]
    ok()

    err = call("huge", {"bytes": 1024 * 1024})["error"]
    assert err["code"] == errors.BACKEND_RESPONSE_TOO_LARGE and err["data"]["limit"] == 256 * 1024
    err = call("huge", {"bytes": 1024 * 1024, "sse": True})["error"]
    assert err["code"] == errors.BACKEND_RESPONSE_TOO_LARGE
    assert len(call("huge", {"bytes": 1000})["result"]["content"][0]["text"]) == 1000

    # The timed-out calls were cancelled at the server.
    deadline = time.monotonic() + 10
    while len(faults.admin("stats")["cancelled"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(faults.admin("stats")["cancelled"]) >= 2

    # Session expiry: a new session, transparently, and the call goes through.
    before = faults.admin("stats")["initialize"]
    faults.admin("expire")
    ok()
    assert faults.admin("stats")["initialize"] == before + 1

    # A change announced on the server's GET stream reaches the client.
    deadline = time.monotonic() + 10
    while faults.admin("stats")["open_get_streams"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    gw.seen.clear()
    faults.admin("add_tool?name=fresh&notify=1")
    gw.wait_for_notification("notifications/tools/list_changed", timeout=10)
    names = [t["name"] for t in gw.request("tools/list")["result"]["tools"]]
    assert "f__fresh" in names

    # The server restarts: calls fail at once meanwhile, then it is back.
    port = faults.port
    faults.kill()
    err = call("echo", {"text": "x"})["error"]
    assert err["code"] in (errors.BACKEND_UNAVAILABLE, errors.BACKEND_LOST), err
    faults2 = http_server("http_faults", "--get-stream", port=port)
    deadline = time.monotonic() + 30
    while True:
        out = call("echo", {"text": "ok"})
        if "result" in out:
            break
        assert out["error"]["code"] == errors.BACKEND_UNAVAILABLE, out
        assert time.monotonic() < deadline, "the backend never came back"
        time.sleep(0.3)

    # Stopping the gateway ends the session with DELETE.
    gw.close_stdin()
    assert gw.wait(30) == 0
    assert faults2.admin("stats")["deletes"] >= 1


def test_unreachable_at_start_joins_later(http_server, write_config, raw_gateway, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(
        {"late": {"url": f"http://127.0.0.1:{port}/mcp"}, "time": time_server()},
        restartDelay=0.3,
        restartMaxDelay=1,
    )
    gw = raw_gateway(config)
    gw.initialize()
    names = [t["name"] for t in gw.request("tools/list")["result"]["tools"]]
    assert "time__get_current_time" in names and not any(n.startswith("late__") for n in names)
    log = gw.stderr_text()
    assert "backend late is down: cannot connect" in log
    http_server("http_faults", port=port)
    gw.seen.clear()
    gw.wait_for_notification("notifications/tools/list_changed", timeout=20)
    names = [t["name"] for t in gw.request("tools/list")["result"]["tools"]]
    assert "late__echo" in names
    out = gw.request("tools/call", {"name": "late__echo", "arguments": {"text": "joined"}})
    assert out["result"]["content"][0]["text"] == "joined"


def test_tls_with_own_ca_and_client_certificate(http_server, write_config, raw_gateway, tmp_path):
    from .certs import make

    certs = make(str(tmp_path))
    server = http_server(
        "http_faults",
        "--tls-cert", certs["server.pem"], "--tls-key", certs["server-key.pem"],
        "--tls-client-ca", certs["ca.pem"],
    )
    url = f"https://127.0.0.1:{server.port}/mcp"
    config = write_config(
        {
            "good": {"url": url, "tls": {"caFile": certs["ca.pem"], "certFile": certs["client.pem"], "keyFile": certs["client-key.pem"]}},
            # Trusts the server, but has no client certificate: refused.
            "nocert": {"url": url, "tls": {"caFile": certs["ca.pem"]}},
            # Does not trust the server's CA.
            "untrusted": {"url": url},
        },
        discoveryTimeout=5,
    )
    gw = raw_gateway(config)
    gw.initialize()
    names = [t["name"] for t in gw.request("tools/list")["result"]["tools"]]
    assert "good__echo" in names
    assert not any(n.startswith(("nocert__", "untrusted__")) for n in names)
    out = gw.request("tools/call", {"name": "good__echo", "arguments": {"text": "over tls"}})
    assert out["result"]["content"][0]["text"] == "over tls"
    log = gw.stderr_text()
    assert "backend nocert is down" in log and "backend untrusted is down" in log


def test_requests_in_flight_to_an_http_server_are_capped(http_server, write_config, raw_gateway):
    """mcpServers.<name>.maxRequests: beyond it a call is refused as busy at
    once, the server stays up, and calls go through again once answers come."""
    faults = http_server("http_faults")
    gw = raw_gateway(write_config({"f": {"url": f"{faults.url}/mcp", "maxRequests": 2}}))
    gw.initialize()
    assert "f__echo" in [t["name"] for t in gw.request("tools/list")["result"]["tools"]]
    for rid in (101, 102):  # each holds a request open for 3 s, then the server closes it
        gw.send({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "f__hang_headers", "arguments": {"seconds": 3}}})
    deadline = time.monotonic() + 20
    while faults.admin("stats")["methods"].get("tools/call", 0) < 2:
        assert time.monotonic() < deadline, "the two calls never reached the server"
        time.sleep(0.05)
    busy = gw.request("tools/call", {"name": "f__echo", "arguments": {"text": "x"}})["error"]
    assert busy["code"] == errors.BUSY and busy["data"] == {"backend": "f", "limit": 2}
    assert "maxRequests is 2" in busy["message"]
    for rid in (101, 102):
        assert gw.response(rid, timeout=30)["error"]["code"] == errors.BACKEND_LOST  # closed without an answer
    out = gw.request("tools/call", {"name": "f__echo", "arguments": {"text": "again"}}, timeout=30)
    assert out["result"]["content"][0]["text"] == "again", out
