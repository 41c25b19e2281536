#!/usr/bin/env python3
"""
Benchmark: what the full policy pipeline costs per call, in one run.

The same stdio echo backend behind two gateways: one without policy, one
with everything on (a named principal, roles, rate limits, concurrency
limits, breaker, argument checks, and the audit trail written to a file).
The cost per call is measured two ways: the added p50 at one call in
flight, and the difference in time per call at saturation (1/throughput).

    python bench/bench_policy.py [--calls N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_stdio import ECHO, Client, run_load, twistd  # noqa: E402


def full_policy(servers: dict, audit_path: str) -> dict:
    """A gateway configuration over C{servers} (one named C{echo}) with every policy stage on, audit to C{audit_path}."""
    return {
        "mcpServers": servers,
        "identity": {"principal": {"name": "bench", "roles": ["user"]}},
        "roles": {"user": {"allow": ["echo__*"], "deny": ["*__delete_*"]}},
        "limits": {"principal": {"rate": 1e6, "burst": 1e6}, "tools": [{"tool": "echo__*", "rate": 1e6, "burst": 1e6}], "backends": {"echo": {"rate": 1e6, "burst": 1e6}}},
        "concurrency": {"backends": {"echo": {"max": 1000, "queue": 1000}}},
        "breaker": {"failures": 5, "openSeconds": 30},
        "audit": {"sink": "file", "path": audit_path},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the two gateways this many times")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="twisted-mcp-bench-")
    servers = {"echo": {"command": sys.executable, "args": [ECHO]}}
    plain = os.path.join(tmp, "plain.json")
    full = os.path.join(tmp, "policy.json")
    with open(plain, "w") as f:
        json.dump({"mcpServers": servers}, f)
    with open(full, "w") as f:
        json.dump(full_policy(servers, os.path.join(tmp, "audit.jsonl")), f)
    results: dict[str, dict[int, list[dict]]] = {"plain": {1: [], 128: []}, "policy": {1: [], 128: []}}
    try:
        for _ in range(args.rounds):
            for label, config in (("plain", plain), ("policy", full)):
                client = Client([twistd(), "-n", "--pidfile=", "mcp-gateway", "--config", config])
                try:
                    assert "echo__echo" in client.handshake()
                    run_load(client, "echo__echo", 16, 3000, 2.0)
                    for c in (1, 128):
                        results[label][c].append(run_load(client, "echo__echo", c, args.calls, args.seconds))
                finally:
                    client.close()
        audited = sum(1 for _ in open(os.path.join(tmp, "audit.jsonl")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def best(label: str, c: int, key: str, low: bool) -> float:
        values = [r[key] for r in results[label][c]]
        return min(values) if low else max(values)

    p50_plain, p50_policy = best("plain", 1, "p50_us", True), best("policy", 1, "p50_us", True)
    tp_plain, tp_policy = best("plain", 128, "throughput", False), best("policy", 128, "throughput", False)
    print(f"echo tool, {args.calls} calls (or {args.seconds:g} s) per row, best of {args.rounds} rounds; cores: {os.cpu_count()}")
    print(f"{'gateway':>8} | {'p50 @1':>8} | {'calls/s @128':>12} | {'us/call @128':>12}")
    for label, p50, tp in (("plain", p50_plain, tp_plain), ("policy", p50_policy, tp_policy)):
        print(f"{label:>8} | {p50:>6.0f}us | {tp:>12.0f} | {1e6 / tp:>10.1f}us")
    print(f"policy cost per call: {p50_policy - p50_plain:+.0f} us at p50 (1 in flight), "
          f"{1e6 / tp_policy - 1e6 / tp_plain:+.1f} us of gateway time per call at saturation; {audited} audit records written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
