"""
The tool search index (L{twisted_mcp.dispatch.search}): the tokenizer and
its suffix rules, BM25F-lite scores against numbers worked out by hand from
the formula, ties, the caller's visible set, queries made of stop words
only, per-backend segments rebuilt only when their backend changed, and
answers that do not depend on the order the catalog came in.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from twisted_mcp.dispatch.search import (
    DEFAULT_WEIGHTS,
    STOP_WORDS,
    SYNONYM_GROUPS,
    SYNONYM_WEIGHT,
    Hit,
    SearchIndex,
    _synonyms,
    tokens,
)


def tool(name: str, description: str | None = None, **more: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {"name": name, "inputSchema": {"type": "object"}, **more}
    if description is not None:
        definition["description"] = description
    return definition


# The tokenizer.


@pytest.mark.parametrize(
    "text,expected",
    [
        ("getPullRequests", ["get", "pull", "request"]),
        ("XMLHttpRequest", ["xml", "http", "request"]),
        ("HTTPServer", ["http", "server"]),
        ("snake_case_name", ["snak", "cas", "nam"]),
        ("kebab-case.dotted/slashed", ["kebab", "cas", "dott", "slash"]),
        ("s3Bucket base64 v2", ["s", "3", "bucket", "bas", "64", "v", "2"]),
        ("ec2Instances", ["ec", "2", "instanc"]),
        ("  Hello,   WORLD!  ", ["hello", "world"]),
        ("naïveCafé 中文Text", ["naïv", "café", "中文", "text"]),
        ("", []),
        ("--- ,,, ___", []),
    ],
)
def test_tokens_split(text: str, expected: list[str]) -> None:
    """Non-alphanumerics, camelCase and letter/digit boundaries split; tokens are lower-case."""
    assert tokens(text) == expected


@pytest.mark.parametrize(
    "word,stem",
    [
        # ies -> y, over 4 letters only.
        ("entries", "entry"),
        ("queries", "query"),
        ("ties", "tie"),
        # A final s, but not ss, over 3 letters only.
        ("repos", "repo"),
        ("class", "class"),
        ("process", "process"),
        ("bus", "bus"),
        # ing over 5, ed over 4.
        ("listing", "list"),
        ("thing", "thing"),
        ("needed", "need"),
        ("seed", "seed"),
        # ing and ed only when a vowel is left, and never from a thing.
        ("string", "string"),
        ("shred", "shred"),
        ("everything", "everything"),
        ("nothing", "nothing"),
        ("things", "thing"),
        # A final e, over 3.
        ("file", "fil"),
        ("use", "use"),
        # In order: s, then ed, then e.
        ("addresses", "address"),
        ("address", "address"),
    ],
)
def test_suffix_rules(word: str, stem: str) -> None:
    assert tokens(word) == [stem]


@pytest.mark.parametrize(
    "forms", [("pages", "page", "paging"), ("staged", "stage", "stages"), ("changes", "change", "changed", "changing")]
)
def test_forms_meet_on_one_stem(forms: tuple[str, ...]) -> None:
    """The rules exist so that these forms match each other (a stripped "es" once split pages from page)."""
    assert len({tuple(tokens(form)) for form in forms}) == 1


def test_stop_words_removed() -> None:
    assert tokens("Search for the pages of a wiki") == ["search", "pag", "wiki"]
    assert tokens("THE") == []
    assert tokens("what did I change and how, not where") == ["chang"]
    assert 50 <= len(STOP_WORDS) <= 60


# BM25F-lite, by hand.

ZOO = [
    # name: zoo, lion (3 each); description: lion, roar (1 each); backend: zoo (1). Length 6 + 2 + 1 = 9.
    ("zoo", "zoo__lion", tool("zoo__lion", "lion roar")),
    # name: zoo, tiger (3 each); description: tiger, hunt, lion (1 each); backend: zoo. Length 6 + 3 + 1 = 10.
    ("zoo", "zoo__tiger", tool("zoo__tiger", "tiger hunt lion")),
    # name: zoo, bird (3 each); title: bird (2); description: bird, sing (1 each); params: song (1.5);
    # parameter descriptions: song, sing (0.5 each; "the" and "to" are stop words); backend: zoo.
    # Length 6 + 2 + 2 + 1.5 + 1 + 1 = 13.5.
    (
        "zoo",
        "zoo__bird",
        tool(
            "zoo__bird",
            "bird sing",
            title="Bird",
            inputSchema={"type": "object", "properties": {"song": {"type": "string", "description": "the song to sing"}}},
        ),
    ),
]
K1, B = 1.2, 0.75
AVERAGE = (9 + 10 + 13.5) / 3


def bm25(idf: float, tf: float, length: float) -> float:
    return idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / AVERAGE))


def zoo() -> SearchIndex:
    index = SearchIndex()
    index.sync(ZOO)
    return index


def test_scores_by_hand() -> None:
    """Weighted tf over the fields, weighted lengths, IDF ln(1 + (N - df + 0.5) / (df + 0.5))."""
    index = zoo()
    names = [name for _, name, _ in ZOO]
    assert len(index) == 3

    lion_idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    hits = index.search("lion", names, 10)
    assert [hit.name for hit in hits] == ["zoo__lion", "zoo__tiger"]
    assert hits[0].score == pytest.approx(bm25(lion_idf, 3 + 1, 9))
    assert hits[1].score == pytest.approx(bm25(lion_idf, 1, 10))

    sing_idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    song_idf = sing_idf
    [hit] = index.search("singing songs", names, 10)
    assert hit.name == "zoo__bird"
    # sing: description 1 + parameter description 0.5; song: parameter name 1.5 + parameter description 0.5.
    assert hit.score == pytest.approx(bm25(sing_idf, 1.5, 13.5) + bm25(song_idf, 1.5 + 0.5, 13.5))

    # A token in every document still counts (the +1 inside the logarithm keeps IDF positive).
    zoo_idf = math.log(1 + (3 - 3 + 0.5) / (3 + 0.5))
    by_name = {hit.name: hit.score for hit in index.search("zoo", names, 10)}
    assert by_name == {
        "zoo__lion": pytest.approx(bm25(zoo_idf, 4, 9)),
        "zoo__tiger": pytest.approx(bm25(zoo_idf, 4, 10)),
        "zoo__bird": pytest.approx(bm25(zoo_idf, 4, 13.5)),
    }
    # The shorter document ranks first for the same tf.
    assert list(by_name) == ["zoo__lion", "zoo__tiger", "zoo__bird"]


def test_repeated_query_tokens_count_once() -> None:
    index = zoo()
    names = [name for _, name, _ in ZOO]
    assert index.search("lion lions LION", names, 10) == index.search("lion", names, 10)


def test_explain_splits_the_score_by_field() -> None:
    index = zoo()
    [hit] = index.search("sing", ["zoo__bird"], 10)
    explained = index.explain("sing", "zoo__bird")
    assert list(explained) == list(DEFAULT_WEIGHTS)
    # sing: description 1 and parameter descriptions 0.5 of a weighted tf of 1.5.
    assert explained["description"] == pytest.approx(hit.score * 1 / 1.5)
    assert explained["param_descriptions"] == pytest.approx(hit.score * 0.5 / 1.5)
    assert explained["name"] == explained["title"] == explained["params"] == explained["backend"] == 0.0
    assert index.explain("lion tiger", "zoo__tiger")["name"] > 0
    assert sum(index.explain("lion tiger", "zoo__tiger").values()) == pytest.approx(
        next(hit.score for hit in index.search("lion tiger", ["zoo__tiger"], 1))
    )
    assert index.explain("sing", "zoo__absent") == {}


def test_fields_title_annotations_and_own_name() -> None:
    """annotations.title weighs as a title; a definition's own name differing from the shaped name weighs as a name."""
    index = SearchIndex()
    index.sync(
        [
            ("gh", "gh__put_file", tool("create_or_update_file", annotations={"title": "Commit a blob"})),
            ("gh", "gh__other", tool("gh__other", "blob")),
        ]
    )
    explained = index.explain("commit blob create", "gh__put_file")
    assert explained["title"] > 0 and explained["name"] > 0
    assert explained["description"] == 0.0
    visible = ["gh__put_file", "gh__other"]
    assert [hit.name for hit in index.search("commit", visible, 5)] == ["gh__put_file"]
    assert [hit.name for hit in index.search("create or update", visible, 5)] == ["gh__put_file"]


