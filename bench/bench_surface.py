#!/usr/bin/env python3
"""
Gateway time of the tool surface (docs/design/surface.md §10): what fitting, searching and
unwrapping cost inside the gateway, with no process or socket in the way.

    python bench/bench_surface.py [--runs N] [--tools N] [--backends N] [--builds N] [--json FILE]

In-process, on a fake clock: a L{twisted_mcp.dispatch.gateway.Gateway} over C{--backends} fake
backends (default 10) holding C{--tools} tools in all (default 1,000): the 369 real tool definitions
of C{bench/data/real_tools.json} copied, in file order and again from the start, under new backend
names (C{team-toolbox-00}, ...), so the descriptions and schemas are the real ones.  A policy with
a role (the principal may use every tool but the C{*delete*} ones), so the per-principal filter runs
on every list that is not cached.  Each request is decoded before the clock starts; each figure is
the time from handing it to the L{twisted_mcp.dispatch.session.ClientSession} to the answer's bytes
written, encoded by the fronts' own caller (L{twisted_mcp.frontends.stream.line_caller}, orjson).

Rows, each over C{--runs} requests (default 2,000) after a few unmeasured ones:

  - C{tools/list} in full mode, names up to 64 characters (C{claude-ai}'s budget): every visible tool;
  - C{tools/list} in search mode (C{cursor-vscode}, 40 tools at most): the two search tools;
  - C{tools/list} with aliases at a 40-character limit (a C{clients.match} row), on a cold C{Fitted}
    cache (emptied before each request: the list is fitted again, the policy's decisions stay cached)
    and a warm one;
  - the encoding alone of the full list's answer (the fronts' encoder, orjson): the floor of the
    C{tools/list} rows that list every tool;
  - one C{search_tools} call (warm index), the queries of C{bench/data/surface_queries.yaml} cycled;
  - C{tools/call} to a backend that answers at once: direct from a client without a budget, direct
    by shaped name from the search-mode client, and through C{call_tool} (the unwrapping's cost is the
    difference);
  - the search index built from nothing over every tool, and rebuilt after one backend's tools
    changed, over C{--builds} builds each (default 20): not a request, reported apart.

The C{tools/list} rows run once per era: a handshake-era session (C{initialize} first) and
2026-07-28 requests (the envelope in C{params._meta}).  Target (issue 14): each p50 well under 5 ms;
reported, not asserted.  C{--json FILE} also writes the report as JSON (C{-}: to stdout instead of
the table).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shlex
import sys
import time
from typing import Any, Callable, Iterator

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REAL_TOOLS = os.path.join(HERE, "data", "real_tools.json")
QUERIES = os.path.join(HERE, "data", "surface_queries.yaml")
sys.path.insert(0, os.path.dirname(HERE))  # this checkout before any installed copy

from twisted.internet.defer import Deferred, succeed  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from twisted_mcp.backends.base import Backend, State  # noqa: E402
from twisted_mcp.config.loader import build  # noqa: E402
from twisted_mcp.dispatch.gateway import Gateway  # noqa: E402
from twisted_mcp.dispatch.search import SearchIndex  # noqa: E402
from twisted_mcp.dispatch.session import ClientSession  # noqa: E402
from twisted_mcp.dispatch.surface import FittedCache  # noqa: E402
from twisted_mcp.frontends.stream import line_caller  # noqa: E402
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE, MODERN_VERSIONS  # noqa: E402
from twisted_mcp.policy.pipeline import Policy  # noqa: E402
from twisted_mcp.policy.principal import Principal  # noqa: E402
from twisted_mcp.wire.jsonrpc import decode, encode, encode_or_explain  # noqa: E402

#: The separator between a backend's name and its tool's own name.
SEPARATOR = "__"
#: The name of the client whose tool names are aliased (a clients.match row of the bench's config).
NARROW_CLIENT = "bench-narrow"
#: The principal every request runs as, and its one role.
PRINCIPAL = Principal(name="bench", roles=("user",), source="config")
#: The target of issue 14, for the report.
TARGET_MS = 5.0
#: The fewest tools the rows make sense with (search mode needs more than Cursor's 40).
MIN_TOOLS = 50
#: Requests run before each row's measured ones.
WARMUP = 20


class InstantBackend(Backend):
    """A backend that is up, lists C{tools} and answers every call at once."""

    def __init__(self, name: str, tools: list[dict[str, Any]]) -> None:
        super().__init__(name)
        self.state = State.UP
        self.tools = tools
        self.calls = 0

    def call(
        self,
        method: str,
        params: dict[str, Any] | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
        context: Any = None,
    ) -> Deferred[Any]:
        self.calls += 1
        return succeed({"content": [{"type": "text", "text": "done"}], "isError": False})


def backend_name(index: int) -> str:
    """The name of the C{index}th copied backend (15 characters: server keys are often about that long)."""
    return f"team-toolbox-{index:02d}"


def copied_tools(total: int, backends: int, path: str = REAL_TOOLS) -> dict[str, list[dict[str, Any]]]:
    """
    C{total} real tool definitions spread over C{backends} new backend names, in the stored
    catalog's order and again from its start; an own name that repeats within a backend (two
    servers' C{search}) gets its first server's key as a suffix.
    """
    with open(path) as f:
        catalog = json.load(f)
    real = [(server, tool) for server, entry in catalog.items() for tool in entry["tools"]]
    per_backend = -(-total // backends)
    out: dict[str, list[dict[str, Any]]] = {}
    for i in range(total):
        server, tool = real[i % len(real)]
        tools = out.setdefault(backend_name(i // per_backend), [])
        names = {t["name"] for t in tools}
        definition = json.loads(json.dumps(tool))  # a copy of its own
        if definition["name"] in names:
            definition["name"] = f"{definition['name']}_{server}"
        tools.append(definition)
    return out


def load_queries(path: str = QUERIES) -> list[str]:
    """The texts of the judged queries of the search-quality benchmark."""
    with open(path) as f:
        return [q["query"] for q in yaml.safe_load(f)["queries"]]


def bench_config(backends: list[str]) -> Any:
    """The config the gateway runs with: a role for the policy's filter, a client row with 40-character names."""
    return build(
        {
            "mcpServers": {name: {"command": "bench"} for name in backends},
            "roles": {"user": {"allow": ["*"], "deny": ["*delete*"]}},
            "clients": {"match": [{"name": NARROW_CLIENT, "maxNameLength": 40}]},
        },
        "bench_surface",
        {},
    )


