"""
Run every fuzz target (fuzz/fuzz_*.py, atheris) for FUZZ_SECONDS each.

Each target starts from its seed corpus in fuzz/corpus/NAME (read only) and
grows a working corpus in fuzz/artifacts/corpus/NAME, so a later run goes on
from where the last one stopped.  A crash leaves its input in
fuzz/artifacts/NAME-crash-* (replay it with `python fuzz/fuzz_NAME.py FILE`).

FUZZ_TARGETS=framing,sse picks targets; FUZZ_SEED fixes libFuzzer's seed, and
FUZZ_RUNS stops each target after that many inputs (whichever of the time and
the count comes first): CI sets both, so that its short run is the same run
every time and fails only on a regression, never on a new find by chance.
Prints one line per target and exits 1 when any target crashed.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.environ.get("FUZZ_ARTIFACTS", os.path.join(HERE, "artifacts"))
SECONDS = int(os.environ.get("FUZZ_SECONDS", "60"))


def targets() -> list[str]:
    found = sorted(os.path.basename(p)[len("fuzz_") : -len(".py")] for p in glob.glob(os.path.join(HERE, "fuzz_*.py")))
    wanted = [t for t in os.environ.get("FUZZ_TARGETS", "").split(",") if t]
    unknown = set(wanted) - set(found)
    if unknown:
        raise SystemExit(f"fuzz: unknown FUZZ_TARGETS {sorted(unknown)} (known: {', '.join(found)})")
    return wanted or found


def fuzz(name: str) -> tuple[bool, str]:
    """Run one target; return (crashed, summary)."""
    corpus = os.path.join(ARTIFACTS, "corpus", name)
    os.makedirs(corpus, exist_ok=True)
    argv = [sys.executable, os.path.join(HERE, f"fuzz_{name}.py"), corpus, os.path.join(HERE, "corpus", name)]
    argv += [f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=2048", "-max_len=4096"]
    argv += [f"-artifact_prefix={os.path.join(ARTIFACTS, name)}-", "-print_final_stats=1"]
    if "FUZZ_RUNS" in os.environ:
        argv.append(f"-runs={int(os.environ['FUZZ_RUNS'])}")
    if "FUZZ_SEED" in os.environ:
        argv.append(f"-seed={int(os.environ['FUZZ_SEED'])}")
    log = os.path.join(ARTIFACTS, f"{name}.log")
    with open(log, "wb") as out:
        # Bounded by libFuzzer's own -max_total_time; the margin covers start-up and a slow final input.
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=SECONDS + 120).returncode
    with open(log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    cov = re.findall(r"\bcov: (\d+)", text)
    summary = f"runs {runs[-1] if runs else '?'}, coverage {cov[-1] if cov else '?'}, corpus {len(os.listdir(corpus))} inputs"
    if code != 0:
        crash = re.findall(r"Test unit written to (\S+)", text)
        summary += f", CRASHED (exit {code}): input {crash[-1] if crash else '?'}, log {log}"
    return code != 0, summary


def main() -> int:
    os.makedirs(ARTIFACTS, exist_ok=True)
    crashed = []
    names = targets()
    for name in names:
        failed, summary = fuzz(name)
        print(f"fuzz {name}: {SECONDS} s, {summary}", flush=True)
        if failed:
            crashed.append(name)
    print(f"fuzz: crashes in {', '.join(crashed)}" if crashed else "fuzz: no crash")
    print(f"fuzz: {len(names) - len(crashed)} passed, {len(crashed)} failed")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
