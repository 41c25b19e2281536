#!/usr/bin/env python3
"""
Search quality of the gateway's tool index on real servers' tools (docs/design/surface.md §8.3).

    python bench/surface_quality.py [--json] [--failures] [--k 5 10] [--split tune|heldout|all]

Loads the stored catalog (C{bench/data/real_tools.json}, from C{bench/surface_catalog.py}) and the
judged queries (C{bench/data/surface_queries.yaml}), indexes every tool under its default shaped
name (C{<server>__<own name>}, all visible: no policy, no view) and ranks each query with three
rankers:

  - C{bm25f}: L{twisted_mcp.dispatch.search.SearchIndex} with its field weights (C{DEFAULT_WEIGHTS});
  - C{bm25}: the same index with every field weighted 1.0 (BM25 without field weights);
  - C{substring}: the tools whose shaped name contains a query token (the index's tokenizer), ranked
    by how many tokens they contain, then by name.

For each it reports, per server and overall: C{hit@k} (the fraction of queries with at least one
relevant tool in the top k), C{recall@k} (the mean fraction of a query's relevant tools found in
the top k) and C{MRR} (the mean reciprocal rank of the first relevant tool; 0 when none is ranked).
A query counts for every server one of its relevant tools belongs to. C{vague} is the subset of
queries marked C{vague: true}. No target is asserted: it is a benchmark. Runs in seconds, offline.

The queries fall in two halves by a hash of their text (L{split_of}): C{tune}, the only half whose
failures may be read while changing the ranker, and C{heldout}, which checks that a change
generalises. The report shows both; C{--split} evaluates one half only (and lists its failures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CATALOG = os.path.join(HERE, "data", "real_tools.json")
QUERIES = os.path.join(HERE, "data", "surface_queries.yaml")
sys.path.insert(0, os.path.dirname(HERE))  # this checkout before any installed copy

#: A ranker: (query, limit) -> shaped names, best first.
Ranker = Callable[[str, int], list[str]]


def shaped_name(server: str, tool: str) -> str:
    """The gateway's default shaped name of a server's tool: backend key, C{__}, own name."""
    return f"{server}__{tool}"


def load_catalog(path: str = CATALOG) -> list[tuple[str, str, dict[str, Any]]]:
    """(server, shaped name, definition) for every tool of the stored catalog, in file order."""
    with open(path) as f:
        catalog = json.load(f)
    return [
        (server, shaped_name(server, tool["name"]), tool)
        for server, entry in catalog.items()
        for tool in entry["tools"]
    ]


#: The halves of the queries, in report order.
SPLITS = ("tune", "heldout")


def split_of(query: str) -> str:
    """
    The half a query belongs to, C{tune} or C{heldout}: by the first bit of the SHA-256 of its text
    (UTF-8), so the split is fixed by the text alone, about 50/50, and blind to what it says.
    """
    return SPLITS[hashlib.sha256(query.encode("utf-8")).digest()[0] >> 7]


def load_queries(path: str = QUERIES) -> list[dict[str, Any]]:
    """The judged queries: C{query}, C{relevant} (shaped names), C{vague} (bool), C{split} (L{split_of})."""
    with open(path) as f:
        document = yaml.safe_load(f)
    return [
        {
            "query": item["query"],
            "relevant": list(item["relevant"]),
            "vague": bool(item.get("vague", False)),
            "split": split_of(item["query"]),
        }
        for item in document["queries"]
    ]


def served(server: str, name: str, definition: dict[str, Any]) -> dict[str, Any]:
    """The definition as the gateway serves it by default: the own name replaced by the shaped one."""
    return {**definition, "name": name}


def index_ranker(tools: Sequence[tuple[str, str, dict[str, Any]]], weights: dict[str, float] | None) -> Ranker:
    """A ranker over a L{SearchIndex} of C{tools}; C{weights=None}: the index's defaults."""
    from twisted_mcp.dispatch.search import SearchIndex

    index = SearchIndex(weights=weights)
    index.sync((server, name, served(server, name, definition)) for server, name, definition in tools)
    visible = [name for _, name, _ in tools]

    def rank(query: str, limit: int) -> list[str]:
        return [hit.name for hit in index.search(query, visible, limit)]

    return rank


def substring_ranker(tools: Sequence[tuple[str, str, dict[str, Any]]]) -> Ranker:
    """The baseline: tools whose shaped name contains a query token, most tokens first, then by name."""
    from twisted_mcp.dispatch.search import tokens

    names = sorted(name.lower() for _, name, _ in tools)
    original = {name.lower(): name for _, name, _ in tools}

    def rank(query: str, limit: int) -> list[str]:
        wanted = set(tokens(query))
        scored = [(sum(token in name for token in wanted), name) for name in names]
        ranked = sorted((item for item in scored if item[0] > 0), key=lambda item: (-item[0], item[1]))
        return [original[name] for _, name in ranked[:limit]]

    return rank


def rankers(tools: Sequence[tuple[str, str, dict[str, Any]]]) -> dict[str, Ranker]:
    """The three rankers compared, by the name the report uses."""
    from twisted_mcp.dispatch.search import DEFAULT_WEIGHTS

    return {
        "bm25f": index_ranker(tools, None),
        "bm25": index_ranker(tools, {field: 1.0 for field in DEFAULT_WEIGHTS}),
        "substring": substring_ranker(tools),
    }


