"""
Tests for the C{twisted-mcp} commands that talk to a running gateway:
C{status}, C{reload}, C{kill} and C{approve}, against a small real HTTP
server (on TCP and on a Unix socket) that answers like the admin endpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import attrs
import pytest

from twisted_mcp.cli import main
from twisted_mcp.cli.admin_client import _Fail, parse_admin

TOKEN = "s3cr3t-admin-token-0123"

STATUS = {
    "version": "0.1.0",
    "ready": True,
    "uptime": 7384.5,
    "backends": [
        {
            "name": "github",
            "state": "up",
            "tools": ["github__create_issue", "github__search_repositories"],
            "restarts": 0,
            "breaker": "closed",
            "lastError": None,
            "required": True,
            "perSession": False,
            "instances": 1,
        },
        {
            "name": "time",
            "state": "up",
            "tools": ["time__get_current_time"],
            "restarts": 2,
            "breaker": "half-open",
            "lastError": None,
            "required": False,
            "perSession": False,
            "instances": 1,
        },
    ],
    "clients": [
        {"id": "c1", "principal": "alice", "client": "claude-code 2.1", "protocol": "2025-06-18", "inFlight": 3},
        {"id": "c2", "principal": None, "client": "cursor", "protocol": None, "inFlight": 0},
    ],
    "killSwitch": {"principals": ["mallory"], "backends": [], "tools": ["github__delete_*"]},
    "quarantined": [{"tool": "time__convert_time", "reason": "changed since pinned: description"}],
}


@attrs.define
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeGateway:
    """Answers like the admin endpoint: C{routes[(method, path)] = (status, json or bytes)}."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {("GET", "/status"): (200, STATUS)}
        self.token: str | None = None
        self.address = ""

    def handler(self) -> Any:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append(Request(self.command, self.path, headers, body))
                if fake.token is not None and headers.get("authorization") != f"Bearer {fake.token}":
                    status, answer = 401, b"unauthorized\n"
                else:
                    status, answer = fake.routes.get((self.command, self.path), (404, b"No Such Resource\n"))
                if isinstance(answer, bytes):
                    payload, kind = answer, "text/html" if answer.startswith(b"<") else "text/plain"
                else:
                    payload, kind = json.dumps(answer).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = serve

        return Handler

    @property
    def last(self) -> Request:
        return self.requests[-1]


def _serve(server: Any) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    fake.address = f"http://127.0.0.1:{server.server_address[1]}"
    yield from (fake for _ in _serve(server))


@pytest.fixture
def unix_gateway() -> Iterator[FakeGateway]:
    directory = tempfile.mkdtemp(prefix="tmcp")  # short: socket paths are limited to about 100 bytes
    fake = FakeGateway()
    path = os.path.join(directory, "admin.sock")
    server = socketserver.ThreadingUnixStreamServer(path, fake.handler())
    fake.address = f"unix:{path}"
    try:
        yield from (fake for _ in _serve(server))
    finally:
        shutil.rmtree(directory)


@pytest.fixture(autouse=True)
def _no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWISTED_MCP_ADMIN_TOKEN", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert TOKEN not in out and TOKEN not in err
    return code, out, err


