#!/usr/bin/env python3
"""
Benchmark: many MCP clients on the gateway's Unix socket, sharing one echo backend.

One run starts the gateway as a daemon would run it (`twistd -n --pidfile=
mcp-gateway --config CFG --listen unix:SOCK`, in the foreground, config and
socket in a temporary directory) in front of one echo backend
(tests/servers/echo_fast.py, the backend bench_stdio.py uses), and measures:

  direct       the same echo backend spoken to over its own stdio, no gateway
               (the baseline), with the same number of calls in flight;
  1 client     one socket session keeping --inflight calls in flight
               (pipelined), and its p50/p99 latency at 1 call in flight;
  N clients    --clients socket connections, each its own initialized MCP
               session, together keeping the same --inflight calls in flight
               (spread evenly: 50 clients x 1 by default).  Every session uses
               the same request ids (1, 2, 3, ...) and a payload naming the
               session and the id, and every answer is checked to have come
               back to the session that sent it, with its own payload;
  idle memory  the gateway's RSS (VmRSS and RssAnon; Pss and Private from
               smaps_rollup) after a warm-up with 10 clients, and again with
               --idle sessions connected and idle (each sent initialize,
               notifications/initialized and one tools/list): delta / --idle,
               each figure the median of 7 readings.

The same total in flight everywhere is what makes 1 client and N clients
comparable: the backend sees the same depth, and what differs is only that
the gateway serves it to N sessions, each one call at a time by default (as
an agent waiting for its tool result does).

The direct / 1 client / N clients measurements are repeated --rounds times,
in alternating order, and the medians reported.

    python bench/bench_sockets.py [--seconds N] [--clients 50] [--idle 500]

The clients are lean hand-written JSON-RPC clients on one epoll loop in this
process (or --procs processes for the N-client measurement).  Client, gateway
and backend share the machine: the CPU each used is printed next to each row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ECHO = os.path.join(ROOT, "tests", "servers", "echo_fast.py")
TOOL = "echo__echo"
TICKS = os.sysconf("SC_CLK_TCK")
# Below glibc's mmap threshold (128 KiB): a 1 MiB os.read() allocates its buffer with mmap
# and shrinks it with mremap, page faults and all, on every read, which with one small
# answer per read cost this client more CPU per call than the gateway's own work.
READ_SIZE = 65536
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench-sockets", "version": "1"}}


def twistd() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "twistd")
    return exe if os.path.exists(exe) else shutil.which("twistd") or "twistd"


# --- /proc ------------------------------------------------------------------


def kill_survivors(pids: Iterable[int], what: str, grace: float = 10.0) -> list[str]:
    """Give the processes C{pids} C{grace} seconds to exit, then SIGKILL the rest; C{what} each one killed."""
    pids = list(pids)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(cpu_seconds(p) is not None for p in pids):
        time.sleep(0.05)
    killed = []
    for p in pids:
        if cpu_seconds(p) is not None:
            try:
                os.kill(p, signal.SIGKILL)
                killed.append(f"{what} {p}")
            except OSError:
                pass
    return killed


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of one process, or None if it is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return (user + nice + system + irq + softirq) / TICKS, steal / TICKS


def cpu_snapshot(pids: dict[str, int | None]) -> dict[str, float | None]:
    snap = {k: cpu_seconds(p) for k, p in pids.items()}
    snap["machine"], snap["steal"] = system_cpu()
    return snap


def cpu_delta(before: dict, after: dict) -> dict[str, float | None]:
    return {k: (after[k] - before[k] if before[k] is not None and after.get(k) is not None else None) for k in before}


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != b"Z":
                out.append(int(entry))
    return out


def memory(pid: int) -> dict[str, int | None]:
    """
    VmRSS and RssAnon from status, Pss and Private_* from smaps_rollup (KB;
    None if unreadable).  Pss and Private also move when other processes map
    the same shared libraries; RssAnon (the heap, mostly) does not.
    """
    out: dict[str, int | None] = {"rss": None, "anon": None, "pss": None, "private": None}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                out["anon"] = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            private = 0
            for line in f:
                key, _, rest = line.partition(":")
                if key == "Pss":
                    out["pss"] = int(rest.split()[0])
                elif key in ("Private_Clean", "Private_Dirty"):
                    private += int(rest.split()[0])
            out["private"] = private
    except OSError:
        pass
    return out


def memory_median(pid: int, readings: int = 7, interval: float = 0.25) -> dict[str, float | None]:
    samples = []
    for i in range(readings):
        if i:
            time.sleep(interval)
        samples.append(memory(pid))
    return {
        k: (statistics.median(s[k] for s in samples) if samples[0][k] is not None else None) for k in samples[0]
    }


def set_pdeathsig() -> None:
    """In a child, before exec: get SIGTERM if this benchmark dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# --- clients ----------------------------------------------------------------


