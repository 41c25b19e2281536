"""
Tests for L{twisted_mcp.config.profiles}: the C{profiles:} section as
L{Profile}s, and every problem's message, byte for byte, with its key path.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import ConfigError
from twisted_mcp.config.loader import build
from twisted_mcp.config.models import Profile

SERVERS = {"mcpServers": {"github": {"command": "github-mcp"}}}


def config(profiles: Any) -> Any:
    return build({**SERVERS, "profiles": profiles}, "gateway.yaml", {})


class ProfilesConfigTests(SynchronousTestCase):
    def problems(self, profiles: Any) -> list[str]:
        e = self.assertRaises(ConfigError, config, profiles)
        return e.problems

    def test_withoutTheSectionThereAreNoProfiles(self) -> None:
        self.assertEqual(build(SERVERS, "gateway.yaml", {}).profiles, {})
        self.assertEqual(config(None).profiles, {})

    def test_aProfileWithEveryKey(self) -> None:
        loaded = config(
            {
                "dev": {
                    "tools": ["github__*", "filesystem__read_file"],
                    "pinned": ["filesystem__read_file"],
                    "prompts": ["github__*"],
                    "resources": ["repo://*"],
                    "budget": {"maxTools": 40, "maxNameLength": 48, "nameOverhead": 10},
                    "search": "auto",
                    "instructions": "Tools for the dev team's repositories.",
                },
                "ops": {"tools": ["kubernetes__*"], "budget": {"search": "never", "maxTools": 1}},
                "default": None,
            }
        ).profiles
        self.assertEqual(
            loaded["dev"],
            Profile(
                name="dev",
                tools=("github__*", "filesystem__read_file"),
                pinned=("filesystem__read_file",),
                prompts=("github__*",),
                resources=("repo://*",),
                maxTools=40,
                maxNameLength=48,
                nameOverhead=10,
                search="auto",
                instructions="Tools for the dev team's repositories.",
            ),
        )
        self.assertEqual(loaded["ops"], Profile(name="ops", tools=("kubernetes__*",), maxTools=1, search="never"))
        # profiles.default is allowed: it replaces the default view; without tools it selects none.
        self.assertEqual(loaded["default"], Profile(name="default"))

    def test_messages(self) -> None:
        """Every message of the section, byte for byte, with its key path."""
        cases: list[tuple[Any, str]] = [
            (["dev"], 'profiles: expected a mapping of profile names to their selections, got a list'),
            ({"Dev Team": {}}, 'profiles."Dev Team": a profile name must match [a-z0-9][a-z0-9_-]{0,31}'),
            ({"x" * 33: {}}, f'profiles."{"x" * 33}": a profile name must match [a-z0-9][a-z0-9_-]{{0,31}}'),
            ({"_dev": {}}, 'profiles."_dev": a profile name must match [a-z0-9][a-z0-9_-]{0,31}'),
            (
                {"dev": "github__*"},
                'profiles.dev: expected a mapping (tools, pinned, prompts, resources, budget, search, instructions), got a string "github__*"',
            ),
            (
                {"dev": {"tols": []}},
                'profiles.dev: unknown key "tols" (expected tools, pinned, prompts, resources, budget, search, instructions)',
            ),
            ({"dev": {"tools": "github__*"}}, 'profiles.dev.tools: expected a list of globs and names such as ["github__*"], got a string "github__*"'),
            ({"dev": {"tools": ["a", 3]}}, 'profiles.dev.tools[1]: expected a glob or a name such as "github__*", got a number 3'),
            ({"dev": {"pinned": [""]}}, 'profiles.dev.pinned[0]: expected a glob or a name such as "filesystem__read_file", got a string ""'),
            ({"dev": {"resources": [None]}}, 'profiles.dev.resources[0]: expected a glob or a name such as "repo://*", got nothing (null)'),
            ({"dev": {"search": "sometimes"}}, 'profiles.dev.search: expected auto, always or never, got a string "sometimes"'),
            ({"dev": {"instructions": 3}}, "profiles.dev.instructions: expected a string, got a number 3"),
            ({"dev": {"instructions": "x" * 8193}}, "profiles.dev.instructions: longer than 8192 characters"),
            ({"dev": {"budget": 40}}, "profiles.dev.budget: expected a mapping (maxTools, maxNameLength, nameOverhead, search), got a number 40"),
            (
                {"dev": {"budget": {"maxtools": 4}}},
                'profiles.dev.budget: unknown key "maxtools" (expected maxTools, maxNameLength, nameOverhead, search)',
            ),
            (
                {"dev": {"budget": {"maxNameLength": 12}}},
                "profiles.dev.budget.maxNameLength: must be at least 24 (room for a name and its 8-character hash), got 12",
            ),
            (
                {"dev": {"budget": {"maxNameLength": 200}}},
                "profiles.dev.budget.maxNameLength: must be at most 128 (the longest tool name MCP allows), got 200",
            ),
            ({"dev": {"budget": {"maxNameLength": "48"}}}, 'profiles.dev.budget.maxNameLength: expected a whole number, got a string "48"'),
            (
                {"dev": {"budget": {"maxNameLength": 40, "nameOverhead": 20}}},
                "profiles.dev.budget.nameOverhead: leaves 20 of maxNameLength's 40 characters for a tool name; at least 24 are needed",
            ),
            ({"dev": {"budget": {"nameOverhead": -1}}}, "profiles.dev.budget.nameOverhead: expected a whole number from 0 to 100, got -1"),
            (
                {"dev": {"pinned": ["a"], "budget": {"maxTools": 2}}},
                "profiles.dev.budget.maxTools: must be at least 3 in search mode (the two search tools and one more), got 2",
            ),
            ({"dev": {"budget": {"maxTools": 1}}}, "profiles.dev.budget.maxTools: must be at least 2 in search mode (the two search tools), got 1"),
            ({"dev": {"search": "never", "budget": {"maxTools": 0}}}, "profiles.dev.budget.maxTools: must be at least 1, got 0"),
            ({"dev": {"budget": {"maxTools": True}}}, "profiles.dev.budget.maxTools: expected a whole number, got a boolean true"),
            (
                {"dev": {"search": "auto", "budget": {"search": "never"}}},
                "profiles.dev.budget.search: also set as profiles.dev.search; set it in one place",
            ),
            ({"dev": {"budget": {"search": "no"}}}, 'profiles.dev.budget.search: expected auto, always or never, got a string "no"'),
            (
                {"dev": {"tools": ["github__*", "[a"]}},
                "profiles.dev.tools[1]: \"[a\" is not a valid glob: the '[' at position 1 is never closed with ']'",
            ),
            (
                {"dev": {"resources": ["repo://[z-a]"]}},
                "profiles.dev.resources[0]: \"repo://[z-a]\" is not a valid glob: the range z-a is backwards: it holds no character (write a-z)",
            ),
        ]
        for profiles, message in cases:
            self.assertEqual(self.problems(profiles), [message], profiles)

    def test_searchModeBoundsFollowTheBudgetsSearch(self) -> None:
        """maxTools 1 is allowed with search: never set inside the budget, and 2 with no pinned tools."""
        self.assertEqual(config({"dev": {"budget": {"search": "never", "maxTools": 1}}}).profiles["dev"].maxTools, 1)
        self.assertEqual(config({"dev": {"budget": {"maxTools": 2}}}).profiles["dev"].maxTools, 2)

    def test_everyBadProfileIsReported(self) -> None:
        problems = self.problems({"dev": {"search": "x"}, "ops": {"tools": [1]}})
        self.assertEqual(len(problems), 2)