class TestStatus:
    def test_summary(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        code, out, err = run(capsys, "status", "--admin", gateway.address)
        assert code == 0
        assert err == ""
        assert gateway.last.method == "GET" and gateway.last.path == "/status"
        assert gateway.last.headers["accept"] == "application/json"
        assert "authorization" not in gateway.last.headers
        lines = out.splitlines()
        assert lines[0] == f"twisted-mcp 0.1.0 at {gateway.address}: ready, up 2h 03m"
        assert "Backends (2):" in lines
        assert "  github  up  2 tool(s)  required" in lines
        assert "  time    up  1 tool(s)  2 restart(s); breaker half-open" in lines
        tools = lines.index("Tools (3):")
        assert lines[tools + 1 : tools + 4] == [
            "  github__create_issue",
            "  github__search_repositories",
            "  time__get_current_time",
        ]
        assert "  c1  alice    claude-code 2.1  2025-06-18  3 in flight" in lines
        assert "  c2  (local)  cursor           -           0 in flight" in lines
        assert "Kill switch: principals: mallory; backends: -; tools: github__delete_*" in lines
        assert "Quarantined (1):" in lines
        assert "  time__convert_time: changed since pinned: description" in lines

    def test_json(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        code, out, _ = run(capsys, "status", "--admin", gateway.address, "--json")
        assert code == 0
        assert json.loads(out) == STATUS

    def test_twisted_endpoint(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        port = gateway.address.rsplit(":", 1)[1]
        code, out, _ = run(capsys, "status", "--admin", f"tcp:{port}:interface=127.0.0.1")
        assert code == 0
        assert out.startswith(f"twisted-mcp 0.1.0 at http://127.0.0.1:{port}: ready")

    def test_unix_socket(self, capsys: pytest.CaptureFixture[str], unix_gateway: FakeGateway) -> None:
        code, out, _ = run(capsys, "status", "--admin", unix_gateway.address)
        assert code == 0
        assert "  github  up  2 tool(s)  required" in out.splitlines()
        assert unix_gateway.last.path == "/status"
        path = unix_gateway.address[len("unix:") :]
        code, _, _ = run(capsys, "status", "--admin", f"unix:{path}:mode=660:lockfile=1", "--json")
        assert code == 0
        assert len(unix_gateway.requests) == 2

    def test_backend_down(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        status = json.loads(json.dumps(STATUS))
        status["ready"] = False
        status["backends"][1].update(state="down", lastError="exited with code 1", breaker="open")
        gateway.routes[("GET", "/status")] = (200, status)
        code, out, err = run(capsys, "status", "--admin", gateway.address)
        assert code == 0  # a report: it answered
        assert "starting (discovery has not finished)" in out.splitlines()[0]
        assert "  time    down  1 tool(s)  2 restart(s); breaker open; last error: exited with code 1" in out.splitlines()
        assert err == "warning: 1 of 2 backend(s) are not up: time (down)\n"
        code, _, err = run(capsys, "status", "--admin", gateway.address, "--strict")
        assert code == 75
        assert "time (down)" in err

    def test_per_session_idle_is_healthy(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        """A per-session backend's shared instance stops once its tools are discovered: that is not down."""
        status = json.loads(json.dumps(STATUS))
        status["backends"][1].update(state="stopped", perSession=True, instances=2)
        gateway.routes[("GET", "/status")] = (200, status)
        code, out, err = run(capsys, "status", "--admin", gateway.address, "--strict")
        assert code == 0
        assert err == ""
        assert "  time    stopped  1 tool(s)  2 restart(s); breaker half-open; per session, 2 instance(s)" in out.splitlines()
        status["backends"][0].update(state="stopped")  # not per-session: stopped is not up
        code, _, err = run(capsys, "status", "--admin", gateway.address, "--strict")
        assert code == 75
        assert err == "warning: 1 of 2 backend(s) are not up: github (stopped)\n"

    def test_strict_all_up(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        code, _, _ = run(capsys, "status", "--admin", gateway.address, "--strict")
        assert code == 0


class TestToken:
    def test_from_environment(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        gateway.token = TOKEN
        monkeypatch.setenv("TWISTED_MCP_ADMIN_TOKEN", TOKEN)
        code, out, _ = run(capsys, "status", "--admin", gateway.address)
        assert code == 0
        assert gateway.last.headers["authorization"] == f"Bearer {TOKEN}"

    def test_from_file(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        gateway.token = TOKEN
        monkeypatch.setenv("TWISTED_MCP_ADMIN_TOKEN", "not-this-one")
        with open("token", "w") as f:
            f.write(TOKEN + "\n")
        code, _, _ = run(capsys, "status", "--admin", gateway.address, "--token-file", "token", "--json")
        assert code == 0
        assert gateway.last.headers["authorization"] == f"Bearer {TOKEN}"

    def test_missing(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.token = TOKEN
        code, out, err = run(capsys, "status", "--admin", gateway.address)
        assert code == 77
        assert out == ""
        assert "refused the request (401): it wants a token: set $TWISTED_MCP_ADMIN_TOKEN or use --token-file" in err

    def test_wrong(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        gateway.token = "the-right-one"
        monkeypatch.setenv("TWISTED_MCP_ADMIN_TOKEN", TOKEN)
        code, _, err = run(capsys, "reload", "--admin", gateway.address)
        assert code == 77
        assert "the token was not accepted" in err
        assert gateway.last.headers["authorization"] == f"Bearer {TOKEN}"

    def test_token_file_missing(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        code, _, err = run(capsys, "status", "--admin", gateway.address, "--token-file", "nope")
        assert code == 66
        assert "--token-file nope: no such file" in err
        assert gateway.requests == []

    def test_token_file_empty(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        open("token", "w").close()
        code, _, err = run(capsys, "status", "--admin", gateway.address, "--token-file", "token")
        assert code == 66
        assert "the file is empty" in err


class TestUnavailable:
    def test_server_error(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("GET", "/status")] = (503, b"shutting down\n")
        code, out, err = run(capsys, "status", "--admin", gateway.address)
        assert code == 69
        assert out == ""
        assert f"the admin endpoint at {gateway.address} answered 503: shutting down" in err

    def test_nothing_listening(self, capsys: pytest.CaptureFixture[str]) -> None:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))  # a port nobody listens on: bound, never listening
        try:
            port = s.getsockname()[1]
            code, _, err = run(capsys, "status", "--admin", f"tcp:{port}:interface=127.0.0.1")
        finally:
            s.close()
        assert code == 69
        assert "connection refused (is the gateway running with --admin?)" in err

    def test_no_socket(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "status", "--admin", "unix:/nonexistent/admin.sock")
        assert code == 69
        assert "cannot reach the admin endpoint at unix:/nonexistent/admin.sock: no such socket" in err

    def test_html(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("GET", "/status")] = (200, b"<!doctype html><html></html>")
        code, _, err = run(capsys, "status", "--admin", gateway.address)
        assert code == 76
        assert "answered /status with something that is not JSON (text/html)" in err

    def test_no_such_path(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        code, _, err = run(capsys, "approve", "--admin", gateway.address, "--all")
        assert code == 69
        assert "has no /pins/approve (404): the gateway is older than this command" in err


class TestReload:
    def test_applied(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        gateway.token = TOKEN
        monkeypatch.setenv("TWISTED_MCP_ADMIN_TOKEN", TOKEN)
        gateway.routes[("POST", "/reload")] = (200, {"applied": True, "changes": ["killSwitch.tools: + github__delete_*", "backend time restarted"]})
        code, out, err = run(capsys, "reload", "--admin", gateway.address)
        assert code == 0
        assert err == ""
        assert gateway.last.method == "POST" and gateway.last.path == "/reload"
        assert gateway.last.headers["authorization"] == f"Bearer {TOKEN}"
        assert out == "reloaded: 2 change(s) applied\n  - killSwitch.tools: + github__delete_*\n  - backend time restarted\n"

    def test_no_changes(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/reload")] = (200, {"applied": True, "changes": []})
        code, out, _ = run(capsys, "reload", "--admin", gateway.address)
        assert code == 0
        assert out == "reloaded: the configuration has not changed\n"

    def test_rejected(self, capsys: pytest.CaptureFixture[str], unix_gateway: FakeGateway) -> None:
        problems = "gateway.yaml: 1 problem(s) in the configuration:\n  - roles.dev.allow: expected a list"
        unix_gateway.routes[("POST", "/reload")] = (422, {"applied": False, "problems": problems})
        code, out, err = run(capsys, "reload", "--admin", unix_gateway.address)
        assert code == 78
        assert out == ""
        assert err == (
            "twisted-mcp reload: the gateway rejected the new configuration and keeps running the old one:\n"
            + problems
            + "\n"
        )

    def test_cannot_reload(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/reload")] = (501, {"applied": False, "problems": "this gateway cannot reload its configuration"})
        code, _, err = run(capsys, "reload", "--admin", gateway.address)
        assert code == 69
        assert err.endswith("answered 501: this gateway cannot reload its configuration\n")

    def test_needs_a_way(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as e:
            main(["reload"])
        assert e.value.code == 64
        with pytest.raises(SystemExit) as e:
            main(["reload", "--admin", "http://127.0.0.1:1", "--pidfile", "x.pid"])
        assert e.value.code == 64


class TestReloadPidfile:
    SCRIPT = (
        "import os, signal, sys, time\n"
        "def hup(*a):\n"
        "    with open(sys.argv[1] + '.tmp', 'w') as f:\n"
        "        f.write('hup')\n"
        "    os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "signal.signal(signal.SIGHUP, hup)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )

    def start(self, *argv: str) -> subprocess.Popen[str]:
        child = subprocess.Popen([sys.executable, "-c", self.SCRIPT, "flag", *argv], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        return child

    def stop(self, child: subprocess.Popen[str]) -> None:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()

    def test_sighup(self, capsys: pytest.CaptureFixture[str]) -> None:
        child = self.start("mcp-gateway", "--config", "gateway.yaml")
        try:
            with open("gw.pid", "w") as f:
                f.write(f"{child.pid}\n")
            code, out, err = run(capsys, "reload", "--pidfile", "gw.pid")
            assert code == 0, err
            assert out.startswith(f"sent SIGHUP to the gateway (pid {child.pid})")
            assert "is in the gateway's log" in out
            for _ in range(500):
                if os.path.exists("flag"):
                    break
                time.sleep(0.01)
            with open("flag") as f:
                assert f.read() == "hup"
        finally:
            self.stop(child)

    def test_not_a_gateway(self, capsys: pytest.CaptureFixture[str]) -> None:
        child = self.start("something-else")
        try:
            with open("gw.pid", "w") as f:
                f.write(f"{child.pid}\n")
            code, _, err = run(capsys, "reload", "--pidfile", "gw.pid")
            assert code == 69
            assert f"process {child.pid} (from gw.pid) is not a twisted-mcp gateway" in err
            time.sleep(0.1)
            assert not os.path.exists("flag")  # not signalled
        finally:
            self.stop(child)

    def test_stale(self, capsys: pytest.CaptureFixture[str]) -> None:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        with open("gw.pid", "w") as f:
            f.write(str(gone.pid))
        code, _, err = run(capsys, "reload", "--pidfile", "gw.pid")
        assert code == 69
        assert f"no process {gone.pid} (from gw.pid): the gateway is not running" in err

    def test_missing(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "reload", "--pidfile", "nope.pid")
        assert code == 66
        assert "--pidfile nope.pid: no such file" in err

    def test_garbage(self, capsys: pytest.CaptureFixture[str]) -> None:
        with open("gw.pid", "w") as f:
            f.write("hello\n")
        code, _, err = run(capsys, "reload", "--pidfile", "gw.pid")
        assert code == 65
        assert "does not hold a process id" in err


class TestKill:
    def test_disable_tool(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        gateway.token = TOKEN
        monkeypatch.setenv("TWISTED_MCP_ADMIN_TOKEN", TOKEN)
        gateway.routes[("POST", "/kill")] = (200, {"principals": [], "backends": [], "tools": ["github__delete_repo"]})
        code, out, _ = run(capsys, "kill", "--admin", gateway.address, "--tool", "github__delete_repo")
        assert code == 0
        assert gateway.last.path == "/kill"
        assert gateway.last.headers["content-type"] == "application/json"
        assert gateway.last.json() == {"kind": "tool", "name": "github__delete_repo", "disabled": True}
        assert out.splitlines() == [
            "tool github__delete_repo: disabled (calls to it are refused; calls in flight finish)",
            "kill switch now: principals: -; backends: -; tools: github__delete_repo",
        ]

    def test_enable_backend(self, capsys: pytest.CaptureFixture[str], unix_gateway: FakeGateway) -> None:
        unix_gateway.routes[("POST", "/kill")] = (200, {"principals": ["mallory"], "backends": [], "tools": []})
        code, out, _ = run(capsys, "kill", "--admin", unix_gateway.address, "--backend", "time", "--off")
        assert code == 0
        assert unix_gateway.last.json() == {"kind": "backend", "name": "time", "disabled": False}
        assert out.splitlines()[0] == "backend time: enabled again"

    def test_principal(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/kill")] = (200, {"principals": ["mallory"], "backends": [], "tools": []})
        code, _, _ = run(capsys, "kill", "--admin", gateway.address, "--principal", "mallory")
        assert code == 0
        assert gateway.last.json() == {"kind": "principal", "name": "mallory", "disabled": True}

    def test_refused(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/kill")] = (400, {"error": "no backend named 'nope'"})
        code, out, err = run(capsys, "kill", "--admin", gateway.address, "--backend", "nope")
        assert code == 65
        assert out == ""
        assert "twisted-mcp kill: the gateway refused: no backend named 'nope'" in err

    def test_one_target(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as e:
            main(["kill", "--admin", "http://127.0.0.1:1", "--tool", "a", "--backend", "b"])
        assert e.value.code == 64


class TestApprove:
    def test_tools(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/pins/approve")] = (
            200,
            {"approved": ["time__convert_time", "github__x"], "quarantined": ["other__y"]},
        )
        code, out, _ = run(capsys, "approve", "--admin", gateway.address, "--tool", "time__convert_time", "--tool", "github__x")
        assert code == 0
        assert gateway.last.json() == {"tools": ["time__convert_time", "github__x"]}
        assert out.splitlines() == [
            "approved 2 tool(s) (their definitions are now in the lock file):",
            "  time__convert_time",
            "  github__x",
            "still quarantined: other__y",
        ]

    def test_unknown_tool(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/pins/approve")] = (404, {"error": "no such tool(s) in the catalog: nope__x"})
        code, out, err = run(capsys, "approve", "--admin", gateway.address, "--tool", "nope__x")
        assert code == 65
        assert out == ""
        assert err == "twisted-mcp approve: the gateway refused: no such tool(s) in the catalog: nope__x\n"

    def test_pinning_off(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/pins/approve")] = (409, {"error": "tool pinning is off (policy pinning.mode)"})
        code, _, err = run(capsys, "approve", "--admin", gateway.address, "--all")
        assert code == 65
        assert "tool pinning is off" in err

    def test_all(self, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/pins/approve")] = (200, {"approved": []})
        code, out, _ = run(capsys, "approve", "--admin", gateway.address, "--all")
        assert code == 0
        assert gateway.last.json() == {"all": True}
        assert out == "nothing approved: no such tool is quarantined\n"


class TestAdminAddress:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("http://127.0.0.1:9100", "http://127.0.0.1:9100"),
            ("http://gw.example.com/admin/", "http://gw.example.com:80/admin"),
            ("https://gw.example.com", "https://gw.example.com:443"),
            ("tcp:9100:interface=127.0.0.1", "http://127.0.0.1:9100"),
            ("tcp:9100", "http://127.0.0.1:9100"),
            ("tcp:port=9100:interface=0.0.0.0", "http://127.0.0.1:9100"),
            ("tcp:host=10.0.0.5:port=9100", "http://10.0.0.5:9100"),
            ("tcp6:9100:interface=\\:\\:1", "http://[::1]:9100"),
            ("ssl:9443:privateKey=k.pem:interface=127.0.0.1", "https://127.0.0.1:9443"),
            ("unix:/run/twisted-mcp/admin.sock", "unix:/run/twisted-mcp/admin.sock"),
            ("unix:/run/a.sock:mode=660:lockfile=1", "unix:/run/a.sock"),
            ("unix:path=/run/a.sock", "unix:/run/a.sock"),
            ("localhost:9100", "http://localhost:9100"),
            ("9100", "http://127.0.0.1:9100"),
        ],
    )
    def test_forms(self, text: str, expected: str) -> None:
        assert str(parse_admin(text)) == expected

    @pytest.mark.parametrize(
        "text",
        ["systemd:domain=UNIX:index=0", "tcp:notaport", "unix:", "/run/a.sock", "tcp:99999", "http://[::1:9100", "http://h:99999"],
    )
    def test_bad(self, text: str) -> None:
        with pytest.raises(_Fail) as e:
            parse_admin(text)
        assert e.value.code == 64

    def test_bad_usage_exit(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "status", "--admin", "systemd:domain=UNIX:index=0")
        assert code == 64
        assert "twisted-mcp status: --admin systemd:domain=UNIX:index=0: a systemd: endpoint is a socket" in err