def test_weights() -> None:
    """Weights merge over the defaults; an unknown field or a bad number is refused by name."""
    unweighted = SearchIndex(weights={field: 1.0 for field in DEFAULT_WEIGHTS})
    unweighted.sync(ZOO)
    hits = unweighted.search("lion", ["zoo__lion", "zoo__tiger"], 5)
    # Unweighted: zoo__lion has tf 2 and length 1*2 + 2 + 1 = 5; zoo__tiger tf 1, length 2 + 3 + 1 = 6.
    average = (5 + 6 + (2 + 1 + 2 + 1 + 2 + 1)) / 3
    idf = math.log(1 + 1.5 / 2.5)
    assert hits[0].score == pytest.approx(idf * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 5 / average)))
    assert dict(SearchIndex(weights={"name": 5}).weights) == {**DEFAULT_WEIGHTS, "name": 5.0}
    with pytest.raises(ValueError, match="unknown field 'names'"):
        SearchIndex(weights={"names": 1})
    with pytest.raises(ValueError, match=r"weights\.title: expected a number >= 0"):
        SearchIndex(weights={"title": -1})
    with pytest.raises(ValueError, match="search b"):
        SearchIndex(b=1.5)


# Whole camelCase runs and synonyms.


def test_a_camel_case_run_is_also_one_token() -> None:
    """C{GitHub} is git, hub and github: it meets a C{github} backend as well as the two words."""
    index = SearchIndex()
    index.sync(
        [
            ("github", "github__list_repos", tool("github__list_repos", "Repositories of a user")),
            ("git", "git__log", tool("git__log", "The commit log of a local hub")),
            ("docs", "docs__api", tool("docs__api", "Calls the GitHub API")),
        ]
    )
    visible = ["github__list_repos", "git__log", "docs__api"]
    assert tokens("GitHub") == ["git", "hub"]
    assert {hit.name for hit in index.search("GitHub", visible, 10)} == set(visible)
    assert {hit.name for hit in index.search("github", visible, 10)} == {"github__list_repos", "docs__api"}
    assert {hit.name for hit in index.search("hub", visible, 10)} == {"git__log", "docs__api"}


