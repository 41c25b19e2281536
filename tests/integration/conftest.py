"""
Integration test fixtures: the real `twistd -n --pidfile= mcp-gateway`
command, real MCP servers as backends, and helpers to speak raw JSON-RPC
to it or drive it with the official `mcp` SDK client.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
SERVERS = os.path.join(TESTS, "servers")
NODE_DIR = os.path.join(TESTS, "node")
BIN = os.path.dirname(sys.executable)
PYTHON = sys.executable


def bin_path(name: str) -> str:
    path = os.path.join(BIN, name)
    if os.path.exists(path):
        return path
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (run the tests with `make test`)")
    return found


#: Our test servers built on the SDK 2.3 `MCPServer`, which speaks both eras:
#: under `protocol: auto` the gateway would find them modern (2026-07-28), but
#: their tests exercise the handshake era (inline ctx.elicit / create_message,
#: logging/setLevel, resources/subscribe, which a modern connection does not
#: have), so they are pinned `protocol: legacy` unless a test says otherwise.
HANDSHAKE_ERA_SDK_SERVERS = frozenset({"_sleep", "crashy", "erring", "garbage", "grandchild", "noisy", "slow", "surface"})


def server(name: str, **extra: Any) -> dict[str, Any]:
    """A config entry for one of our own test servers in tests/servers/."""
    entry: dict[str, Any] = {"command": PYTHON, "args": [os.path.join(SERVERS, f"{name}.py")]}
    if name in HANDSHAKE_ERA_SDK_SERVERS:
        entry["protocol"] = "legacy"
    entry.update(extra)
    return entry


def everything(**extra: Any) -> dict[str, Any]:
    """@modelcontextprotocol/server-everything from npm, launched with npx."""
    if not os.path.exists(os.path.join(NODE_DIR, "node_modules", ".bin", "mcp-server-everything")):
        pytest.fail("npm test packages are missing: run `make test` (it runs npm ci in tests/node)")
    entry: dict[str, Any] = {
        "command": "npx",
        "args": ["--no-install", "mcp-server-everything", "stdio"],
        "cwd": NODE_DIR,
    }
    entry.update(extra)
    return entry


def time_server(**extra: Any) -> dict[str, Any]:
    """mcp-server-time from PyPI."""
    entry: dict[str, Any] = {"command": bin_path("mcp-server-time"), "args": ["--local-timezone", "UTC"]}
    entry.update(extra)
    return entry


def gateway_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture
def write_config(tmp_path):
    """write_config(servers, **gateway_settings) -> path of a YAML (JSON) config."""

    def write(servers: dict[str, Any], **gateway: Any) -> str:
        data: dict[str, Any] = {"mcpServers": servers}
        if gateway:
            data["gateway"] = gateway
        path = tmp_path / "gateway.yaml"
        path.write_text(json.dumps(data, indent=2))
        return str(path)

    return write


def gateway_argv(config: str) -> list[str]:
    return [bin_path("twistd"), "-n", "--pidfile=", "mcp-gateway", "--config", config]


class RawGateway:
    """
    The gateway as a child process, spoken to in raw JSON-RPC lines.
    stderr is collected in a file (see L{stderr_text}).
    """

    def __init__(self, argv: list[str], tmp_path: Any, cwd: str | None = None, name: str = "gw") -> None:
        self.errpath = os.path.join(str(tmp_path), f"{name}.stderr")
        self.errfile = open(self.errpath, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errfile,
            env=gateway_env(),
            cwd=cwd or str(tmp_path),
            bufsize=0,
        )
        self.buf = b""
        self.raw_chunks: list[bytes] = []
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.next_id = 1000
        self.seen: list[dict[str, Any]] = []

    def send(self, message: Any) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.proc.stdin.write(data)

    def read_message(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        if b"\n" not in self.buf:
            chunks = [self.buf]
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.sel.select(left):
                    self.buf = b"".join(chunks)
                    raise TimeoutError(f"no message from the gateway within {timeout} s; stderr:\n{self.stderr_text()[-3000:]}")
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    self.buf = b"".join(chunks)
                    raise EOFError(f"the gateway closed stdout; stderr:\n{self.stderr_text()[-3000:]}")
                self.raw_chunks.append(chunk)
                chunks.append(chunk)
                if b"\n" in chunk:
                    break
            self.buf = b"".join(chunks)
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    @property
    def raw(self) -> bytes:
        return b"".join(self.raw_chunks)

    def response(self, rid: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Read until the response with id C{rid}; other messages are kept in C{self.seen}."""
        for i, msg in enumerate(self.seen):
            if "id" in msg and msg["id"] == rid and type(msg["id"]) is type(rid) and "method" not in msg:
                return self.seen.pop(i)
        while True:
            msg = self.read_message(timeout)
            if "id" in msg and msg["id"] == rid and type(msg["id"]) is type(rid) and "method" not in msg:
                return msg
            self.seen.append(msg)

    seen: list[dict[str, Any]]

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return self.response(rid, timeout)

    def wait_for_notification(self, method: str, timeout: float = 20.0) -> dict[str, Any]:
        """Read until a notification C{method} arrives (others are kept in C{seen})."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.seen:
                if msg.get("method") == method:
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout} s")
            try:
                self.seen.append(self.read_message(timeout=min(1.0, left)))
            except TimeoutError:
                pass

    def initialize(self, version: str = "2025-11-25") -> dict[str, Any]:
        self.seen = []
        result = self.request(
            "initialize",
            {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1"}},
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def close_stdin(self) -> None:
        self.proc.stdin.close()

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def drain_stdout(self, timeout: float = 10.0) -> bytes:
        """Everything left on stdout until EOF."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                break
            self.raw_chunks.append(chunk)
            self.buf += chunk
        return self.buf

    def stderr_text(self) -> str:
        self.errfile.flush()
        with open(self.errpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.stderr_text()
            if text in log:
                return log
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not in the gateway's log:\n{self.stderr_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def finish(self) -> None:
        """Test teardown: make sure nothing is left running."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.sel.close()
        self.errfile.close()


@pytest.fixture
def raw_gateway(tmp_path):
    """raw_gateway(config_path, cwd=None) -> a started L{RawGateway}; stopped at teardown."""
    started: list[RawGateway] = []

    def start(config: str, cwd: str | None = None, argv: list[str] | None = None) -> RawGateway:
        gw = RawGateway(argv or gateway_argv(config), tmp_path, cwd=cwd, name=f"gw{len(started)}")
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.finish()


def processes():
    """(pid, state, parent pid) of every process, from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        yield int(entry), fields[0], int(fields[1])


def descendants(pid: int) -> set[int]:
    """Every live process below C{pid} (by parent links, from /proc)."""
    children: dict[int, list[int]] = {}
    for child, state, parent in processes():
        if state != b"Z":
            children.setdefault(parent, []).append(child)
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    """Wait until none of C{pids} is alive; return those still alive."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {p for p in left if alive(p)}
    return left


# -- daemon mode -------------------------------------------------------------


@pytest.fixture
def daemon(write_config, tmp_path):
    started: list[tuple[str, str]] = []

    def start(
        servers: dict, *listen: str, extra: dict | None = None, admin: str | None = None, args: tuple = (), **gateway
    ) -> tuple[int, str]:
        config = write_config(servers, **gateway)
        if extra:
            with open(config) as f:
                data = json.load(f)
            data.update(extra)
            with open(config, "w") as f:
                json.dump(data, f, indent=2)
        pidfile = str(tmp_path / "gw.pid")
        logfile = str(tmp_path / "gw.log")
        argv = [bin_path("twistd"), "--pidfile", pidfile, "--logfile", logfile, "mcp-gateway", "--config", config]
        for endpoint in listen:
            argv += ["--listen", endpoint]
        if admin:
            argv += ["--admin", admin]
        argv += list(args)
        proc = subprocess.run(argv, env=gateway_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 20
        while not os.path.exists(pidfile):
            assert time.monotonic() < deadline, "no pid file"
            time.sleep(0.05)
        pid = read_pid(pidfile)
        started.append((pidfile, logfile))
        return pid, logfile

    yield start
    # Stop each daemon as an operator would (SIGTERM), so that it ends what its
    # backends left behind; SIGKILL only one that does not stop in time (a
    # SIGKILLed gateway leaves its backends' daemonized descendants to init).
    pids = []
    for pidfile, _ in started:
        try:
            pids.append(read_pid(pidfile))
            os.kill(pids[-1], signal.SIGTERM)
        except (OSError, ValueError):
            pass
    for pid in wait_gone(set(pids), 30.0):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def read_pid(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_path(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


class LineClient:
    """A raw newline-delimited JSON-RPC client on a Unix socket."""

    def __init__(self, path: str, sock: Any = None) -> None:
        import socket

        if sock is None:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(30)
            sock.connect(path)
        self.sock = sock
        self.buf = b""
        self.notifications: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def read(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, rid, method, params=None):
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return self.answer(rid)

    def answer(self, rid):
        while True:
            message = self.read()
            if message.get("id") == rid and "method" not in message:
                return message
            if "method" in message and "id" not in message:
                self.notifications.append(message)

    def initialize(self, name: str = "test") -> dict[str, Any]:
        out = self.request(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": name, "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return out

    def close(self) -> None:
        self.sock.close()


def until(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll C{predicate} until it returns something true (returned), or fail after C{timeout} s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def result_text(answer: dict) -> str:
    """The text of a tool call's first content item (the call must have succeeded)."""
    assert "result" in answer, answer
    return answer["result"]["content"][0]["text"]


def read_until_closed(sock, timeout: float = 15.0) -> bytes:
    """Everything the gateway sends on C{sock} until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data
