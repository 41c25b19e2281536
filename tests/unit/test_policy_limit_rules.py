"""
Which per-tool rate and concurrency rules cover a tool is kept by the
policy (L{twisted_mcp.policy.pipeline.Policy._tool_rules}): the answer must
follow what it depends on, a backend's name prefix above all, which can
change while the policy lives.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.task import Clock

from twisted_mcp.mcp import errors
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.principal import Principal
from twisted_mcp.policy.rules import parse_policy
from twisted_mcp.policy.subject import Subject
from twisted_mcp.wire.jsonrpc import JsonRpcError

PRINCIPAL = Principal(name="p1", roles=("viewer",), source="config")
#: Backend a's delete_repo, shown as gh_remove_repo.
RENAMED = Subject("tool", "gh_remove_repo", "a", "delete_repo")
ENTRY = SimpleNamespace(backend=SimpleNamespace(name="a"), definition={"name": "delete_repo", "inputSchema": {"type": "object"}})


def _policy(limits: dict[str, Any]) -> Policy:
    rules = parse_policy({"roles": {"viewer": {"allow": ["*"]}}, **limits}, None, [], {"a"})
    return Policy(rules, "__", Clock(), lambda peer: PRINCIPAL)


def _begin(policy: Policy) -> Any:
    return policy.begin("s1", "tools/call", RENAMED, {"name": RENAMED.exposed, "arguments": {}}, None, ENTRY)


def _prefix(policy: Policy, prefix: str | None) -> None:
    policy.note_backends([SimpleNamespace(name="a", name_prefix=prefix)])


def test_a_rate_rule_of_the_name_under_a_new_prefix_applies_once_the_prefix_is_known() -> None:
    """Matched before under the old prefix (no rule covered it), the tool is matched again under the new one."""
    policy = _policy({"limits": {"tools": [{"tool": "gh_delete_*", "rate": 0.001, "burst": 1}]}})
    _prefix(policy, None)
    for _ in range(3):
        _begin(policy)  # no rule covers a__delete_repo or gh_remove_repo
    _prefix(policy, "gh_")
    _begin(policy)
    with pytest.raises(JsonRpcError) as e:
        _begin(policy)
    assert e.value.code == errors.RATE_LIMITED
    assert e.value.data["limit"] == "tool"


def test_a_concurrency_rule_follows_the_prefix_too() -> None:
    """The concurrency rules are matched with the same names: a slot of the rule once the prefix says so."""
    policy = _policy({"concurrency": {"tools": [{"tool": "gh_delete_*", "max": 1}]}})
    _prefix(policy, None)
    assert _begin(policy).slots == []
    _prefix(policy, "gh_")
    assert len(_begin(policy).slots) == 1


def test_rules_are_told_apart_by_index_and_kept_in_order() -> None:
    """Two rules covering the tool: a bucket each, in the rules' order; a third that does not cover it: none."""
    policy = _policy(
        {
            "limits": {
                "tools": [
                    {"tool": "a__*", "rate": 1000, "burst": 1000},
                    {"tool": "b__*", "rate": 1000, "burst": 1000},
                    {"tool": "gh_remove_*", "rate": 0.001, "burst": 2},
                ]
            }
        }
    )
    _prefix(policy, "gh_")
    call = _begin(policy)
    assert [(b.rate, b.burst) for b in call.taken] == [(1000, 1000), (0.001, 2)]