def test_synonyms_are_data_in_groups_of_general_words() -> None:
    assert len(SYNONYM_GROUPS) <= 60
    table = _synonyms(SYNONYM_GROUPS)
    assert ("remov",) in table["delet"] and ("delet",) in table["remov"]
    assert ("pull", "request") in table["pr"]
    # A phrase is looked for as a whole, never on one of its words.
    assert "pull" not in table and "request" not in table


SYNONYM_TOOLS = [
    # name: s, purg (3 each); description: delete, old, rows (1 each); backend: s (1). Length 6 + 3 + 1 = 10.
    ("s", "s__purge", tool("s__purge", "delete old rows")),
    # name: s, wipe (3 each); description: remove, delete, rows (1 each); backend: s. Length 6 + 3 + 1 = 10.
    ("s", "s__wipe", tool("s__wipe", "remove delete rows")),
    # name: s, keep (3 each); description: rows (1); backend: s. Length 6 + 1 + 1 = 8.
    ("s", "s__keep", tool("s__keep", "rows")),
]


def test_a_synonym_counts_at_its_weight_and_never_on_top_of_the_word() -> None:
    """
    "remove" finds a tool that says "delete" at L{SYNONYM_WEIGHT} of what "delete" would score; a tool
    with both words gets the better of the two, not their sum.  By hand, as in L{test_scores_by_hand}.
    """
    index = SearchIndex()
    index.sync(SYNONYM_TOOLS)
    visible = [name for _, name, _ in SYNONYM_TOOLS]
    average = (10 + 10 + 8) / 3

    def bm25(idf: float, tf: float, length: float) -> float:
        return idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / average))

    remove_idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    delete_idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    assert SYNONYM_WEIGHT == 0.5
    by_name = {hit.name: hit.score for hit in index.search("remove", visible, 10)}
    assert by_name == {
        # remove itself (idf of 1 in 3) beats half of delete.
        "s__wipe": pytest.approx(max(bm25(remove_idf, 1, 10), 0.5 * bm25(delete_idf, 1, 10))),
        "s__purge": pytest.approx(0.5 * bm25(delete_idf, 1, 10)),
    }
    assert by_name["s__wipe"] == pytest.approx(bm25(remove_idf, 1, 10))
    # A synonym already in the query is not looked for again at half weight.
    both = index.search("remove delete", visible, 10)
    assert [hit.name for hit in both] == ["s__wipe", "s__purge"]
    assert both[0].score == pytest.approx(bm25(remove_idf, 1, 10) + bm25(delete_idf, 1, 10))
    assert both[1].score == pytest.approx(bm25(delete_idf, 1, 10))
    explained = index.explain("remove", "s__purge")
    assert explained["description"] == pytest.approx(by_name["s__purge"])
    assert sum(explained.values()) == pytest.approx(by_name["s__purge"])


# Ranking and filtering.


def test_ties_by_shaped_name() -> None:
    index = SearchIndex()
    index.sync([("b", name, tool(name, "shared words")) for name in ("b__two", "b__one", "b__six")])
    hits = index.search("shared", ["b__two", "b__one", "b__six"], 10)
    assert [hit.name for hit in hits] == ["b__one", "b__six", "b__two"]
    assert len({hit.score for hit in hits}) == 1
    assert index.search("shared", ["b__two", "b__one", "b__six"], 2) == hits[:2]


def test_only_visible_tools() -> None:
    """The best tool, when the caller cannot see it, is not returned, and its place is not kept."""
    index = zoo()
    assert [hit.name for hit in index.search("lion", ["zoo__tiger", "zoo__bird"], 1)] == ["zoo__tiger"]
    assert index.search("lion", ["zoo__bird"], 10) == []
    assert index.search("lion", [], 10) == []


