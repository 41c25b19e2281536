"""
The tool search index: a lexical ranking of the shaped catalog's tools for
C{search_tools} and C{twisted-mcp tools --search} (design §6.1).

BM25F-lite: a document is one tool, read as six weighted fields (see
L{DEFAULT_WEIGHTS}); a token's frequency in a document is the weighted sum
of its counts in the fields, and a document's length the weighted sum of the
fields' lengths.  With M{k1} and M{b} as usual, a document's score for a
query is the sum over the query's distinct tokens of::

    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average length))
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))

Tokens are L{tokens}, plus each camelCase run whole (C{GitHub} is also
C{github}).  A query token also looks for its synonyms (L{SYNONYM_GROUPS}),
which score at L{SYNONYM_WEIGHT}; a tool counts the better of the token and
its synonyms, never both.

The postings are kept in one segment per backend, so that a backend whose
listing changed costs the rebuild of its own segment only; a token's
document frequency is summed over the segments when a query first asks for
it after a sync, and the total length over the segments (in backend order)
at each sync, so the ranking is exactly
the one a single index would give, whatever order the catalog came in.

Pure: no Twisted, no I/O, no clock; the same catalog and query give the same
answer in any process.
"""

from __future__ import annotations

import functools
import heapq
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

#: The fields of a tool and what a token found in each weighs.
#: C{name}: the shaped name, and the definition's own C{name} when it
#: differs; C{title}: C{title} and C{annotations.title}; C{params}: the
#: property names of C{inputSchema}, one level deep plus C{items.properties};
#: C{description}; C{param_descriptions}: those properties' descriptions;
#: C{backend}: the backend's name.
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"name": 3.0, "title": 2.0, "params": 1.5, "description": 1.0, "param_descriptions": 0.5, "backend": 1.0}
)

#: Short English words that carry no meaning for a search.
STOP_WORDS = frozenset(
    """a all an and any are as at be but by can did do does for from has have how i if in into is it its me my
    no not of on or so such that the their then there these they this to was we were what when where which who
    why will with you your""".split()
)

_ALNUM_RUNS = re.compile(r"[^\W_]+")
#: Inside an ASCII run: an acronym before a capitalised word, a (capitalised) lower-case word, an
#: acronym, digits.
_ASCII_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def _parts_of_run(run: str) -> list[str]:
    """
    Split one alphanumeric run at camelCase and letter/digit boundaries:
    before a capital that follows a non-capital, before an acronym's last
    capital when a lower-case letter follows it (C{HTTPServer}: C{HTTP},
    C{Server}), and where digits start or end.  The same rules as
    L{_ASCII_PARTS}, character by character, for runs beyond ASCII.
    """
    parts = []
    start = 0
    for i in range(1, len(run)):
        before, here = run[i - 1], run[i]
        if before.isdigit() != here.isdigit():
            cut = True
        elif here.isupper() and not before.isupper():
            cut = True
        else:
            cut = before.isupper() and here.isupper() and i + 1 < len(run) and run[i + 1].islower()
        if cut:
            parts.append(run[start:i])
            start = i
    parts.append(run[start:])
    return parts


_VOWELS = frozenset("aeiouy")


def _has_vowel(stem: str) -> bool:
    return not _VOWELS.isdisjoint(stem)


def _stem(word: str) -> str:
    """
    The five suffix rules, in order: C{ies} -> C{y} (over 4 letters), a final
    C{s} but not C{ss} (over 3), then C{ing} (over 5) or C{ed} (over 4) when
    what is left has a vowel and does not end in C{thing} (C{string},
    C{everything} stay whole), then a final C{e} (over 3).  So C{pages} and
    C{page}, C{staged} and C{stage}, C{changes} and C{change} meet on one stem.
    """
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        if _has_vowel(word[:-3]) and not word.endswith("thing"):
            word = word[:-3]
    elif len(word) > 4 and word.endswith("ed") and _has_vowel(word[:-2]):
        word = word[:-2]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


@functools.lru_cache(maxsize=1 << 16)
def _term(part: str) -> str | None:
    """One part of a run as a token: lower-cased and stemmed; C{None} for a stop word."""
    lowered = part.lower()
    if lowered in STOP_WORDS:
        return None
    return _stem(lowered)


def tokens(text: str) -> list[str]:
    """
    The tokens of C{text}, in order and with repeats: split on
    non-alphanumerics, camelCase and letter/digit boundaries, lower-cased,
    stop words (L{STOP_WORDS}) removed, suffixes stripped (L{_stem}).

    C{tokens("getPullRequests for v2")} is C{["get", "pull", "request", "v", "2"]}.
    """
    if text.isascii():
        # The common case, in one pass: the parts' pattern skips everything else.
        parts: Iterable[str] = _ASCII_PARTS.findall(text)
    else:
        parts = (part for run in _ALNUM_RUNS.findall(text) for part in _parts_of_run(run))
    return [term for term in map(_term, parts) if term is not None]


