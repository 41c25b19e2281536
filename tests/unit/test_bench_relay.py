"""
The cost-per-hop benchmark (bench/bench_relay.py, issue 16) still runs against the gateway as it
is: with tiny counts it drives every path (relays, the gateway in both eras, mcp-hub-mcp), the
1 MiB answers, the idle processes and the policy gateway, and its report keeps its shape.  Its JSON
relay (bench/twisted_relay.py) hands each answer back under the client's own id.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HUB = REPO / "bench" / "node" / "node_modules" / "mcp-hub-mcp" / "dist" / "index.js"
ECHO = REPO / "tests" / "servers" / "echo_fast.py"


def bench_module() -> ModuleType:
    """bench/bench_relay.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("bench_relay", REPO / "bench" / "bench_relay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = bench_module()

needs_peer = pytest.mark.skipif(
    shutil.which("node") is None or not HUB.exists(),
    reason="the peer mcp-hub-mcp is not installed: make bench/node/node_modules/.installed",
)
needs_twistd = pytest.mark.skipif(not os.path.exists(bench.twistd()), reason="no twistd beside this Python (make .venv/.installed)")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON report of one tiny run through the command line."""
    out = tmp_path_factory.mktemp("bench_relay") / "report.json"
    argv = ["--quick", "--calls", "40", "--seconds", "2", "--large-calls", "2", "--settle", "0", "--backends", "2"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    written: dict[str, Any] = json.loads(out.read_text())
    return written


@needs_peer
@needs_twistd
def test_a_tiny_run_reports_every_path_at_every_level(report: dict[str, Any]) -> None:
    assert list(report["paths"]) == list(bench.PATHS)
    for label, by_level in report["paths"].items():
        assert list(by_level) == ["1", "16", "128"]
        for level, row in by_level.items():
            # The client starts with as many calls as it keeps in flight, then stops at --calls.
            assert row["calls"] == max(40, int(level))
            assert 0 < row["p50_us"] <= row["p99_us"], (label, row)
            assert row["throughput"] > 0
            # Only direct has no process in between.
            assert (row["cpu_us_per_call"] is None) == (label == "direct"), (label, row)
    assert all(row["added_p50_us"] == 0 for row in report["paths"]["direct"].values())
    assert list(report["large"]) == list(bench.LARGE_PATHS)
    for row in report["large"].values():
        assert row["calls"] == 2 and row["mean_us"] > 0
    assert report["settings"]["large_bytes"] == 1 << 20


@needs_peer
@needs_twistd
def test_idle_policy_and_targets_are_reported(report: dict[str, Any]) -> None:
    assert list(report["idle_rss_mb"]) == list(bench.IDLE_PATHS)
    assert all(mb > 1 for mb in report["idle_rss_mb"].values())
    policy = report["policy"]
    # The policy gateway wrote its audit trail: one record per call at least.
    assert policy["audit_records"] >= 40
    assert policy["difference_us_per_call"] == policy["policy_cpu_us_per_call"] - policy["gateway_cpu_us_per_call"]
    assert len(report["targets"]) == 9
    for target in report["targets"]:
        assert isinstance(target["met"], bool) and isinstance(target["value"], float)
    text = io.StringIO()
    bench.print_report(report, text)
    printed = text.getvalue()
    assert printed.startswith("command: bench/bench_relay.py --quick")
    for label in bench.PATHS:
        assert f" {label} |" in printed
    for target in report["targets"]:
        assert target["target"] in printed


def test_the_peer_is_asked_to_call_echo_with_the_same_arguments() -> None:
    hub = bench.hub_path("node", "cfg.json", "echo3")
    assert hub.tool == "call-tool"
    wrapped = json.loads(hub.args_json("abc", 4))
    assert wrapped == {"serverName": "echo3", "toolName": "echo", "toolArgs": {"text": "abc", "repeat": 4}}
    assert json.loads(bench.Path(["x"], "echo", {}).args_json("abc")) == {"text": "abc"}


@pytest.mark.parametrize("mode", ["bytes", "json"])
def test_the_twisted_relay_answers_under_the_clients_ids(mode: str) -> None:
    requests = [
        {"jsonrpc": "2.0", "id": "a", "method": "initialize", "params": {"protocolVersion": "2025-11-25"}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi", "repeat": 3}}},
        {"jsonrpc": "2.0", "id": [1], "method": "ping"},
    ]
    relay = subprocess.run(
        [sys.executable, str(REPO / "bench" / "twisted_relay.py"), "--mode", mode, "--", sys.executable, str(ECHO)],
        input="".join(json.dumps(r) + "\n" for r in requests).encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    answers = [json.loads(line) for line in relay.stdout.splitlines()]
    assert [a["id"] for a in answers] == ["a", 7, [1]]
    assert answers[1]["result"]["content"][0]["text"] == "hihihi"
