#!/usr/bin/env python3
"""
Where the gateway spends its time on the common call: a profile under the
stdio benchmark's load, written as a readable report (`make profile`).

For each number of calls in flight (default 128, then 1) it starts a fresh
`twistd -n --pidfile= mcp-gateway` in front of one echo backend
(tests/servers/echo_fast.py), calls the echo tool for --seconds with
bench_stdio.py's client, and profiles the gateway process:

  cprofile  (default) twistd's own deterministic profiler (`twistd --profile F
            --profiler cprofile --savestats`): exact call counts and each
            function's own and cumulative time; it inflates code made of many
            small Python calls more than C and system calls;
  py-spy    samples the running gateway from outside (py-spy from
            bench/.peers-venv, which `make bench` creates): in proportion,
            whatever the code is made of.

The report (--out, default bench/profile/report.txt) names the command, date,
commit and machine, the calls/s and p50 under the profiler (lower than without
it), then per load the top functions by own time and by cumulative time, each
with its share of the profile and its time per call of the load.  The raw
profiles are kept beside it (gateway-<N>.prof: open with `python -m pstats`, or
snakeviz; gateway-<N>.spy: py-spy's collapsed stacks).

With --policy the gateway runs bench_policy.py's configuration (every policy
stage on, the audit trail to a file in a temporary directory): where the
policy pipeline's cost per call goes.  py-spy samples every thread (the audit
writer's too); twistd's cProfile sees only the reactor thread.

With --modern the client sends stateless-era (2026-07-28) requests: the
envelope in each request's _meta, as bench_relay.py's "gateway 2026-07-28".

    python bench/profile_gateway.py [--seconds 15] [--concurrency 128,1] [--profiler cprofile|py-spy] [--policy] [--modern] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import sysconfig
import tempfile
import time
from typing import IO, Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import front_profile  # noqa: E402
from bench_policy import full_policy  # noqa: E402
from bench_relay import git_commit, stop  # noqa: E402
from bench_stdio import ECHO, Client, run_load, twistd  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "profile", "report.txt")
#: Path prefixes cut from file names in the report (longest first).
PREFIXES = sorted(
    {p for p in (sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib"), sysconfig.get_paths().get("stdlib"))
     if p},
    key=len,
    reverse=True,
)


def short(location: tuple[str, int, str]) -> str:
    """C{(file, line, function)} as C{package/module.py:line(function)}, without the site-packages or stdlib prefix."""
    filename, line, name = location
    for prefix in PREFIXES:
        if filename.startswith(prefix + os.sep):
            filename = filename[len(prefix) + 1:]
            break
    if filename == "~":
        return name  # a built-in: {method 'write' of ...}
    return f"{filename}:{line}({name})"


def table(stats: pstats.Stats, key: str, top: int, calls: int, out: IO[str]) -> None:
    """The C{top} functions by C{key} (tottime or cumtime): calls, own and cumulative time, shares, us per load call."""
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    index = 2 if key == "tottime" else 3
    rows = sorted(entries.items(), key=lambda item: item[1][index], reverse=True)[:top]
    out.write(f"{'calls':>10} {'own s':>8} {'own %':>6} {'cum s':>8} {'cum %':>6} {'own us/call':>11} {'cum us/call':>11}  function\n")
    for location, (_, ncalls, tottime, cumtime, _) in rows:
        out.write(
            f"{ncalls:>10} {tottime:>8.3f} {tottime / total:>6.1%} {cumtime:>8.3f} {cumtime / total:>6.1%} "
            f"{tottime / calls * 1e6:>11.2f} {cumtime / calls * 1e6:>11.2f}  {short(location)}\n"
        )


def profile_one(inflight: int, seconds: float, profiler: str, raw: str, config: str, modern: bool = False) -> dict:
    """
    Load a fresh gateway at C{inflight} for C{seconds} under C{profiler}, its
    profile into C{raw}; with C{modern}, stateless-era requests (no handshake's
    session used: the envelope in each request's _meta).
    """
    argv = [twistd(), "-n", "--pidfile="]
    if profiler == "cprofile":
        argv += ["--profile", raw, "--profiler", "cprofile", "--savestats"]
    client = Client([*argv, "mcp-gateway", "--config", config])
    spy = None
    try:
        assert "echo__echo" in client.handshake(modern)
        run_load(client, "echo__echo", inflight, 2000, 2.0, modern=modern)  # warm-up
        if profiler == "py-spy":
            spy = subprocess.Popen(
                [front_profile.PY_SPY, "record", "--pid", str(client.proc.pid), "--duration", str(max(1, int(seconds))),
                 "--rate", "997", "--format", "raw", "--output", raw, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)  # py-spy attaches
        result = run_load(client, "echo__echo", inflight, 10**9, seconds, modern=modern)
        if spy is not None:
            _, err = spy.communicate(timeout=60 + seconds)
            if spy.returncode:
                raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}")
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        stop(client)  # the gateway exits on end of input; twistd writes the cProfile stats then
    if not os.path.exists(raw):
        raise RuntimeError(f"no profile written to {raw}")
    return result


def write_report(out: IO[str], args: argparse.Namespace, runs: list[tuple[int, dict, str]]) -> None:
    out.write(f"command: {' '.join(['bench/profile_gateway.py', *args.argv])}\n")
    out.write(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, commit {git_commit()}; {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}; profiler {args.profiler}\n"
    )
    policy = " with bench_policy.py's full policy and the audit trail to a file" if args.policy else ""
    era = " in stateless-era (2026-07-28) requests" if args.modern else ""
    out.write(f"The gateway (twistd mcp-gateway, stdio front, one echo backend){policy} under bench_stdio.py's client calling echo{era}.\n")
    out.write("Figures under a profiler are slower than without it: read the shares, not the absolute times.\n")
    for inflight, result, raw in runs:
        calls = result["calls"]
        out.write(
            f"\n=== {inflight} call(s) in flight, {result['seconds']:.1f} s: {calls} calls, {result['throughput']:,.0f} calls/s, "
            f"p50 {result['p50_us']:.0f} us under the profiler; raw profile {os.path.basename(raw)}\n"
        )
        if args.profiler == "cprofile":
            stats = pstats.Stats(raw)
            out.write(f"profiled time {stats.total_tt:.2f} s ({stats.total_tt / calls * 1e6:.1f} us per call, "  # type: ignore[attr-defined]
                      f"idle waits in epoll included)\n")
            out.write(f"\n-- top {args.top} by own time --\n")
            table(stats, "tottime", args.top, calls, out)
            out.write(f"\n-- top {args.top_cumulative} by cumulative time (including what they call) --\n")
            table(stats, "cumtime", args.top_cumulative, calls, out)
        else:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                front_profile.print_samples(raw, top=args.top)
            out.write(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of load per profile (default 15)")
    parser.add_argument("--concurrency", default="128,1", help="calls in flight, one profile each (default 128,1)")
    parser.add_argument("--profiler", choices=("cprofile", "py-spy"), default="cprofile")
    parser.add_argument("--policy", action="store_true", help="every policy stage on, audit to a file (bench_policy.py's config)")
    parser.add_argument("--modern", action="store_true", help="stateless-era (2026-07-28) requests, the envelope in each one's _meta")
    parser.add_argument("--out", default=DEFAULT_OUT, help="the report (default bench/profile/report.txt)")
    parser.add_argument("--top", type=int, default=30, help="rows by own time (default 30)")
    parser.add_argument("--top-cumulative", type=int, default=40, help="rows by cumulative time (default 40)")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.profiler == "py-spy" and not os.path.exists(front_profile.PY_SPY):
        print(f"missing {front_profile.PY_SPY}: run make bench/.peers-venv/.installed", file=sys.stderr)
        return 1
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="twisted-mcp-profile-") as tmp:
        config = os.path.join(tmp, "gateway.json")
        servers = {"echo": {"command": sys.executable, "args": [ECHO]}}
        with open(config, "w") as f:
            json.dump(full_policy(servers, os.path.join(tmp, "audit.jsonl")) if args.policy else {"mcpServers": servers}, f)
        for inflight in (int(x) for x in args.concurrency.split(",")):
            raw = os.path.join(out_dir, f"gateway-{inflight}.{'prof' if args.profiler == 'cprofile' else 'spy'}")
            if os.path.exists(raw):
                os.unlink(raw)
            result = profile_one(inflight, args.seconds, args.profiler, raw, config, args.modern)
            print(f"{inflight} in flight: {result['throughput']:,.0f} calls/s under {args.profiler}", file=sys.stderr)
            runs.append((inflight, result, raw))
    with open(args.out, "w") as f:
        write_report(f, args, runs)
    print(f"report: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
