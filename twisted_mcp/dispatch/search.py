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

The postings are kept in one segment per backend, so that a backend whose
listing changed costs the rebuild of its own segment only; document
frequencies are summed over the segments at query time and the total length
over the segments (in backend order) at each sync, so the ranking is exactly
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
    """a all an and any are as at be but by can do does for from has have if in into is it its me my of on or
    so that the this to was were which will with you your""".split()
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


def _stem(word: str) -> str:
    """
    The five suffix rules, in order: C{ies} -> C{y} (over 4 letters), a final
    C{s} but not C{ss} (over 3), then C{ing} (over 5) or C{ed} (over 4), then
    a final C{e} (over 3).  So C{pages} and C{page}, C{staged} and C{stage},
    C{changes} and C{change} meet on one stem.
    """
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
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
        field: Counter(token for text in fields[field] for token in tokens(text)) for field, weight in weights.items() if weight
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

    __slots__ = ("backend", "definitions", "postings", "lengths", "total_length", "_saturated", "_saturated_for")

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
        self._saturated: dict[str, list[tuple[str, float]]] = {}
        self._saturated_for = (math.nan, math.nan)

    def saturated(self, term: str, base: float, slope: float) -> list[tuple[str, float]]:
        """
        The postings of C{term} as (shaped name, C{tf / (tf + base + slope *
        length)}): the part of a score that depends only on the document and
        the index's average length, computed on first use and kept until the
        average length changes.
        """
        if self._saturated_for != (base, slope):
            self._saturated.clear()
            self._saturated_for = (base, slope)
        found = self._saturated.get(term)
        if found is None:
            found = [(name, frequency / (frequency + base + slope * length)) for name, frequency, length in self.postings[term]]
            self._saturated[term] = found
        return found


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

    def search(self, query: str, visible: Sequence[str], limit: int) -> list[Hit]:
        """
        The best C{limit} of the C{visible} tools for C{query}, best first,
        ties by shaped name.  A tool not in C{visible} is never returned.

        A query with no token left (stop words only, or punctuation): the
        visible names that contain the query, stripped, as a substring
        (case-insensitive), in C{visible} order, each with score 0.0.
        """
        if limit <= 0:
            return []
        terms = _distinct(tokens(query))
        if not terms:
            needle = query.strip().lower()
            return [Hit(name, 0.0) for name in visible if needle in name.lower()][:limit]
        if not self._count:
            return []
        base, slope = self._normalisation()
        scores: dict[str, float] = {}
        get = scores.get
        for term in terms:
            factor = self._idf(term) * (self.k1 + 1)
            for segment in self._ordered:
                if term in segment.postings:
                    for name, saturation in segment.saturated(term, base, slope):
                        scores[name] = get(name, 0.0) + factor * saturation
        allowed = set(visible)
        # The best first, ties by shaped name: the smallest (-score, name).
        best = heapq.nsmallest(limit, [(-score, name) for name, score in scores.items() if name in allowed])
        return [Hit(name, -negated) for negated, name in best]

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
        for term in _distinct(tokens(query)):
            shares = {field: self.weights[field] * per_token.get(term, 0) for field, per_token in counts.items()}
            frequency = sum(shares.values())
            if not frequency:
                continue
            gain = self._idf(term) * (self.k1 + 1) * frequency / (frequency + base + slope * length)
            for field, share in shares.items():
                contributions[field] += gain * share / frequency
        return contributions
