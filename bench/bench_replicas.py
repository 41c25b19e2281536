#!/usr/bin/env python3
"""
Benchmark: the gateway scaled out (issue 15), in one run.

1. Stateless-era (MCP 2026-07-28) throughput over HTTP with 1, 2 and 4
   replicas of `twistd -n --pidfile= mcp-gateway`, each with its own
   echo backend (tests/servers/echo_fast.py), in front of them either

     reuseport  every replica listens on the same port
                (`--listen http:tcp:PORT:interface=127.0.0.1:reusePort=yes`,
                SO_REUSEPORT: the kernel spreads connections over them), or
     haproxy    each replica on its own port behind HAProxy (round robin);

   `--front auto` (the default) takes reuseport when the gateway accepts it,
   else haproxy, and the table says which was used.

2. The cost per call of rate limits kept in Redis (`state: {redis: URL}`)
   against the same limits kept in the process, on one replica:
   `limits.principal` with a rate and a burst no call reaches (every call
   takes a token, none is refused), and, for reference, no limits at all.
   Measured at 1 call in flight (p50 latency: what one call pays) and at
   --clients in flight (calls/s, and CPU seconds per call of the gateway
   and its backend, and of the Redis server when it runs on this machine).

The load generator is bench/http_load.py: --clients kept-alive HTTP
clients (each one call in flight, every answer checked to carry its own
text) in --procs forked processes, outside the gateways.  Each measurement
is repeated --rounds times in alternating order; medians are reported.

    python bench/bench_replicas.py [--seconds 4] [--rounds 3] [--clients 32] [--procs 2]
        [--replicas 1,2,4] [--front auto|reuseport|haproxy] [--redis URL] [--json FILE]

--redis defaults to TWISTED_MCP_TEST_REDIS or redis://127.0.0.1:6379/0;
the benchmark's keys live under a namespace of its own (bench-<random>),
deleted at the end.  Without a reachable Redis the limits part is skipped
(and says so).  HAProxy is the Debian package (/usr/sbin/haproxy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_sockets import children, kill_survivors, machine, set_pdeathsig  # noqa: E402
from bench_stdio import twistd  # noqa: E402
from http_load import HTTPError, Session, drive, drive_in_processes  # noqa: E402

ECHO = os.path.join(ROOT, "tests", "servers", "echo_fast.py")
TOOL, ARG, PATH = "echo__echo", "text", "/mcp"
TICKS = os.sysconf("SC_CLK_TCK")
#: A limit no call of the benchmark reaches: every call takes a token, none is refused.
UNREACHED = {"rate": 1_000_000, "burst": 1_000_000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += proc_cpu(p)
        todo += children(p)
    return total


# -- Redis (the benchmark's own bookkeeping: reachability, the server's pid, clean-up) --


class Redis:
    """A minimal blocking RESP client."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=3)
        self.file = self.sock.makefile("rb")
        if parsed.password:
            self.command("AUTH", urllib.parse.unquote(parsed.password))
        self.command("SELECT", parsed.path.strip("/") or "0")

    def command(self, *args: Any) -> Any:
        parts = [str(a).encode() if not isinstance(a, bytes) else a for a in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        return self._reply()

    def _reply(self) -> Any:
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind in (b"+", b":"):
            return rest.decode() if kind == b"+" else int(rest)
        if kind == b"$":
            return None if int(rest) < 0 else self.file.read(int(rest) + 2)[:-2]
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected Redis reply {line[:60]!r}")

    def pid(self) -> int | None:
        """The server's process id, when it runs on this machine."""
        info = self.command("INFO", "server").decode()
        for line in info.splitlines():
            if line.startswith("process_id:"):
                pid = int(line.split(":", 1)[1])
                return pid if os.path.exists(f"/proc/{pid}") else None
        return None

    def delete_namespace(self, namespace: str) -> int:
        cursor, deleted = b"0", 0
        while True:
            cursor, keys = self.command("SCAN", cursor, "MATCH", namespace + "*", "COUNT", 1000)
            if keys:
                deleted += self.command("DEL", *keys)
            if cursor == b"0":
                return deleted

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def shown(url: str) -> str:
    """The URL without a password."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    return parsed._replace(netloc=f"{host}:{parsed.port}" if parsed.port else host).geturl()


# -- a group of replicas ---------------------------------------------------------


class Group:
    """N replicas on one config, behind one port: SO_REUSEPORT, HAProxy, or (one replica) directly."""

    def __init__(self, tmp: str, label: str, config: dict, replicas: int, front: str) -> None:
        self.label, self.replicas, self.front = label, replicas, front
        self.dir = tempfile.mkdtemp(prefix=label.replace(" ", "-") + "-", dir=tmp)
        self.config = os.path.join(self.dir, "gateway.json")
        self.port = free_port()
        if front == "haproxy":  # the Host clients send names the proxy's port
            config = {**config, "http": {**config.get("http", {}), "allowedHosts": [f"127.0.0.1:{self.port}"]}}
        with open(self.config, "w") as f:
            json.dump(config, f)
        self.procs: list[subprocess.Popen] = []
        self.admin_ports: list[int] = []
        self.haproxy: subprocess.Popen | None = None
        self.seen: set[int] = set()

    def start(self) -> None:
        ports = [free_port() for _ in range(self.replicas)] if self.front == "haproxy" else [self.port] * self.replicas
        for i, port in enumerate(ports):
            admin = free_port()
            listen = f"http:tcp:{port}:interface=127.0.0.1" + (":reusePort=yes" if self.front == "reuseport" else "")
            argv = [
                twistd(),
                "-n",
                "--pidfile=",
                "mcp-gateway",
                "--config",
                self.config,
                "--listen",
                listen,
                "--admin",
                f"tcp:{admin}:interface=127.0.0.1",
            ]
            with open(os.path.join(self.dir, f"r{i + 1}.log"), "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=self.dir,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                        preexec_fn=set_pdeathsig,
                    )
                )
            self.admin_ports.append(admin)
        for i, admin in enumerate(self.admin_ports):
            self._wait_ready(i, admin)
        if self.front == "haproxy":
            self._start_haproxy(ports)
        self._probe()

    def _wait_ready(self, i: int, admin: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"{self.label}: replica {i + 1} exited with {self.procs[i].returncode}:\n{self.log(i)}")
            try:
                with socket.create_connection(("127.0.0.1", admin), timeout=2) as s:
                    s.sendall(f"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\nConnection: close\r\n\r\n".encode())
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        self.seen |= set(children(self.procs[i].pid))
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: replica {i + 1} not ready within 60 s:\n{self.log(i)}")
            time.sleep(0.1)

    def _start_haproxy(self, ports: list[int]) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        servers = "\n".join(f"    server r{i + 1} 127.0.0.1:{p}" for i, p in enumerate(ports))
        config = os.path.join(self.dir, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(f"""
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend mcp
    bind 127.0.0.1:{self.port}
    default_backend replicas
backend replicas
    balance roundrobin
{servers}
""")
        with open(os.path.join(self.dir, "haproxy.log"), "wb") as log:
            self.haproxy = subprocess.Popen(
                [binary, "-db", "-f", config], stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=set_pdeathsig
            )

    def _probe(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                s = Session(0, self.port, PATH, TOOL, ARG, modern=True)
                try:
                    result = drive([s], 0.0)
                finally:
                    s.close()
                if result["wrong"] == 0:
                    return
                problem = result["examples"]
            except (OSError, HTTPError, ValueError) as e:
                problem = e
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: no right answer within 30 s ({problem})")
            time.sleep(0.1)

    def log(self, i: int) -> str:
        with open(os.path.join(self.dir, f"r{i + 1}.log"), errors="replace") as f:
            return f.read()[-3000:]

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: the replicas and their backends, HAProxy."""
        gateways = sum(tree_cpu(p.pid) for p in self.procs)
        return gateways, proc_cpu(self.haproxy.pid) if self.haproxy is not None else 0.0

    def stop(self) -> list[str]:
        for p in self.procs:
            self.seen |= set(children(p.pid))
        for p in self.procs + ([self.haproxy] if self.haproxy else []):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        killed = []
        for p in self.procs + ([self.haproxy] if self.haproxy else []):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                killed.append(f"{self.label} process {p.pid}")
        return killed + kill_survivors(self.seen, f"{self.label} child")


def reuseport_works(tmp: str) -> bool:
    """Whether this gateway takes --listen ...:reusePort=yes (two replicas sharing a port)."""
    group = Group(tmp, "reuseport probe", base_config(), 2, "reuseport")
    try:
        group.start()
        return True
    except RuntimeError:
        return False
    finally:
        group.stop()


# -- measuring ---------------------------------------------------------------------


def base_config(**more: Any) -> dict:
    # Every client comes from 127.0.0.1 under one identity: lift the per-peer caps.
    return {
        "mcpServers": {"echo": {"command": sys.executable, "args": [ECHO]}},
        "gateway": {"maxClients": 100_000, "maxClientsPerPeer": 100_000},
        **more,
    }


def measure(group: Group, clients: int, procs: int, seconds: float, redis_pid: int | None) -> dict:
    marks: dict[str, tuple[float, float, float]] = {}

    def mark(name: str) -> None:
        gateways, haproxy = group.cpu()
        marks[name] = (gateways, haproxy, proc_cpu(redis_pid) if redis_pid else 0.0)

    if clients == 1:
        s = Session(0, group.port, PATH, TOOL, ARG, modern=True)
        try:
            drive([s], 0.5)  # warm-up
            mark("start")
            result = drive([s], seconds)
            mark("end")
        finally:
            s.close()
    else:
        drive_in_processes(group.port, PATH, TOOL, ARG, clients, procs, 0.5, modern=True)  # warm-up
        result = drive_in_processes(
            group.port, PATH, TOOL, ARG, clients, procs, seconds, lambda: mark("start"), lambda: mark("end"), modern=True
        )
    if result["wrong"]:
        raise RuntimeError(f"{group.label}: {result['wrong']} wrong answers, e.g. {result['examples']}")
    lat = sorted(result["latencies"])
    calls = len(lat)
    wall = result["end"] - result["start"]
    spent = [b - a for a, b in zip(marks["start"], marks["end"], strict=True)]
    return {
        "calls": calls,
        "throughput": calls / wall,
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[min(calls - 1, int(calls * 0.99))] * 1e6,
        "gateway_cpu_per_call_us": spent[0] / calls * 1e6,
        "haproxy_cpu_per_call_us": spent[1] / calls * 1e6,
        "redis_cpu_per_call_us": spent[2] / calls * 1e6 if redis_pid else None,
        "client_cpu_per_call_us": result["client_cpu"] / calls * 1e6,
    }


def median_of(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {k: (statistics.median(r[k] for r in runs) if runs[0][k] is not None else None) for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--front", choices=("auto", "reuseport", "haproxy"), default="auto")
    parser.add_argument("--redis", default=os.environ.get("TWISTED_MCP_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    counts = [int(n) for n in args.replicas.split(",")]

    tmp = tempfile.mkdtemp(prefix="bench-replicas-")
    front = args.front
    if front == "auto":
        front = "reuseport" if reuseport_works(tmp) else "haproxy"
    try:
        redis = Redis(args.redis)
        redis_pid = redis.pid()
    except (OSError, RuntimeError) as e:
        print(f"Redis at {shown(args.redis)} cannot be used ({e}): the limits part is skipped", file=sys.stderr)
        redis, redis_pid = None, None
    namespace = f"bench-{uuid.uuid4().hex[:10]}"

    scaling = {f"{n} replica{'s' if n > 1 else ''}": (base_config(), n) for n in counts}
    limits = {
        "no limits": base_config(),
        "limits in-process": base_config(limits={"principal": UNREACHED}),
    }
    if redis is not None:
        limits["limits in Redis"] = base_config(
            limits={"principal": UNREACHED}, state={"redis": args.redis, "namespace": namespace}
        )
    runs: dict[str, dict[str, list[dict]]] = {}
    killed: list[str] = []
    try:
        for r in range(args.rounds):
            order = list(scaling.items()) if r % 2 == 0 else list(reversed(scaling.items()))
            for label, (config, n) in order:
                group = Group(tmp, label, config, n, front)
                try:
                    group.start()
                    runs.setdefault(label, {}).setdefault("load", []).append(
                        measure(group, args.clients, args.procs, args.seconds, None)
                    )
                finally:
                    killed += group.stop()
            order_l = list(limits.items()) if r % 2 == 0 else list(reversed(limits.items()))
            for label, config in order_l:
                group = Group(tmp, label, config, 1, "direct")
                try:
                    group.start()
                    rp = redis_pid if "Redis" in label else None
                    runs.setdefault(label, {}).setdefault("one", []).append(measure(group, 1, 1, args.seconds, rp))
                    runs[label].setdefault("load", []).append(measure(group, args.clients, args.procs, args.seconds, rp))
                finally:
                    killed += group.stop()
    finally:
        if redis is not None:
            redis.delete_namespace(namespace)
            redis.close()
        shutil.rmtree(tmp, ignore_errors=True)

    results = {label: {kind: median_of(rs) for kind, rs in kinds.items()} for label, kinds in runs.items()}
    print(f"machine: {machine()}")
    print(
        f"front: {front}; {args.clients} clients in {args.procs} "
        f"processes, {args.seconds:g} s x {args.rounds} rounds (medians); backend: echo_fast.py per replica"
    )
    print()
    print("Stateless-era (2026-07-28) throughput over HTTP by replicas")
    print(
        f"{'':<14}{'calls/s':>10}{'x 1 replica':>13}{'p50 us':>9}{'p99 us':>9}{'gw CPU us/call':>16}"
        f"{'haproxy us/call':>17}{'client us/call':>16}"
    )
    first = None
    for label in scaling:
        m = results[label]["load"]
        first = first or m["throughput"]
        print(
            f"{label:<14}{m['throughput']:>10.0f}{m['throughput'] / first:>13.2f}{m['p50_us']:>9.0f}{m['p99_us']:>9.0f}"
            f"{m['gateway_cpu_per_call_us']:>16.0f}{m['haproxy_cpu_per_call_us']:>17.0f}{m['client_cpu_per_call_us']:>16.0f}"
        )
    print()
    print("Rate limits: Redis-backed against in-process (one replica)")
    print(f"{'':<19}{'p50 us (1)':>11}{'calls/s':>10}{'x in-proc':>11}{'gw CPU us/call':>16}{'Redis us/call':>15}")
    local = results["limits in-process"]
    for label in limits:
        one, load = results[label]["one"], results[label]["load"]
        redis_cpu = f"{load['redis_cpu_per_call_us']:>15.0f}" if load["redis_cpu_per_call_us"] is not None else f"{'-':>15}"
        print(
            f"{label:<19}{one['p50_us']:>11.0f}{load['throughput']:>10.0f}"
            f"{load['throughput'] / local['load']['throughput']:>11.2f}{load['gateway_cpu_per_call_us']:>16.0f}{redis_cpu}"
        )
    if "limits in Redis" in results:
        shared = results["limits in Redis"]
        print()
        print(
            f"cost per call of Redis-backed limits over in-process ones: "
            f"{shared['one']['p50_us'] - local['one']['p50_us']:+.0f} us of latency at 1 in flight, "
            f"{shared['load']['gateway_cpu_per_call_us'] - local['load']['gateway_cpu_per_call_us']:+.0f} us of gateway CPU "
            f"and {shared['load']['redis_cpu_per_call_us'] or 0:.0f} us of Redis CPU under load, "
            f"throughput x{shared['load']['throughput'] / local['load']['throughput']:.2f}"
        )
    if killed:
        print("killed after the benchmark (did not stop on SIGTERM): " + ", ".join(killed), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"front": front, "machine": machine(), "args": vars(args), "results": results}, f, indent=2)
    return 1 if killed else 0


if __name__ == "__main__":
    sys.exit(main())
