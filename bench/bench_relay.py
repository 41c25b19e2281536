#!/usr/bin/env python3
"""
Benchmark: the cost of one hop, the gateway against plain relays and a peer aggregator, in one run.

Every path is a stdio client (bench_stdio.py's lean pipelining client)
calling the echo tool of tests/servers/echo_fast.py:

  direct              the client -> the echo backend;
  byte relay          -> bench/twisted_relay.py --mode bytes -> echo (one Twisted
                      process copying bytes, understanding nothing);
  JSON relay          -> bench/twisted_relay.py --mode json -> echo (parses each
                      message with the standard library's json, rewrites the id,
                      encodes it again: what any message relay must do at least);
  JSON relay 2026-07-28  the same relay carrying stateless-era requests (the
                      envelope in each request's _meta, as the gateway's
                      2026-07-28 row gets them): the 2026-07-28 targets compare
                      the gateway with this row, the same bytes through each;
  gateway             -> `twistd -n --pidfile= mcp-gateway --config CFG` -> echo,
                      a handshake-era client (initialize, then tools/call);
  gateway 2026-07-28  the same gateway, stateless-era requests (no handshake, the
                      envelope in each request's _meta);
  mcp-hub-mcp         -> the npm aggregator mcp-hub-mcp (bench/node, pinned) -> echo,
                      its `call-tool` tool naming the server and the tool.

Each at 1, 16 and 128 calls in flight: p50, p99, calls/s, the p50 added over
direct, and the CPU per call of the process in the middle (user + system, from
/proc/PID/stat: on a busy machine, the steadiest figure).  Then:

  1 MiB answers   echo's `repeat` argument makes a text of 1 MiB; one call in
                  flight through direct, byte relay, JSON relay and gateway;
  idle RSS        a gateway with --backends (10) echo backends, once all are
                  listed and the process has settled: VmRSS (the relays with one
                  backend, mcp-hub-mcp with as many, and a bare echo, for context);
  policy + audit  a second gateway with every policy stage on and the audit trail
                  to a file (bench_policy.py's configuration): its CPU per call at
                  128 in flight less the plain gateway's.

Every path's processes stay up for the run; the measurements are repeated
--rounds times in alternating order and the medians reported.  The targets of
issue 16 are printed beside their figures, met or not met.

    python bench/bench_relay.py [--rounds 3] [--calls 20000] [--seconds 5] [--json FILE]
    python bench/bench_relay.py --quick      # a short smoke run (about a minute)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_cpu import cpu_seconds  # noqa: E402
from bench_policy import full_policy  # noqa: E402
from bench_stdio import ECHO, MODERN_META, Client, run_load, twistd  # noqa: E402

RELAY = os.path.join(HERE, "twisted_relay.py")
HUB = os.path.join(HERE, "node", "node_modules", "mcp-hub-mcp", "dist", "index.js")
LEVELS = (1, 16, 128)
#: The paths of the main table, in the order of the first round.
PATHS = ("direct", "byte relay", "JSON relay", "JSON relay 2026-07-28", "gateway", "gateway 2026-07-28", "mcp-hub-mcp")
#: The paths of the 1 MiB rows.
LARGE_PATHS = ("direct", "byte relay", "JSON relay", "gateway")
#: The processes whose idle RSS is reported.
IDLE_PATHS = ("echo backend", "byte relay", "JSON relay", "gateway", "mcp-hub-mcp")
#: A 1 MiB text: 64 letters repeated (no quote, so the answer's first `"id":` is its id).
LARGE_TEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl"
LARGE_REPEAT = (1 << 20) // len(LARGE_TEXT)

TARGETS = {
    "throughput_vs_json_relay": 1.0,
    "throughput_vs_peer": 2.0,
    "large_vs_byte_relay": 1.2,
    "idle_rss_mb": 45.0,
    "policy_us_per_call": 30.0,
}

QUICK = {"calls": 500, "seconds": 1.0, "rounds": 1, "large_calls": 10, "settle": 0.5}
FULL = {"calls": 20000, "seconds": 5.0, "rounds": 3, "large_calls": 200, "settle": 3.0}


class Path:
    """One way from the client to echo: a running client process, the tool to call, how."""

    def __init__(self, argv: list[str], tool: str, arguments: dict, modern: bool = False, middle: bool = True) -> None:
        self.argv = argv
        self.tool = tool
        self.arguments = arguments
        self.modern = modern
        #: Whether the client's child is a process in between (else it is the backend itself).
        self.middle = middle
        self.client: Client | None = None

    def args_json(self, text: str, repeat: int | None = None) -> str:
        """The tools/call arguments asking echo for C{text} (C{repeat} times)."""
        echo: dict[str, Any] = {"text": text}
        if repeat is not None:
            echo["repeat"] = repeat
        wrapped = {**self.arguments, "toolArgs": echo} if "toolArgs" in self.arguments else echo
        return json.dumps(wrapped, separators=(",", ":"))


def hub_path(node: str, config: str, server: str = "echo") -> Path:
    """mcp-hub-mcp over C{config}: its `call-tool` tool, naming the server C{server} and its tool `echo`."""
    return Path([node, HUB, "--config-path", config], "call-tool", {"serverName": server, "toolName": "echo", "toolArgs": {}})


def start(path: Path, servers: int = 1, timeout: float = 30.0) -> Client:
    """Start C{path}'s process, handshake, and wait until it lists C{servers} backends' tools; check one call."""
    client = path.client = Client(path.argv)
    try:
        ready(path, client, servers, timeout)
    except BaseException:
        stop(client)
        path.client = None
        raise
    return client


def ready(path: Path, client: Client, servers: int, timeout: float) -> None:
    """Handshake on C{client}, wait for C{servers} backends, and check that echo answers through C{path}."""
    names = client.handshake(path.modern)
    deadline = time.monotonic() + timeout
    rid = -100
    while True:
        if path.tool == "call-tool":
            # mcp-hub-mcp connects to its servers after it answers initialize: ask it which it has.
            rid -= 1
            answer = client.request(rid, "tools/call", {"name": "list-servers", "arguments": {}})
            listed = json.loads(answer["result"]["content"][0]["text"])["servers"]
        else:
            listed = [name for name in names if name.endswith("echo")]
        if len(listed) >= servers:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.argv[:3]}: {len(listed)} of {servers} backends after {timeout:g} s: {names}")
        time.sleep(0.1)
        if path.tool != "call-tool":
            rid -= 1
            meta = {"_meta": MODERN_META} if path.modern else {}
            names = [t["name"] for t in client.request(rid, "tools/list", meta)["result"]["tools"]]
    params: dict[str, Any] = {"name": path.tool, "arguments": json.loads(path.args_json("ping-pong"))}
    if path.modern:
        params["_meta"] = MODERN_META
    answer = client.request(-99, "tools/call", params)
    text = json.dumps(answer.get("result"))
    if "ping-pong" not in text or answer["result"].get("isError"):
        raise RuntimeError(f"{path.argv[:3]}: the echo call failed: {answer}")


def stop(client: Client) -> None:
    """Close C{client}'s stdin and end its process (mcp-hub-mcp does not exit on end of input)."""
    client.close(timeout=5)
    client.sel.close()
    client.proc.stdout.close()


