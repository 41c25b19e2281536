"""
How the conformance runner judges the 2026-07-28 run through the gateway (tests/conformance/verdict.py):
only the scenarios the suite scores count, each scenario that passes alone and fails through the
gateway must be listed with its reason and the step that removes it, and a listed scenario that
passes through the gateway (or fails alone too) fails the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.verdict import (
    ExpectedDifference,
    Outcome,
    load_expected_differences,
    required_scenarios,
    scored,
    unexpected_differences,
)

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO / "tests" / "conformance"


def ok(name: str) -> Outcome:
    return Outcome(name, True)


def failed(name: str, problem: str = "FAILURE x") -> Outcome:
    return Outcome(name, False, (problem,))


def test_only_scored_scenarios_count(tmp_path: Path) -> None:
    requirements = tmp_path / "2026-07-28.yaml"
    requirements.write_text("server:\n  - tools-list\n  - caching\nclient:\n  - tools_call\nnot_scored: []\n")
    required = required_scenarios(requirements)
    assert required == {"tools-list", "caching"}
    assert required_scenarios(requirements, "client") == {"tools_call"}

    outcomes = {"tools-list": ok("tools-list"), "tasks-lifecycle": failed("tasks-lifecycle")}
    assert scored(outcomes, required) == {"tools-list": ok("tools-list")}

    requirements.write_text("server: tools-list\n")
    with pytest.raises(ValueError, match="'server' list"):
        required_scenarios(requirements)


def test_a_listed_difference_is_allowed_an_unlisted_one_is_not() -> None:
    alone = {"tools-list": ok("tools-list"), "irr-basic": ok("irr-basic"), "stateless": ok("stateless")}
    through = {
        "tools-list": ok("tools-list"),
        "irr-basic": failed("irr-basic"),
        "stateless": failed("stateless", "FAILURE -32601"),
    }

    assert unexpected_differences(alone, through, {"irr-basic", "stateless"}) == []
    assert unexpected_differences(alone, through, {"irr-basic"}) == [
        "stateless: passes alone, fails through the gateway: FAILURE -32601"
    ]


def test_a_stale_entry_or_one_failing_alone_fails_the_run() -> None:
    alone = {"fixed": ok("fixed"), "broken": failed("broken"), "gained": failed("gained")}
    through = {"fixed": ok("fixed"), "broken": failed("broken"), "gained": ok("gained")}

    assert unexpected_differences(alone, through, {"fixed", "broken"}) == [
        "broken: is listed as an expected difference but fails against the server alone too",
        "fixed: passes through the gateway but is listed as an expected difference: remove it",
        "gained: fails alone, passes through the gateway",
    ]


def test_a_scenario_missing_on_either_side_is_named() -> None:
    assert unexpected_differences({"a": ok("a")}, {"b": ok("b")}, {"c"}) == [
        "a: did not run through the gateway",
        "b: did not run alone",
        "c: did not run alone",
    ]


def test_the_expected_differences_file_loads_and_rejects_entries_without_a_reason(tmp_path: Path) -> None:
    listed = load_expected_differences(CONFORMANCE / "expected-modern-gateway.yml")
    assert listed, "the through-gateway 2026-07-28 run has differences today"
    for entry in listed.values():
        assert entry.reason and entry.removed_by

    good = tmp_path / "good.yml"
    good.write_text("- scenario: caching\n  reason: no hints\n  removedBy: step 9\n")
    assert load_expected_differences(good) == {"caching": ExpectedDifference("caching", "no hints", "step 9")}
    good.write_text("- scenario: caching\n  reason: no hints\n  removedBy: step 9\n  runs: [gw+http]\n")
    (entry,) = load_expected_differences(good).values()
    assert entry.runs == ("gw+http",) and entry.applies_to("gw+http") and not entry.applies_to("gw+stdio")
    assert ExpectedDifference("caching", "no hints", "step 9").applies_to("gw+stdio")

    bad = tmp_path / "bad.yml"
    for text, message in [
        ("caching: {}\n", "expected a list"),
        ("- scenario: caching\n  reason: no hints\n", "exactly scenario, reason and removedBy"),
        ("- scenario: caching\n  reason: ''\n  removedBy: step 9\n", "non-empty string"),
        ("- {scenario: a, reason: r, removedBy: s}\n- {scenario: a, reason: r, removedBy: s}\n", "listed twice"),
        ("- {scenario: a, reason: r, removedBy: s, runs: []}\n", "runs must be a non-empty list"),
        ("- {scenario: a, reason: r, removedBy: s, why: x}\n", "exactly scenario"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_expected_differences(bad)


def test_every_listed_difference_is_a_scored_2026_scenario() -> None:
    requirements = CONFORMANCE / "node_modules" / "@modelcontextprotocol" / "conformance" / "requirements" / "2026-07-28.yaml"
    if not requirements.exists():
        pytest.skip(f"{requirements} is missing: run `npm ci` in tests/conformance")
    assert set(load_expected_differences(CONFORMANCE / "expected-modern-gateway.yml")) <= required_scenarios(requirements)