class Bench:
    """
    The gateway over the copied catalog, and sessions of the clients the rows need.
    """

    def __init__(self, tools: int, backends: int) -> None:
        self.clock = Clock()
        catalog = copied_tools(tools, backends)
        self.backends = [InstantBackend(name, definitions) for name, definitions in catalog.items()]
        config = bench_config(list(catalog))
        self.gateway = Gateway(list(self.backends), SEPARATOR, self.clock, 5.0)
        self.gateway.surface = config.surface
        self.gateway.policy = Policy(config.policy, SEPARATOR, self.clock, lambda peer: PRINCIPAL)
        for backend in self.backends:
            backend._first_discovery_done()
        self.gateway.start()
        #: The messages written toward every client since the last answer was read.
        self.written: list[bytes] = []
        self.next_id = 1

    def session(self, client: str | None) -> ClientSession:
        """A session of a handshake-era client named C{client}, initialized; None: a 2026-07-28 one."""
        session = ClientSession(self.gateway, line_caller(self.written.append, f"bench-{client}"))
        if client is not None:
            info = {"name": client, "version": "1"}
            session.message_received(
                {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": info}}
            )
            session.message_received({"jsonrpc": "2.0", "method": "notifications/initialized"})
            self.answer()
        return session

    def request_line(self, method: str, params: dict[str, Any], modern_client: str | None = None) -> bytes:
        """One request as its bytes (a 2026-07-28 one, from C{modern_client}, when named)."""
        if modern_client is not None:
            params = dict(params)
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSIONS[-1],
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": modern_client, "version": "1"},
            }
        self.next_id += 1
        return json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}).encode()

    def answer(self) -> dict[str, Any]:
        """The one answer written since the last, decoded."""
        if len(self.written) != 1:
            raise AssertionError(f"expected one message toward the client, got {len(self.written)}")
        (data,) = self.written
        del self.written[:]
        message: dict[str, Any] = json.loads(data)
        if "error" in message:
            raise AssertionError(f"the gateway answered with an error: {message['error']}")
        return message

    def timed(
        self, session: ClientSession, lines: Iterator[bytes], runs: int, before: Callable[[], None] | None = None
    ) -> tuple[list[float], list[float], dict[str, Any]]:
        """
        Seconds from handing each request to C{session} to its answer written, wall-clock and
        this thread's CPU, for C{runs} requests after L{WARMUP} unmeasured ones; and the last
        answer.  C{before} runs before each request, off the clock.
        """
        wall: list[float] = []
        cpu: list[float] = []
        written = self.written
        last: dict[str, Any] = {}
        gc.collect()
        for i in range(WARMUP + runs):
            message = decode(next(lines))
            if before is not None:
                before()
            start, start_cpu = time.perf_counter(), time.thread_time()
            session.message_received(message)
            elapsed, elapsed_cpu = time.perf_counter() - start, time.thread_time() - start_cpu
            if not written:
                raise AssertionError("no answer was written")
            if i >= WARMUP:
                wall.append(elapsed)
                cpu.append(elapsed_cpu)
            if i == WARMUP + runs - 1:
                last = self.answer()
            del written[:]
        return wall, cpu, last


