#!/usr/bin/env python3
"""
Benchmark: `resources/read` of a 1 MiB text resource, directly and through
the gateway, in one run.

The backend is tests/servers/surface.py (an SDK server) serving one text
resource of `--size` bytes over stdio.  For each concurrency (1 and 4 reads
in flight by default) it measures per-read latency (p50, p99) and reads/s
against the backend run directly, through a byte relay (bench/relay.py: the
floor for any process in between) and through `twistd -n --pidfile=
mcp-gateway` in front of the same backend, in alternating rounds, and prints
the ratio to direct (target: the gateway within 1.5x of direct, i.e. a
ratio of at least 67%).

    python bench/bench_resources.py [--reads N] [--seconds S] [--size BYTES] [--rounds R]
                                    [--paths direct,relay,gateway] [--json FILE]

The client is the same lean hand-written JSON-RPC client as bench_stdio.py
(not the SDK), so that what is measured is the server side.  Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from bench_stdio import Client, twistd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SURFACE = os.path.join(ROOT, "tests", "servers", "surface.py")
URI = "memo://bench/big"


def answer_id(line: bytes) -> int:
    """The id of an answer line, without parsing its megabyte of text."""
    i = line.find(b'"id":') + 5
    while line[i : i + 1] == b" ":
        i += 1
    j = i
    while line[j : j + 1].isdigit():
        j += 1
    return int(line[i:j])


def check_first_read(client: Client, size: int) -> None:
    answer = client.request(-2, "resources/read", {"uri": URI})
    assert "result" in answer, f"resources/read failed: {str(answer)[:300]}"
    text = answer["result"]["contents"][0]["text"]
    assert len(text.encode()) == size, f"read {len(text)} bytes, expected {size}"


def run_load(client: Client, inflight: int, reads: int, seconds: float) -> dict:
    """Keep `inflight` reads outstanding until `reads` are done or `seconds` pass."""
    template = '{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"uri":"' + URI + '"}}\n'
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
            rid = answer_id(line)
            t0 = sent_at.pop(rid, None)
            if t0 is None:
                continue
            if b'"error"' in line[:80] or b'"error"' in line[-300:]:
                raise RuntimeError(f"error answer: {line[:300]!r}")
            latencies.append(t - t0)
            done += 1
            if done + len(sent_at) < reads and t < deadline:
                sent_at[next_id] = t
                batch.append(template % next_id)
                next_id += 1
        if batch:
            client.send("".join(batch).encode())
    elapsed = now() - start
    latencies.sort()
    return {
        "reads": done,
        "seconds": elapsed,
        "throughput": done / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=2000, help="reads per measurement (default 2000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time cap per measurement (default 5)")
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes of the resource's text (default 1 MiB)")
    parser.add_argument("--concurrency", default="1,4", help="reads in flight, comma-separated")
    parser.add_argument("--paths", default="direct,relay,gateway", help="which paths to measure (default all three)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is shown (default 3)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    paths = args.paths.split(",")

    env = dict(os.environ, SURFACE_URI=URI, SURFACE_TEXT_BYTES=str(args.size))
    tmp = tempfile.mkdtemp(prefix="twisted-mcp-bench-")
    config = os.path.join(tmp, "bench.yaml")
    with open(config, "w") as f:
        backend = {"command": sys.executable, "args": [SURFACE], "env": {"SURFACE_URI": URI, "SURFACE_TEXT_BYTES": str(args.size)}}
        json.dump({"mcpServers": {"big": backend}}, f)

    targets = {
        "direct": [sys.executable, SURFACE],
        "relay": [sys.executable, os.path.join(HERE, "relay.py"), sys.executable, SURFACE],
        "gateway": [twistd(), "-n", "--pidfile=", "mcp-gateway", "--config", config],
    }
    # Rounds alternate the paths, so that a busy moment of the machine does not land on one path
    # only; each row is the round with the median throughput.
    rounds: dict[str, dict[int, list[dict]]] = {}
    for _ in range(args.rounds):
        for label, argv in targets.items():
            if label not in paths:
                continue
            client = Client(argv, env=env)
            try:
                client.handshake()
                check_first_read(client, args.size)
                run_load(client, 2, 20, 2.0)  # warm-up
                for c in levels:
                    rounds.setdefault(label, {}).setdefault(c, []).append(run_load(client, c, args.reads, args.seconds))
            finally:
                client.close()
    shutil.rmtree(tmp, ignore_errors=True)
    results = {
        label: {c: sorted(runs, key=lambda r: r["throughput"])[len(runs) // 2] for c, runs in by_level.items()}
        for label, by_level in rounds.items()
    }

    print(f"resources/read of a {args.size}-byte text resource, {args.reads} reads (or {args.seconds:g} s) per row,")
    print(f"median of {args.rounds} alternating round(s);")
    print(f"cores: {os.cpu_count()}. direct: client -> surface.py; relay: through a byte-copying process (the")
    print("floor for any process in between); gateway: through twistd mcp-gateway.")
    print("'ratio' is the gateway's reads/s over direct (target: at least 67%, i.e. within 1.5x).")
    print(f"{'in flight':>9} {'path':>8} | {'p50':>9} {'p99':>9} {'reads/s':>8} | {'added p50':>9} {'ratio':>7}")
    for c in levels:
        d = results.get("direct", {}).get(c)
        for label in results:
            r = results[label][c]
            line = f"{c:>9} {label:>8} | {r['p50_ms']:>7.1f}ms {r['p99_ms']:>7.1f}ms {r['throughput']:>8.1f} |"
            if d is not None:
                line += f" {r['p50_ms'] - d['p50_ms']:>7.1f}ms {r['throughput'] / d['throughput']:>7.1%}"
            print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"median": results, "rounds": rounds}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
