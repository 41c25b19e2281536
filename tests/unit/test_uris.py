"""
Tests for L{twisted_mcp.mcp.uris}: the gateway's own URI form, RFC 6570
template matching, and which templates may overlap.
"""

from __future__ import annotations

import pytest

from twisted_mcp.mcp.uris import (
    MAX_TEMPLATE,
    TemplateError,
    UriTemplate,
    is_reserved,
    literal_prefix,
    may_overlap,
    overlapping,
    prefixed,
    unprefixed,
)


class TestGatewayForm:
    def test_prefixed(self) -> None:
        assert prefixed("everything", "test://static/resource/1") == "twisted-mcp://everything/test://static/resource/1"

    @pytest.mark.parametrize(
        "original",
        ["file:///tmp/a b", "x://h/p?q=1#frag", "", "/", "twisted-mcp://other/x", "http://[::1]/x", "\u00e9\U0001f600"],
    )
    def test_roundTrip(self, original: str) -> None:
        assert unprefixed(prefixed("srv_1-A", original)) == ("srv_1-A", original)

    @pytest.mark.parametrize(
        "uri",
        [
            "file:///x",
            "twisted-mcp://",
            "twisted-mcp://name",  # no "/" after the name
            "twisted-mcp:///x",  # no name
            "twisted-mcp://a.b/x",  # not a backend name
            "twisted-mcp://a b/x",
            "TWISTED-MCP://a/x",  # the gateway writes its scheme in lower case only
            "twisted-mcp:a/x",
        ],
    )
    def test_notGatewayForm(self, uri: str) -> None:
        assert unprefixed(uri) is None

    def test_reserved(self) -> None:
        assert is_reserved("twisted-mcp://a/x")
        assert is_reserved("Twisted-MCP:anything")
        assert not is_reserved("twisted-mcpx://a/x")
        assert not is_reserved("file:///twisted-mcp:")
        assert not is_reserved("")


class TestTemplates:
    @pytest.mark.parametrize(
        "template, uri",
        [
            ("test://static/resource/{id}", "test://static/resource/1"),
            ("test://static/resource/{id}", "test://static/resource/"),  # undefined: empty
            ("file:///{path}", "file:///a/b/c.txt"),  # lenient: "/" in a simple value
            ("file:///{+path}", "file:///a/b?c#d"),
            ("x://h{/seg*}", "x://h/a/b"),
            ("x://h{/a,b}", "x://h"),
            ("x://h/f{.ext}", "x://h/f.tar.gz"),
            ("x://h/p{;a,b}", "x://h/p;a=1;b=2"),
            ("x://h/s{?q,lang}", "x://h/s?q=cat&lang=en"),
            ("x://h/s{?q}{&page}", "x://h/s?q=a&page=2"),
            ("x://h/p{#frag}", "x://h/p#section"),
            ("x://{host}/{path:3}", "x://example/abc"),
            ("x://{a,b}", "x://1,2"),
            ("x://{var.name}/{%41b}", "x://v/w"),
            ("no-expressions", "no-expressions"),
            ("caf\u00e9://{x}", "caf\u00e9://\U0001f600"),
            ("a.b*c://{x}", "a.b*c://y"),  # regex characters in literals are literals
        ],
    )
    def test_matches(self, template: str, uri: str) -> None:
        assert UriTemplate(template).matches(uri)

    @pytest.mark.parametrize(
        "template, uri",
        [
            ("test://static/resource/{id}", "test://static/resources/1"),
            ("test://static/resource/{id}", "test://static/resource/1?x"),  # "?" is not in a simple value
            ("x://h{/seg}", "x://hx"),
            ("x://h/s{?q}", "x://h/s&q=1"),
            ("x://h/p{#frag}", "x://h/px"),
            ("no-expressions", "no-expressions/"),
            ("a.b*c://{x}", "aXbbbc://y"),
            ("x://{a}", "x://\ud800"),  # not valid Unicode: matches nothing, raises nothing
        ],
    )
    def test_doesNotMatch(self, template: str, uri: str) -> None:
        assert not UriTemplate(template).matches(uri)

    @pytest.mark.parametrize(
        "template, why",
        [
            ("x://{a", "not closed"),
            ("x://a}", "no '{' before it"),
            ("x://{}", "names no variable"),
            ("x://{=a}", "reserves"),
            ("x://{a b}", "invalid variable 'a b'"),
            ("x://{a,}", "invalid variable ''"),
            ("x://{a{b}}", "not closed with '}' before the next '{'"),
            ("x://{a:0}", "invalid variable"),
            ("x://{\ud800}", "lone surrogate"),
            ("x://" + "a" * MAX_TEMPLATE, "longer than"),
        ],
    )
    def test_invalid(self, template: str, why: str) -> None:
        with pytest.raises(TemplateError, match=why.replace("{", r"\{").replace("}", r"\}")):
            UriTemplate(template)

    @pytest.mark.timeout(10)
    def test_linearTime(self) -> None:
        """
        A template that would make a backtracking matcher take exponential
        time (many adjacent expressions, then a literal that never comes)
        is matched at once.
        """
        template = UriTemplate("x://" + "{+a}" * 30 + "!")
        assert not template.matches("x://" + "a" * 20_000)
        assert template.matches("x://" + "a" * 20_000 + "!")

    def test_literalPrefix(self) -> None:
        assert literal_prefix("file:///{path}") == "file:///"
        assert literal_prefix("{+uri}") == ""
        assert literal_prefix("plain") == "plain"
        assert UriTemplate("a://b/{c}/d").prefix == "a://b/"