class Conn:
    """One JSON-RPC session: a Unix socket to the gateway, or the pipes of a direct backend."""

    __slots__ = ("ci", "rfd", "wfd", "sock", "tool", "buf", "pending", "next_id", "template", "expect")

    def __init__(self, ci: int, rfd: int, wfd: int, tool: str, sock: socket.socket | None = None) -> None:
        self.ci = ci
        self.rfd = rfd
        self.wfd = wfd
        self.sock = sock
        self.tool = tool
        self.buf = b""
        self.pending: dict[int, float] = {}
        self.next_id = 1
        # The payload names the session and the id: "c<session>-<id>".
        self.template = (
            '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"'
            + tool
            + '","arguments":{"text":"c'
            + str(ci)
            + '-%d"}}}\n'
        )
        self.expect = b'"text":"c' + str(ci).encode() + b"-%d\""

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view) :]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def connect_unix(path: str, ci: int) -> Conn:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return Conn(ci, s.fileno(), s.fileno(), TOOL, s)


def exchange(conns: list[Conn], build, want_id: int, timeout: float = 60.0) -> dict[int, dict]:
    """Send build(conn) on every conn, wait for each conn's answer with id want_id."""
    ep = select.epoll()
    by_fd = {}
    for c in conns:
        by_fd[c.rfd] = c
        ep.register(c.rfd, select.EPOLLIN)
        c.send(build(c))
    answers: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(answers) < len(conns):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(conns) - len(answers)} session(s) got no answer to id {want_id}")
            for fd, _ in ep.poll(left):
                c = by_fd[fd]
                data = os.read(fd, READ_SIZE)
                if not data:
                    raise EOFError(f"session {c.ci}: the other end closed the connection")
                lines = (c.buf + data).split(b"\n")
                c.buf = lines.pop()
                for line in lines:
                    if line.strip():
                        msg = json.loads(line)
                        if msg.get("id") == want_id:
                            if "error" in msg:
                                raise RuntimeError(f"session {c.ci}: error answer {msg['error']}")
                            answers[c.ci] = msg
    finally:
        ep.close()
    return answers


def handshake(conns: list[Conn]) -> None:
    """initialize (and wait), then notifications/initialized + tools/list (and wait)."""
    init = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}).encode() + b"\n"
    exchange(conns, lambda c: init, 0)
    then = b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n{"jsonrpc":"2.0","id":-1,"method":"tools/list"}\n'
    for ci, msg in exchange(conns, lambda c: then, -1).items():
        names = [t["name"] for t in msg["result"]["tools"]]
        tool = next(c.tool for c in conns if c.ci == ci)
        if tool not in names:
            raise RuntimeError(f"session {ci}: {tool} not in tools/list {names}")


