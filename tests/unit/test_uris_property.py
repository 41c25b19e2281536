"""
Property tests of L{twisted_mcp.mcp.uris}: the indexed L{overlapping}
against its pairwise definition, and the gateway's URI form against
arbitrary backend names and URIs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twisted_mcp.mcp.uris import UriTemplate, literal_prefix, may_overlap, overlapping, prefixed, unprefixed

# Few characters, so that prefixes often share a start; U+10FFFF and U+10FFFE
# for the edge of the ordering.
_CHARS = "ab/:" + chr(0x10FFFE) + chr(0x10FFFF)
owners = st.sampled_from(["a", "b", "c"])
texts = st.text(alphabet=_CHARS, max_size=5)
templates = st.tuples(owners, st.tuples(texts, st.booleans()).map(lambda t: t[0] + ("{x}" + t[0] if t[1] else "")))
backend_names = st.text(alphabet="abzAZ09_-", min_size=1, max_size=8)


def _pairwise(template_list: list[tuple[str, str]], uri_list: list[tuple[str, str]]) -> set[int]:
    """The definition L{overlapping} implements, in quadratic time."""
    found = set()
    for i, (owner, text) in enumerate(template_list):
        if any(o != owner and may_overlap(text, t) for o, t in template_list):
            found.add(i)
        if any(o != owner and u.startswith(literal_prefix(text)) for o, u in uri_list):
            found.add(i)
    return found


#: No deadline (shared machines), no example database (nothing written into the checkout).
SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

@SETTINGS
@given(st.lists(templates, max_size=8), st.lists(st.tuples(owners, texts), max_size=8))
def test_overlappingIsPairwise(template_list: list[tuple[str, str]], uri_list: list[tuple[str, str]]) -> None:
    assert overlapping(template_list, uri_list) == _pairwise(template_list, uri_list)


@SETTINGS
@given(backend_names, st.text())
def test_gatewayFormRoundTrip(backend: str, original: str) -> None:
    assert unprefixed(prefixed(backend, original)) == (backend, original)


_OPERATORS = ["", "+", "#", ".", "/", ";", "?", "&"]


@SETTINGS
@given(texts, st.sampled_from(_OPERATORS), texts, st.text(alphabet=_CHARS + "?#.;&=", max_size=12))
def test_matchesStartWithThePrefix(before: str, operator: str, after: str, uri: str) -> None:
    """A URI a template matches starts with the template's literal prefix (what the overlap rule relies on)."""
    template = UriTemplate(before + "{" + operator + "x}" + after)
    assert template.matches(before + after)  # the variable undefined
    if template.matches(uri):
        assert uri.startswith(before)
