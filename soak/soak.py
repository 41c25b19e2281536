"""
Soak and fault run: the real gateway, many clients, faulty backends, gates.

One daemon (`twistd mcp-gateway --listen unix:...`) serves SOAK_CLIENTS socket
clients, and SOAK_STDIO stdio gateways (`twistd -n mcp-gateway`) serve one
client each, for SOAK_SECONDS.  Their backends crash and are restarted, hang
past callTimeout, flood stderr and progress notifications, and write garbage
on stdout; most calls go to an echo backend.

Every call carries a unique id (strings and integers) and echo calls a unique
payload.  Gates (the run exits 1 when one fails, after printing a summary):

- answers: every call gets exactly one answer, to the client that sent it,
  with the id it was sent with, and an echo call answers its own payload;
  a call to a faulty backend may get a result or an error, but exactly one.
- no process left: every process below a gateway just before it was stopped
  (stdin EOF for stdio, SIGTERM for the daemon) is gone 15 s later.
- clean logs: no traceback and no unhandled error in a Deferred in the
  gateways' logs (the daemon's rotated log files included).
- flat resources, per gateway process: RSS, open fds (/proc/PID/fd) and
  the number of descendant processes are sampled every second.  After a
  warm-up (a quarter of the run, at most 30 s) the samples are split in two
  halves; a resource is flat when the maximum of the second half exceeds
  the maximum of the first by no more than its margin (MARGINS below).

SOAK_INJECT (comma-separated) injects a deliberate fault to show that a gate
trips: leak-connections (a client that opens connections and never closes
them, each holding an unfinished 1 MiB line), leak-children (calls a tool
that leaves a `sleep` child behind), leave-orphan (a backend starts a
`sleep` in a session of its own, which outlives the gateway), lose-answer,
duplicate-answer, misdeliver (the checker is handed one answer in 50 wrongly),
log-traceback (a traceback line is added to the logs the checker reads).
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEST_SERVERS = os.path.join(ROOT, "tests", "servers")
BIN = os.path.dirname(sys.executable)
PYTHON = sys.executable

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "20"))
STDIO_GATEWAYS = int(os.environ.get("SOAK_STDIO", "3"))
RATE = float(os.environ.get("SOAK_RATE", "10"))  # calls per second per client
WINDOW = 4  # calls in flight per client
RECONNECT_EVERY = float(os.environ.get("SOAK_RECONNECT", "20"))  # seconds, on average, between a socket client's reconnections
CALL_TIMEOUT = 3.0  # the gateway's callTimeout: hung calls are answered by then
INJECT = {x for x in os.environ.get("SOAK_INJECT", "").split(",") if x}
KNOWN_INJECTIONS = {
    "leak-connections",
    "leak-children",
    "leave-orphan",
    "lose-answer",
    "duplicate-answer",
    "misdeliver",
    "log-traceback",
}

MIB = 1024 * 1024
#: How much the second half's maximum may exceed the first half's.
MARGINS: dict[str, Callable[[float], float]] = {
    "rss": lambda first: max(16 * MIB, 0.10 * first),
    "fds": lambda first: 10,
    "children": lambda first: 1,
}


# -- backends and gateways ---------------------------------------------------


def test_server(name: str) -> dict[str, Any]:
    # The SDK test servers ask their client inline and rely on logging/setLevel: handshake era
    # (tests/integration/conftest.py pins them the same way).
    return {"command": PYTHON, "args": [os.path.join(TEST_SERVERS, f"{name}.py")], "protocol": "legacy"}


def faulty_server() -> dict[str, Any]:
    return {"command": PYTHON, "args": [os.path.join(HERE, "servers", "faulty.py")], "protocol": "legacy"}


GATEWAY_SETTINGS = {"callTimeout": CALL_TIMEOUT, "restartDelay": 0.2, "restartMaxDelay": 2, "stableAfter": 5}

#: The daemon's backends: echo plus every kind of fault (three use the SDK).
DAEMON_SERVERS = {
    "echo": test_server("echo_fast"),
    "faulty": faulty_server(),
    "crashy": test_server("crashy"),
    "garbage": test_server("garbage"),
    "slow": test_server("slow"),
}
#: The stdio gateways' backends: the SDK-free ones, so that several gateways start fast.
STDIO_SERVERS = {"echo": test_server("echo_fast"), "faulty": faulty_server()}


def write_config(directory: str, name: str, servers: dict[str, Any]) -> str:
    path = os.path.join(directory, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"mcpServers": servers, "gateway": GATEWAY_SETTINGS}, f, indent=2)
    return path


def gateway_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    return env


def start_daemon(directory: str) -> tuple[int, str]:
    servers = dict(DAEMON_SERVERS)
    if INJECT & {"leak-children", "leave-orphan"}:
        # A backend of its own that never crashes: a crash would kill its process group, leak included.
        servers["leaky"] = faulty_server()
    config = write_config(directory, "daemon", servers)
    sock = os.path.join(directory, "gw.sock")
    pidfile = os.path.join(directory, "gw.pid")
    argv = [os.path.join(BIN, "twistd"), "--pidfile", pidfile, "--logfile", os.path.join(directory, "gw.log")]
    argv += ["mcp-gateway", "--config", config, "--listen", f"unix:{sock}"]
    subprocess.run(argv, env=gateway_env(), cwd=directory, check=True, timeout=120)
    wait_until(lambda: os.path.exists(sock) and os.path.exists(pidfile), 60, "the daemon's socket")
    with open(pidfile) as f:
        return int(f.read().strip()), sock


def start_stdio_gateway(directory: str, index: int) -> subprocess.Popen[bytes]:
    config = write_config(directory, f"stdio{index}", STDIO_SERVERS)
    argv = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "mcp-gateway", "--config", config]
    log = open(os.path.join(directory, f"stdio{index}.log"), "wb")
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=gateway_env(), cwd=directory, bufsize=0
    )


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"soak: gave up waiting for {what}")
        time.sleep(0.05)


# -- clients -----------------------------------------------------------------


class Channel:
    """A bidirectional byte stream to one gateway front-end."""

    def __init__(self, read_fd: int, write: Callable[[bytes], None], close: Callable[[], None]) -> None:
        self.read_fd = read_fd
        self.write = write
        self.close = close

    @classmethod
    def unix(cls, path: str) -> Channel:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        return cls(s.fileno(), s.sendall, s.close)

    @classmethod
    def stdio(cls, proc: subprocess.Popen[bytes]) -> Channel:
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[stdin.write(view) or 0 :]

        return cls(proc.stdout.fileno(), write, stdin.close)


@dataclass
class Call:
    tool: str
    arguments: dict[str, Any]
    expect: str | None  # the text an echo must answer; None: any result or error
    progress: bool = False


def call_mix(daemon: bool) -> list[tuple[float, Callable[[str], Call]]]:
    """(weight, call maker) pairs; a maker turns a unique tag into a call."""
    mix: list[tuple[float, Callable[[str], Call]]] = [
        (70, lambda tag: Call("echo__echo", {"text": tag}, tag)),
        (5, lambda tag: Call("faulty__echo", {"text": tag}, tag)),
        (4, lambda tag: Call("faulty__garbage", {"text": tag}, None)),
        (0.3, lambda tag: Call("faulty__hang", {}, None)),
        (1, lambda tag: Call("faulty__flood", {"lines": 50}, None, progress=True)),
        (0.05, lambda tag: Call("faulty__crash", {}, None)),
    ]
    if daemon:
        mix += [
            (4, lambda tag: Call("crashy__echo", {"text": tag}, None)),
            (0.02, lambda tag: Call("crashy__crash", {}, None)),
            (4, lambda tag: Call("garbage__echo", {"text": tag}, None)),
            (1, lambda tag: Call("slow__sleep", {"seconds": 0.3}, None, progress=True)),
        ]
    return mix


@dataclass
class Tally:
    sent: int = 0
    results: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    progress: int = 0
    lost: list[Any] = field(default_factory=list)
    duplicated: list[Any] = field(default_factory=list)
    misdelivered: list[Any] = field(default_factory=list)
    wrong_payload: list[Any] = field(default_factory=list)


class Client:
    """
    One MCP client: keeps WINDOW calls in flight at RATE calls per second,
    and checks every message it receives against what it sent.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], Channel],
        mix: list[tuple[float, Callable[[str], Call]]],
        seed: int,
        reconnect_every: float | None = None,
    ) -> None:
        self.name = name
        self.connect = connect
        self.channel = connect()
        self.reconnect_every = reconnect_every
        self.random = random.Random(seed)
        self.weights = [w for w, _ in mix]
        self.makers = [m for _, m in mix]
        self.pending: dict[tuple[type, Any], Call] = {}
        self.answered: set[tuple[type, Any]] = set()
        self.buffer = b""
        self.tally = Tally()
        self.counter = itertools.count(1)
        self.peer: Client | None = None  # for the misdeliver injection
        self.received = 0
        #: Offsets this client's integer ids, so that no two clients use the same one.
        self.number = 0

    def next_id(self) -> Any:
        """Half the ids are strings, half integers: both kinds must come back exactly."""
        n = next(self.counter)
        if n % 2:
            return f"{self.name}:{n}"
        return self.number * 10_000_000 + n

    def send(self, message: dict[str, Any]) -> None:
        self.channel.write(json.dumps(message).encode() + b"\n")

    def initialize(self) -> None:
        rid = f"{self.name}:init"
        params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": self.name, "version": "1"}}
        self.send({"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": params})
        deadline = time.monotonic() + 60
        while True:
            for message in self.read(max(0.1, deadline - time.monotonic())):
                if message.get("id") == rid:
                    if "result" not in message:
                        raise SystemExit(f"soak: {self.name}: initialize failed: {message}")
                    self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                    return
            if time.monotonic() > deadline:
                raise SystemExit(f"soak: {self.name}: no answer to initialize")

    def read(self, timeout: float) -> list[dict[str, Any]]:
        with selectors.DefaultSelector() as sel:
            sel.register(self.channel.read_fd, selectors.EVENT_READ)
            if not sel.select(timeout):
                return []
        chunk = os.read(self.channel.read_fd, 1 << 20)
        if not chunk:
            raise ConnectionError(f"{self.name}: the gateway closed the connection")
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def call(self) -> None:
        rid = self.next_id()
        tag = f"{self.name}/{rid}/{self.random.getrandbits(48):x}"
        call = self.random.choices(self.makers, self.weights)[0](tag)
        params: dict[str, Any] = {"name": call.tool, "arguments": call.arguments}
        if call.progress:
            params["_meta"] = {"progressToken": tag}
        self.pending[(type(rid), rid)] = call
        self.tally.sent += 1
        self.send({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})

    def receive(self, message: dict[str, Any]) -> None:
        self.received += 1
        if "lose-answer" in INJECT and "method" not in message and self.received % 50 == 0:
            return
        if "misdeliver" in INJECT and self.peer is not None and self.received % 50 == 0:
            self.peer.check(message)
            return
        self.check(message)
        if "duplicate-answer" in INJECT and "method" not in message and self.received % 50 == 0:
            self.check(message)

    def check(self, message: dict[str, Any]) -> None:
        if "method" in message:
            self.check_notification(message)
            return
        rid = message.get("id")
        key = (type(rid), rid)
        call = self.pending.pop(key, None)
        if call is None:
            (self.tally.duplicated if key in self.answered else self.tally.misdelivered).append(rid)
            return
        self.answered.add(key)
        if "error" in message:
            self.tally.errors[message["error"].get("code")] += 1
            if call.expect is not None and call.tool == "echo__echo":
                self.tally.wrong_payload.append((rid, message["error"]))
            return
        self.tally.results += 1
        if call.expect is not None and answer_text(message) != call.expect:
            self.tally.wrong_payload.append((rid, answer_text(message)))

    def check_notification(self, message: dict[str, Any]) -> None:
        if message.get("method") != "notifications/progress":
            return
        token = (message.get("params") or {}).get("progressToken")
        if not isinstance(token, str) or not token.startswith(f"{self.name}/"):
            self.tally.misdelivered.append(("progress", token))
        else:
            self.tally.progress += 1

    def run(self, until: float) -> None:
        interval = 1.0 / RATE
        next_send = time.monotonic()
        next_reconnect = self.next_reconnect()
        while time.monotonic() < until:
            now = time.monotonic()
            if now >= next_reconnect:
                self.reconnect()
                next_reconnect = self.next_reconnect()
                continue
            if len(self.pending) < WINDOW and now >= next_send:
                self.call()
                next_send = max(next_send + interval, now - 1.0)
                continue
            for message in self.read(min(0.05, max(0.0, next_send - now))):
                self.receive(message)
        self.drain(CALL_TIMEOUT + 15)

    def next_reconnect(self) -> float:
        if self.reconnect_every is None:
            return float("inf")
        return time.monotonic() + self.random.uniform(0.5, 1.5) * self.reconnect_every

    def reconnect(self) -> None:
        """Close the connection once every call on it is answered, and open a new session."""
        self.drain(CALL_TIMEOUT + 15)
        self.channel.close()
        self.buffer = b""
        self.channel = self.connect()
        self.initialize()

    def drain(self, bound: float) -> None:
        """Wait for the calls still in flight, then a little longer to catch late duplicates."""
        deadline = time.monotonic() + bound
        while self.pending and time.monotonic() < deadline:
            for message in self.read(0.1):
                self.receive(message)
        linger = time.monotonic() + 1.0
        while time.monotonic() < linger:
            for message in self.read(0.1):
                self.receive(message)
        self.tally.lost.extend(rid for _, rid in self.pending)