def judge(ranked: Sequence[str], relevant: Iterable[str], ks: Sequence[int]) -> dict[str, float]:
    """hit@k, recall@k for each k, and the reciprocal rank, of one ranked list."""
    wanted = set(relevant)
    scores: dict[str, float] = {}
    for k in ks:
        found = wanted.intersection(ranked[:k])
        scores[f"hit@{k}"] = 1.0 if found else 0.0
        scores[f"recall@{k}"] = len(found) / len(wanted)
    first = next((position for position, name in enumerate(ranked, 1) if name in wanted), None)
    scores["mrr"] = 1.0 / first if first else 0.0
    return scores


def mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The column means of C{rows} (empty: empty)."""
    if not rows:
        return {}
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}


def evaluate(
    tools: Sequence[tuple[str, str, dict[str, Any]]], queries: Sequence[dict[str, Any]], ks: Sequence[int]
) -> dict[str, Any]:
    """Per ranker: overall, per half, vague and per-server means, and each query's ranked top and scores."""
    server_of = {name: server for server, name, _ in tools}
    depth = len(tools)  # MRR: the first relevant anywhere in the ranking
    report: dict[str, Any] = {"tools": len(tools), "queries": len(queries), "rankers": {}}
    for ranker_name, rank in rankers(tools).items():
        per_query = []
        for query in queries:
            ranked = rank(query["query"], depth)
            per_query.append({**query, "top": ranked[: max(ks)], "scores": judge(ranked, query["relevant"], ks)})
        groups: dict[str, list[dict[str, float]]] = {}
        for row in per_query:
            for server in sorted({server_of[name] for name in row["relevant"]}):
                groups.setdefault(server, []).append(row["scores"])
        report["rankers"][ranker_name] = {
            "overall": {"n": len(per_query), **mean([row["scores"] for row in per_query])},
            **{
                split: {"n": len(rows), **mean(rows)}
                for split in SPLITS
                for rows in [[row["scores"] for row in per_query if row["split"] == split]]
            },
            "vague": {"n": sum(row["vague"] for row in per_query), **mean([row["scores"] for row in per_query if row["vague"]])},
            "servers": {server: {"n": len(rows), **mean(rows)} for server, rows in sorted(groups.items())},
            "queries": per_query,
        }
    return report


def table(report: dict[str, Any], ks: Sequence[int]) -> str:
    """The report as a text table: one block per group, one row per ranker."""
    columns = [f"hit@{k}" for k in ks] + [f"recall@{k}" for k in ks] + ["mrr"]
    names = list(report["rankers"])
    first = report["rankers"][names[0]]
    summaries = ("overall", *SPLITS, "vague")
    groups = [(group, first[group]["n"]) for group in summaries if first[group]["n"]]
    groups += [(server, row["n"]) for server, row in first["servers"].items()]
    lines = [f"{report['tools']} tools, {report['queries']} queries", ""]
    lines.append(f"{'group':14}{'n':>4}  {'ranker':10}" + "".join(f"{column:>10}" for column in columns))
    for group, n in groups:
        for ranker_name in names:
            result = report["rankers"][ranker_name]
            row = result[group] if group in summaries else result["servers"][group]
            label = f"{group:14}{n:>4}" if ranker_name == names[0] else " " * 18
            lines.append(f"{label}  {ranker_name:10}" + "".join(f"{row.get(column, 0.0):>10.3f}" for column in columns))
    return "\n".join(lines)


def failures(report: dict[str, Any], ranker_name: str, k: int) -> str:
    """The queries with no relevant tool in the top C{k} of C{ranker_name}, with what came first."""
    lines = [f"queries with no relevant tool in {ranker_name}'s top {k}:"]
    for row in report["rankers"][ranker_name]["queries"]:
        if row["scores"][f"hit@{k}"]:
            continue
        rank = row["scores"]["mrr"]
        where = f"first relevant at {round(1 / rank)}" if rank else "no relevant ranked"
        lines.append(f"- {row['query']!r} ({row['split']}, {where}{', vague' if row['vague'] else ''})")
        lines.append(f"    top: {', '.join(row['top'][:3]) or '(nothing)'}")
        lines.append(f"    relevant: {', '.join(row['relevant'])}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default=CATALOG)
    parser.add_argument("--queries", default=QUERIES)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10], help="cut-offs for hit@k and recall@k")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (with every query's top k)")
    parser.add_argument("--failures", action="store_true", help="also list the queries bm25f misses in its top k")
    parser.add_argument(
        "--split", choices=[*SPLITS, "all"], default="all", help="evaluate only one half of the queries (default: all)"
    )
    args = parser.parse_args()
    ks = sorted(set(args.k))
    queries = [query for query in load_queries(args.queries) if args.split in ("all", query["split"])]
    report = evaluate(load_catalog(args.catalog), queries, ks)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(table(report, ks))
    if args.failures:
        print()
        print(failures(report, "bm25f", ks[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
