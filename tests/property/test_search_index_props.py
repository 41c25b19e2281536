"""
Properties of L{twisted_mcp.dispatch.search.SearchIndex}: whatever the
catalog, query and visible set, results are visible tools, at most C{limit}
of them, distinct, best first with ties by name; the answer does not depend
on the order the catalog came in, nor on whether the index was built at once
or synced from an earlier catalog segment by segment.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_mcp.dispatch.search import _ASCII_PARTS, STOP_WORDS, SearchIndex, _parts_of_run, _terms, tokens

WORDS = [
    "create", "issue", "pages", "page", "deploy", "search", "files", "the", "a", "of", "slack", "message", "v2", "HTTP",
    "delete", "remove", "bug", "GitHub", "pull", "request", "pr",
]  # fmt: skip
BACKENDS = ["github", "git", "fs", "slack", "k8s"]

Tool = tuple[str, str, dict[str, Any]]

texts = st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join)


@st.composite
def catalogs(draw: st.DrawFn) -> list[Tool]:
    """Tools of a few backends; shaped names unique in the catalog, as the catalog guarantees."""
    found: dict[str, Tool] = {}
    for backend in draw(st.lists(st.sampled_from(BACKENDS), unique=True, max_size=4)):
        for own in draw(st.lists(st.text("abcdefXY_0", min_size=1, max_size=6), unique=True, max_size=6)):
            name = f"{backend}__{own}"
            definition: dict[str, Any] = {"name": name, "description": draw(texts)}
            if draw(st.booleans()):
                definition["title"] = draw(texts)
            if draw(st.booleans()):
                params = draw(st.lists(st.sampled_from(WORDS), unique=True, max_size=3))
                definition["inputSchema"] = {
                    "type": "object",
                    "properties": {param: {"type": "string", "description": draw(texts)} for param in params},
                }
            found[name] = (backend, name, definition)
    return list(found.values())


@st.composite
def searches(draw: st.DrawFn) -> tuple[list[Tool], str, list[str], int]:
    tools = draw(catalogs())
    names = [name for _, name, _ in tools]
    visible = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    visible = draw(st.permutations(visible + draw(st.lists(st.sampled_from(["other__tool", "search_tools"]), unique=True))))
    query = draw(st.one_of(texts, st.sampled_from(sorted(STOP_WORDS)), st.text(max_size=10)))
    return tools, query, list(visible), draw(st.integers(min_value=0, max_value=12))


@given(st.text("aAbBzZ09", min_size=1, max_size=12))
def test_runs_beyond_ascii_split_by_the_same_rules(run: str) -> None:
    """The character-by-character splitter (for non-ASCII runs) agrees with the ASCII pattern."""
    assert _parts_of_run(run) == _ASCII_PARTS.findall(run)


@given(st.text(max_size=30))
def test_tokens_are_lower_case_and_ignore_spacing(text: str) -> None:
    found = tokens(text)
    assert all(token and token == token.lower() for token in found)
    # The tokens of a text and of its parts separated by spaces are the same.
    assert tokens(" ".join(text.split())) == found


def built(tools: list[Tool]) -> SearchIndex:
    index = SearchIndex()
    index.sync(tools)
    return index


@given(searches())
def test_results_are_visible_bounded_and_sorted(case: tuple[list[Tool], str, list[str], int]) -> None:
    tools, query, visible, limit = case
    hits = built(tools).search(query, visible, limit)
    names = [hit.name for hit in hits]
    assert set(names) <= set(visible)
    assert len(names) == len(set(names)) <= limit
    keys = [(-hit.score, hit.name) for hit in hits]
    if any(hit.score for hit in hits):
        assert keys == sorted(keys)
    else:
        # The substring fallback: the caller's order.
        assert names == [name for name in visible if name in names]


@given(catalogs(), st.randoms(use_true_random=False), texts)
def test_insertion_order_does_not_matter(tools: list[Tool], random: Any, query: str) -> None:
    shuffled = list(tools)
    random.shuffle(shuffled)
    visible = [name for _, name, _ in tools]
    assert built(shuffled).search(query, visible, 50) == built(tools).search(query, visible, 50)


@given(catalogs(), catalogs(), texts)
def test_synced_index_ranks_as_a_fresh_one(earlier: list[Tool], later: list[Tool], query: str) -> None:
    """Segments kept from an earlier catalog, rebuilt or dropped, give exactly the fresh index's answers."""
    index = built(earlier)
    visible = [name for _, name, _ in earlier + later]
    # A search first, so that what the kept segments computed for the earlier catalog is in place.
    index.search(query, visible, 50)
    index.sync(later)
    assert len(index) == len(later)
    assert index.search(query, visible, 50) == built(later).search(query, visible, 50)


@given(catalogs(), texts)
def test_synonyms_only_add_and_explain_adds_up(tools: list[Tool], query: str) -> None:
    """
    Whatever the synonyms, every tool whose name, title or description holds one of the query's
    own tokens is found; and each hit's fields add up to its score.
    """
    index = built(tools)
    visible = [name for _, name, _ in tools]
    hits = {hit.name: hit.score for hit in index.search(query, visible, len(visible))}
    wanted = set(_terms(query))
    for _, name, definition in tools:
        texts = [name, definition.get("title") or "", definition.get("description") or ""]
        if wanted.intersection(term for text in texts for term in _terms(text)):
            assert name in hits
    for name, score in hits.items():
        assert sum(index.explain(query, name).values()) == pytest.approx(score)