def encoding(message: dict[str, Any], runs: int) -> tuple[list[float], list[float], dict[str, Any]]:
    """The time the fronts' encoder takes over C{message} alone (the floor of a C{tools/list}), as L{Bench.timed} reports it."""
    wall: list[float] = []
    cpu: list[float] = []
    gc.collect()
    for i in range(WARMUP + runs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        data, why = encode_or_explain(message)
        elapsed, elapsed_cpu = time.perf_counter() - start, time.thread_time() - start_cpu
        if data is None or why is not None:
            raise AssertionError(f"the answer could not be encoded: {why}")
        if i >= WARMUP:
            wall.append(elapsed)
            cpu.append(elapsed_cpu)
    return wall, cpu, message


def repeat(*lines: bytes) -> Iterator[bytes]:
    """C{lines} over and over."""
    while True:
        yield from lines


def summary(times: list[float]) -> dict[str, Any]:
    """p50, p90, p99 (nearest rank) and max of C{times}, in milliseconds."""
    ordered = sorted(times)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(round(q * n, 6)) - 1)] * 1e3

    return {"runs": n, "p50_ms": rank(0.50), "p90_ms": rank(0.90), "p99_ms": rank(0.99), "max_ms": ordered[-1] * 1e3}


def callable_tool(bench: Bench) -> str:
    """A shaped tool name the principal may call with C{{}} (no required argument)."""
    for name, entry in sorted(bench.gateway.catalog.tools.entries.items()):
        schema = entry.definition.get("inputSchema") or {}
        if "delete" not in name and not schema.get("required"):
            return name
    raise AssertionError("no tool without required arguments in the catalog")


def run(runs: int, tools: int, backends: int, builds: int) -> dict[str, Any]:
    """
    Every row of the benchmark; the report as a JSON-able dict.  What exists once the gateway is
    set up is frozen out of the garbage collector's reach meanwhile (L{gc.freeze}): the collections
    before each row, and those the requests trigger, scan only what the requests made.
    """
    bench = Bench(tools, backends)
    gc.collect()
    gc.freeze()
    try:
        return _rows(bench, runs, builds)
    finally:
        gc.unfreeze()


def _rows(bench: Bench, runs: int, builds: int) -> dict[str, Any]:
    gateway = bench.gateway
    rows: list[dict[str, Any]] = []

    def row(name: str, era: str, measured: tuple[list[float], list[float], dict[str, Any]], **facts: Any) -> None:
        wall, cpu, _ = measured
        rows.append({"row": name, "era": era, **summary(wall), "cpu_p50_ms": summary(cpu)["p50_ms"], **facts})

    def cold() -> None:
        gateway.fits = FittedCache()

    list_cases = (
        ("tools/list full, L=64", "claude-ai", None),
        ("tools/list search mode", "cursor-vscode", None),
        ("tools/list aliases L=40, cold", NARROW_CLIENT, cold),
        ("tools/list aliases L=40, warm", NARROW_CLIENT, None),
    )
    full_answer: dict[str, Any] = {}
    for label, client, before in list_cases:
        for era in ("legacy", "2026-07-28"):
            if era == "legacy":
                session = bench.session(client)
                line = bench.request_line("tools/list", {})
            else:
                session = bench.session(None)
                line = bench.request_line("tools/list", {}, modern_client=client)
            measured = bench.timed(session, repeat(line), runs, before)
            answer = measured[2]
            listed = answer["result"]["tools"]
            aliased = sum(1 for t in listed if "io.github.twisted-mcp/name" in (t.get("_meta") or {}))
            size = len(encode(answer))
            row(label, era, measured, tools_listed=len(listed), aliased=aliased, answer_bytes=size)
            if before is None and era == "legacy" and client == "claude-ai":
                full_answer = answer
    row("encode only, full list's answer", "-", encoding(full_answer, runs), answer_bytes=len(encode(full_answer)))

    searcher = bench.session("cursor-vscode")
    queries = load_queries()
    lines = [bench.request_line("tools/call", {"name": "search_tools", "arguments": {"query": q}}) for q in queries]
    measured = bench.timed(searcher, repeat(*lines), runs)
    found = measured[2]["result"]["structuredContent"]
    row("search_tools, warm index", "legacy", measured, queries=len(queries), found=len(found["tools"]), visible=found["total"])

    target = callable_tool(bench)
    plain = bench.session("bench-client")
    direct = bench.request_line("tools/call", {"name": target, "arguments": {}})
    measured = bench.timed(plain, repeat(direct), runs)
    row("tools/call direct, no budget", "legacy", measured, tool=target)
    measured = bench.timed(searcher, repeat(direct), runs)
    row("tools/call direct, search mode", "legacy", measured, tool=target)
    wrapped = bench.request_line("tools/call", {"name": "call_tool", "arguments": {"name": target, "arguments": {}}})
    measured = bench.timed(searcher, repeat(wrapped), runs)
    row("tools/call via call_tool", "legacy", measured, tool=target)
    calls = sum(b.calls for b in bench.backends)
    if calls != 3 * (WARMUP + runs):
        raise AssertionError(f"{calls} calls reached the backends, expected {3 * (WARMUP + runs)}")

    entries = gateway.catalog.tools.entries
    every = [(entry.backend.name, name, entry.definition) for name, entry in entries.items()]
    built: list[float] = []
    for _ in range(builds):
        index = SearchIndex()
        gc.collect()
        start = time.perf_counter()
        index.sync(every)
        built.append(time.perf_counter() - start)
    one = bench.backends[0].name
    rebuilt: list[float] = []
    for i in range(builds):
        changed = [(b, n, {**d, "description": f"{d.get('description', '')} (v{i})"} if b == one else d) for b, n, d in every]
        gc.collect()
        start = time.perf_counter()
        index.sync(changed)
        rebuilt.append(time.perf_counter() - start)
    index_rows = [
        {"row": "index build, every tool", "tools": len(index), **summary(built)},
        {"row": f"index sync, one backend of {len(bench.backends)} changed", "tools": len(index), **summary(rebuilt)},
    ]
    gc.collect()
    return {
        "command": "",
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cores": os.cpu_count()},
        "python": platform.python_version(),
        "catalog": {"tools": len(entries), "backends": len(bench.backends), "visible_to_principal": found["total"]},
        "runs": runs,
        "builds": builds,
        "target_p50_ms": TARGET_MS,
        "rows": rows,
        "index": index_rows,
    }


