"""What a conformance run's results say: per-scenario outcomes, the expected-failures rule, comparisons.

The suite (`@modelcontextprotocol/conformance`) writes one directory per scenario
run under its `--output-dir`: `server-<scenario>-<timestamp>/checks.json` for
server scenarios, `<scenario>-<timestamp>/checks.json` for client scenarios,
each a list of checks with a `status` of SUCCESS, FAILURE, WARNING, INFO or SKIPPED.
A scenario passes when none of its checks is a FAILURE or a WARNING: the rule
the suite applies to its own expected-failures baseline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

_RESULT_DIR = re.compile(r"^(?:server-)?(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
FAILING_STATUSES = frozenset({"FAILURE", "WARNING"})


@dataclass(frozen=True)
class Outcome:
    """One scenario's result: whether it passed, and the first failing or warning checks' messages."""

    scenario: str
    passed: bool
    problems: tuple[str, ...] = ()


def outcome_of(scenario: str, checks: list[dict]) -> Outcome:
    problems = tuple(
        f"{check.get('status')} {check.get('id')}: {check.get('errorMessage') or check.get('description', '')}"
        for check in checks
        if check.get("status") in FAILING_STATUSES
    )
    return Outcome(scenario, not problems, problems)


def read_results(directory: Path) -> dict[str, Outcome]:
    """Every scenario's outcome under a suite `--output-dir` (a scenario whose checks.json is unreadable fails)."""
    outcomes: dict[str, Outcome] = {}
    for entry in sorted(directory.iterdir()) if directory.is_dir() else []:
        match = _RESULT_DIR.match(entry.name)
        if not entry.is_dir() or match is None:
            continue
        scenario = match.group("scenario")
        try:
            checks = json.loads((entry / "checks.json").read_text())
        except (OSError, ValueError) as e:
            outcomes[scenario] = Outcome(scenario, False, (f"no readable checks.json in {entry}: {e}",))
            continue
        outcomes[scenario] = outcome_of(scenario, checks)
    return outcomes


@dataclass(frozen=True)
class ExpectedFailures:
    """The expected-failures file, in the suite's own format (`server:` and `client:` lists of scenario names)."""

    server: frozenset[str] = frozenset()
    client: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: Path) -> ExpectedFailures:
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict) or set(data) - {"server", "client"}:
            raise ValueError(f"{path}: expected a mapping with 'server' and/or 'client' lists of scenario names")
        lists = {}
        for mode in ("server", "client"):
            names = data.get(mode) or []
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                raise ValueError(f"{path}: '{mode}' must be a list of scenario names")
            lists[mode] = frozenset(names)
        return cls(**lists)


@dataclass
class Verdict:
    """A run checked against the expected failures: what failed that should not, what passes yet is listed."""

    unexpected_failures: list[str] = field(default_factory=list)
    stale_entries: list[str] = field(default_factory=list)
    expected_failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unexpected_failures and not self.stale_entries


def judge(outcomes: dict[str, Outcome], expected: Iterable[str]) -> Verdict:
    """The suite's baseline rule over the scenarios that ran (a listed scenario that did not run is not judged)."""
    listed = set(expected)
    verdict = Verdict()
    for scenario, outcome in sorted(outcomes.items()):
        if not outcome.passed and scenario in listed:
            verdict.expected_failures.append(scenario)
        elif not outcome.passed:
            verdict.unexpected_failures.append(scenario)
        elif scenario in listed:
            verdict.stale_entries.append(scenario)
    return verdict


def passing(outcomes: dict[str, Outcome]) -> frozenset[str]:
    return frozenset(name for name, outcome in outcomes.items() if outcome.passed)


def differences(alone: dict[str, Outcome], through: dict[str, Outcome], allowed: Collection[str] = ()) -> list[str]:
    """Why the scenarios passing through the gateway are not those passing against the server alone
    (empty: same).  A scenario in `allowed` may fail alone and pass through the gateway."""
    lines = []
    for scenario in sorted(set(alone) | set(through)):
        if scenario not in through:
            lines.append(f"{scenario}: ran alone but not through the gateway")
        elif scenario not in alone:
            lines.append(f"{scenario}: ran through the gateway but not alone")
        elif alone[scenario].passed and not through[scenario].passed:
            lines.append(f"{scenario}: passes alone, fails through the gateway: {'; '.join(through[scenario].problems)}")
        elif through[scenario].passed and not alone[scenario].passed and scenario not in allowed:
            lines.append(f"{scenario}: fails alone, passes through the gateway")
    return lines