def test_limit() -> None:
    index = zoo()
    names = [name for _, name, _ in ZOO]
    assert len(index.search("zoo", names, 2)) == 2
    assert index.search("zoo", names, 0) == []


def test_no_match() -> None:
    index = zoo()
    assert index.search("kubernetes deployment", [name for _, name, _ in ZOO], 10) == []
    assert SearchIndex().search("lion", ["zoo__lion"], 10) == []


def test_stop_words_only_query_falls_back_to_substrings() -> None:
    """No token left: visible names containing the query, in the caller's order, score 0."""
    index = SearchIndex()
    index.sync([("t", name, tool(name, "the theatre")) for name in ("t__theatre", "t__lion", "t__other")])
    visible = ["t__other", "t__lion", "t__theatre", "own_tool_with_the"]
    assert index.search("the", visible, 10) == [Hit("t__other", 0.0), Hit("t__theatre", 0.0), Hit("own_tool_with_the", 0.0)]
    assert index.search("  THE ", visible, 2) == [Hit("t__other", 0.0), Hit("t__theatre", 0.0)]
    assert index.search("the", ["t__lion"], 10) == []
    assert index.search("_", visible, 10) == [Hit(name, 0.0) for name in visible]


# Segments.


def catalog(backends: int = 3, per_backend: int = 4) -> list[tuple[str, str, dict[str, Any]]]:
    words = ["create", "issue", "page", "deploy", "search", "file", "message", "channel", "branch", "commit"]
    found = []
    for b in range(backends):
        backend = f"back{b}"
        for t in range(per_backend):
            name = f"{backend}__{words[(b + t) % len(words)]}_{words[(b * t) % len(words)]}"
            found.append((backend, name, tool(name, " ".join(words[(t + i) % len(words)] for i in range(b + 3)))))
    return found


def every_hit(index: SearchIndex, tools: list[tuple[str, str, dict[str, Any]]], query: str) -> list[Hit]:
    return index.search(query, [name for _, name, _ in tools], 1000)


def test_sync_rebuilds_only_the_changed_backend() -> None:
    tools = catalog()
    index = SearchIndex()
    index.sync(tools)
    assert index.built == 3
    before = dict(index._segments)
    # Searched before the changes: what kept segments computed for the old average length must not linger.
    for query in ("create issue", "page", "search message channel"):
        every_hit(index, tools, query)

    # Nothing changed (equal definitions, even as new objects): nothing is built.
    index.sync([(backend, name, dict(definition)) for backend, name, definition in tools])
    assert index.built == 3
    assert all(index._segments[backend] is segment for backend, segment in before.items())

    # One definition of back1 changed: back1 only is rebuilt.
    changed = [
        (backend, name, tool(name, "rollback payments") if name == tools[5][1] else definition)
        for backend, name, definition in tools
    ]
    index.sync(changed)
    assert index.built == 4
    assert index._segments["back1"] is not before["back1"]
    assert index._segments["back0"] is before["back0"] and index._segments["back2"] is before["back2"]
    assert [hit.name for hit in every_hit(index, changed, "payments rollback")] == [tools[5][1]]

    # A tool added to back2: back2 only.
    added = changed + [("back2", "back2__extra", tool("back2__extra", "extra"))]
    index.sync(added)
    assert index.built == 5
    assert index._segments["back1"] is not before["back1"] and index._segments["back0"] is before["back0"]

    # The segmented index ranks exactly as a fresh one built at once.
    fresh = SearchIndex()
    fresh.sync(added)
    for query in ("create issue", "page", "payments", "search message channel", "back2 extra"):
        assert every_hit(index, added, query) == every_hit(fresh, added, query)


def test_sync_drops_a_removed_backend() -> None:
    tools = catalog()
    index = SearchIndex()
    index.sync(tools)
    remaining = [entry for entry in tools if entry[0] != "back0"]
    index.sync(remaining)
    assert set(index._segments) == {"back1", "back2"}
    assert len(index) == len(remaining)
    # Its tools are gone even for a caller who still lists them, and IDF and lengths no longer count them.
    assert not any(hit.name.startswith("back0") for hit in every_hit(index, tools, "create issue page"))
    fresh = SearchIndex()
    fresh.sync(remaining)
    assert every_hit(index, tools, "create issue page") == every_hit(fresh, tools, "create issue page")
    index.sync([])
    assert len(index) == 0
    assert every_hit(index, tools, "create") == []


def test_insertion_order_does_not_matter() -> None:
    tools = catalog(backends=5, per_backend=7)
    first = SearchIndex()
    first.sync(tools)
    for seed in range(5):
        shuffled = list(tools)
        random.Random(seed).shuffle(shuffled)
        other = SearchIndex()
        other.sync(shuffled)
        for query in ("create issue", "deploy branch", "message", "back3"):
            assert every_hit(other, tools, query) == every_hit(first, tools, query)
