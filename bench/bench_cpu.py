#!/usr/bin/env python3
"""
Benchmark: the gateway's own CPU time per call, for each era of client.

`bench_stdio.py` measures latency and throughput, which on a machine
shared with other work move by tens of percent from one run to the next.
This one measures what the gateway process itself spends (user + system
CPU time, from /proc, Linux only) per `tools/call` to the echo backend, at
a given number of calls in flight, for a handshake-era client and for a
2026-07-28 one (the envelope in every request), each in its own gateway,
in alternating rounds; it prints the medians and every round.

    python bench/bench_cpu.py [--calls N] [--concurrency C] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from bench_stdio import ECHO, Client, run_load, twistd

ERAS = ("handshake", "2026-07-28")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process C{pid} so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--calls", type=int, default=40000, help="calls measured per round")
    parser.add_argument("--concurrency", type=int, default=128, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "gateway.json")
        with open(config, "w") as f:
            json.dump({"mcpServers": {"echo": {"command": sys.executable, "args": [ECHO]}}}, f)
        clients = {}
        for era in ERAS:
            client = Client([twistd(), "-n", "--pidfile=", "mcp-gateway", "--config", config])
            client.handshake(modern=era != "handshake")
            run_load(client, "echo__echo", args.concurrency, 2000, 60, modern=era != "handshake")  # warm up
            clients[era] = client
        per_call: dict[str, list[float]] = {era: [] for era in ERAS}
        try:
            for _ in range(args.rounds):
                for era, client in clients.items():
                    before = cpu_seconds(client.proc.pid)
                    done = run_load(client, "echo__echo", args.concurrency, args.calls, 600, modern=era != "handshake")["calls"]
                    per_call[era].append((cpu_seconds(client.proc.pid) - before) / done * 1e6)
        finally:
            for client in clients.values():
                client.close()
    print(f"gateway CPU per tools/call, {args.calls} calls per round, {args.concurrency} in flight, {args.rounds} rounds")
    medians = {era: statistics.median(values) for era, values in per_call.items()}
    for era, values in per_call.items():
        print(f"{era:>12}: median {medians[era]:6.1f} us  rounds {' '.join(f'{v:.1f}' for v in values)}")
    print(f"2026-07-28 / handshake: {medians['2026-07-28'] / medians['handshake'] * 100:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
