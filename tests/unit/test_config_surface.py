"""
The C{surface:}, C{search:} and C{clients:} sections
(L{twisted_mcp.config.surface}): their defaults, the values they take, and
every load-time message with its key path.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import ConfigError
from twisted_mcp.config.loader import build
from twisted_mcp.config.surface import SurfaceSettings
from twisted_mcp.mcp.clients import ClientRule, match

_SERVERS = {"mcpServers": {"a": {"command": "x"}}}
_KEY = "k" * 32


def _build(**sections: Any) -> Any:
    return build({**_SERVERS, **sections}, "inline", {})


class SurfaceConfigTests(SynchronousTestCase):
    def problems(self, **sections: Any) -> list[str]:
        return self.assertRaises(ConfigError, _build, **sections).problems

    def test_absent_sections_are_todays_behaviour(self) -> None:
        surface = _build().surface
        self.assertEqual(surface, SurfaceSettings())
        self.assertEqual((surface.overflow, surface.pageSize, surface.ttlMs), ("search", 0, 0))
        self.assertEqual((surface.search.searchName, surface.search.callName), ("search_tools", "call_tool"))

    def test_values_taken(self) -> None:
        surface = _build(
            surface={"overflow": "truncate", "pageSize": 25, "ttlMs": 5000, "cursorKeys": [_KEY]},
            search={"names": {"search": "find", "call": "run"}, "defaultLimit": 5, "maxLimit": 10},
            clients={
                "useClientInfo": False,
                "serverKeyLength": 2,
                "default": {"maxNameLength": 48},
                "match": [{"name": "my-agent", "maxTools": 30, "maxNameLength": 40, "search": "always"}],
            },
        ).surface
        self.assertEqual((surface.overflow, surface.pageSize, surface.ttlMs, surface.cursorKeys), ("truncate", 25, 5000, (_KEY,)))
        self.assertEqual((surface.search.searchName, surface.search.callName, surface.search.maxLimit), ("find", "run", 10))
        clients = surface.clients
        self.assertEqual((clients.useClientInfo, clients.serverKeyLength), (False, 2))
        self.assertEqual(clients.rules[0].maxTools, 30)
        self.assertIsInstance(clients.default, ClientRule)
        self.assertEqual(match("cursor", clients.rules, default=clients.default, use_client_info=False).maxNameLength, 48)
        self.assertNotIn(_KEY, repr(surface))

    def test_messages(self) -> None:
        """Each message of the design's table, with its key path."""
        self.assertEqual(
            self.problems(surface={"overflow": "cut"}), ['surface.overflow: expected search or truncate, got a string "cut"']
        )
        self.assertEqual(
            self.problems(surface={"pageSize": 5}), ["surface.pageSize: expected 0 (one page) or 10 … 1000, got a number 5"]
        )
        self.assertEqual(
            self.problems(search={"names": {"call": "call tool"}}),
            ['search.names.call: a string "call tool" is not a valid tool name'],
        )
        self.assertEqual(
            self.problems(search={"names": {"search": "x", "call": "x"}}), ["search.names: search and call must differ"]
        )
        self.assertEqual(
            self.problems(clients={"match": [{"name": "a", "maxTools": 5}, {"name": "b", "maxNameLength": 12}]}),
            ["clients.match[1].maxNameLength: must be at least 24 (room for a name and its 8-character hash), got 12"],
        )
        self.assertEqual(
            self.problems(clients={"match": [{"name": "a", "maxTools": 1}]}),
            ["clients.match[0].maxTools: must be at least 2 in search mode (the two search tools)"],
        )
        self.assertEqual(
            self.problems(surface={"cursorKeys": ["short"]}),
            ["surface.cursorKeys[0]: a key must have at least 32 characters (e.g. the output of `openssl rand -hex 32`)"],
        )
        self.assertEqual(
            self.problems(surface={"pagesize": 10}),
            ["surface.pagesize: unknown key (expected one of: overflow, pageSize, ttlMs, cursorKeys)"],
        )
        self.assertEqual(
            self.problems(clients={"match": [{"maxTools": 10}]}),
            ['clients.match[0].name: missing: the clientInfo.name glob this row matches, such as "cursor*"'],
        )

    def test_search_never_allows_one_tool(self) -> None:
        rules = _build(clients={"match": [{"name": "a", "maxTools": 1, "search": "never"}]}).surface.clients.rules
        self.assertEqual(rules[0].maxTools, 1)


class NotBuiltKeysTests(SynchronousTestCase):
    def test_found_tools_keys_are_refused_not_ignored(self) -> None:
        """C{search.addFound} and C{search.maxFound} (design section 4.3) are not
        built: a config that asks for them is refused with the reason, so no
        operator believes found tools join a session's list."""
        for key, value in (("addFound", True), ("maxFound", 4)):
            problems = self.assertRaises(ConfigError, _build, search={key: value}).problems
            self.assertEqual(len(problems), 1, problems)
            self.assertIn(f"search.{key}: not supported by this version", problems[0])


class NameLimitTests(SynchronousTestCase):
    """Budgets the config can tell leave a name under 24 characters (what
    an alias needs) are refused, naming the key path."""

    def problems(self, **sections: Any) -> list[str]:
        return self.assertRaises(ConfigError, _build, **sections).problems

    def test_combinations_only_run_time_can_know_load(self) -> None:
        """A long server key or a short profile limit against a built-in row
        loads: which row a client meets is known only when it connects (then
        the limit is raised to 24 and logged, test_surface_fit)."""
        self.assertEqual(_build(clients={"serverKeyLength": 40}).surface.clients.serverKeyLength, 40)
        _build(clients={"serverKeyLength": 40, "match": [{"name": "claude*", "nameOverhead": 0}]})
        _build(clients={"match": [{"name": "cursor*", "nameOverhead": 10}], "default": {"maxNameLength": 30}})

    def test_a_row_counting_the_server_key(self) -> None:
        self.assertEqual(
            self.problems(
                clients={
                    "serverKeyLength": 20,
                    "match": [{"name": "x", "maxNameLength": 40, "nameOverhead": 2, "countsServerKey": True}],
                }
            ),
            [
                "clients.match[0].nameOverhead: clients.match[0].nameOverhead 2 plus clients.serverKeyLength 20 leaves 18 of "
                "maxNameLength's 40 characters for a tool name; at least 24 are needed"
            ],
        )

    def test_a_profile_length_against_the_rows_loads(self) -> None:
        _build(profiles={"dev": {"budget": {"maxNameLength": 30}}})
        _build(profiles={"dev": {"budget": {"maxNameLength": 30, "nameOverhead": 0}}})
