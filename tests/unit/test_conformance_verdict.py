"""
How the conformance runner reads the suite's results and judges them (tests/conformance/verdict.py):
a warning fails a scenario as the suite's baseline rule says, a listed scenario that passes fails
the run, and the comparison between the server alone and through the gateway names each difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance.verdict import ExpectedFailures, Outcome, differences, judge, outcome_of, passing, read_results

REPO = Path(__file__).resolve().parents[2]


def write_checks(directory: Path, name: str, statuses: list[str]) -> None:
    run = directory / name
    run.mkdir()
    checks = [{"id": f"check-{i}", "status": s, "errorMessage": f"{s.lower()} {i}"} for i, s in enumerate(statuses)]
    (run / "checks.json").write_text(json.dumps(checks))


def test_warnings_fail_a_scenario_info_does_not() -> None:
    assert outcome_of("a", [{"status": "SUCCESS"}, {"status": "INFO"}, {"status": "SKIPPED"}]).passed
    warned = outcome_of("b", [{"status": "SUCCESS"}, {"status": "WARNING", "id": "w", "errorMessage": "no retry"}])
    assert not warned.passed
    assert warned.problems == ("WARNING w: no retry",)
    assert not outcome_of("c", [{"status": "FAILURE", "id": "f", "description": "d"}]).passed


def test_read_results_names_server_and_client_runs(tmp_path: Path) -> None:
    write_checks(tmp_path, "server-tools-call-with-progress-2026-12-02T10-05-22-636Z", ["SUCCESS"])
    write_checks(tmp_path, "server-server-sse-polling-2026-12-02T10-05-40-001Z", ["INFO", "WARNING"])
    write_checks(tmp_path, "elicitation-sep1034-client-defaults-2026-12-02T10-06-32-697Z", ["SUCCESS"] * 5)
    (tmp_path / "suite.log").write_text("not a result")
    broken = tmp_path / "server-ping-2026-12-02T10-05-22-000Z"
    broken.mkdir()

    outcomes = read_results(tmp_path)

    assert sorted(outcomes) == ["elicitation-sep1034-client-defaults", "ping", "server-sse-polling", "tools-call-with-progress"]
    assert passing(outcomes) == {"elicitation-sep1034-client-defaults", "tools-call-with-progress"}
    assert "no readable checks.json" in outcomes["ping"].problems[0]


def test_judge_applies_the_baseline_rule() -> None:
    outcomes = {
        "fixed": Outcome("fixed", True),
        "known": Outcome("known", False, ("FAILURE x",)),
        "new": Outcome("new", False, ("FAILURE y",)),
        "fine": Outcome("fine", True),
    }
    verdict = judge(outcomes, ["fixed", "known", "not-run"])
    assert verdict.unexpected_failures == ["new"]
    assert verdict.stale_entries == ["fixed"]
    assert verdict.expected_failures == ["known"]
    assert not verdict.ok
    assert judge({"known": outcomes["known"], "fine": outcomes["fine"]}, ["known"]).ok


def test_differences_name_each_scenario_that_differs() -> None:
    alone = {"same": Outcome("same", True), "lost": Outcome("lost", True), "gained": Outcome("gained", False), "only": Outcome("only", True)}
    through = {
        "same": Outcome("same", True),
        "lost": Outcome("lost", False, ("FAILURE 403",)),
        "gained": Outcome("gained", True),
        "extra": Outcome("extra", True),
    }
    assert differences(alone, through) == [
        "extra: ran through the gateway but not alone",
        "gained: fails alone, passes through the gateway",
        "lost: passes alone, fails through the gateway: FAILURE 403",
        "only: ran alone but not through the gateway",
    ]
    assert differences(alone, alone) == []


def test_expected_failures_file_loads_and_rejects_other_shapes(tmp_path: Path) -> None:
    listed = ExpectedFailures.load(REPO / "tests" / "conformance" / "expected-failures.yml")
    assert isinstance(listed.server, frozenset)
    # Only client auth/* scenarios fail today (each with its reason in the file); the others pass.
    assert all(name.startswith("auth/") for name in listed.client)

    shaped = tmp_path / "shaped.yml"
    shaped.write_text("server:\n  - a\nclient:\n  - b\n")
    assert ExpectedFailures.load(shaped) == ExpectedFailures(server=frozenset({"a"}), client=frozenset({"b"}))

    bad = tmp_path / "bad.yml"
    bad.write_text("servers:\n  - ping\n")
    with pytest.raises(ValueError, match="'server' and/or 'client'"):
        ExpectedFailures.load(bad)
    bad.write_text("server: ping\n")
    with pytest.raises(ValueError, match="'server' must be a list"):
        ExpectedFailures.load(bad)


def test_a_scenario_testing_the_front_may_pass_only_through_the_gateway() -> None:
    """One that tests the HTTP transport itself may fail alone and pass through the
    gateway when it is allowed; never the reverse, and no other scenario."""
    alone = {"polling": Outcome("polling", False, ["WARNING no priming"]), "tools": Outcome("tools", True, [])}
    through = {"polling": Outcome("polling", True, []), "tools": Outcome("tools", True, [])}
    assert differences(alone, through, allowed={"polling"}) == []
    assert differences(alone, through) == ["polling: fails alone, passes through the gateway"]
    worse = {"polling": Outcome("polling", True, []), "tools": Outcome("tools", False, ["FAILURE x"])}
    assert differences(alone, worse, allowed={"polling", "tools"}) == ["tools: passes alone, fails through the gateway: FAILURE x"]