class TestOverlap:
    def test_mayOverlap(self) -> None:
        assert may_overlap("file:///{path}", "file:///home/{user}")
        assert may_overlap("file:///home/{user}", "file:///{path}")
        assert may_overlap("x://{a}", "x://{b}")
        assert may_overlap("{+uri}", "anything://{x}")
        assert not may_overlap("file:///{path}", "test://{id}")
        assert not may_overlap("x://a/{p}", "x://b/{p}")

    def test_overlapping(self) -> None:
        templates = [
            ("a", "file:///{path}"),  # 0: b's 1 starts with its prefix
            ("b", "file:///home/{user}"),  # 1
            ("a", "test://{id}"),  # 2: only a's own
            ("a", "test://x/{id}"),  # 3: same owner as 2, no overlap
            ("c", "note://{id}"),  # 4: a's resource starts with its prefix
            ("c", "memo://{id}"),  # 5: c's own resource only
        ]
        resources = [("a", "note://1"), ("c", "memo://2"), ("b", "other://")]
        assert overlapping(templates, resources) == {0, 1, 4}

    def test_noTemplates(self) -> None:
        assert overlapping([], [("a", "x://1")]) == set()

    def test_resourceShorterThanPrefix(self) -> None:
        """A URI that is only the start of a template's prefix cannot be one of its expansions."""
        assert overlapping([("a", "file:///{p}")], [("b", "file://")]) == set()

    def test_emptyPrefixOverlapsEveryOtherOwner(self) -> None:
        templates = [("a", "{+uri}"), ("b", "z://{x}"), ("a", "y://{x}")]
        assert overlapping(templates, []) == {0, 1}

    def test_greatestCharacter(self) -> None:
        """Prefixes ending in U+10FFFF, which no character follows, are compared right too."""
        top = chr(0x10FFFF)
        templates = [("a", f"x{top}{{p}}"), ("b", f"x{top}{top}{{p}}"), ("c", f"{top}{{p}}"), ("d", "y{p}")]
        assert overlapping(templates, [("e", f"{top}{top}1")]) == {0, 1, 2}
        assert overlapping([("a", f"x{top}{{p}}")], [("b", "y"), ("b", "x")]) == set()