@functools.lru_cache(maxsize=1 << 16)
def _run_terms(run: str) -> tuple[str, ...]:
    """The index's tokens of one alphanumeric run (see L{_terms})."""
    parts = _ASCII_PARTS.findall(run) if run.isascii() else _parts_of_run(run)
    found = [term for term in map(_term, parts) if term is not None]
    if len(parts) > 1:
        whole = _term(run)
        if whole is not None:
            found.append(whole)
    return tuple(found)


def _terms(text: str) -> list[str]:
    """
    What the index reads of C{text}, in the index and in a query: its
    L{tokens}, and after the tokens of each run that camelCase or digits
    split, the whole run as one more token, so that C{GitHub} meets
    C{github} and C{ec2} meets C{EC2} as well as C{git} and C{ec}.
    """
    return [term for run in _ALNUM_RUNS.findall(text) for term in _run_terms(run)]


@attrs.frozen
class Hit:
    """
    One search result.

    @ivar name: the tool's shaped name.
    @ivar score: its BM25F-lite score for the query (0.0 for the substring
        fallback of a query made of stop words only).
    """

    name: str
    score: float


def _strings(*values: object) -> list[str]:
    """The distinct strings among C{values}, in order (anything else is ignored)."""
    found: list[str] = []
    for value in values:
        if isinstance(value, str) and value not in found:
            found.append(value)
    return found


def _fields(backend: str, name: str, definition: Mapping[str, Any]) -> dict[str, list[str]]:
    """
    The texts of one tool, by field.  A definition as a server sent it may
    be malformed: what is not of the expected type is left out, never an error.
    """
    annotations = definition.get("annotations")
    annotation_title = annotations.get("title") if isinstance(annotations, dict) else None
    params: list[str] = []
    param_descriptions: list[str] = []
    schema = definition.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(properties, dict):
        for param, spec in properties.items():
            params.append(str(param))
            if not isinstance(spec, dict):
                continue
            param_descriptions.extend(_strings(spec.get("description")))
            items = spec.get("items")
            nested = items.get("properties") if isinstance(items, dict) else None
            if isinstance(nested, dict):
                for inner, inner_spec in nested.items():
                    params.append(str(inner))
                    if isinstance(inner_spec, dict):
                        param_descriptions.extend(_strings(inner_spec.get("description")))
    return {
        "name": _strings(name, definition.get("name")),
        "title": _strings(definition.get("title"), annotation_title),
        "params": params,
        "description": _strings(definition.get("description")),
        "param_descriptions": param_descriptions,
        "backend": [backend],
    }


def _field_counts(fields: Mapping[str, list[str]], weights: Mapping[str, float]) -> dict[str, Counter[str]]:
    """Token counts per field, for the fields that weigh something."""
    return {
        field: Counter(token for text in fields[field] for token in _terms(text)) for field, weight in weights.items() if weight
    }


class _Segment:
    """
    The index of one backend's tools.

    @ivar definitions: shaped name -> served definition, as given to
        L{SearchIndex.sync} (to tell whether the backend changed, and for
        L{SearchIndex.explain}).
    @ivar postings: token -> [(shaped name, weighted tf, weighted length)].
    @ivar total_length: the sum of the documents' weighted lengths.
    """

    __slots__ = ("backend", "definitions", "postings", "lengths", "total_length")

    def __init__(self, backend: str, definitions: dict[str, dict[str, Any]], weights: Mapping[str, float]) -> None:
        self.backend = backend
        self.definitions = definitions
        self.postings: dict[str, list[tuple[str, float, float]]] = {}
        self.lengths: dict[str, float] = {}
        total = 0.0
        for name in sorted(definitions):
            frequencies: dict[str, float] = {}
            length = 0.0
            for field, counts in _field_counts(_fields(backend, name, definitions[name]), weights).items():
                weight = weights[field]
                length += weight * counts.total()
                for token, count in counts.items():
                    frequencies[token] = frequencies.get(token, 0.0) + weight * count
            self.lengths[name] = length
            total += length
            for token, frequency in frequencies.items():
                self.postings.setdefault(token, []).append((name, frequency, length))
        self.total_length = total


