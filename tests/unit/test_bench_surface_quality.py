"""
The stored data of the search-quality benchmark (bench/surface_quality.py, design §8.3) keeps its
shape: a catalog of at least 300 real tools, at least 120 judged queries whose relevant names all
exist in it and cover every server; and the benchmark's scoring counts what it says it counts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def bench_module() -> ModuleType:
    """bench/surface_quality.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("surface_quality", REPO / "bench" / "surface_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = bench_module()


def test_the_catalog_holds_at_least_300_tools_of_named_versioned_servers() -> None:
    tools = bench.load_catalog()
    assert len(tools) >= 300
    names = [name for _, name, _ in tools]
    assert len(set(names)) == len(names)
    for server, name, definition in tools:
        assert name == f"{server}__{definition['name']}"
        assert isinstance(definition.get("inputSchema"), dict), name


def test_every_query_is_judged_against_tools_of_the_catalog() -> None:
    names = {name for _, name, _ in bench.load_catalog()}
    queries = bench.load_queries()
    assert len(queries) >= 120
    texts = [query["query"] for query in queries]
    assert len(set(texts)) == len(texts)
    for query in queries:
        assert query["relevant"], query["query"]
        assert set(query["relevant"]) <= names, (query["query"], set(query["relevant"]) - names)


def test_the_queries_cover_every_server_and_some_are_vague() -> None:
    servers = {server for server, _, _ in bench.load_catalog()}
    queries = bench.load_queries()
    covered = {name.split("__", 1)[0] for query in queries for name in query["relevant"]}
    assert covered == servers
    vague = sum(query["vague"] for query in queries)
    assert 0.1 * len(queries) <= vague <= 0.3 * len(queries)


def test_hit_recall_and_reciprocal_rank_of_one_ranking() -> None:
    scores = bench.judge(["a", "x", "b", "y", "z", "c"], ["b", "c", "d"], [2, 5])
    assert scores == {
        "hit@2": 0.0,
        "recall@2": 0.0,
        "hit@5": 1.0,
        "recall@5": pytest.approx(1 / 3),
        "mrr": pytest.approx(1 / 3),
    }
    assert bench.judge([], ["a"], [5])["mrr"] == 0.0


def test_the_evaluation_reports_every_ranker_and_server() -> None:
    pytest.importorskip("twisted_mcp.dispatch.search")
    tools = bench.load_catalog()
    report = bench.evaluate(tools, bench.load_queries(), [5, 10])
    assert set(report["rankers"]) == {"bm25f", "bm25", "substring"}
    for result in report["rankers"].values():
        assert set(result["servers"]) == {server for server, _, _ in tools}
        assert 0.0 <= result["overall"]["hit@5"] <= result["overall"]["hit@10"] <= 1.0
        assert 0.0 < result["overall"]["mrr"] <= 1.0