def answer_text(message: dict[str, Any]) -> Any:
    try:
        return message["result"]["content"][0]["text"]
    except (KeyError, IndexError, TypeError):
        return None


def run_client(client: Client, until: float, failures: list[str]) -> None:
    try:
        client.run(until)
    except Exception as e:  # a dead client fails the run; the others go on
        failures.append(f"{client.name}: {type(e).__name__}: {e}")
        client.tally.lost.extend(rid for _, rid in client.pending)


def quit_abruptly(sock: str, until: float) -> None:
    """
    A client fault of the ordinary kind: connect, start a call that hangs and
    one that answers, and hang up without reading.  The gateway must clean up
    after it (the resource gates see it if it does not).
    """
    messages = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "quitter", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "faulty__hang", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo__echo", "arguments": {"text": "bye"}}},
    ]
    data = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    while time.monotonic() < until:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall(data)
        time.sleep(0.5)


# -- deliberate faults, to show that the gates trip --------------------------


def leak_connections(sock: str, until: float, leaked: list[socket.socket]) -> None:
    while time.monotonic() < until:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "' + b"x" * MIB)
        leaked.append(s)
        time.sleep(0.5)


def leak_children(sock: str, until: float, tool: str = "leaky__spawn", once: bool = False) -> None:
    client = Client("leaker", lambda: Channel.unix(sock), [(1, lambda tag: Call(tool, {}, None))], 0)
    client.initialize()
    while time.monotonic() < until:
        client.call()
        client.drain(CALL_TIMEOUT + 5)
        if once:
            return
        time.sleep(0.5)


