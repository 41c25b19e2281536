"""
Where the gateway's HTTP front spends its time, for bench_http_front.py --profile.

Two profilers, each run on the real `twistd ... mcp-gateway --listen http:...`
under the benchmark's own load (1 call in flight, or N clients):

  py-spy    (default) samples the running gateway from outside (py-spy, from
            bench/.peers-venv, which `make bench` creates): what it shows is
            in proportion, whatever the code is made of;
  cprofile  twistd's own deterministic profiler (`twistd --profile FILE
            --profiler cprofile --savestats`): exact call counts, but it
            inflates code made of many small Python calls (the `email`
            package, header objects) far more than C and system calls.

Either way it prints the calls/s and p50 under the profiler (slower than
without), then the functions that cost the most: by their own time and
including what they call.
"""

from __future__ import annotations

import collections
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
PY_SPY = os.path.join(HERE, ".peers-venv", "bin", "py-spy")
# Inclusive shares are printed for frames of these, above this share of the samples.
INTERESTING = ("twisted/web", "twisted_mcp", "email", "json")


def run(profiler: str, out: str, clients: int, procs: int, seconds: float, build: Callable, measure: Callable) -> int:
    """
    Profile the HTTP front into `out` (a pstats file, or py-spy's collapsed
    stacks) and print the top costs.  `build(tmp, stats_or_None)` returns the
    HTTP front's Server; `measure(server, clients, procs, seconds)` loads it.
    """
    if profiler == "py-spy" and not os.path.exists(PY_SPY):
        print(f"missing {PY_SPY}: run make bench (it creates bench/.peers-venv)", file=sys.stderr)
        return 1
    out = os.path.abspath(out)
    tmp = tempfile.mkdtemp(prefix="twisted-mcp-bench-front-")
    server = build(tmp, out if profiler == "cprofile" else None)
    spy = None
    try:
        server.start()
        measure(server, clients, procs, min(1.0, seconds))  # warm-up
        if profiler == "py-spy":
            spy = subprocess.Popen(
                [PY_SPY, "record", "--pid", str(server.proc.pid), "--duration", str(max(1, int(seconds) - 1)),
                 "--rate", "997", "--format", "raw", "--output", out, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        r = measure(server, clients, procs, seconds)
        if spy is not None:
            _, err = spy.communicate(timeout=60)
            if spy.returncode:
                print(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}", file=sys.stderr)
                return 1
        print(f"HTTP front under {profiler}, {clients} client(s): p50 {r['p50_us']:.0f} us, "
              f"{r['throughput']:,.0f} calls/s, gateway CPU {r['front_cpu_per_call_us']:.0f} us per call")
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        killed = server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if killed:
            print(f"had to kill: {', '.join(killed)}", file=sys.stderr)
    if not os.path.exists(out):
        print(f"no profile written to {out}", file=sys.stderr)
        return 1
    if profiler == "cprofile":
        p = pstats.Stats(out)
        p.sort_stats("tottime").print_stats(30)
        p.sort_stats("cumulative").print_stats(40)
    else:
        print_samples(out)
    return 0


def print_samples(path: str, top: int = 15, floor: float = 0.04) -> None:
    """py-spy's collapsed stacks: the top frames by own samples, and the gateway's frames by inclusive share."""
    total = 0
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            total += n
            frames = [re.sub(r":\d+\)", ")", frame) for frame in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    print(f"{total} samples of the gateway busy (idle waits excluded); by own samples:")
    for frame, n in own.most_common(top):
        print(f"  {n / total:6.1%}  {frame}")
    print(f"including what they call (frames of {', '.join(INTERESTING)}; at least {floor:.0%}):")
    for frame, n in inclusive.most_common():
        if n / total < floor:
            break
        if any(part in frame for part in INTERESTING):
            print(f"  {n / total:6.1%}  {frame}")