def scored(outcomes: dict[str, Outcome], names: Collection[str]) -> dict[str, Outcome]:
    """Only the scenarios a requirement set scores (the suite runs and reports others, never counting them)."""
    return {name: outcome for name, outcome in outcomes.items() if name in names}


def required_scenarios(path: Path, leg: str = "server") -> frozenset[str]:
    """The scenarios a requirement file of the suite (`requirements/<revision>.yaml`) scores for `leg`."""
    data = yaml.safe_load(path.read_text()) or {}
    names = data.get(leg) if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path}: expected a '{leg}' list of scenario names")
    return frozenset(names)


@dataclass(frozen=True)
class ExpectedDifference:
    """A scenario that passes against the server alone and is known to fail through the gateway."""

    scenario: str
    reason: str
    removed_by: str
    #: The through-gateway runs (their labels) it fails in; None: every one.
    runs: tuple[str, ...] | None = None

    def applies_to(self, run: str) -> bool:
        return self.runs is None or run in self.runs


def load_expected_differences(path: Path) -> dict[str, ExpectedDifference]:
    """
    The expected-differences file: a list of {scenario, reason, removedBy}, each field a non-empty
    string, and optionally `runs`, the labels of the through-gateway runs the entry is for.
    """
    data = yaml.safe_load(path.read_text()) or []
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of entries with scenario, reason and removedBy")
    entries: dict[str, ExpectedDifference] = {}
    for index, entry in enumerate(data):
        fields = ("scenario", "reason", "removedBy")
        if (
            not isinstance(entry, dict)
            or not set(fields) <= set(entry) <= {*fields, "runs"}
            or not all(isinstance(entry[f], str) and entry[f].strip() for f in fields)
        ):
            raise ValueError(
                f"{path}: entry {index + 1} must have exactly scenario, reason and removedBy, each a non-empty string "
                "(and optionally runs)"
            )
        runs = entry.get("runs")
        if runs is not None and (not isinstance(runs, list) or not runs or not all(isinstance(r, str) and r for r in runs)):
            raise ValueError(f"{path}: entry {index + 1}: runs must be a non-empty list of run labels")
        if entry["scenario"] in entries:
            raise ValueError(f"{path}: {entry['scenario']} is listed twice")
        entries[entry["scenario"]] = ExpectedDifference(
            entry["scenario"], entry["reason"].strip(), entry["removedBy"].strip(), tuple(runs) if runs else None
        )
    return entries


def unexpected_differences(alone: dict[str, Outcome], through: dict[str, Outcome], expected: Collection[str]) -> list[str]:
    """Why the scenarios passing through the gateway differ from those passing alone, beyond `expected`.

    A listed scenario must pass alone and fail through the gateway; when it passes through
    the gateway the entry is stale (remove it); when it fails alone it is no difference of the
    gateway's.  Any other difference (either way) is unexpected.
    """
    lines = []
    for scenario in sorted(set(alone) | set(through) | set(expected)):
        if scenario not in alone or scenario not in through:
            where = "alone" if scenario not in alone else "through the gateway"
            lines.append(f"{scenario}: did not run {where}")
        elif scenario in expected and through[scenario].passed:
            lines.append(f"{scenario}: passes through the gateway but is listed as an expected difference: remove it")
        elif scenario in expected and not alone[scenario].passed:
            lines.append(f"{scenario}: is listed as an expected difference but fails against the server alone too")
        elif scenario in expected:
            continue
        elif alone[scenario].passed and not through[scenario].passed:
            lines.append(f"{scenario}: passes alone, fails through the gateway: {'; '.join(through[scenario].problems)}")
        elif through[scenario].passed and not alone[scenario].passed:
            lines.append(f"{scenario}: fails alone, passes through the gateway")
    return lines
