#!/usr/bin/env python3
"""
Benchmark: how long a resource update takes to reach a client through the
gateway, for a handshake-era client (`resources/subscribe`, an unsolicited
`notifications/resources/updated`) and for a 2026-07-28 client (the same
update on its `subscriptions/listen`, tagged with the listen's id), in one run.

The backend is tests/servers/surface.py over stdio; its `touch` tool sends
`notifications/resources/updated` for its resource before it answers.  Each
sample is one `tools/call touch`, timed from the request's last byte written
to the update's line read.  The two eras alternate rounds, so that a busy
moment of the machine does not land on one of them; the median round is shown.
The 2026-07-28 spec's conformance suite allows 1.5 s from trigger to event.

    python bench/bench_listen.py [--touches N] [--rounds R] [--json FILE]

The client is bench_stdio.py's lean JSON-RPC client (not the SDK).
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
SURFACE = os.path.join(os.path.dirname(HERE), "tests", "servers", "surface.py")
URI = "memo://bench/notes"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
TOUCH = "notes__touch"


def subscribe_legacy(client: Client) -> None:
    client.handshake()
    answer = client.request(1, "resources/subscribe", {"uri": URI})
    assert answer.get("result") == {}, answer


def subscribe_modern(client: Client) -> None:
    listen = {"notifications": {"resourceSubscriptions": [URI]}, "_meta": ENVELOPE}
    client.send(json.dumps({"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen", "params": listen}).encode() + b"\n")
    while True:
        for line in client.lines():
            ack = json.loads(line)
            assert ack.get("method") == "notifications/subscriptions/acknowledged", ack
            assert ack["params"]["notifications"] == {"resourceSubscriptions": [URI]}, ack
            return


def touches(client: Client, n: int, modern: bool) -> list[float]:
    """Latencies (seconds) from each touch sent to its update read."""
    params: dict = {"name": TOUCH, "arguments": {}}
    if modern:
        params["_meta"] = ENVELOPE
    out = []
    for rid in range(100, 100 + n):
        data = json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}).encode() + b"\n"
        started = time.perf_counter()
        client.send(data)
        updated = answered = False
        while not (updated and answered):
            for line in client.lines():
                message = json.loads(line)
                if message.get("method") == "notifications/resources/updated":
                    if modern:
                        assert message["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L", message
                    if not updated:
                        out.append(time.perf_counter() - started)
                    updated = True
                elif message.get("id") == rid:
                    assert message["result"]["content"][0]["text"] == "notified", message
                    answered = True
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--touches", type=int, default=300, help="updates per round (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is shown (default 3)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="twisted-mcp-bench-")
    config = os.path.join(tmp, "bench.yaml")
    with open(config, "w") as f:
        backend = {"command": sys.executable, "args": [SURFACE], "env": {"SURFACE_URI": URI, "SURFACE_LABEL": "notes"}}
        json.dump({"mcpServers": {"notes": backend}}, f)
    argv = [twistd(), "-n", "--pidfile=", "mcp-gateway", "--config", config]
    results: dict[str, list[dict]] = {"handshake era (resources/subscribe)": [], "2026-07-28 (subscriptions/listen)": []}
    try:
        for _ in range(args.rounds):
            for label, modern in zip(results, (False, True), strict=True):
                client = Client(argv, env=dict(os.environ))
                try:
                    (subscribe_modern if modern else subscribe_legacy)(client)
                    touches(client, 20, modern)  # warm-up
                    lat = sorted(touches(client, args.touches, modern))
                finally:
                    client.close()
                results[label].append(
                    {"p50_ms": statistics.median(lat) * 1e3, "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3, "max_ms": lat[-1] * 1e3}
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"resource update latency through the gateway, stdio, {args.touches} touches x {args.rounds} rounds (median round)")
    summary = {}
    for label, rounds in results.items():
        row = sorted(rounds, key=lambda r: r["p50_ms"])[len(rounds) // 2]
        summary[label] = row
        print(f"  {label:38s} p50 {row['p50_ms']:7.2f} ms   p99 {row['p99_ms']:7.2f} ms   max {row['max_ms']:7.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