def run_load(conns: list[Conn], depths: list[int], seconds: float, start_at: float | None = None) -> dict:
    """
    Keep depths[i] calls in flight on conns[i] until `seconds` pass, then
    drain.  Every answer is checked: its id must be one this session has in
    flight, and its text the payload this session sent with that id.
    """
    ep = select.epoll()
    by_fd = {}
    for c in conns:
        by_fd[c.rfd] = c
        ep.register(c.rfd, select.EPOLLIN)
        c.pending = {}
        c.buf = b""
    latencies: list[float] = []
    lat_append = latencies.append
    now = time.monotonic
    errors = mismatched = misrouted = 0
    examples: list[str] = []
    if start_at is not None:
        while now() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - now())))
    cpu0 = os.times()
    start = now()
    deadline = start + seconds
    outstanding = 0
    for c, depth in zip(conns, depths, strict=False):
        batch = []
        for _ in range(depth):
            rid = c.next_id
            c.next_id = rid + 1
            c.pending[rid] = now()
            batch.append(c.template % (rid, rid))
        outstanding += depth
        if batch:
            c.send("".join(batch).encode())
    done = 0
    last = start
    read = os.read
    wakeups = reads = 0
    try:
        while outstanding:
            events = ep.poll(60)
            if not events:
                raise TimeoutError(f"no answer for 60 s with {outstanding} call(s) in flight")
            wakeups += 1
            reads += len(events)
            for fd, _ in events:
                c = by_fd[fd]
                data = read(fd, READ_SIZE)
                if not data:
                    raise EOFError(f"session {c.ci}: the other end closed the connection")
                if b"\n" not in data:
                    c.buf += data
                    continue
                if c.buf:
                    data = c.buf + data
                lines = data.split(b"\n")
                c.buf = lines.pop()
                t = now()
                pending = c.pending
                batch = []
                for line in lines:
                    # Cheap id extraction: answers are {"jsonrpc":"2.0","id":N,...}.
                    i = line.find(b'"id":') + 5
                    if i == 4:
                        continue  # a notification (no id), or a blank line
                    j = i
                    while 48 <= line[j] <= 57:
                        j += 1
                    rid = int(line[i:j])
                    t0 = pending.pop(rid, None)
                    if t0 is None:
                        misrouted += 1
                        if len(examples) < 5:
                            examples.append(f"session {c.ci} got id {rid} it has not in flight: {line[:160]!r}")
                        continue
                    outstanding -= 1
                    if c.expect % rid not in line:
                        if b'"error"' in line:
                            errors += 1
                            if len(examples) < 5:
                                examples.append(f"session {c.ci} id {rid}: {line[:200]!r}")
                        else:
                            # Not the byte pattern expected: parse it properly before calling it wrong.
                            try:
                                text = json.loads(line)["result"]["content"][0]["text"]
                            except (ValueError, KeyError, IndexError, TypeError):
                                text = None
                            if text != f"c{c.ci}-{rid}":
                                mismatched += 1
                                if len(examples) < 5:
                                    examples.append(f"session {c.ci} id {rid} got {line[:200]!r}")
                    lat_append(t - t0)
                    done += 1
                    if t < deadline:
                        rid = c.next_id
                        c.next_id = rid + 1
                        pending[rid] = t
                        batch.append(c.template % (rid, rid))
                        outstanding += 1
                if batch:
                    c.send("".join(batch).encode())
                last = t
    finally:
        ep.close()
    cpu1 = os.times()
    return {
        "calls": done,
        "start": start,
        "end": last,
        "latencies": latencies,
        "client_cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "wakeups": wakeups,
        "reads": reads,
        "errors": errors,
        "mismatched": mismatched,
        "misrouted": misrouted,
        "examples": examples,
    }


