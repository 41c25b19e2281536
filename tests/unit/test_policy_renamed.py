"""
Deny rules, the kill switch and per-tool limits after a rename under a
custom prefix (design §2.1): a rule written for the name a tool was shown
under before (C{<prefix><own>}, or C{<backend>__<own>}) still holds for
its new name.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from twisted_mcp.config.models import Shaping
from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.mcp import errors
from twisted_mcp.policy.decisions import names_of
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.subject import Subject

from .test_policy_surface import VIEWER, SurfaceTestCase

#: github's delete_repo, renamed remove_repo, under the prefix gh_.
RENAMED = Subject("tool", "gh_remove_repo", "a", "delete_repo")
OTHER = Subject("tool", "gh_list_repos", "a", "list_repos")


class RenamedUnderAPrefixTests(SurfaceTestCase):
    def prefixed(self, config: dict[str, Any]) -> Policy:
        """A policy over a catalog where a's tools are served under C{gh_}, delete_repo renamed remove_repo."""
        policy = self.make({"roles": {"viewer": {"allow": ["*"]}}, **config}, VIEWER)
        a = self.surface.backends["a"]
        a.name_prefix = "gh_"
        a.shaping = MappingProxyType({"tools": Shaping(rename={"delete_repo": "remove_repo"})})
        a.tools = [{"name": name, "inputSchema": {"type": "object"}} for name in ("delete_repo", "list_repos")]
        catalog = Catalog("__")
        catalog.rebuild(self.surface.backends.values())
        self.assertEqual(sorted(catalog.entries), ["b__x", "gh_list_repos", "gh_remove_repo"])
        policy.catalog_changed(catalog.entries)
        return policy

    def test_namesIncludeTheShapedNameBeforeTheRename(self) -> None:
        self.assertEqual(
            names_of(RENAMED, "__", "gh_"),
            ("gh_remove_repo", "a__delete_repo", "gh_delete_repo"),
        )
        self.assertEqual(names_of(RENAMED, "__"), ("gh_remove_repo", "a__delete_repo"))

    def test_aRoleDenyOfTheOldNameStillHolds(self) -> None:
        policy = self.prefixed({"roles": {"viewer": {"allow": ["*"], "deny": ["gh_delete_*"]}}})
        decision = policy.decision(VIEWER, RENAMED)
        assert decision is not None
        self.assertEqual(decision[0], errors.ACCESS_DENIED)
        self.assertIsNone(policy.decision(VIEWER, OTHER))

    def test_theKillSwitchOfTheOldNameStillHolds(self) -> None:
        policy = self.prefixed({"killSwitch": {"tools": ["gh_delete_*"]}})
        decision = policy.decision(VIEWER, RENAMED)
        assert decision is not None
        self.assertEqual(decision[0], errors.TOOL_DISABLED)
        self.assertIsNone(policy.decision(VIEWER, OTHER))

    def test_aNewPrefixDropsCachedDecisions(self) -> None:
        policy = self.make({"roles": {"viewer": {"allow": ["*"], "deny": ["gh_delete_*"]}}}, VIEWER)
        self.assertIsNone(policy.decision(VIEWER, RENAMED))  # a's prefix is the default: gh_delete_repo is not a name of it
        self.surface.backends["a"].name_prefix = "gh_"
        policy.note_backends(self.surface.backends.values())
        self.assertIsNotNone(policy.decision(VIEWER, RENAMED))

    def test_aRateLimitOnTheOldNameStillHolds(self) -> None:
        for old in ("a__delete_repo", "gh_delete_*"):
            policy = self.prefixed({"limits": {"tools": [{"tool": old, "rate": 0.001, "burst": 1}]}})
            self.assertIsNone(self.code(policy, "tools/call", RENAMED))
            self.assertEqual(self.code(policy, "tools/call", RENAMED), errors.RATE_LIMITED, old)
            self.assertIsNone(self.code(policy, "tools/call", OTHER))

    def test_aConcurrencyLimitOnTheOldNameStillHolds(self) -> None:
        policy = self.prefixed({"concurrency": {"tools": [{"tool": "a__delete_repo", "max": 1}]}})
        self.assertIsNone(self.code(policy, "tools/call", RENAMED))
        self.assertEqual(self.code(policy, "tools/call", RENAMED), errors.BUSY)
        self.assertIsNone(self.code(policy, "tools/call", OTHER))
        self.assertEqual(len(self.surface.backends["a"].calls), 2)
