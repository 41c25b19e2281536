"""
Tool-name patterns as every check uses them (deny rules, the kill switch,
allow rules, limits): shell globs with ranges, under the documented
folding, refused at load time when malformed; deny rules that also see the
backend's own name of a tool; and a call that waited for a slot across a
reload, checked against the policy in force when it gets its slot.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.names import exposed_name
from twisted_mcp.policy.identity import Principal
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import matches, parse_policy
from twisted_mcp.wire.jsonrpc import JsonRpcError

from .fakes import begin_tool
from .test_policy import FakeBackend, Recorder


@pytest.mark.parametrize(
    "pattern,name,expected",
    [
        # Ranges keep their meaning under folding (they used to become [a_f]).
        ("evil__[a-f]*", "evil__delete", True),
        ("evil__[a-f]*", "evil__Delete", True),
        ("evil__[a-f]*", "evil__xdelete", False),
        ("x__[A-Z]*", "x__delete", True),
        ("x__[A-Z]*", "x__Delete", True),
        ("x__[a-z]*", "x__DELETE", True),
        ("x__v[0-9]", "x__v7", True),
        ("x__v[0-9]", "x__vx", False),
        ("x__[!a-f]*", "x__Apply", False),  # a negated range is folded too
        ("x__[!a-f]*", "x__zap", True),
        # Ranges with - or _ as an end: _ and - are the same character.
        ("x__a[_-a]b", "x__a-b", True),
        ("x__a[--0]b", "x__a_b", True),
        ("x__a[-]b", "x__a_b", True),
        ("x__a[_]b", "x__a-b", True),
        ("x__a[!_]b", "x__a-b", False),
        # Literal folding as before.
        ("*__DELETE_*", "fs__delete-file", True),
    ],
)
def test_folded_patterns_mean_what_they_say(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name, "__", backend=name.split("__")[0], fold=True) is expected


@pytest.mark.parametrize(
    "pattern,name,expected",
    [
        ("x__[a-f]*", "x__delete", True),
        ("x__[a-f]*", "x__Delete", False),  # allow rules stay case-sensitive
        ("x__[A-Z]*", "x__delete", False),
        ("x__a[_-a]b", "x__a-b", False),
    ],
)
def test_unfolded_patterns_are_exact(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name, "__", backend="x") is expected


@pytest.mark.parametrize(
    "pattern,why",
    [
        ("evil__[a-f", "never closed"),
        ("evil__[", "never closed"),
        ("evil__[]", "never closed"),
        ("evil__[!]", "never closed"),
        ("evil__[f-a]*", "backwards"),
        ("evil__x]", "closes no '['"),
        ("evil__!x", "'!'"),
    ],
)
@pytest.mark.parametrize("where", ["deny", "allow", "kill", "limit", "concurrency"])
def test_malformed_patterns_are_refused_at_load_time(pattern: str, why: str, where: str) -> None:
    section, path = {
        "deny": ({"roles": {"dev": {"deny": [pattern]}}}, "roles.dev.deny[0]"),
        "allow": ({"roles": {"dev": {"allow": [pattern]}}}, "roles.dev.allow[0]"),
        "kill": ({"killSwitch": {"tools": [pattern]}}, "killSwitch.tools[0]"),
        "limit": ({"limits": {"tools": [{"tool": pattern, "rate": 1}]}}, "limits.tools[0].tool[0]"),
        "concurrency": ({"concurrency": {"tools": [{"tool": pattern, "max": 1}]}}, "concurrency.tools[0].tool[0]"),
    }[where]
    problems: list[str] = []
    parse_policy(section, None, problems, {"evil"})
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: ") and why in problems[0] and repr(pattern) in problems[0], problems


def test_the_configured_kill_switch_names_backends_as_deny_rules_do() -> None:
    problems: list[str] = []
    rules = parse_policy({"killSwitch": {"backends": ["GitHub", "git_lab", "nope"]}}, None, problems, {"github", "git-lab", "time"})
    assert rules.kill_backends == ("git-lab", "github")
    assert problems == ["killSwitch.backends: no server named 'nope' in mcpServers (known: git-lab, github, time)"]


def _policy(policy_yaml: dict[str, Any], backends: list[tuple[str, list[str]]], separator: str = "__") -> tuple[Policy, Catalog, Recorder]:
    problems: list[str] = []
    rules = parse_policy({"roles": {"dev": {"allow": ["*"]}}, **policy_yaml}, None, problems, {name for name, _ in backends})
    assert problems == []
    audit = Recorder()
    principal = Principal(name="p", roles=("dev",), source="config")
    policy = Policy(rules, separator, Clock(), lambda peer: principal, audit)
    catalog = Catalog(separator)
    catalog.rebuild([FakeBackend(name, tools) for name, tools in backends])
    policy.catalog_changed(catalog.entries)
    return policy, catalog, audit


def _code(policy: Policy, catalog: Catalog, name: str) -> int | None:
    try:
        begin_tool(policy, "s", {"name": name, "arguments": {}}, catalog)
    except JsonRpcError as e:
        return e.code
    return None


def test_a_deny_rule_with_a_range_refuses_the_call_and_hides_the_tool() -> None:
    policy, catalog, _ = _policy(
        {"roles": {"dev": {"allow": ["*"], "deny": ["evil__[a-f]*"]}}},
        [("evil", ["Delete_all", "erase", "zap"])],
    )
    assert _code(policy, catalog, "evil__Delete_all") == errors.ACCESS_DENIED
    assert _code(policy, catalog, "evil__erase") == errors.ACCESS_DENIED
    visible = [t["name"] for t in policy.listing(policy.principal(), "tool", catalog.listing, catalog.entries)]
    assert visible == ["evil__zap"]


def test_a_configured_kill_switch_with_a_range() -> None:
    policy, catalog, _ = _policy({"killSwitch": {"tools": ["evil__[A-F]*"]}}, [("evil", ["delete", "zap"])])
    assert _code(policy, catalog, "evil__delete") == errors.TOOL_DISABLED
    assert _code(policy, catalog, "evil__zap") is None


def test_a_run_time_kill_switch_with_a_range() -> None:
    policy, catalog, _ = _policy({}, [("evil", ["delete", "zap"])])
    policy.set_kill("tool", "evil__[a-f]*", True)
    assert _code(policy, catalog, "evil__delete") == errors.TOOL_DISABLED
    assert _code(policy, catalog, "evil__zap") is None


def test_a_star_heavy_pattern_over_a_long_name_does_not_backtrack() -> None:
    """Each literal run after a * is matched once, at its leftmost place."""
    name = "x__" + "a" * 5000
    assert matches("*a*a*a*a*a*a*a*a*a*a*a*a*b", name, "__", backend="x", fold=True) is False


# -- deny rules see the backend's own name (defect 18) --------------------------------

LONG = "get_the_quarterly_financial_report_for_the_board_and_then_delete_everything"


def test_deny_sees_the_part_of_a_long_name_the_64_character_limit_cuts() -> None:
    exposed = exposed_name("fin", LONG, "__")
    assert "delete" not in exposed  # the exposed name lost it
    policy, catalog, _ = _policy(
        {"roles": {"dev": {"allow": ["fin"], "deny": ["*_delete_*"]}}, "killSwitch": {"tools": []}},
        [("fin", [LONG, "read"])],
    )
    assert _code(policy, catalog, exposed) == errors.ACCESS_DENIED
    assert _code(policy, catalog, "fin__read") is None
    visible = [t["name"] for t in policy.listing(policy.principal(), "tool", catalog.listing, catalog.entries)]
    assert visible == ["fin__read"]


def test_the_kill_switch_sees_the_backend_own_name_too() -> None:
    policy, catalog, _ = _policy({}, [("fin", [LONG, "read"])])
    policy.set_kill("tool", "fin__*_DELETE_EVERYTHING", True)
    assert _code(policy, catalog, exposed_name("fin", LONG, "__")) == errors.TOOL_DISABLED
    assert _code(policy, catalog, "fin__read") is None


def test_deny_sees_the_original_characters_of_a_tool_name() -> None:
    """The exposed name replaced the '.'; the rule (anything but '_' there) still sees it."""
    policy, catalog, _ = _policy({"roles": {"dev": {"allow": ["*"], "deny": ["fs__drop[!_]table"]}}}, [("fs", ["drop.table", "drop_tables"])])
    assert _code(policy, catalog, "fs__drop_table") == errors.ACCESS_DENIED
    assert _code(policy, catalog, "fs__drop_tables") is None


def test_allow_rules_still_match_the_exposed_name_only() -> None:
    exposed = exposed_name("fin", LONG, "__")
    policy, catalog, _ = _policy({"roles": {"dev": {"allow": ["*_everything"]}}}, [("fin", [LONG])])
    assert _code(policy, catalog, exposed) == errors.ACCESS_DENIED


# -- a call that waited across a reload (defect 19) ------------------------------------


class WaitedAcrossAReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backends = {"a": FakeBackend("a", ["read"])}
        self.catalog = Catalog("__")
        self.catalog.rebuild(self.backends.values())
        self.policy = self.make_policy()

    def make_policy(self, **extra: Any) -> Policy:
        problems: list[str] = []
        rules = parse_policy({"concurrency": {"backends": {"a": {"max": 1, "queue": 5}}}, **extra}, None, problems, {"a"})
        self.assertEqual(problems, [])
        policy = Policy(rules, "__", self.clock, None, Recorder())
        policy.catalog_changed(self.catalog.entries)
        return policy

    def dispatch(self, policy: Policy) -> Deferred[Any]:
        """A call as the gateway makes it: its outcome is reported back to the policy."""
        call = begin_tool(policy, "s", {"name": "a__read", "arguments": {}}, self.catalog)

        def ended(result: Any) -> Any:
            if isinstance(result, Failure):
                call.failed(result.value)
            else:
                call.succeeded(result, 0)
            return result

        return call.dispatch(lambda: self.backends["a"].call("tools/call", {})).addBoth(ended)

    def reload(self, **extra: Any) -> Policy:
        new = self.make_policy(**extra)
        new.inherit(self.policy)
        return new

    def test_a_kill_switch_thrown_after_the_reload_stops_it(self) -> None:
        running = self.dispatch(self.policy)
        waiting = self.dispatch(self.policy)
        new = self.reload()
        new.set_kill("tool", "a__read", True)
        self.backends["a"].calls[0].callback({"content": []})
        self.successResultOf(running)
        self.assertEqual(self.failureResultOf(waiting, JsonRpcError).value.code, errors.TOOL_DISABLED)
        self.assertEqual(len(self.backends["a"].calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_kill_switch_in_the_reloaded_config_stops_it(self) -> None:
        running = self.dispatch(self.policy)
        waiting = self.dispatch(self.policy)
        self.reload(killSwitch={"backends": ["a"]})
        self.backends["a"].calls[0].callback({"content": []})
        self.successResultOf(running)
        self.assertEqual(self.failureResultOf(waiting, JsonRpcError).value.code, errors.BACKEND_DISABLED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_it_goes_through_when_the_new_policy_allows_it(self) -> None:
        running = self.dispatch(self.policy)
        waiting = self.dispatch(self.policy)
        self.reload()
        self.backends["a"].calls[0].callback({"content": []})
        self.successResultOf(running)
        self.assertEqual(len(self.backends["a"].calls), 2)
        self.backends["a"].calls[1].callback({"content": []})
        self.successResultOf(waiting)
