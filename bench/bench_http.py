#!/usr/bin/env python3
"""
Benchmark: calls to an echo tool on a Streamable HTTP MCP server on
127.0.0.1 (bench/echo_http.js, a minimal fast server, or with --backend
everything @modelcontextprotocol/server-everything), in one run:

- direct:       an HTTP client POSTing tools/call to the server itself
                (N threads, each with its own kept-alive connection);
- gateway:      a stdio client -> twistd mcp-gateway -> the server;
- supergateway: a stdio client -> supergateway (npm, Streamable HTTP -> stdio)
                -> the server.

    python bench/bench_http.py [--calls N] [--seconds S] [--concurrency 1,16]

Needs the npm packages in bench/node (`make bench` installs them).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_stdio import Client, run_load, twistd  # noqa: E402

NODE = os.path.join(HERE, "node", "node_modules")
EVERYTHING = os.path.join(NODE, "@modelcontextprotocol", "server-everything", "dist", "index.js")
SUPERGATEWAY = os.path.join(NODE, ".bin", "supergateway")
PRELOAD = os.path.join(ROOT, "tests", "servers", "loopback_preload.cjs")


def start_server(kind: str) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PORT="0")
    argv = ["node", os.path.join(HERE, "echo_http.js")]
    if kind == "everything":
        argv = ["node", "--require", PRELOAD, EVERYTHING, "streamableHttp"]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(30):
        raise RuntimeError("server-everything did not start")
    line = proc.stdout.readline().decode()
    assert line.startswith("LISTENING "), line
    return proc, int(line.split()[1])


class DirectSession:
    """A handshaken Streamable HTTP session on one kept-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        self.next_id = 1
        init = self.post(
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}},
            capture=True,
        )
        if init:
            self.headers["Mcp-Session-Id"] = init
        self.headers["MCP-Protocol-Version"] = "2025-11-25"
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, message: dict, capture: bool = False):
        self.conn.request("POST", "/mcp", body=json.dumps(message), headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status >= 300:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        if capture:
            return response.getheader("mcp-session-id")
        return body

    def call(self) -> None:
        self.next_id += 1
        body = self.post({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hello"}}})
        if b'"result"' not in body:
            raise RuntimeError(f"bad answer: {body[:200]!r}")


def run_direct(port: int, inflight: int, calls: int, seconds: float) -> dict:
    sessions = [DirectSession(port) for _ in range(inflight)]
    latencies: list[float] = []
    lock = threading.Lock()
    left = [calls]
    deadline = time.perf_counter() + seconds

    def worker(session: DirectSession) -> None:
        mine = []
        while True:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            t0 = time.perf_counter()
            if t0 > deadline:
                break
            session.call()
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for s in sessions:
        s.conn.close()
    latencies.sort()
    return {
        "calls": len(latencies),
        "seconds": elapsed,
        "throughput": len(latencies) / elapsed,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument(
        "--backend",
        choices=["echo", "everything"],
        default="echo",
        help="echo: bench/echo_http.js, a minimal fast server (default); everything: server-everything",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    for path in (EVERYTHING, SUPERGATEWAY):
        if not os.path.exists(path):
            print(f"missing {path}: run `make bench` (it installs bench/node)", file=sys.stderr)
            return 1

    server, port = start_server(args.backend)
    tmp = tempfile.mkdtemp(prefix="twisted-mcp-bench-")
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        config = os.path.join(tmp, "bench.yaml")
        with open(config, "w") as f:
            json.dump({"mcpServers": {"ev": {"url": url}}}, f)
        results: dict[str, dict[int, dict]] = {"direct": {}}
        run_direct(port, 4, 500, 2.0)  # warm-up
        for c in levels:
            results["direct"][c] = run_direct(port, c, args.calls, args.seconds)
        peers = {
            "gateway": ([twistd(), "-n", "--pidfile=", "mcp-gateway", "--config", config], "ev__echo"),
            "supergateway": ([SUPERGATEWAY, "--streamableHttp", url, "--logLevel", "none"], "echo"),
        }
        for label, (argv, tool) in peers.items():
            client = Client(argv)
            try:
                names = client.handshake()
                assert tool in names, f"{label}: {tool} not in {names}"
                template_tool = tool
                run_load(client, template_tool, 4, 500, 2.0, arguments='{"message":"hello"}')
                results[label] = {}
                for c in levels:
                    results[label][c] = run_load(client, template_tool, c, args.calls, args.seconds, arguments='{"message":"hello"}')
            finally:
                client.close()
    finally:
        server.stdin.close()
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    name = "server-everything" if args.backend == "everything" else "bench/echo_http.js"
    print(f"echo tool on {name} (Streamable HTTP), {args.calls} calls (or {args.seconds:g} s) per row; cores: {os.cpu_count()}")
    print(f"{'in flight':>9} {'path':>12} | {'p50':>8} {'p99':>8} {'calls/s':>8} | {'added p50':>9} {'vs supergateway':>15}")
    for c in levels:
        d = results["direct"][c]
        sg = results["supergateway"][c]
        for label in ("direct", "gateway", "supergateway"):
            r = results[label][c]
            print(
                f"{c:>9} {label:>12} | {r['p50_us']:>6.0f}us {r['p99_us']:>6.0f}us {r['throughput']:>8.0f} | "
                f"{r['p50_us'] - d['p50_us']:>7.0f}us {r['throughput'] / sg['throughput']:>14.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
