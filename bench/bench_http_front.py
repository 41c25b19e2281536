#!/usr/bin/env python3
"""
Benchmark: the gateway's HTTP front against its stdio front and against
installable peers that serve a stdio server over Streamable HTTP, in one run.

Every path ends at the same stdio echo backend (tests/servers/echo_fast.py,
the one bench_stdio.py and bench_sockets.py use), but one:

  stdio front   a lean stdio client -> `twistd -n --pidfile= mcp-gateway
                --config CFG` (newline JSON over pipes, as bench_stdio.py);
  HTTP front    keep-alive HTTP clients -> `twistd ... mcp-gateway --config CFG
                --listen http:tcp:PORT:interface=127.0.0.1`;
  supergateway  keep-alive HTTP clients -> npm supergateway (bench/node) in
                stdio -> Streamable HTTP mode, `--outputTransport streamableHttp
                --stateful` (one echo child per session, its design; its
                stateless mode spawns a child per POST);
  mcp-proxy     keep-alive HTTP clients -> PyPI mcp-proxy in server mode
                (`mcp-proxy --port P -- python echo_fast.py`, one echo child
                shared by every session), installed in its own virtualenv,
                bench/.peers-venv (`make bench` creates it; never a gateway
                dependency);
  HTTP front, 2026-07-28 (and -> 2026-07-28 backend)
                the HTTP front with clients of MCP 2026-07-28 (no session,
                the envelope in every call), to echo_fast, and to the same
                echo speaking 2026-07-28 (bench/echo_dual.py, pinned
                `protocol: modern`), each against the HTTP front's
                handshake-era row.

Each HTTP client is one kept-alive connection holding one MCP session
(initialize, notifications/initialized, then tools/call POSTs with
`Accept: application/json, text/event-stream`, answers parsed as JSON or SSE
and checked to carry the session's own payload); see bench/http_load.py.
For each path it measures p50/p99 latency and calls/s with 1 call in flight
(one client), and calls/s with --clients (64) clients each keeping one call
in flight (the stdio front: 64 calls pipelined on its one pipe), the HTTP
clients spread over --procs forked processes.  The measurements are
repeated --rounds times in alternating order; medians are reported.

Two more figures:

  generator     the same load generator against bench/echo_http.js (a minimal
                Node Streamable HTTP server answering at once): what the
                generator can drive on this machine, to show it is not the
                bottleneck of the rows above;
  idle memory   --idle sessions opened on the gateway's HTTP front
                (`initialize` only, their connections then closed): the
                gateway's VmRSS delta / sessions (median of 7 readings each).

Targets (issue 11, a 2-core machine): HTTP front p50 at 1 in flight at most
300 us above the stdio front's; its calls/s at 64 clients at least 2x the
best peer's; at most 20 KB of RSS per idle HTTP session.

    python bench/bench_http_front.py [--seconds 5] [--rounds 3] [--clients 64]
        [--procs 2] [--idle 2000] [--json FILE] [--twistd PATH]
    python bench/bench_http_front.py --profile FILE [--profiler py-spy|cprofile] [--profile-clients N]

--profile FILE runs only the HTTP front, at 1 call in flight (or with
--profile-clients N clients), under py-spy sampling from outside (default)
or twistd's own cProfile, and prints where it spends its time (see
bench/front_profile.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import front_profile  # noqa: E402
from bench_http import start_server  # noqa: E402
from bench_sockets import TICKS, children, cpu_seconds, kill_survivors, machine, memory_median, set_pdeathsig  # noqa: E402
from bench_stdio import Client, run_load, twistd  # noqa: E402
from http_load import HTTPError, Session, drive, drive_in_processes, open_idle_sessions  # noqa: E402

ECHO = os.path.join(ROOT, "tests", "servers", "echo_fast.py")
SUPERGATEWAY = os.path.join(HERE, "node", "node_modules", ".bin", "supergateway")
MCP_PROXY = os.path.join(HERE, ".peers-venv", "bin", "mcp-proxy")
ECHO_DUAL = os.path.join(HERE, "echo_dual.py")
#: The same HTTP front, its clients speaking MCP 2026-07-28 (no session, the envelope in every call).
MODERN_PATH = "HTTP front, 2026-07-28"
#: The same again, to a backend that speaks 2026-07-28 too.
MODERN_BACKEND_PATH = "HTTP front, 2026-07-28 -> 2026-07-28 backend"
PATHS = ("stdio front", "HTTP front", MODERN_PATH, MODERN_BACKEND_PATH, "supergateway", "mcp-proxy")
GATEWAY_PATHS = ("stdio front", "HTTP front")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu(pid: int) -> float:
    """
    CPU seconds of a process and its descendants: each live one's own and
    its reaped children's (cutime, cstime), so that children that come and
    go during a measurement (supergateway's per-session ones) still count.
    """
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        total += sum(int(x) for x in fields[11:15]) / TICKS
        todo += children(p)
    return total


class Server:
    """One process serving the echo backend over HTTP (or stdio), stopped and reaped by stop()."""

    def __init__(self, label: str, argv: list[str], port: int | None, path: str, tool: str, arg: str,
                 log: str, cwd: str, modern: bool = False) -> None:
        self.label, self.argv, self.port, self.path, self.tool, self.arg = label, argv, port, path, tool, arg
        #: Its HTTP clients speak MCP 2026-07-28.
        self.modern = modern
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.client: Client | None = None
        self.descendants: set[int] = set()
        self.cwd = cwd

    def start(self) -> None:
        if self.port is None:  # the stdio front: the bench_stdio client owns the process
            self.client = Client(self.argv)
            self.proc = self.client.proc
            names = self.client.handshake()
            if self.tool not in names:
                raise RuntimeError(f"{self.label}: {self.tool} not in {names}")
            return
        with open(self.log, "wb") as err:
            # Its own session, so that stop() can signal the whole group; PDEATHSIG covers this script dying.
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, start_new_session=True, preexec_fn=set_pdeathsig)
        deadline = time.monotonic() + 60
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                probe = self.session(0)
                try:
                    result = drive([probe], 0.0)
                finally:
                    probe.end()
                if result["wrong"] == 0:
                    return
                last = RuntimeError(result["examples"])
            except (OSError, HTTPError, ValueError) as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} was not serving {self.tool} within 60 s ({last}):\n{self.log_tail()}")

    def session(self, ci: int) -> Session:
        assert self.port is not None
        s = Session(ci, self.port, self.path, self.tool, self.arg, self.modern)
        s.handshake()
        return s

    def log_tail(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self) -> list[str]:
        """Stop the process (stdin EOF for stdio, SIGTERM otherwise) and its children; return what was killed."""
        killed: list[str] = []
        if self.proc is None:
            return killed
        self.descendants.update(children(self.proc.pid))
        if self.client is not None:
            self.client.close()
        elif self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                killed.append(self.label)
        return killed + kill_survivors(self.descendants, f"{self.label} child")


def summarize(result: dict, wall: float, cpu: tuple[float, float]) -> dict:
    """p50/p99/calls/s of a run, with the CPU its server used: (the front process, it and its children)."""
    lat = sorted(result["latencies"])
    front, tree = cpu
    return {
        "calls": len(lat),
        "throughput": len(lat) / wall if wall > 0 else 0.0,
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
        "wrong": result.get("wrong", 0),
        "examples": result.get("examples", []),
        "client_cpu_per_call_us": result["client_cpu"] / len(lat) * 1e6 if "client_cpu" in result else None,
        "front_cpu_per_call_us": front / len(lat) * 1e6,
        "server_cpu_per_call_us": tree / len(lat) * 1e6,
        "front_cores": front / wall if wall > 0 else 0.0,
    }


def measure(server: Server, clients: int, procs: int, seconds: float) -> dict:
    """`clients` calls in flight (one per HTTP client; pipelined on the stdio front) for `seconds`."""
    assert server.proc is not None
    pid = server.proc.pid
    server.descendants.update(children(pid))

    def cpu() -> tuple[float, float]:
        return cpu_seconds(pid) or 0.0, tree_cpu(pid)

    before = cpu()

    def mark_start() -> None:
        nonlocal before
        before = cpu()

    after = before

    def mark_end() -> None:
        nonlocal after
        after = cpu()

    if server.client is not None:
        r = run_load(server.client, server.tool, clients, 10**9, seconds)
        after = cpu()
        # bench_stdio.run_load keeps no latencies list: rebuild the summary from its figures.
        return {"calls": r["calls"], "throughput": r["throughput"], "p50_us": r["p50_us"], "p99_us": r["p99_us"],
                "wrong": 0, "examples": [], "client_cpu_per_call_us": None,
                "front_cpu_per_call_us": (after[0] - before[0]) / r["calls"] * 1e6,
                "server_cpu_per_call_us": (after[1] - before[1]) / r["calls"] * 1e6,
                "front_cores": (after[0] - before[0]) / r["seconds"]}
    if clients == 1:
        s = server.session(0)
        try:
            mark_start()
            result = drive([s], seconds)
            mark_end()
        finally:
            s.end()
    else:
        assert server.port is not None
        result = drive_in_processes(server.port, server.path, server.tool, server.arg, clients, procs, seconds,
                                    mark_start, mark_end, server.modern)
    return summarize(result, result["end"] - result["start"], (after[0] - before[0], after[1] - before[1]))


def measure_idle(server: Server, idle: int) -> dict:
    """RSS of the gateway before and after `idle` sessions (initialize only, connections closed)."""
    assert server.proc is not None and server.port is not None
    pid = server.proc.pid
    time.sleep(0.5)
    before = memory_median(pid)
    t0 = time.monotonic()
    open_idle_sessions(server.port, server.path, idle // 2)
    time.sleep(0.5)
    middle = memory_median(pid)
    open_idle_sessions(server.port, server.path, idle - idle // 2)
    seconds = time.monotonic() - t0 - 0.5 - 1.5
    time.sleep(0.5)
    after = memory_median(pid)
    known = [k for k in before if None not in (before[k], middle[k], after[k])]
    per = {k: (after[k] - before[k]) / idle for k in known}  # type: ignore[operator]
    marginal = {k: (after[k] - middle[k]) / (idle - idle // 2) for k in known}  # type: ignore[operator]
    return {"idle": idle, "before": before, "middle": middle, "after": after, "per_session_kb": per,
            "marginal_kb": marginal, "open_seconds": seconds}


def build_servers(tmp: str, only_http: bool = False, profile: str | None = None,
                  gateway: str | None = None) -> dict[str, Server]:
    """The four paths (or the HTTP front only), not started; `gateway`: the twistd to run (default: this venv's)."""
    gateway = gateway or twistd()

    def write_config(name: str, echo: dict) -> str:
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            # Every client comes from 127.0.0.1 under one identity: lift the per-peer and per-principal caps.
            json.dump({"mcpServers": {"echo": echo},
                       "gateway": {"maxClients": 100_000, "maxClientsPerPeer": 100_000},
                       "http": {"maxSessions": 100_000, "maxSessionsPerPrincipal": 100_000}}, f)
        return path

    config = write_config("gateway.yaml", {"command": sys.executable, "args": [ECHO]})
    gw_port = free_port()
    gw_log = os.path.join(tmp, "gateway-http.log")
    http_argv = [gateway, "-n", "--pidfile=", "--logfile", gw_log]
    if profile:
        http_argv += ["--profile", profile, "--profiler", "cprofile", "--savestats"]
    http_argv += ["mcp-gateway", "--config", config, "--listen", f"http:tcp:{gw_port}:interface=127.0.0.1"]
    servers = {"HTTP front": Server("HTTP front", http_argv, gw_port, "/mcp", "echo__echo", "text",
                                    os.path.join(tmp, "gateway-http.stderr"), tmp)}
    if only_http:
        return servers
    modern_backend = write_config("gateway-modern-backend.yaml",
                                  {"command": sys.executable, "args": [ECHO_DUAL], "protocol": "modern"})
    for label, name, path in ((MODERN_PATH, "modern", config), (MODERN_BACKEND_PATH, "modern-backend", modern_backend)):
        port = free_port()
        argv = [gateway, "-n", "--pidfile=", "--logfile", os.path.join(tmp, f"gateway-{name}.log"), "mcp-gateway",
                "--config", path, "--listen", f"http:tcp:{port}:interface=127.0.0.1"]
        servers[label] = Server(label, argv, port, "/mcp", "echo__echo", "text",
                                os.path.join(tmp, f"gateway-{name}.stderr"), tmp, modern=True)
    echo_cmd = f"{shlex.quote(sys.executable)} {shlex.quote(ECHO)}"
    sg_port, mp_port = free_port(), free_port()
    servers["stdio front"] = Server("stdio front", [gateway, "-n", "--pidfile=", "mcp-gateway", "--config", config],
                                    None, "", "echo__echo", "text", os.path.join(tmp, "stdio.log"), tmp)
    servers["supergateway"] = Server(
        "supergateway",
        [SUPERGATEWAY, "--stdio", echo_cmd, "--outputTransport", "streamableHttp", "--stateful",
         "--port", str(sg_port), "--logLevel", "none"],
        sg_port, "/mcp", "echo", "text", os.path.join(tmp, "supergateway.log"), tmp)
    servers["mcp-proxy"] = Server(
        "mcp-proxy",
        [MCP_PROXY, "--host", "127.0.0.1", "--port", str(mp_port), "--log-level", "WARNING", "--",
         sys.executable, ECHO],
        mp_port, "/mcp", "echo", "text", os.path.join(tmp, "mcp-proxy.log"), tmp)
    return {k: servers[k] for k in PATHS}


def generator_ceiling(clients: int, procs: int, seconds: float) -> dict:
    """The load generator against bench/echo_http.js, which answers at once: what it can drive here."""
    node, port = start_server("echo")
    try:
        s = Server("echo_http.js", [], port, "/mcp", "echo", "message", "", ROOT)
        s.proc = node
        drive_in_processes(port, "/mcp", "echo", "message", clients, procs, min(1.0, seconds))
        return measure(s, clients, procs, seconds)
    finally:
        if node.stdin:
            node.stdin.close()
        node.terminate()
        node.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, in alternating order (default 3)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients for the throughput rows (default 64)")
    parser.add_argument("--procs", type=int, default=2, help="client processes sharing them (default 2)")
    parser.add_argument("--idle", type=int, default=2000, help="idle HTTP sessions for the memory figure (default 2000)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--twistd", help="the twistd that runs the gateway (default: the one beside this Python), "
                        "e.g. another worktree's .venv/bin/twistd to compare two builds")
    parser.add_argument("--profile", help="profile the HTTP front into this file, and print the top costs")
    parser.add_argument("--profiler", choices=["py-spy", "cprofile"], default="py-spy",
                        help="with --profile: py-spy samples from outside (default), cprofile is twistd's own")
    parser.add_argument("--profile-clients", type=int, default=1,
                        help="with --profile: concurrent clients, each one call in flight (default 1)")
    args = parser.parse_args()
    if args.rounds < 1 or args.clients < 2 or args.procs < 1 or args.idle < 2 or args.seconds <= 0:
        parser.error("--rounds and --procs must be at least 1, --clients and --idle at least 2, --seconds positive")
    if args.profile:
        return front_profile.run(
            args.profiler, args.profile, args.profile_clients, args.procs, args.seconds,
            lambda tmp, stats: build_servers(tmp, only_http=True, profile=stats, gateway=args.twistd)["HTTP front"],
            measure)
    for path, how in ((SUPERGATEWAY, "make bench (it installs bench/node)"),
                      (MCP_PROXY, "make bench (it creates bench/.peers-venv)")):
        if not os.path.exists(path):
            print(f"missing {path}: run {how}", file=sys.stderr)
            return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle + 4 * args.clients + 256
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))

    def terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    info = machine()
    tmp = tempfile.mkdtemp(prefix="twisted-mcp-bench-front-")
    servers = build_servers(tmp, gateway=args.twistd)
    rounds: list[dict[str, dict]] = []
    ceiling: list[dict] = []
    idle = None
    failed = False
    try:
        for s in servers.values():
            s.start()
        for s in servers.values():  # warm-up
            measure(s, 1, 1, min(1.0, args.seconds))
            measure(s, args.clients, args.procs, min(1.0, args.seconds))
        steps: dict[str, Callable[[], dict]] = {}
        for name, s in servers.items():
            steps[f"{name}@1"] = functools.partial(measure, s, 1, args.procs, args.seconds)
            steps[f"{name}@N"] = functools.partial(measure, s, args.clients, args.procs, args.seconds)
        order = list(steps)
        for i in range(args.rounds):
            result = {}
            for key in (order if i % 2 == 0 else order[::-1]):
                result[key] = steps[key]()
                sys.stderr.write(f"round {i + 1}/{args.rounds} {key}: {result[key]['throughput']:,.0f} calls/s, "
                                 f"p50 {result[key]['p50_us']:,.0f} us\n")
            rounds.append(result)
        ceiling.append(generator_ceiling(args.clients, args.procs, args.seconds))
        idle = measure_idle(servers["HTTP front"], args.idle)
    except KeyboardInterrupt:
        failed = True
        sys.stderr.write("interrupted: stopping every server\n")
    except BaseException:
        failed = True
        for s in servers.values():
            sys.stderr.write(f"{s.label} log (tail):\n{s.log_tail()}\n")
        raise
    finally:
        killed = [k for s in servers.values() for k in s.stop()]
        shutil.rmtree(tmp, ignore_errors=True)
        if killed:
            sys.stderr.write(f"had to kill: {', '.join(killed)}\n")
    if failed or not rounds:
        return 130
    report(args, info, rounds, ceiling[0], idle)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rounds": rounds, "generator": ceiling[0], "idle": idle}, f, indent=2)
    wrong = sum(r[k]["wrong"] for r in rounds for k in r)
    return 1 if wrong else 0