#: Words a developer uses for the same thing, one group a line (a member
#: may be a phrase); a query token also looks for the other members of its
#: groups, at L{SYNONYM_WEIGHT}.  General English and software vocabulary,
#: never a server's or a tool's name.  Tuned on the C{tune} half of
#: C{bench/surface_quality.py}'s queries only: a group stayed if leaving it
#: out made that half worse (bench/README.md has the figures of both halves).
SYNONYM_GROUPS: tuple[str, ...] = (
    "create, new, add, make",
    "delete, remove, erase, drop",
    "find, search, look up, lookup, locate",
    "get, fetch, retrieve, read, view, show",
    "list, show, enumerate",
    "tag, label",
    "assign, give, hand",
    "close, resolve, finish, complete",
    "deploy, install, apply, release",
    "error, exception, crash, failure, broken",
    "ticket, issue, bug",
    "repo, repository",
    "pr, pull request, merge request",
    "directory, folder, dir",
    "size, big, large",
    "link, connect, associate, relate",
    "prod, production",
    "time, duration, hour",
)
#: What a synonym's match weighs against the query's own word.
SYNONYM_WEIGHT = 0.5


def _synonyms(groups: Iterable[str]) -> dict[str, tuple[tuple[str, ...], ...]]:
    """token -> the token tuples of the other members of its groups (a member may be a phrase: C{pull request})."""
    found: dict[str, list[tuple[str, ...]]] = {}
    for group in groups:
        members = [tuple(_terms(member)) for member in group.split(",")]
        for member in members:
            if len(member) != 1:
                continue
            for other in members:
                if other != member and other and other not in found.setdefault(member[0], []):
                    found[member[0]].append(other)
    return {token: tuple(others) for token, others in found.items()}


_SYNONYMS = _synonyms(SYNONYM_GROUPS)


def _distinct(terms: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(terms))