def spread(total: int, n: int) -> list[int]:
    """`total` calls in flight over `n` sessions, as evenly as possible."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def _worker(pipe, path: str, first: int, depths: list[int], seconds: float) -> None:
    """A client process for the N-client measurement (--procs > 1)."""
    conns = []
    try:
        conns = [connect_unix(path, first + i) for i in range(len(depths))]
        handshake(conns)
        pipe.send("ready")
        start_at = pipe.recv()
        pipe.send(run_load(conns, depths, seconds, start_at))
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        pipe.send(e)
    finally:
        for c in conns:
            c.close()


# --- processes ----------------------------------------------------------------


class Processes:
    """The gateway and the direct backend; everything started is gone after stop()."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.sock = os.path.join(tmp, "gw.sock")
        self.log = os.path.join(tmp, "gw.log")
        self.gateway: subprocess.Popen | None = None
        self.direct: subprocess.Popen | None = None
        self.backends: set[int] = set()
        self.workers: list = []

    def start_gateway(self) -> None:
        config = os.path.join(self.tmp, "gateway.yaml")
        with open(config, "w") as f:
            # Every session comes from this one uid: lift the per-peer and total caps.
            json.dump({"mcpServers": {"echo": {"command": sys.executable, "args": [ECHO]}},
                       "gateway": {"maxClients": 100_000, "maxClientsPerPeer": 100_000}}, f)
        self.argv = [twistd(), "-n", "--pidfile=", "--logfile", self.log, "mcp-gateway", "--config", config,
                     "--listen", f"unix:{self.sock}"]
        # Its own session: a Ctrl-C reaches this benchmark, which then stops the gateway
        # (SIGTERM, so that it stops its backend); PDEATHSIG covers this process dying.
        with open(os.path.join(self.tmp, "gw.stderr"), "wb") as err:
            self.gateway = subprocess.Popen(
                self.argv, cwd=self.tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True, preexec_fn=set_pdeathsig,
            )
        deadline = time.monotonic() + 60
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.gateway.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.sock):
                try:
                    c = connect_unix(self.sock, 0)
                    try:
                        handshake([c])  # succeeds once discovery has listed echo__echo
                    finally:
                        c.close()
                    self.backend_pid()
                    return
                except (OSError, RuntimeError, EOFError, TimeoutError) as e:
                    last = e
            time.sleep(0.1)
        raise RuntimeError(f"the gateway was not ready within 60 s ({last}):\n{self.log_tail()}")

    def backend_pid(self) -> int | None:
        kids = children(self.gateway.pid) if self.gateway else []
        self.backends.update(kids)
        return kids[0] if len(kids) == 1 else None

    def start_direct(self) -> Conn:
        self.direct = subprocess.Popen(
            [sys.executable, ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            bufsize=0, preexec_fn=set_pdeathsig,
        )
        conn = Conn(0, self.direct.stdout.fileno(), self.direct.stdin.fileno(), "echo")
        handshake([conn])
        return conn

    def log_tail(self) -> str:
        out = []
        for name in (self.log, os.path.join(self.tmp, "gw.stderr")):
            try:
                with open(name, errors="replace") as f:
                    out.append(f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(out)

    def stop(self) -> list[str]:
        """Stop everything; return what had to be killed (should be nothing)."""
        killed = []
        for w in self.workers:
            if w.is_alive():
                w.terminate()
            w.join(5)
        if self.direct is not None:
            try:
                self.direct.stdin.close()
                self.direct.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.direct.kill()
                self.direct.wait()
                killed.append("direct echo backend")
        if self.gateway is not None:
            self.backend_pid()
            if self.gateway.poll() is None:
                self.gateway.send_signal(signal.SIGTERM)
                try:
                    self.gateway.wait(20)
                except subprocess.TimeoutExpired:
                    self.gateway.kill()
                    self.gateway.wait()
                    killed.append("gateway")
            killed += kill_survivors(self.backends, "backend")
        return killed


# --- measurements ---------------------------------------------------------------


def summarize(results: list[dict], wall: float, cpu: dict[str, float | None]) -> dict:
    latencies = sorted(x for r in results for x in r["latencies"])
    calls = sum(r["calls"] for r in results)
    client_cpu = sum(r["client_cpu"] for r in results)
    cores = {k: (v / wall if v is not None else None) for k, v in cpu.items()}
    cores["client"] = client_cpu / wall
    # Whatever else ran on the machine meanwhile (other processes, the kernel's own work).
    ours = sum(cores[k] or 0.0 for k in ("client", "gateway", "backend"))
    cores["other"] = max(0.0, cores.pop("machine") - ours)
    wakeups = sum(r["wakeups"] for r in results)
    return {
        "calls": calls,
        "seconds": wall,
        # How much each client wake-up (epoll_wait) and each read brought back: batching.
        "calls_per_wakeup": calls / wakeups if wakeups else 0.0,
        "calls_per_read": calls / sum(r["reads"] for r in results) if wakeups else 0.0,
        "throughput": calls / wall,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
        "cores": cores,
        "errors": sum(r["errors"] for r in results),
        "mismatched": sum(r["mismatched"] for r in results),
        "misrouted": sum(r["misrouted"] for r in results),
        "examples": [e for r in results for e in r["examples"]][:5],
    }


def watched(procs: Processes, direct: bool) -> dict[str, int | None]:
    if direct:
        return {"gateway": None, "backend": procs.direct.pid}
    return {"gateway": procs.gateway.pid, "backend": procs.backend_pid()}


def measure_in_process(procs: Processes, conns: list[Conn], depths: list[int], seconds: float, direct: bool) -> dict:
    pids = watched(procs, direct)
    before = cpu_snapshot(pids)
    r = run_load(conns, depths, seconds)
    cpu = cpu_delta(before, cpu_snapshot(pids))
    return summarize([r], r["end"] - r["start"], cpu)


def measure_sockets(procs: Processes, n: int, inflight: int, seconds: float, nprocs: int) -> dict:
    """n fresh sessions keeping `inflight` calls in flight in total; closed afterwards."""
    depths = spread(inflight, n)
    if nprocs <= 1:
        conns = []
        try:
            conns = [connect_unix(procs.sock, ci) for ci in range(n)]
            handshake(conns)
            return measure_in_process(procs, conns, depths, seconds, direct=False)
        finally:
            for c in conns:
                c.close()
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    pipes, workers = [], []
    share = spread(n, nprocs)
    first = 0
    for k in range(nprocs):
        parent, child = ctx.Pipe()
        w = ctx.Process(target=_worker, args=(child, procs.sock, first, depths[first : first + share[k]], seconds),
                        daemon=True)
        w.start()
        procs.workers.append(w)
        pipes.append(parent)
        workers.append(w)
        first += share[k]
    try:
        for p in pipes:
            msg = p.recv()
            if isinstance(msg, BaseException):
                raise msg
        pids = watched(procs, direct=False)
        start_at = time.monotonic() + 0.1
        before = cpu_snapshot(pids)
        for p in pipes:
            p.send(start_at)
        results = []
        for p in pipes:
            msg = p.recv()
            if isinstance(msg, BaseException):
                raise msg
            results.append(msg)
        cpu = cpu_delta(before, cpu_snapshot(pids))
        wall = max(r["end"] for r in results) - min(r["start"] for r in results)
        return summarize(results, wall, cpu)
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.terminate()
                w.join()
            procs.workers.remove(w)


def measure_idle(procs: Processes, idle: int, seconds: float) -> dict:
    pid = procs.gateway.pid
    # Warm-up: 10 sessions, each with one call in flight for a while, then closed.
    warm = [connect_unix(procs.sock, ci) for ci in range(10)]
    try:
        handshake(warm)
        run_load(warm, [1] * 10, min(2.0, seconds))
    finally:
        for c in warm:
            c.close()
    time.sleep(0.5)
    before = memory_median(pid)
    conns: list[Conn] = []
    try:
        # In two halves: the second half's cost is the marginal one, after
        # whatever free memory the warm-up left has been used by the first.
        connect_s = 0.0
        for half in (idle // 2, idle - idle // 2):
            t0 = time.monotonic()
            batch = [connect_unix(procs.sock, 1000 + len(conns) + ci) for ci in range(half)]
            conns += batch
            handshake(batch)
            connect_s += time.monotonic() - t0
            if len(conns) < idle:
                time.sleep(0.5)
                middle = memory_median(pid)
        time.sleep(0.5)
        during = memory_median(pid)
        # Are the idle sessions still served? One call on the last one.
        last = conns[-1]
        check = run_load([last], [1], 0.0)
        if check["calls"] != 1 or check["errors"] or check["mismatched"] or check["misrouted"]:
            raise RuntimeError(f"an idle session was not served properly: {check['examples']}")
    finally:
        for c in conns:
            c.close()
    time.sleep(1.0)
    after = memory_median(pid)
    per = {k: ((during[k] - before[k]) / idle if before[k] is not None else None) for k in before}
    second = idle - idle // 2
    marginal = {k: ((during[k] - middle[k]) / second if before[k] is not None else None) for k in before}
    return {"idle": idle, "before": before, "middle": middle, "during": during, "after": after,
            "per_client_kb": per, "marginal_kb": marginal, "connect_seconds": connect_s}


# --- report -----------------------------------------------------------------------


def pingpong(cpus: tuple[int, int] | None, n: int = 3000) -> float | None:
    """Round trip (µs) of one byte between two processes over pipes, optionally pinned to two CPUs."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if cpus:
                os.sched_setaffinity(0, {cpus[1]})
            for _ in range(n + 1):
                os.read(r1, 1)
                os.write(w2, b"x")
        finally:
            os._exit(0)
    try:
        if cpus:
            mask = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {cpus[0]})
        os.write(w1, b"x")
        os.read(r2, 1)
        t = time.perf_counter()
        for _ in range(n):
            os.write(w1, b"x")
            os.read(r2, 1)
        return (time.perf_counter() - t) / n * 1e6
    except OSError:
        return None
    finally:
        if cpus:
            os.sched_setaffinity(0, mask)
        for fd in (r1, w1, r2, w2):
            os.close(fd)
        os.waitpid(pid, 0)


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import twisted

        tw = twisted.__version__
    except ImportError:
        tw = "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    busy0, _ = system_cpu()
    time.sleep(1.0)
    busy1, _ = system_cpu()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    same = pingpong((usable[0], usable[0])) if usable else None
    cross = pingpong((usable[0], usable[1])) if len(usable) > 1 else None
    wake = ""
    if same is not None:
        wake = f"\n  a pipe ping-pong between two processes: {same:.0f} µs round trip on one CPU"
        if cross is not None:
            wake += f", {cross:.0f} µs across two (the cost of waking a process on the other CPU)"
    return (f"{os.cpu_count()} cores ({affinity} usable) {model}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, Twisted {tw}\n  before the run: load average {load}, "
            f"{busy1 - busy0:.2f} cores busy{wake}")


def fmt_cores(c: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.2f}"

    return " / ".join(f(c.get(k)) for k in ("client", "gateway", "backend", "other"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement (default 5)")
    parser.add_argument("--clients", type=int, default=50, help="socket sessions in the many-client row (default 50)")
    parser.add_argument("--inflight", type=int, default=None,
                        help="calls in flight in total, the same for direct, 1 client and N clients "
                             "(default: --clients, i.e. 1 per session in the N-client row)")
    parser.add_argument("--idle", type=int, default=500, help="idle sessions for the memory figure (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="repeat direct / 1 client / N clients (default 3)")
    parser.add_argument("--procs", type=int, default=1,
                        help="client processes sharing the N-client row's sessions (default 1)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    if args.clients < 1 or args.idle < 2 or args.rounds < 1 or args.procs < 1 or args.seconds <= 0:
        parser.error("--clients, --rounds and --procs must be at least 1, --idle at least 2, --seconds positive")
    inflight = args.inflight or args.clients
    args.procs = min(args.procs, args.clients)
    if inflight < args.clients:
        parser.error(f"--inflight ({inflight}) must be at least --clients ({args.clients}): one call per session")

    # Every session is a descriptor here and in the gateway (which inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle + args.clients + 256
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))

    def terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    info = machine()
    tmp = tempfile.mkdtemp(prefix="twisted-mcp-bench-")
    procs = Processes(tmp)
    rounds: list[dict[str, dict]] = []
    idle_result = None
    failed = False
    try:
        procs.start_gateway()
        direct = procs.start_direct()
        single_depth = [inflight]
        # (d) idle memory, on the fresh gateway, after a 10-client warm-up.
        idle_result = measure_idle(procs, args.idle, args.seconds)
        # Warm the load paths before the first measured round.
        run_load([direct], single_depth, min(1.0, args.seconds))
        measure_sockets(procs, args.clients, inflight, min(1.0, args.seconds), args.procs)

        def run_single(depth: int) -> dict:
            c = connect_unix(procs.sock, 0)
            try:
                handshake([c])
                return measure_in_process(procs, [c], [depth], args.seconds, direct=False)
            finally:
                c.close()

        steps = {
            "direct": lambda: measure_in_process(procs, [direct], single_depth, args.seconds, direct=True),
            "direct@1": lambda: measure_in_process(procs, [direct], [1], args.seconds, direct=True),
            "single": lambda: run_single(inflight),
            "single@1": lambda: run_single(1),
            "multi": lambda: measure_sockets(procs, args.clients, inflight, args.seconds, args.procs),
        }
        order = list(steps)
        for i in range(args.rounds):
            this = order if i % 2 == 0 else order[::-1]
            result = {}
            for name in this:
                result[name] = steps[name]()
                sys.stderr.write(f"round {i + 1}/{args.rounds} {name}: {result[name]['throughput']:,.0f} calls/s\n")
            rounds.append(result)
    except KeyboardInterrupt:
        failed = True
        sys.stderr.write("interrupted: stopping the gateway and the backends\n")
    except BaseException:
        failed = True
        sys.stderr.write(f"gateway log (tail):\n{procs.log_tail()}\n")
        raise
    finally:
        killed = procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if killed:
            sys.stderr.write(f"had to kill: {', '.join(killed)}\n")
    if failed or not rounds:
        return 130 if failed else 1

    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rounds)

    def med_cores(name: str) -> dict:
        keys = rounds[0][name]["cores"].keys()
        return {k: (None if rounds[0][name]["cores"][k] is None else
                    statistics.median(r[name]["cores"][k] for r in rounds)) for k in keys}

    def each(name: str) -> str:
        return ", ".join(f"{r[name]['throughput']:,.0f}" for r in rounds)

    n = args.clients
    per = spread(inflight, n)
    depth_text = f"{per[0]} each" if min(per) == max(per) else f"{min(per)}-{max(per)} each"
    pair = [r["multi"]["throughput"] / r["single"]["throughput"] for r in rounds]
    ratio = statistics.median(pair)
    calls_checked = sum(r["multi"]["calls"] + r["single"]["calls"] + r["single@1"]["calls"] for r in rounds)
    bad = {k: sum(r[s][k] for r in rounds for s in ("single", "single@1", "multi")) for k in ("errors", "mismatched", "misrouted")}

    print("twisted-mcp, MCP clients on a Unix socket: `twistd -n --pidfile= mcp-gateway --config CFG --listen unix:SOCK`")
    print("in front of one echo backend (tests/servers/echo_fast.py), shared by every session.")
    print(f"machine: {info}")
    print(f"client: {args.procs} process(es) for the {args.clients} sessions, a lean JSON-RPC client on an epoll loop; "
          "client, gateway and backend share")
    print(f"the same {os.cpu_count()} cores. CPU column: cores used over the measurement by the client, the gateway, the")
    print("backend, and anything else on the machine (other processes, interrupts), from /proc.")
    print(f"{args.seconds:g} s per measurement, {args.rounds} rounds in alternating order, medians (per round in brackets).")
    print(f"in flight: {inflight} in total everywhere: direct and 1 client pipeline {inflight} on one connection; "
          f"{n} clients keep {depth_text}.")
    steal = statistics.median(r[k]["cores"]["steal"] for r in rounds for k in r)
    if steal >= 0.02:
        print(f"the hypervisor took (steal) {steal:.2f} cores during a median measurement.")
    print()
    print("| path | in flight | calls/s | / direct (same in flight) | p50 | p99 "
          "| CPU cores: client / gateway / backend / other | gateway CPU per call |")
    print("|---|---|---|---|---|---|---|---|")
    def gw_per_call(key: str) -> str:
        values = [r[key]["cores"]["gateway"] / r[key]["throughput"] * 1e6 for r in rounds
                  if r[key]["cores"].get("gateway") is not None]
        return f"{statistics.median(values):.1f} µs" if values else "-"

    rows = [
        ("direct (stdio, no gateway)", "direct", str(inflight)),
        ("1 socket client", "single", str(inflight)),
        (f"{n} socket clients", "multi", f"{n} x {depth_text.split()[0]}"),
        ("direct (stdio, no gateway)", "direct@1", "1"),
        ("1 socket client", "single@1", "1"),
    ]
    for label, key, depth in rows:
        tp = med(key, "throughput")
        base = med("direct@1" if key.endswith("@1") else "direct", "throughput")
        print(f"| {label} | {depth} | {tp:,.0f} ({each(key)}) | {tp / base:.0%} | {med(key, 'p50_us'):,.0f} µs "
              f"| {med(key, 'p99_us'):,.0f} µs | {fmt_cores(med_cores(key))} | {gw_per_call(key)} |")
    busiest = max(r[k]["cores"]["other"] for r in rounds for k in r)
    if busiest >= 0.2:
        print(f"WARNING: something else on the machine used up to {busiest:.2f} cores during a measurement "
              "(column 'other'): those figures are not the gateway's alone.")
    print()
    verdict = "PASS" if ratio >= 0.80 else "FAIL"
    print(f"{n} clients / 1 client throughput: {ratio:.0%} (per round: {', '.join(f'{x:.0%}' for x in pair)}) "
          f"-> {verdict} (target >= 80%)")
    print(f"answers checked: {calls_checked:,} calls on sessions that all use the same ids: "
          f"{bad['misrouted']} misrouted, {bad['mismatched']} wrong payload, {bad['errors']} error answers")
    examples = [e for r in rounds for s in ("single", "single@1", "multi") for e in r[s]["examples"]][:5]
    for e in examples:
        print(f"  e.g. {e}")
    if idle_result:
        m = idle_result
        per_kb = m["per_client_kb"]
        verdict_mem = "PASS" if per_kb["rss"] < 50 else "FAIL"

        def kb(v):
            return "n/a" if v is None else f"{v:,.0f} KB"

        print(f"idle memory ({m['idle']} sessions, each: initialize, notifications/initialized, tools/list, then idle; "
              f"median of 7 readings):")
        for key, name in (("rss", "VmRSS"), ("anon", "RssAnon"), ("pss", "Pss"), ("private", "Private")):
            if m["before"][key] is None:
                continue
            print(f"  {name:8} after 10-client warm-up {kb(m['before'][key])}, with {m['idle'] // 2} idle "
                  f"{kb(m['middle'][key])}, with {m['idle']} {kb(m['during'][key])}, after they left "
                  f"{kb(m['after'][key])}: {per_kb[key]:.1f} KB per idle session "
                  f"(second half alone: {m['marginal_kb'][key]:.1f} KB)")
        print(f"  -> {per_kb['rss']:.1f} KB per idle session (VmRSS) -> {verdict_mem} (target < 50 KB); "
              f"connecting and initializing the {m['idle']} took {m['connect_seconds']:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": [{k: {kk: vv for kk, vv in v.items()} for k, v in r.items()} for r in rounds],
                       "idle": idle_result, "ratio": ratio, "machine": info}, f, indent=2)
    return 0 if not any(bad.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
