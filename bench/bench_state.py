#!/usr/bin/env python3
"""
Benchmark: the cost of a rate-limit check in Redis against in-process.

For each request the gateway checks up to three buckets (principal, tool,
backend).  In process that is three L{TokenBucket}s; with C{state: {redis:
URL}} it is one C{take()} of L{RedisRates}: one EVALSHA round trip.  This
prints, for the same three buckets:

  - in-process: microseconds per check (CPU, one thread);
  - Redis, one check in flight: the latency of a check (round trip);
  - Redis, C{--concurrency} checks in flight: checks per second, and the
    gateway process's CPU time per check (what it costs the replica; Redis's
    own CPU is not counted).

    python bench/bench_state.py [--redis URL] [--checks N] [--concurrency C] [--rounds R]

Keys go under a namespace of their own, deleted at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.redis_support import delete_namespace  # noqa: E402
from twisted_mcp.policy.limits import TokenBucket  # noqa: E402
from twisted_mcp.state.base import BucketSpec  # noqa: E402
from twisted_mcp.state.config import StateSettings  # noqa: E402
from twisted_mcp.state.redis import connect  # noqa: E402

SPECS = [
    BucketSpec("p\x00alice", 1e9, 1e9, "principal"),
    BucketSpec("t\x00alice\x000\x00github--search", 1e9, 1e9, "tool"),
    BucketSpec("b\x00github", 1e9, 1e9, "backend"),
]


def local_round(checks: int) -> float:
    """Microseconds per in-process check of the three buckets."""
    buckets = [TokenBucket(s.rate, s.burst, time.monotonic()) for s in SPECS]
    start = time.perf_counter()
    for _ in range(checks):
        now = time.monotonic()
        if all(b.wait_time(now) == 0.0 for b in buckets):
            for b in buckets:
                b.take()
    return (time.perf_counter() - start) / checks * 1e6


async def redis_rounds(reactor: Any, args: argparse.Namespace) -> None:
    namespace = f"bench-state-{uuid.uuid4().hex}"
    state = connect(
        StateSettings(redis=args.redis, namespace=namespace, replica="bench", timeout=5.0, resyncInterval=60), reactor
    )
    await state.start()
    if not state.available:
        print(f"Redis not available: {state.problem}")
        return
    rows: dict[str, list[float]] = {"local_us": [], "latency_us": [], "per_s": [], "cpu_us": []}
    try:
        for _ in range(args.rounds):
            rows["local_us"].append(local_round(args.checks))
            start = time.perf_counter()
            for _ in range(args.checks // 10):
                await state.rates.take(SPECS)
            rows["latency_us"].append((time.perf_counter() - start) / (args.checks // 10) * 1e6)
            done = 0
            wall, cpu = time.perf_counter(), time.process_time()

            async def worker() -> None:
                nonlocal done
                while done < args.checks:
                    done += 1
                    await state.rates.take(SPECS)

            await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(args.concurrency)])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rows["per_s"].append(done / wall)
            rows["cpu_us"].append(cpu / done * 1e6)
    finally:
        await state.stop()
        delete_namespace(args.redis, namespace)
    print(f"three buckets per check; {args.rounds} rounds of {args.checks} checks; medians (every round in brackets)")
    for name, label in (
        ("local_us", "in-process TokenBucket, µs per check (CPU)"),
        ("latency_us", "Redis, 1 in flight, µs per check (latency)"),
        ("per_s", f"Redis, {args.concurrency} in flight, checks/s"),
        ("cpu_us", f"Redis, {args.concurrency} in flight, gateway CPU µs per check"),
    ):
        values = rows[name]
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {label}: {statistics.median(values):.1f}  [{shown}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Redis URL")
    parser.add_argument("--checks", type=int, default=20000, help="checks per round")
    parser.add_argument("--concurrency", type=int, default=64, help="checks in flight")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(redis_rounds(reactor, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
