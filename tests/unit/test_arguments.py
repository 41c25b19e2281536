"""
Argument checks never backtrack: every regular expression of a tool's
schema, on every path jsonschema matches one, runs on RE2.  A pattern that
takes a backtracking engine hours on a 41-character argument is answered at
once here (before the fix, each of these tests hung until pytest-timeout).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from jsonschema import _keywords, _legacy_keywords, _utils
from twisted.logger import Logger

from twisted_mcp.policy import arguments
from twisted_mcp.policy.arguments import ArgumentError, Validators

EVIL = "^(a+)+$"
EVIL_TEXT = "a" * 40 + "!"


def tool(schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "inputSchema": {"type": "object", **schema}}


@pytest.fixture
def logged(monkeypatch) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(arguments, "log", Logger(observer=events.append))
    return events


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "schema,arguments_",
    [
        # the fast path (a plain object of typed properties)
        ({"properties": {"s": {"type": "string", "pattern": EVIL}}}, {"s": EVIL_TEXT}),
        # jsonschema's pattern keyword (the schema is beyond the fast path)
        ({"properties": {"s": {"anyOf": [{"type": "string", "pattern": EVIL}]}}}, {"s": EVIL_TEXT}),
        # patternProperties, and additionalProperties that depends on it
        ({"patternProperties": {EVIL: {"type": "integer"}}, "additionalProperties": False}, {EVIL_TEXT: 1}),
        # unevaluatedProperties (2020-12 and 2019-09)
        ({"patternProperties": {EVIL: {}}, "unevaluatedProperties": False}, {EVIL_TEXT: 1}),
        (
            {"$schema": "https://json-schema.org/draft/2019-09/schema", "patternProperties": {EVIL: {}}, "unevaluatedProperties": False},
            {EVIL_TEXT: 1},
        ),
        # propertyNames
        ({"propertyNames": {"pattern": EVIL}}, {EVIL_TEXT: 1}),
        # an older draft
        ({"$schema": "http://json-schema.org/draft-04/schema#", "properties": {"s": {"pattern": EVIL, "minLength": 1}}}, {"s": EVIL_TEXT}),
    ],
)
def test_a_catastrophic_pattern_is_answered_at_once(schema, arguments_) -> None:
    with pytest.raises(ArgumentError):
        Validators().check("t", tool(schema), arguments_)


def test_patterns_still_decide() -> None:
    v = Validators()
    schema = tool({"properties": {"s": {"type": "string", "pattern": EVIL}}, "patternProperties": {"^x-": {"type": "integer"}}})
    v.check("t", schema, {"s": "aaa", "x-n": 1})
    with pytest.raises(ArgumentError) as e:
        v.check("t", schema, {"s": "aaa", "x-n": "one"})
    assert e.value.path == "/x-n"


def test_ecma_syntax_that_python_refuses_is_enforced() -> None:
    # A named group as ECMA-262 writes it, and a \u escape: Python's re
    # refused the first, so the whole schema used to go unchecked.
    v = Validators()
    schema = tool({"properties": {"s": {"type": "string", "pattern": "^(?<letter>\\u0041)+$"}}})
    v.check("t", schema, {"s": "AA"})
    with pytest.raises(ArgumentError):
        v.check("t", schema, {"s": "AB"})
    escaped = tool({"properties": {"s": {"type": "string", "pattern": "^\\\\u0041$"}}})
    v.check("t", escaped, {"s": "\\u0041"})


def test_a_lookaround_pattern_is_not_enforced_and_said_once(logged) -> None:
    v = Validators()
    schema = tool({"properties": {"s": {"type": "string", "pattern": "^(?=.*[0-9])"}, "n": {"type": "integer"}}})
    v.check("t", schema, {"s": "no digits", "n": 1})
    v.check("t", schema, {"s": "still none", "n": 2})
    with pytest.raises(ArgumentError):  # the rest of the schema still holds
        v.check("t", schema, {"s": "x", "n": "one"})
    warnings = [e for e in logged if "linear time" in e["log_format"]]
    assert len(warnings) == 1
    assert warnings[0]["pattern"] == "^(?=.*[0-9])" and warnings[0]["outcome"] == "it is not enforced"
    assert "perl operator" in warnings[0]["why"]


def test_a_lookaround_pattern_property_leaves_the_tool_unchecked(logged) -> None:
    v = Validators()
    schema = tool({"patternProperties": {"^(?!x)": {"type": "integer"}}, "additionalProperties": False, "required": ["a"]})
    v.check("t", schema, {"b": "anything"})
    assert [e["outcome"] for e in logged if "linear time" in e["log_format"]] == ["the tool's arguments are not checked"]


def test_text_that_is_not_unicode_matches_no_pattern(logged) -> None:
    v = Validators()
    with pytest.raises(ArgumentError):
        v.check("t", tool({"properties": {"s": {"type": "string", "pattern": "a"}}}), {"s": "a\ud800"})
    v.check("t", tool({"properties": {"s": {"type": "string", "pattern": "\ud800"}}}), {"s": "b"})
    assert [e["why"] for e in logged] == ["not valid Unicode (a lone surrogate)"]


def test_jsonschema_matches_patterns_only_through_re_search() -> None:
    # The RE2 stand-in covers re.search; a jsonschema release that matched
    # patterns any other way would escape it, so this test says so first.
    for module in (_keywords, _legacy_keywords, _utils):
        assert module.re is arguments._LinearRe
        used = set(re.findall(r"\bre\.(\w+)", inspect.getsource(module)))
        assert used == {"search"}, (module.__name__, used)