def print_report(report: dict[str, Any], out: Any = sys.stdout) -> None:
    """The report as the other bench scripts print theirs: what ran, on what, then a table."""
    catalog = report["catalog"]
    machine = report["machine"]
    print(f"command: {report['command']}", file=out)
    print(f"machine: {machine['platform']} ({machine['machine']}), {machine['cores']} cores; Python {report['python']}", file=out)
    print(
        f"catalog: {catalog['tools']} tools over {catalog['backends']} backends, {catalog['visible_to_principal']} visible to the "
        f"principal; {report['runs']} requests per row; target: each p50 well under {report['target_p50_ms']:g} ms",
        file=out,
    )
    print("gateway time per request, ms (wall clock; cpu: this thread's CPU time, p50):", file=out)
    header = f"{'row':34} {'era':>10} | {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'cpu':>7} |"
    print(header, file=out)
    for r in report["rows"]:
        what = ""
        if r["row"].startswith("encode only"):
            what = f"{r['answer_bytes'] / 1e3:,.0f} kB, wire.jsonrpc.encode_or_explain alone"
        elif "tools_listed" in r:
            what = f"{r['tools_listed']} tools, {r['aliased']} aliased, {r['answer_bytes'] / 1e3:,.0f} kB"
        elif "found" in r:
            what = f"{r['found']} found of {r['visible']} ({r['queries']} queries cycled)"
        elif "tool" in r:
            what = r["tool"]
        figures = " ".join(f"{r[k]:7.3f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "cpu_p50_ms"))
        print(f"{r['row']:34} {r['era']:>10} | {figures} | {what}", file=out)
    print(f"search index, ms, {report['builds']} builds each (per catalog change, not per request):", file=out)
    for r in report["index"]:
        figures = " ".join(f"{r[k]:7.1f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
        print(f"{r['row']:45} | {figures} | {r['tools']} tools", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="measured requests per row (default 2000)")
    parser.add_argument("--tools", type=int, default=1000, help="tools in the catalog (default 1000)")
    parser.add_argument("--backends", type=int, default=10, help="backends they are spread over (default 10)")
    parser.add_argument("--builds", type=int, default=20, help="index builds and syncs measured (default 20)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE (-: stdout, instead of the table)")
    args = parser.parse_args(argv)
    for key in ("runs", "tools", "backends", "builds"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1")
    if args.tools < MIN_TOOLS:
        parser.error(f"--tools must be at least {MIN_TOOLS}: cursor-vscode's list is in search mode over 40 tools")
    if args.tools < args.backends:
        parser.error("--tools must be at least --backends")
    report = run(args.runs, args.tools, args.backends, args.builds)
    given = sys.argv[1:] if argv is None else argv
    report["command"] = " ".join(shlex.quote(a) for a in ["python", "bench/bench_surface.py", *given])
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