def report(args: argparse.Namespace, info: str, rounds: list[dict], ceiling: dict, idle: dict | None) -> None:
    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in rounds)

    def med_opt(key: str, field: str) -> str:
        values = [r[key][field] for r in rounds if r[key][field] is not None]
        return f"{statistics.median(values):.0f} us" if values else "-"

    n = args.clients
    print("twisted-mcp HTTP front: `twistd -n --pidfile= mcp-gateway --config CFG --listen http:tcp:PORT:interface=127.0.0.1`")
    print("beside its stdio front, supergateway --outputTransport streamableHttp --stateful and mcp-proxy --port,")
    print("all in front of the same stdio echo backend (tests/servers/echo_fast.py), but the 2026-07-28 backend's row")
    print("(the same echo speaking 2026-07-28 too: bench/echo_dual.py, pinned protocol: modern).")
    print(f"machine: {info}")
    print(f"{args.seconds:g} s per measurement, {args.rounds} rounds in alternating order, medians "
          f"(per round in brackets). HTTP clients: one kept-alive connection and MCP session each, "
          f"{n} of them over {args.procs} process(es) in the '{n} clients' column; the stdio front pipelines {n} calls.")
    print()
    print(f"| path | p50, 1 in flight | p99, 1 in flight | calls/s, 1 in flight | calls/s, {n} clients "
          f"| p50, {n} clients | CPU per call, {n} clients: front (+ its children) | front's cores busy |")
    print("|---|---|---|---|---|---|---|---|")
    for name in PATHS:
        each = ", ".join(f"{r[name + '@N']['throughput']:,.0f}" for r in rounds)
        print(f"| {name} | {med(name + '@1', 'p50_us'):,.0f} us | {med(name + '@1', 'p99_us'):,.0f} us "
              f"| {med(name + '@1', 'throughput'):,.0f} | {med(name + '@N', 'throughput'):,.0f} ({each}) "
              f"| {med(name + '@N', 'p50_us'):,.0f} us | {med_opt(name + '@N', 'front_cpu_per_call_us')} "
              f"({med_opt(name + '@N', 'server_cpu_per_call_us')}) | {med(name + '@N', 'front_cores'):.2f} |")
    print()
    print(f"generator ceiling: the same {n} clients against bench/echo_http.js (answers at once): "
          f"{ceiling['throughput']:,.0f} calls/s, p50 {ceiling['p50_us']:,.0f} us, "
          f"client CPU {ceiling['client_cpu_per_call_us']:.0f} us per call")
    front_n = med("HTTP front@N", "throughput")
    print(f"  = {ceiling['throughput'] / front_n:.1f}x what the HTTP front served; "
          f"client CPU per call on the HTTP front row: {med_opt('HTTP front@N', 'client_cpu_per_call_us')}")
    print()
    added = [r["HTTP front@1"]["p50_us"] - r["stdio front@1"]["p50_us"] for r in rounds]
    added_med = statistics.median(added)
    print(f"HTTP front p50 over stdio front, 1 in flight: {added_med:+,.0f} us "
          f"(per round: {', '.join(f'{a:+,.0f}' for a in added)}); "
          f"ratio {med('HTTP front@1', 'p50_us') / med('stdio front@1', 'p50_us'):.2f}x "
          f"-> {'PASS' if added_med <= 300 else 'FAIL'} (target <= +300 us)")
    for path, what in ((MODERN_PATH, "2026-07-28 clients"), (MODERN_BACKEND_PATH, "2026-07-28 clients to a 2026-07-28 backend")):
        modern_added = [r[path + "@1"]["p50_us"] - r["HTTP front@1"]["p50_us"] for r in rounds]
        modern_ratio = statistics.median(r[path + "@N"]["throughput"] / r["HTTP front@N"]["throughput"] for r in rounds)
        print(f"{what} over handshake-era ones on the HTTP front: p50 at 1 in flight "
              f"{statistics.median(modern_added):+,.0f} us (per round: {', '.join(f'{a:+,.0f}' for a in modern_added)}), "
              f"throughput at {n} clients {modern_ratio:.0%} -> {'PASS' if modern_ratio >= 0.9 else 'FAIL'} "
              f"(issue 12: within 10%)")
    best_peer = max(("supergateway", "mcp-proxy"), key=lambda p: med(p + "@N", "throughput"))
    pairs = [r["HTTP front@N"]["throughput"] / max(r[p + "@N"]["throughput"] for p in ("supergateway", "mcp-proxy"))
             for r in rounds]
    ratio = statistics.median(pairs)
    print(f"HTTP front calls/s at {n} clients / best peer in the same round ({best_peer} in the median): "
          f"{ratio:.2f}x (per round: {', '.join(f'{x:.2f}x' for x in pairs)}) "
          f"-> {'PASS' if ratio >= 2 else 'FAIL'} (target >= 2x)")
    for name in ("stdio front", "supergateway", "mcp-proxy"):
        print(f"  HTTP front / {name}: p50 at 1 in flight {med('HTTP front@1', 'p50_us') / med(name + '@1', 'p50_us'):.2f}x, "
              f"calls/s at {n} clients {front_n / med(name + '@N', 'throughput'):.2f}x")
    if idle:
        per = idle["per_session_kb"]

        def kb(v: float | None) -> str:
            return "n/a" if v is None else f"{v:,.0f} KB"

        print(f"idle memory ({idle['idle']} HTTP sessions: initialize only, connections closed; "
              f"opened in {idle['open_seconds']:.1f} s):")
        for key, label in (("rss", "VmRSS"), ("anon", "RssAnon")):
            print(f"  {label:8} before {kb(idle['before'][key])}, with {idle['idle'] // 2} {kb(idle['middle'][key])}, "
                  f"with {idle['idle']} {kb(idle['after'][key])}: {per[key]:.1f} KB per session "
                  f"(second half alone: {idle['marginal_kb'][key]:.1f} KB)")
        print(f"  -> {per['rss']:.1f} KB per idle HTTP session (VmRSS) = {per['rss'] / 20:.0%} of the target "
              f"-> {'PASS' if per['rss'] <= 20 else 'FAIL'} (target <= 20 KB)")
    wrong = [e for r in rounds for k in r for e in r[k]["examples"]]
    total = sum(r[k]["calls"] for r in rounds for k in r)
    print(f"answers checked: {total:,} calls, {sum(r[k]['wrong'] for r in rounds for k in r)} wrong")
    for e in wrong[:5]:
        print(f"  e.g. {e}")


if __name__ == "__main__":
    sys.exit(main())
