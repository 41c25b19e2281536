"""
Property tests of the tool-name pattern compiler (L{compile_pattern}),
against a slow, obviously correct recursive glob matcher over the folded
name, against the standard library's C{fnmatchcase} where no folding is
involved, and, with folding, against "some spelling of the name that
differs only in case and C{-}/C{_} matches".
"""

from __future__ import annotations

import functools
import itertools
import warnings
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_mcp.policy.rules import PatternError, compile_pattern, fold_name

PATTERN_CHARS = "aAbBzZ09-_*?[]!"
NAME_CHARS = "aAbBzZ09-_.!]"

LITERALS = "aAbBzZ09-_"


@st.composite
def _bracket(draw: st.DrawFn) -> str:
    """A bracket expression of single characters and ranges, perhaps negated (a ] only first)."""
    items = []
    for i in range(draw(st.integers(1, 3))):
        low, high = sorted(draw(st.lists(st.sampled_from(LITERALS + ("]" if i == 0 else "")), min_size=2, max_size=2)))
        items.append(f"{low}-{high}" if draw(st.booleans()) else low)
    return "[" + ("!" if draw(st.booleans()) else "") + "".join(items) + "]"


# Random text (mostly malformed brackets) and well-formed patterns built from parts.
patterns = st.one_of(
    st.text(alphabet=PATTERN_CHARS, min_size=1, max_size=10),
    st.lists(st.one_of(st.sampled_from(LITERALS), st.sampled_from("*?"), _bracket()), min_size=1, max_size=5).map("".join),
)
names = st.text(alphabet=NAME_CHARS, max_size=10)


def _reference_bracket(pattern: str) -> tuple[set[str], bool, str]:
    """
    The bracket expression C{pattern} starts with: its characters, whether
    it is negated, and the rest of the pattern.  POSIX rules: C{!} first
    negates; a C{]} first is a literal; C{x-y} is a range unless the C{-}
    is last.
    """
    body = pattern[1:]
    negated = body.startswith("!")
    if negated:
        body = body[1:]
    close = body.index("]", 1)  # ValueError: never closed
    inside, rest = body[:close], body[close + 1 :]
    chars: set[str] = set()
    i = 0
    while i < len(inside):
        if i + 2 < len(inside) and inside[i + 1] == "-":
            assert inside[i] <= inside[i + 2], "backwards range"
            chars |= {chr(c) for c in range(ord(inside[i]), ord(inside[i + 2]) + 1)}
            i += 3
        else:
            chars.add(inside[i])
            i += 1
    return chars, negated, rest


@functools.lru_cache(maxsize=None)
def reference(pattern: str, name: str, fold: bool) -> bool:
    """Does C{pattern} match all of C{name} (both folded when C{fold})?"""
    f = fold_name if fold else (lambda s: s)
    if not pattern:
        return not name
    head = pattern[0]
    if head == "*":
        return any(reference(pattern[1:], name[i:], fold) for i in range(len(name) + 1))
    if not name:
        return False
    if head == "?":
        return reference(pattern[1:], name[1:], fold)
    if head == "[":
        chars, negated, rest = _reference_bracket(pattern)
        inside = f(name[0]) in {f(c) for c in chars}
        return inside != negated and reference(rest, name[1:], fold)
    return f(head) == f(name[0]) and reference(pattern[1:], name[1:], fold)


def _compiled(pattern: str, fold: bool):
    try:
        return compile_pattern(pattern, fold)
    except PatternError:
        return None


def _ours(pattern: str, name: str, fold: bool) -> bool:
    regex = compile_pattern(pattern, fold)
    return regex.fullmatch(fold_name(name) if fold else name) is not None


def _spellings(name: str) -> set[str]:
    """Every name that folds to the same as C{name}."""
    choices = [{c.lower(), c.upper()} if c.isalpha() else ({"-", "_"} if c in "-_" else {c}) for c in name]
    return {"".join(p) for p in itertools.product(*choices)}


def _stdlib(pattern: str, name: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fnmatch's "possible set difference" for [--...]
        return fnmatchcase(name, pattern)


@settings(max_examples=600, deadline=None)
@given(patterns, names, st.booleans())
def test_agrees_with_the_reference_matcher(pattern: str, name: str, fold: bool) -> None:
    if _compiled(pattern, fold) is None:
        return
    assert _ours(pattern, name, fold) == reference(pattern, name, fold)


@settings(max_examples=600, deadline=None)
@given(patterns, names)
def test_without_folding_it_is_fnmatchcase(pattern: str, name: str) -> None:
    if _compiled(pattern, False) is None:
        return
    assert _ours(pattern, name, False) == _stdlib(pattern, name)


@settings(max_examples=400, deadline=None)
@given(patterns.filter(lambda p: "[!" not in p), st.text(alphabet=NAME_CHARS, max_size=7))
def test_folding_matches_when_some_spelling_of_the_name_matches(pattern: str, name: str) -> None:
    """Without negated sets, folding means: case and -/_ do not matter."""
    if _compiled(pattern, True) is None:
        return
    assert _ours(pattern, name, True) == any(_stdlib(pattern, s) for s in _spellings(name))


@settings(max_examples=600, deadline=None)
@given(patterns, st.booleans())
def test_a_refused_pattern_is_one_the_reference_cannot_read(pattern: str, fold: bool) -> None:
    """Only malformed brackets (and a stray !) are refused; the reference agrees they are malformed."""
    if _compiled(pattern, fold) is not None:
        return
    assert any(c in pattern for c in "[]!")
    with pytest.raises((ValueError, AssertionError)):
        _reference_walk(pattern)


def _reference_walk(pattern: str) -> None:
    """Read C{pattern} as the reference does, failing where it cannot (a ] or ! outside brackets too)."""
    while pattern:
        if pattern[0] == "[":
            pattern = _reference_bracket(pattern)[2]
        elif pattern[0] in "]!":
            raise ValueError(f"a {pattern[0]!r} outside brackets")
        else:
            pattern = pattern[1:]


@settings(max_examples=300, deadline=None)
@given(patterns)
def test_every_pattern_the_reference_reads_is_accepted(pattern: str) -> None:
    try:
        _reference_walk(pattern)
    except (ValueError, AssertionError):
        return
    assert _compiled(pattern, True) is not None and _compiled(pattern, False) is not None