class SearchIndex:
    """
    A BM25F-lite index of every shaped tool of the catalog, in one segment
    per backend.

    @ivar built: how many segments have been built since creation (a
        segment that did not change is not built again).
    """

    def __init__(self, weights: Mapping[str, float] | None = None, k1: float = 1.2, b: float = 0.75) -> None:
        """
        @param weights: field -> weight, over L{DEFAULT_WEIGHTS} (a field
            not named keeps its default weight; 0 leaves the field out).
        @raise ValueError: for an unknown field, a negative or non-finite
            weight, a negative C{k1} or a C{b} outside 0 ... 1.
        """
        merged = dict(DEFAULT_WEIGHTS)
        for field, weight in (weights or {}).items():
            if field not in DEFAULT_WEIGHTS:
                raise ValueError(f"search weights: unknown field {field!r} (expected one of {', '.join(DEFAULT_WEIGHTS)})")
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise ValueError(f"search weights.{field}: expected a number >= 0, got {weight!r}")
            merged[field] = float(weight)
        if not (math.isfinite(k1) and k1 >= 0):
            raise ValueError(f"search k1: expected a number >= 0, got {k1!r}")
        if not (0 <= b <= 1):
            raise ValueError(f"search b: expected a number from 0 to 1, got {b!r}")
        self.weights: Mapping[str, float] = MappingProxyType(merged)
        self.k1 = k1
        self.b = b
        self.built = 0
        self._segments: dict[str, _Segment] = {}
        self._ordered: list[_Segment] = []
        self._count = 0
        self._total_length = 0.0
        self._gains: dict[str, list[tuple[str, float]]] = {}

    def sync(self, tools: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """
        Make the index hold exactly C{tools}: (backend name, shaped name,
        served definition) for every tool of the catalog.

        A backend whose tools have the same names and equal definitions as
        last time keeps its segment; the others are rebuilt; backends that
        are gone are dropped.  Definitions are kept, not copied: they must
        not be changed in place afterwards (the catalog's never are).
        """
        by_backend: dict[str, dict[str, dict[str, Any]]] = {}
        for backend, name, definition in tools:
            by_backend.setdefault(backend, {})[name] = definition
        segments: dict[str, _Segment] = {}
        for backend, definitions in by_backend.items():
            segment = self._segments.get(backend)
            if segment is None or segment.definitions != definitions:
                segment = _Segment(backend, definitions, self.weights)
                self.built += 1
            segments[backend] = segment
        self._segments = segments
        # Sums in backend order, so that the same catalog gives the same floats however it came.
        self._ordered = [segments[backend] for backend in sorted(segments)]
        self._count = sum(len(segment.lengths) for segment in self._ordered)
        self._total_length = math.fsum(segment.total_length for segment in self._ordered)
        self._gains.clear()

    def __len__(self) -> int:
        """How many tools are indexed."""
        return self._count

    def _idf(self, term: str) -> float:
        """A token's IDF, its document frequency summed over the segments."""
        frequency = sum(len(segment.postings.get(term, ())) for segment in self._ordered)
        return math.log(1 + (self._count - frequency + 0.5) / (frequency + 0.5))

    def _normalisation(self) -> tuple[float, float]:
        """
        (C{k1 * (1 - b)}, C{k1 * b / average length}): a document's score for a
        token is C{idf * (k1 + 1) * tf / (tf + base + slope * length)}.
        """
        average = (self._total_length / self._count) if self._count else 0.0
        return self.k1 * (1 - self.b), self.k1 * self.b / (average or 1.0)

    def _gains_of(self, term: str) -> list[tuple[str, float]]:
        """
        (shaped name, C{idf * (k1 + 1) * tf / (tf + base + slope * length)})
        for every tool holding C{term}, in segment order: its whole score
        for the token, kept until the next L{sync} (for tokens the index
        holds only, so a query cannot grow it).
        """
        found = self._gains.get(term)
        if found is None:
            holders = [segment.postings[term] for segment in self._ordered if term in segment.postings]
            if not holders:
                return []
            base, slope = self._normalisation()
            factor = self._idf(term) * (self.k1 + 1)
            found = [
                (name, factor * (frequency / (frequency + base + slope * length)))
                for postings in holders
                for name, frequency, length in postings
            ]
            self._gains[term] = found
        return found

    def _concepts(self, query: str) -> list[list[tuple[float, tuple[str, ...]]]]:
        """
        The query's concepts: for each distinct token of C{query}, the token
        itself at weight 1 and its synonyms (L{SYNONYM_GROUPS}) not in the query
        at L{SYNONYM_WEIGHT}, each a tuple of tokens (a phrase's tokens
        score together).
        """
        terms = _distinct(_terms(query))
        present = set(terms)
        concepts = []
        for term in terms:
            members: list[tuple[float, tuple[str, ...]]] = [(1.0, (term,))]
            for phrase in _SYNONYMS.get(term, ()):
                if not present.intersection(phrase):
                    members.append((SYNONYM_WEIGHT, phrase))
            concepts.append(members)
        return concepts

    def search(self, query: str, visible: Sequence[str], limit: int) -> list[Hit]:
        """
        The best C{limit} of the C{visible} tools for C{query}, best first,
        ties by shaped name.  A tool not in C{visible} is never returned.

        A tool's score is the sum over the query's concepts (L{_concepts})
        of the best of the concept's members (BM25F-lite of its tokens,
        times the member's weight).

        A query with no token left (stop words only, or punctuation): the
        visible names that contain the query, stripped, as a substring
        (case-insensitive), in C{visible} order, each with score 0.0.
        """
        if limit <= 0:
            return []
        concepts = self._concepts(query)
        if not concepts:
            needle = query.strip().lower()
            return [Hit(name, 0.0) for name in visible if needle in name.lower()][:limit]
        if not self._count:
            return []
        scores: dict[str, float] = {}
        get = scores.get
        for (_, (term,)), *synonyms in concepts:
            if not synonyms:
                for name, gain in self._gains_of(term):
                    scores[name] = get(name, 0.0) + gain
                continue
            best = dict(self._gains_of(term))
            for weight, phrase in synonyms:
                gained: dict[str, float] = {}
                for word in phrase:
                    for name, gain in self._gains_of(word):
                        gained[name] = gained.get(name, 0.0) + weight * gain
                for name, gain in gained.items():
                    if gain > best.get(name, 0.0):
                        best[name] = gain
            for name, gain in best.items():
                scores[name] = get(name, 0.0) + gain
        allowed = set(visible)
        # The best first, ties by shaped name: the smallest (-score, name).
        best_first = heapq.nsmallest(limit, [(-score, name) for name, score in scores.items() if name in allowed])
        return [Hit(name, -negated) for negated, name in best_first]

    def explain(self, query: str, name: str) -> dict[str, float]:
        """
        What each field of tool C{name} contributes to its score for
        C{query}: every field of L{weights}, in order; the values sum to the
        tool's L{Hit.score} (up to rounding).  Empty for a name not indexed.
        """
        segment = next((segment for segment in self._ordered if name in segment.definitions), None)
        if segment is None:
            return {}
        counts = _field_counts(_fields(segment.backend, name, segment.definitions[name]), self.weights)
        contributions = {field: 0.0 for field in self.weights}
        base, slope = self._normalisation()
        length = segment.lengths[name]
        for members in self._concepts(query):
            best: tuple[float, dict[str, float]] = (0.0, {})
            for weight, phrase in members:
                gain = 0.0
                by_field = {field: 0.0 for field in self.weights}
                for term in phrase:
                    shares = {field: self.weights[field] * per_token.get(term, 0) for field, per_token in counts.items()}
                    frequency = sum(shares.values())
                    if not frequency:
                        continue
                    term_gain = weight * self._idf(term) * (self.k1 + 1) * frequency / (frequency + base + slope * length)
                    gain += term_gain
                    for field, share in shares.items():
                        by_field[field] += term_gain * share / frequency
                if gain > best[0]:
                    best = (gain, by_field)
            for field, share in best[1].items():
                contributions[field] += share
        return contributions