def rss_mb(pid: int) -> float:
    """The resident set size of process C{pid}, in MB (10^6 bytes)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for {pid}")


def measure(path: Path, inflight: int, calls: int, seconds: float, arguments: str | None = None) -> dict:
    """One load on C{path}: run_load's figures, and the CPU per call of the process in between (if any)."""
    client = path.client
    assert client is not None
    pid = client.proc.pid
    before = cpu_seconds(pid)
    r = run_load(client, path.tool, inflight, calls, seconds, arguments or path.args_json("hello"), modern=path.modern)
    r["cpu_us_per_call"] = (cpu_seconds(pid) - before) / r["calls"] * 1e6 if path.middle else None
    r["mean_us"] = r["seconds"] / r["calls"] * 1e6
    return r


def median_of(measurements: list[dict]) -> dict:
    """Each figure's median over rounds (None stays None)."""
    out: dict[str, Any] = {}
    for key in measurements[0]:
        values = [m[key] for m in measurements if m[key] is not None]
        out[key] = statistics.median(values) if values else None
    return out


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def idle_rss(tmp: str, backends: int, settle: float, node: str) -> dict[str, float]:
    """VmRSS (MB) of each idle process: the gateway and mcp-hub-mcp with C{backends} echo backends."""
    servers = {f"echo{i}": {"command": sys.executable, "args": [ECHO]} for i in range(backends)}
    many = os.path.join(tmp, "idle.json")
    with open(many, "w") as f:
        json.dump({"mcpServers": servers}, f)
    paths = {
        "echo backend": (Path([sys.executable, ECHO], "echo", {}, middle=False), 1),
        "byte relay": (Path([sys.executable, RELAY, "--mode", "bytes", "--", sys.executable, ECHO], "echo", {}), 1),
        "JSON relay": (Path([sys.executable, RELAY, "--mode", "json", "--", sys.executable, ECHO], "echo", {}), 1),
        "gateway": (Path([twistd(), "-n", "--pidfile=", "mcp-gateway", "--config", many], "echo0__echo", {}), backends),
        "mcp-hub-mcp": (hub_path(node, many, "echo0"), backends),
    }
    # The first twistd after an install writes Twisted's plugin cache
    # (dropin.cache), importing every plugin on the way: that one process is
    # about 15 MB larger (55 MB, not 40).  It is written first, so the figure
    # is that of the gateway an operator starts every later time.
    subprocess.run([twistd(), "mcp-gateway", "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
    out: dict[str, float] = {}
    for label, (path, count) in paths.items():
        client = start(path, count)
        try:
            time.sleep(settle)
            readings = []
            for _ in range(5):
                readings.append(rss_mb(client.proc.pid))
                time.sleep(0.1)
            out[label] = statistics.median(readings)
        finally:
            stop(client)
    return out


def run(args: argparse.Namespace) -> dict:
    node = shutil.which("node")
    if node is None or not os.path.exists(HUB):
        raise SystemExit(f"missing node or {HUB}: run `make bench/node/node_modules/.installed`")
    tmp = tempfile.mkdtemp(prefix="twisted-mcp-bench-relay-")
    servers = {"echo": {"command": sys.executable, "args": [ECHO]}}
    plain = os.path.join(tmp, "gateway.json")
    with open(plain, "w") as f:
        json.dump({"mcpServers": servers}, f)
    policy = os.path.join(tmp, "policy.json")
    audit = os.path.join(tmp, "audit.jsonl")
    with open(policy, "w") as f:
        json.dump(full_policy(servers, audit), f)
    gateway = [twistd(), "-n", "--pidfile=", "mcp-gateway", "--config", plain]
    paths = {
        "direct": Path([sys.executable, ECHO], "echo", {}, middle=False),
        "byte relay": Path([sys.executable, RELAY, "--mode", "bytes", "--", sys.executable, ECHO], "echo", {}),
        "JSON relay": Path([sys.executable, RELAY, "--mode", "json", "--", sys.executable, ECHO], "echo", {}),
        "JSON relay 2026-07-28": Path([sys.executable, RELAY, "--mode", "json", "--", sys.executable, ECHO], "echo", {}, modern=True),
        "gateway": Path(gateway, "echo__echo", {}),
        "gateway 2026-07-28": Path(gateway, "echo__echo", {}, modern=True),
        "mcp-hub-mcp": hub_path(node, plain),
        "gateway+policy": Path([twistd(), "-n", "--pidfile=", "mcp-gateway", "--config", policy], "echo__echo", {}),
    }
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    levels: dict[str, dict[int, list[dict]]] = {label: {c: [] for c in args.levels} for label in PATHS}
    large: dict[str, list[dict]] = {label: [] for label in LARGE_PATHS}
    policy_rounds: dict[str, list[float]] = {"gateway": [], "gateway+policy": []}
    try:
        idle = idle_rss(tmp, args.backends, args.settle, node)
        for path in paths.values():
            start(path)
            assert path.client is not None
            run_load(path.client, path.tool, 16, 2000, 2.0, path.args_json("hello"), modern=path.modern)  # warm-up
        for label in LARGE_PATHS:
            path = paths[label]
            assert path.client is not None
            run_load(path.client, path.tool, 1, 3, 30.0, path.args_json(LARGE_TEXT, LARGE_REPEAT), modern=path.modern)
        for r in range(args.rounds):
            step = 1 if r % 2 == 0 else -1
            for label in PATHS[::step]:
                for c in args.levels:
                    levels[label][c].append(measure(paths[label], c, args.calls, args.seconds))
            for label in LARGE_PATHS[::step]:
                big = paths[label].args_json(LARGE_TEXT, LARGE_REPEAT)
                large[label].append(measure(paths[label], 1, args.large_calls, 10 * args.seconds, big))
            for label in tuple(policy_rounds)[::step]:
                policy_rounds[label].append(measure(paths[label], 128, args.calls, args.seconds)["cpu_us_per_call"])
        with open(audit) as f:
            audited = sum(1 for _ in f)
    finally:
        for path in paths.values():
            if path.client is not None:
                stop(path.client)
        shutil.rmtree(tmp, ignore_errors=True)

    results = {label: {c: median_of(each) for c, each in by_level.items()} for label, by_level in levels.items()}
    for by_level in results.values():
        for c, row in by_level.items():
            row["added_p50_us"] = row["p50_us"] - results["direct"][c]["p50_us"]
    large_results = {label: median_of(each) for label, each in large.items()}
    for row in large_results.values():
        row["added_mean_us"] = row["mean_us"] - large_results["direct"]["mean_us"]
        row["added_p50_us"] = row["p50_us"] - large_results["direct"]["p50_us"]
    plain_cpu = statistics.median(policy_rounds["gateway"])
    policy_cpu = statistics.median(policy_rounds["gateway+policy"])
    top = max(args.levels)
    low = min(args.levels)
    ratios: dict[str, float] = {}
    for era, label in (("", "gateway"), (" 2026-07-28", "gateway 2026-07-28")):
        ratios[f"throughput at {top}: gateway{era} / JSON relay"] = (
            results[label][top]["throughput"] / results["JSON relay" + era][top]["throughput"])
        ratios[f"throughput at {top}: gateway{era} / mcp-hub-mcp"] = (
            results[label][top]["throughput"] / results["mcp-hub-mcp"][top]["throughput"])
        ratios[f"added p50 at {low}: gateway{era} - JSON relay (us)"] = (
            results[label][low]["added_p50_us"] - results["JSON relay" + era][low]["added_p50_us"])
    ratios["1 MiB: gateway / byte relay time per call"] = large_results["gateway"]["mean_us"] / large_results["byte relay"]["mean_us"]
    targets = []
    for era in ("", " 2026-07-28"):
        targets += [
            {"target": f"calls/s at {top}, gateway{era} >= 1.0x JSON relay{era}",
             "value": ratios[f"throughput at {top}: gateway{era} / JSON relay"], "unit": "x",
             "met": ratios[f"throughput at {top}: gateway{era} / JSON relay"] >= TARGETS["throughput_vs_json_relay"]},
            {"target": f"calls/s at {top}, gateway{era} >= 2x mcp-hub-mcp",
             "value": ratios[f"throughput at {top}: gateway{era} / mcp-hub-mcp"], "unit": "x",
             "met": ratios[f"throughput at {top}: gateway{era} / mcp-hub-mcp"] >= TARGETS["throughput_vs_peer"]},
            {"target": f"added p50 at {low}, gateway{era} <= JSON relay{era}'s",
             "value": results["gateway" + era][low]["added_p50_us"], "unit": "us",
             "reference": results["JSON relay" + era][low]["added_p50_us"], "reference_path": "JSON relay" + era,
             "met": ratios[f"added p50 at {low}: gateway{era} - JSON relay (us)"] <= 0},
        ]
    targets += [
        {"target": "1 MiB answers, gateway within 1.2x byte relay", "value": ratios["1 MiB: gateway / byte relay time per call"],
         "unit": "x", "met": ratios["1 MiB: gateway / byte relay time per call"] <= TARGETS["large_vs_byte_relay"]},
        {"target": f"idle RSS, gateway with {args.backends} backends <= 45 MB", "value": idle["gateway"], "unit": "MB",
         "met": idle["gateway"] <= TARGETS["idle_rss_mb"]},
        {"target": "policy pipeline + audit to a file <= 30 us/call", "value": policy_cpu - plain_cpu, "unit": "us",
         "met": policy_cpu - plain_cpu <= TARGETS["policy_us_per_call"]},
    ]
    return {
        "command": " ".join(["bench/bench_relay.py", *args.argv]),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": {"cores": os.cpu_count(), "loadavg_before": list(load_before), "python": platform.python_version()},
        "settings": {"calls": args.calls, "seconds": args.seconds, "rounds": args.rounds, "levels": list(args.levels),
                     "large_calls": args.large_calls, "large_bytes": len(LARGE_TEXT) * LARGE_REPEAT,
                     "backends": args.backends},
        "paths": {label: {str(c): row for c, row in by_level.items()} for label, by_level in results.items()},
        "large": large_results,
        "idle_rss_mb": idle,
        "policy": {"inflight": 128, "gateway_cpu_us_per_call": plain_cpu, "policy_cpu_us_per_call": policy_cpu,
                   "difference_us_per_call": policy_cpu - plain_cpu, "rounds": policy_rounds, "audit_records": audited},
        "ratios": ratios,
        "targets": targets,
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict, out: IO[str]) -> None:
    s = report["settings"]
    m = report["machine"]

    def w(line: str = "") -> None:
        out.write(line + "\n")

    w(f"command: {report['command']}")
    w(f"{report['date']}, commit {report['commit']}; {m['cores']} cores, Python {m['python']}, "
      f"load average before {m['loadavg_before'][0]:.2f}; {s['calls']} calls (or {s['seconds']:g} s) per row, "
      f"medians of {s['rounds']} round(s) in alternating order")
    w("Echo tool over stdio; 'added p50' is over direct (handshake-era requests) at the same calls in flight; "
      "'CPU/call' is the process in between")
    w(f"{'in flight':>9} {'path':>21} | {'p50':>8} {'p99':>8} {'calls/s':>9} | {'added p50':>9} {'CPU/call':>9}")
    for c in s["levels"]:
        for label, by_level in report["paths"].items():
            r = by_level[str(c)]
            w(f"{c:>9} {label:>21} | {r['p50_us']:>6.0f}us {r['p99_us']:>6.0f}us {r['throughput']:>9.0f} | "
              f"{r['added_p50_us']:>7.0f}us {fmt(r['cpu_us_per_call'], '>7.1f')}us")
    w()
    w(f"1 MiB answers ({s['large_bytes']:,} bytes of text), 1 in flight, {s['large_calls']} calls per round")
    w(f"{'path':>18} | {'mean':>8} {'p50':>8} | {'added mean':>10} {'added p50':>9} {'CPU/call':>9}")
    for label, r in report["large"].items():
        w(f"{label:>18} | {r['mean_us'] / 1e3:>6.2f}ms {r['p50_us'] / 1e3:>6.2f}ms | {r['added_mean_us'] / 1e3:>8.2f}ms "
          f"{r['added_p50_us'] / 1e3:>7.2f}ms {fmt(r['cpu_us_per_call'], '>7.0f')}us")
    w()
    w(f"Idle RSS (VmRSS after start-up settles; the gateway and mcp-hub-mcp with {s['backends']} echo backends, "
      f"the relays with one, the echo backend alone)")
    for label, mb in report["idle_rss_mb"].items():
        w(f"{label:>18} | {mb:>6.1f} MB")
    w()
    p = report["policy"]
    w(f"Policy pipeline with audit to a file, gateway CPU per call at {p['inflight']} in flight: "
      f"{p['gateway_cpu_us_per_call']:.1f} us plain, {p['policy_cpu_us_per_call']:.1f} us with policy, "
      f"{p['difference_us_per_call']:+.1f} us ({p['audit_records']} audit records)")
    w()
    w("Targets (issue 16)")
    for t in report["targets"]:
        value = f"{t['value']:.2f}x" if t["unit"] == "x" else f"{t['value']:.1f} {t['unit']}"
        if "reference" in t:
            value += f" ({t.get('reference_path', 'JSON relay')} {t['reference']:.1f} {t['unit']})"
        w(f"  {'met    ' if t['met'] else 'NOT met'}  {t['target']}: {value}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer calls, one round)")
    parser.add_argument("--calls", type=int, help=f"calls per measurement (default {FULL['calls']})")
    parser.add_argument("--seconds", type=float, help=f"time cap per measurement (default {FULL['seconds']:g})")
    parser.add_argument("--rounds", type=int, help=f"rounds in alternating order, medians reported (default {FULL['rounds']})")
    parser.add_argument("--large-calls", type=int, help=f"1 MiB calls per round and path (default {FULL['large_calls']})")
    parser.add_argument("--settle", type=float, help=f"seconds to let an idle process settle (default {FULL['settle']:g})")
    parser.add_argument("--backends", type=int, default=10, help="echo backends of the idle gateway (default 10)")
    parser.add_argument("--concurrency", default=",".join(map(str, LEVELS)), help="calls in flight, comma-separated")
    parser.add_argument("--json", help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.levels = sorted(int(x) for x in args.concurrency.split(","))
    if 128 not in args.levels:
        parser.error("--concurrency must include 128 (the targets are at 128 in flight)")
    args.argv = argv
    report = run(args)
    print_report(report, sys.stdout)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