# -- resources -----------------------------------------------------------------


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


def still_running(pids: list[int], bound: float) -> list[int]:
    """Those of C{pids} still alive after waiting up to C{bound} seconds for them to go."""
    deadline = time.monotonic() + bound
    while True:
        alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and not zombie(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def sample(pid: int, tree: dict[int, list[int]]) -> dict[str, float] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None
    return {"rss": rss, "fds": fds, "children": len(descendants(pid, tree))}


def monitor(pids: dict[str, int], until: float, samples: dict[str, list[tuple[float, dict[str, float]]]]) -> None:
    start = time.monotonic()
    while time.monotonic() < until:
        tree = children_of()
        for name, pid in pids.items():
            figures = sample(pid, tree)
            if figures is not None:
                samples[name].append((time.monotonic() - start, figures))
        time.sleep(1.0)


def flatness(series: list[tuple[float, dict[str, float]]], warmup: float) -> list[tuple[str, float, float, float, bool]]:
    """(resource, first-half max, second-half max, margin, flat) for each resource."""
    kept = [figures for t, figures in series if t >= warmup]
    if len(kept) < 4:
        return [(resource, 0, 0, 0, False) for resource in MARGINS]
    half = len(kept) // 2
    rows = []
    for resource, margin_of in MARGINS.items():
        first = max(f[resource] for f in kept[:half])
        second = max(f[resource] for f in kept[half:])
        margin = margin_of(first)
        rows.append((resource, first, second, margin, second <= first + margin))
    return rows


# -- the run ---------------------------------------------------------------------


def show(resource: str, value: float) -> str:
    return f"{value / MIB:.1f} MiB" if resource == "rss" else f"{value:g}"


def log_errors(directory: str) -> Counter[str]:
    """How many tracebacks and unhandled Deferred errors the gateways logged."""
    found: Counter[str] = Counter()
    for path in glob.glob(os.path.join(directory, "*.log*")):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                for marker in ("Traceback (most recent call last)", "Unhandled error in Deferred"):
                    if marker in line:
                        found[marker] += 1
    return found


def report(
    clients: list[Client],
    samples: dict[str, list[tuple[float, dict[str, float]]]],
    failures: list[str],
    leftovers: list[int],
    errors_logged: Counter[str],
) -> bool:
    total = Tally()
    for c in clients:
        t = c.tally
        total.sent += t.sent
        total.results += t.results
        total.errors.update(t.errors)
        total.progress += t.progress
        for name in ("lost", "duplicated", "misdelivered", "wrong_payload"):
            getattr(total, name).extend(getattr(t, name))
    print(f"\nsoak: {SECONDS:g} s, {CLIENTS} socket clients, {STDIO_GATEWAYS} stdio gateways, inject={sorted(INJECT) or 'none'}")
    print(f"calls sent {total.sent}, results {total.results}, errors {sum(total.errors.values())} "
          f"(by code: {dict(sorted(total.errors.items(), key=str))}), progress notifications {total.progress}")
    print("\n| gate | figure | pass |\n|---|---|---|")
    gates: list[bool] = []
    for name in ("lost", "duplicated", "misdelivered", "wrong_payload"):
        found = getattr(total, name)
        gates.append(not found)
        print(f"| answers {name} | {len(found)}{' e.g. ' + repr(found[:3]) if found else ''} | {'yes' if not found else 'NO'} |")
    warmup = min(30.0, SECONDS / 4)
    for process, series in samples.items():
        for resource, first, second, margin, flat in flatness(series, warmup):
            gates.append(flat)
            print(f"| {process} {resource} flat | first half max {show(resource, first)}, second half max "
                  f"{show(resource, second)}, margin {show(resource, margin)} | {'yes' if flat else 'NO'} |")
    gates.append(not leftovers)
    gates.append(not errors_logged)
    print(f"| no traceback or unhandled error in the gateway logs | {dict(errors_logged) or 0} | {'yes' if not errors_logged else 'NO'} |")
    print(f"| no process left 15 s after the gateways stopped | {len(leftovers)} left {leftovers[:5]} | {'yes' if not leftovers else 'NO'} |")
    for failure in failures:
        print(f"client failure: {failure}")
    ok = all(gates) and not failures
    print(f"\nsoak: {'PASS' if ok else 'FAIL'}")
    print(f"soak: {gates.count(True)} passed, {gates.count(False) + len(failures)} failed")
    return ok


def stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def stop_gateways(daemon_pid: int, stdio: list[subprocess.Popen[bytes]]) -> None:
    """Stdin EOF for the stdio gateways, SIGTERM for the daemon, as an operator would."""
    for p in stdio:
        if p.stdin is not None:
            p.stdin.close()
    stop(daemon_pid)
    for p in stdio:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> int:
    unknown = INJECT - KNOWN_INJECTIONS
    if unknown:
        raise SystemExit(f"soak: unknown SOAK_INJECT {sorted(unknown)} (known: {sorted(KNOWN_INJECTIONS)})")
    directory = tempfile.mkdtemp(prefix="twisted-mcp-soak-")
    daemon_pid, sock = start_daemon(directory)
    stdio = [start_stdio_gateway(directory, i) for i in range(STDIO_GATEWAYS)]
    pids = {"daemon": daemon_pid} | {f"stdio{i}": p.pid for i, p in enumerate(stdio)}
    try:
        clients = [
            Client(f"c{i}", lambda: Channel.unix(sock), call_mix(True), i, RECONNECT_EVERY) for i in range(CLIENTS)
        ]
        clients += [
            Client(f"s{i}", lambda p=p: Channel.stdio(p), call_mix(False), 1000 + i) for i, p in enumerate(stdio)
        ]
        for number, client in enumerate(clients, 1):
            client.number = number
            client.peer = clients[number % len(clients)]
        for client in clients:
            client.initialize()
        until = time.monotonic() + SECONDS
        failures: list[str] = []
        samples: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in pids}
        leaked: list[socket.socket] = []
        threads = [threading.Thread(target=run_client, args=(c, until, failures)) for c in clients]
        threads.append(threading.Thread(target=monitor, args=(pids, until, samples)))
        threads.append(threading.Thread(target=quit_abruptly, args=(sock, until)))
        if "leak-connections" in INJECT:
            threads.append(threading.Thread(target=leak_connections, args=(sock, until, leaked), daemon=True))
        if "leak-children" in INJECT:
            threads.append(threading.Thread(target=leak_children, args=(sock, until), daemon=True))
        if "leave-orphan" in INJECT:
            threads.append(threading.Thread(target=leak_children, args=(sock, until, "leaky__escape", True)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tree = children_of()
        backends = [child for pid in pids.values() for child in descendants(pid, tree)]
    finally:
        stop_gateways(daemon_pid, stdio)
    if "log-traceback" in INJECT:
        with open(os.path.join(directory, "injected.log"), "w") as f:
            f.write("Traceback (most recent call last):\n")
    ok = report(clients, samples, failures, still_running(backends, 15), log_errors(directory))
    if ok:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        print(f"soak: logs kept in {directory}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
