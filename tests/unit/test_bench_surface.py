"""
The gateway-time benchmark of the tool surface (bench/bench_surface.py, design §10) still runs
against the gateway as it is: with tiny counts it fits, searches and unwraps through a real
session, and its report keeps its shape.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def bench_module() -> ModuleType:
    """bench/bench_surface.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("bench_surface", REPO / "bench" / "bench_surface.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = bench_module()

LIST_ROWS = ("tools/list full, L=64", "tools/list search mode", "tools/list aliases L=40, cold", "tools/list aliases L=40, warm")
CALL_ROWS = ("tools/call direct, no budget", "tools/call direct, search mode", "tools/call via call_tool")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON report of one tiny run through the command line (runs in a few seconds)."""
    out = tmp_path_factory.mktemp("bench_surface") / "report.json"
    assert bench.main(["--runs", "5", "--tools", "50", "--builds", "2", "--json", str(out)]) == 0
    written: dict[str, Any] = json.loads(out.read_text())
    return written


def test_the_copied_catalog_spreads_real_tools_over_new_backends() -> None:
    catalog = bench.copied_tools(1000, 10)
    assert list(catalog) == [bench.backend_name(i) for i in range(10)]
    assert [len(tools) for tools in catalog.values()] == [100] * 10
    for tools in catalog.values():
        names = [t["name"] for t in tools]
        assert len(set(names)) == len(names)
    first = next(iter(catalog.values()))[0]
    real = json.loads((REPO / "bench" / "data" / "real_tools.json").read_text())
    assert first == next(iter(real.values()))["tools"][0]


def test_a_tiny_run_reports_every_row_in_both_eras(report: dict[str, Any]) -> None:
    assert report["catalog"]["tools"] == 50
    assert report["catalog"]["backends"] == 10
    # The role denies the *delete* tools: the per-principal filter ran.
    assert 0 < report["catalog"]["visible_to_principal"] < 50
    assert report["runs"] == 5
    keys = [(r["row"], r["era"]) for r in report["rows"]]
    assert keys == [(row, era) for row in LIST_ROWS for era in ("legacy", "2026-07-28")] + [
        ("encode only, full list's answer", "-"),
        ("search_tools, warm index", "legacy"),
        *((row, "legacy") for row in CALL_ROWS),
    ]
    for r in report["rows"]:
        assert r["runs"] == 5
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"], r
        assert r["cpu_p50_ms"] > 0
    assert [r["row"] for r in report["index"]] == ["index build, every tool", "index sync, one backend of 10 changed"]
    for r in report["index"]:
        assert r["runs"] == 2 and r["tools"] == 50 and r["p50_ms"] > 0


def test_each_row_measures_what_it_names(report: dict[str, Any]) -> None:
    rows = {(r["row"], r["era"]): r for r in report["rows"]}
    visible = rows[("tools/list full, L=64", "legacy")]["tools_listed"]
    for era in ("legacy", "2026-07-28"):
        full = rows[("tools/list full, L=64", era)]
        assert (full["tools_listed"], full["aliased"]) == (visible, 0)
        assert rows[("tools/list search mode", era)]["tools_listed"] == 2
        for temperature in ("cold", "warm"):
            aliased = rows[(f"tools/list aliases L=40, {temperature}", era)]
            assert aliased["tools_listed"] == visible and aliased["aliased"] > 0
    encoded = rows[("encode only, full list's answer", "-")]
    assert encoded["answer_bytes"] == rows[("tools/list full, L=64", "legacy")]["answer_bytes"]
    search = rows[("search_tools, warm index", "legacy")]
    assert search["visible"] == visible and 0 < search["found"] <= 5
    assert search["queries"] == len(bench.load_queries())


def test_the_table_names_the_command_machine_and_python(report: dict[str, Any]) -> None:
    out = io.StringIO()
    bench.print_report(report, out)
    text = out.getvalue()
    assert text.startswith("command: ")
    assert f"Python {report['python']}" in text
    assert f"{report['machine']['cores']} cores" in text
    for r in report["rows"]:
        assert r["row"] in text
    assert "index build, every tool" in text
