#!/usr/bin/env python3
"""
Benchmark: a stdio MCP client calling a trivial echo tool, directly and
through the gateway, in one run.

For each concurrency (1, 16, 128 calls in flight) it measures per-call
latency (p50, p99) and throughput, first against the echo backend run
directly, then through `twistd -n --pidfile= mcp-gateway` in front of the
same backend, and prints the ratios.  Then the eras: a 2026-07-28 client
(no handshake, the envelope in every request) to the same handshake-era
backend, and both kinds of client to a 2026-07-28 backend (bench/echo_dual.py,
pinned `protocol: modern`), each compared with the handshake-era row.

    python bench/bench_stdio.py [--calls N] [--seconds S] [--rounds R] [--json FILE]

With --rounds R (on a busy machine), every path is measured R times, in
alternating order, its processes kept up between rounds; medians are
reported, so that a burst of load elsewhere does not land on one path only.

The client is a lean hand-written JSON-RPC client (not the SDK), so that
what is measured is the server side.  Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ECHO = os.path.join(ROOT, "tests", "servers", "echo_fast.py")
#: The same echo server, speaking 2026-07-28 too.
ECHO_DUAL = os.path.join(HERE, "echo_dual.py")


def twistd() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "twistd")
    return exe if os.path.exists(exe) else shutil.which("twistd") or "twistd"


#: The envelope of a stateless-era (MCP 2026-07-28) request.
MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


class Client:
    """A pipelining JSON-RPC client over a child's stdin/stdout."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        self.out = self.proc.stdin.fileno()
        self.inp = self.proc.stdout.fileno()
        self.buf: list[bytes] = []
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.inp, selectors.EVENT_READ)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.out, view)
            view = view[n:]

    def lines(self, timeout: float = 30.0) -> list[bytes]:
        if not self.sel.select(timeout):
            raise TimeoutError("no answer")
        chunk = os.read(self.inp, 1 << 20)
        if not chunk:
            raise EOFError("the server closed its stdout")
        if b"\n" not in chunk:
            self.buf.append(chunk)
            return []
        self.buf.append(chunk)
        parts = b"".join(self.buf).split(b"\n")
        self.buf = [parts.pop()]
        return [p for p in parts if p.strip()]

    def request(self, rid: int, method: str, params: dict) -> dict:
        self.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode() + b"\n")
        while True:
            for line in self.lines():
                msg = json.loads(line)
                if msg.get("id") == rid:
                    return msg

    def handshake(self, modern: bool = False) -> list[str]:
        """The tool names, after initialize (handshake era) or, with C{modern}, without a handshake (2026-07-28)."""
        if modern:
            return [t["name"] for t in self.request(-1, "tools/list", {"_meta": MODERN_META})["result"]["tools"]]
        self.request(
            0,
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
        )
        self.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        tools = self.request(-1, "tools/list", {})["result"]["tools"]
        return [t["name"] for t in tools]

    def close(self, timeout: float = 15) -> None:
        """Close the child's stdin and wait for it to exit; terminate it, then kill it, if it does not within C{timeout} s."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_load(
    client: Client,
    tool: str,
    inflight: int,
    calls: int,
    seconds: float,
    arguments: str = '{"text":"hello"}',
    modern: bool = False,
) -> dict:
    """Keep `inflight` calls outstanding until `calls` are done or `seconds` pass (`modern`: 2026-07-28 requests)."""
    meta = (',"_meta":' + json.dumps(MODERN_META, separators=(",", ":"))) if modern else ""
    template = (
        '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"'
        + tool
        + '","arguments":'
        + arguments
        + meta
        + "}}\n"
    )
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    next_id = 1
    now = time.perf_counter
    start = now()
    deadline = start + seconds
    batch = []
    for _ in range(inflight):
        sent_at[next_id] = now()
        batch.append(template % next_id)
        next_id += 1
    client.send("".join(batch).encode())
    done = 0
    while sent_at:
        lines = client.lines()
        t = now()
        batch = []
        for line in lines:
            # Cheap id extraction: answers are {"jsonrpc":"2.0","id":N,...}.
            i = line.find(b'"id":') + 5
            j = i
            while line[j : j + 1].isdigit():
                j += 1
            rid = int(line[i:j])
            t0 = sent_at.pop(rid, None)
            if t0 is None:
                continue
            if b'"error"' in line[:60]:
                raise RuntimeError(f"error answer: {line[:200]!r}")
            latencies.append(t - t0)
            done += 1
            if done + len(sent_at) < calls and t < deadline:
                sent_at[next_id] = t
                batch.append(template % next_id)
                next_id += 1
        if batch:
            client.send("".join(batch).encode())
    elapsed = now() - start
    latencies.sort()
    return {
        "calls": done,
        "seconds": elapsed,
        "throughput": done / elapsed,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
    }


def median_of(measurements: list[dict]) -> dict:
    """Each figure's median over rounds (the figures of one round when there is one)."""
    return {key: statistics.median(m[key] for m in measurements) for key in measurements[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per measurement (default 20000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time cap per measurement (default 5)")
    parser.add_argument("--concurrency", default="1,16,128", help="calls in flight, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, in alternating order; medians reported (default 1)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    levels = [int(x) for x in args.concurrency.split(",")]

    tmp = tempfile.mkdtemp(prefix="twisted-mcp-bench-")

    def gateway_to(server: dict) -> list[str]:
        config = os.path.join(tmp, f"bench-{len(os.listdir(tmp))}.yaml")
        with open(config, "w") as f:
            json.dump({"mcpServers": {"echo": server}}, f)
        return [twistd(), "-n", "--pidfile=", "mcp-gateway", "--config", config]

    gateway = gateway_to({"command": sys.executable, "args": [ECHO]})
    to_modern = gateway_to({"command": sys.executable, "args": [ECHO_DUAL], "protocol": "modern"})
    targets = {
        "direct": ([sys.executable, ECHO], "echo", False),
        "relay": ([sys.executable, os.path.join(HERE, "relay.py"), sys.executable, ECHO], "echo", False),
        "gateway": (gateway, "echo__echo", False),
        # A 2026-07-28 client (no handshake, the envelope in every request) to the same backend.
        "modern": (gateway, "echo__echo", True),
        # The 2026-07-28 backend alone, then both eras of client through the gateway to it.
        "direct/mod": ([sys.executable, ECHO_DUAL], "echo", True),
        "mod/mod": (to_modern, "echo__echo", True),
        "leg/mod": (to_modern, "echo__echo", False),
    }
    #: The direct row of each row's backend, which its added latency is counted from (else "direct").
    floor = {"direct/mod": "direct/mod", "mod/mod": "direct/mod", "leg/mod": "direct/mod"}
    #: The paths through the gateway compared with the handshake era's ("gateway").
    crossings = ("modern", "mod/mod", "leg/mod")
    clients: dict[str, Client] = {}
    rounds: dict[str, dict[int, list[dict]]] = {label: {c: [] for c in levels} for label in targets}
    try:
        for label, (argv, tool, modern) in targets.items():
            client = clients[label] = Client(argv)
            names = client.handshake(modern)
            assert tool in names, f"{label}: {tool} not in {names}"
            run_load(client, tool, 16, 2000, 2.0, modern=modern)  # warm-up
        for r in range(args.rounds):
            for label in list(targets)[:: 1 if r % 2 == 0 else -1]:
                _, tool, modern = targets[label]
                for c in levels:
                    rounds[label][c].append(run_load(clients[label], tool, c, args.calls, args.seconds, modern=modern))
    finally:
        for client in clients.values():
            client.close()
    results = {label: {c: median_of(each) for c, each in by_level.items()} for label, by_level in rounds.items()}
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"echo tool, {args.calls} calls (or {args.seconds:g} s) per row; cores: {os.cpu_count()}"
          + (f"; medians of {args.rounds} rounds in alternating order" if args.rounds > 1 else ""))
    print("direct: client -> echo backend; relay: through a byte-copying process (the floor for any")
    print("process in between); gateway: through twistd mcp-gateway; modern: the same with 2026-07-28 requests")
    print("(no handshake, the envelope in every request); direct/mod: 2026-07-28 requests to a 2026-07-28 echo")
    print("backend (bench/echo_dual.py); mod/mod and leg/mod: a 2026-07-28 and a handshake-era client through")
    print("the gateway to that backend (protocol: modern). 'added' and 'ratio' compare with the direct row of")
    print("the same backend (direct, or direct/mod).")
    print(f"{'in flight':>9} {'path':>10} | {'p50':>8} {'p99':>8} {'calls/s':>9} | {'added p50':>9} {'ratio':>7}")
    for c in levels:
        for label in targets:
            d = results[floor.get(label, "direct")][c]
            r = results[label][c]
            print(
                f"{c:>9} {label:>10} | {r['p50_us']:>6.0f}us {r['p99_us']:>6.0f}us {r['throughput']:>9.0f} | "
                f"{r['p50_us'] - d['p50_us']:>7.0f}us {r['throughput'] / d['throughput']:>7.1%}"
            )
    print("Each era's path through the gateway against the handshake era's (gateway): added p50, and throughput")
    for c in levels:
        legacy = results["gateway"][c]
        legacy_added = legacy["p50_us"] - results["direct"][c]["p50_us"]
        for label in crossings:
            row = results[label][c]
            print(
                f"{c:>9} in flight: {label:>7} / gateway: added p50 {row['p50_us'] - results[floor.get(label, 'direct')][c]['p50_us']:.0f} "
                f"vs {legacy_added:.0f} us, throughput {row['throughput'] / legacy['throughput']:.1%}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
