"""
Tests for the per-backend C{prefix} setting: how names are made
(L{twisted_mcp.mcp.names}), how the catalog uses it, and how the
configuration checks it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import Backend
from twisted_mcp.config import ConfigError
from twisted_mcp.config.loader import build
from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.mcp.names import MAX_NAME, exposed_name, name_prefix, prefixed_name

from .test_reload import BASE, LIST_CHANGED, server, world  # noqa: F401  (world: a fixture)


def backend(name: str, prefix: str | None, *tools: str, prompts: tuple[str, ...] = ()) -> Backend:
    b = Backend(name)
    b.name_prefix = prefix
    b.tools = [{"name": t} for t in tools]
    b.prompts = [{"name": p} for p in prompts]
    return b


class NameTests(SynchronousTestCase):
    def test_defaultPrefixIsNameAndSeparator(self) -> None:
        self.assertEqual(name_prefix("time", None, "__"), "time__")
        self.assertEqual(name_prefix("time", None, "-"), "time-")

    def test_configuredPrefixReplacesIt(self) -> None:
        self.assertEqual(name_prefix("time", "clock_", "__"), "clock_")
        self.assertEqual(name_prefix("time", "", "__"), "")

    def test_emptyPrefixKeepsTheToolsName(self) -> None:
        self.assertEqual(prefixed_name("", "test_simple_text"), "test_simple_text")

    def test_emptyPrefixStillSanitizesAndCuts(self) -> None:
        self.assertEqual(prefixed_name("", "read.file"), "read_file")
        tool = "x" * 100
        name = prefixed_name("", tool)
        self.assertEqual(len(name), MAX_NAME)
        self.assertEqual(name, tool[:55] + "_" + hashlib.sha256(tool.encode()).hexdigest()[:8])

    def test_defaultIsTheNameOfBefore(self) -> None:
        """The default prefix gives exactly the names of before, cut ones included."""
        for tool in ("get_time", "a.b", "y" * 90):
            self.assertEqual(prefixed_name(name_prefix("srv", None, "__"), tool), exposed_name("srv", tool, "__"))


class CatalogPrefixTests(SynchronousTestCase):
    def test_unprefixedBackend(self) -> None:
        """Tools and prompts of a backend with an empty prefix keep their
        names; they route back to that backend; the others keep theirs."""
        bare = backend("conf", "", "test_simple_text", prompts=("test_simple_prompt",))
        other = backend("time", None, "get_time")
        catalog = Catalog("__")
        catalog.rebuild([bare, other])
        self.assertEqual(sorted(catalog.tools.entries), ["test_simple_text", "time__get_time"])
        entry = catalog.get("test_simple_text")
        assert entry is not None
        self.assertIs(entry.backend, bare)
        self.assertEqual(entry.original, "test_simple_text")
        self.assertEqual(entry.definition["name"], "test_simple_text")
        self.assertEqual(list(catalog.prompts.entries), ["test_simple_prompt"])
        self.assertIsNone(catalog.get("conf__test_simple_text"))

    def test_otherPrefix(self) -> None:
        catalog = Catalog("__")
        catalog.rebuild([backend("github-enterprise", "gh_", "create_issue")])
        self.assertEqual(list(catalog.tools.entries), ["gh_create_issue"])

    def test_collisionAtRunTimeKeepsTheFirstAndIsLogged(self) -> None:
        """An unprefixed tool that takes the name another backend's tool has
        under the default prefix: the existing rule (the first in backend
        order is served) applies, and it is logged."""
        bare = backend("a", "", "b__x")
        prefixed = backend("b", None, "x")
        catalog = Catalog("__")
        with capturedLogs() as events:
            catalog.rebuild([prefixed, bare])
        entry = catalog.get("b__x")
        assert entry is not None
        self.assertIs(entry.backend, bare)
        self.assertEqual(len(catalog.tools.entries), 1)
        collisions = [e for e in events if "collision" in e.get("log_format", "")]
        self.assertEqual(len(collisions), 1)
        self.assertEqual((collisions[0]["backend"], collisions[0]["other"]), ("b", "a"))

    def test_changedPrefixTakesEffect(self) -> None:
        """A backend replaced (a reload) by one of the same name with another
        prefix is listed under the new prefix: names remembered from the
        last rebuild are not reused for it."""
        catalog = Catalog("__")
        catalog.rebuild([backend("conf", None, "echo")])
        self.assertEqual(list(catalog.tools.entries), ["conf__echo"])
        catalog.rebuild([backend("conf", "", "echo")])
        self.assertEqual(list(catalog.tools.entries), ["echo"])
        catalog.rebuild([backend("conf", None, "echo")])
        self.assertEqual(list(catalog.tools.entries), ["conf__echo"])


class ConfigPrefixTests(SynchronousTestCase):
    def servers(self, servers: dict[str, Any], gateway: dict[str, Any] | None = None) -> dict[str, Any]:
        config = build({"mcpServers": servers, **({"gateway": gateway} if gateway else {})}, "inline", {})
        return {s.name: s for s in config.servers}

    def problems(self, servers: dict[str, Any]) -> list[str]:
        return self.assertRaises(ConfigError, build, {"mcpServers": servers}, "inline", {}).problems

    def test_defaultIsNone(self) -> None:
        servers = self.servers({"a": {"command": "x"}, "b": {"url": "http://127.0.0.1:1/mcp"}})
        self.assertIsNone(servers["a"].prefix)
        self.assertIsNone(servers["b"].prefix)

    def test_emptyAndOtherPrefixes(self) -> None:
        servers = self.servers({"a": {"command": "x", "prefix": ""}, "b": {"url": "http://127.0.0.1:1/mcp", "prefix": "remote-"}})
        self.assertEqual(servers["a"].prefix, "")
        self.assertEqual(servers["b"].prefix, "remote-")

    def test_invalidPrefixes(self) -> None:
        for value, words in (
            ("a.b", "A-Z a-z 0-9 _ -"),
            ("a b", "A-Z a-z 0-9 _ -"),
            (3, "expected a string"),
            (None, "expected a string"),
            ("p" * 55, "at most 54 characters"),
        ):
            problems = self.problems({"a": {"command": "x", "prefix": value}})
            self.assertEqual(len(problems), 1, problems)
            self.assertTrue(problems[0].startswith("mcpServers.a.prefix: "), problems)
            self.assertIn(words, problems[0])
        self.assertEqual(self.servers({"a": {"command": "x", "prefix": "p" * 54}})["a"].prefix, "p" * 54)

    def test_twoUnprefixedServersRefused(self) -> None:
        problems = self.problems({"a": {"command": "x", "prefix": ""}, "b": {"url": "http://127.0.0.1:1/mcp", "prefix": ""}})
        self.assertEqual(len(problems), 1, problems)
        self.assertTrue(problems[0].startswith("mcpServers.b.prefix: "), problems)
        for words in ("'a' and 'b'", "no prefix", "another prefix"):
            self.assertIn(words, problems[0])

    def test_prefixOfAnotherServersDefaultRefused(self) -> None:
        """C{prefix: time__} on one server takes the names the server C{time} has by default."""
        problems = self.problems({"time": {"command": "t"}, "x": {"command": "x", "prefix": "time__"}})
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("'time' and 'x'", problems[0])
        self.assertIn("'time__'", problems[0])

    def test_separatorCounts(self) -> None:
        """With another separator the default prefixes differ: no clash."""
        servers = self.servers({"time": {"command": "t"}, "x": {"command": "x", "prefix": "time__"}}, {"separator": "-"})
        self.assertEqual(servers["x"].prefix, "time__")

    def test_disabledServerDoesNotClash(self) -> None:
        servers = self.servers({"a": {"command": "x", "prefix": ""}, "b": {"command": "y", "prefix": "", "disabled": True}})
        self.assertEqual(list(servers), ["a"])


class TestReloadPrefix:
    """A prefix changed at reload (the server is replaced) and a reload
    whose prefixes clash (refused), on the service of test_reload."""

    def test_changed_prefix_renames_and_tells_clients(self, world: Any) -> None:
        world.service(BASE)
        world.ready({"alpha": ["echo"], "beta": ["time"]})
        session = world.session("c")
        assert world.listing("c", session) == ["alpha__echo", "beta__time"]
        applied, changes, problems = world.reload({"mcpServers": {**BASE["mcpServers"], "alpha": server("alpha", prefix="")}})
        assert (applied, problems) == (True, "")
        assert changes == ["backend alpha: restarted (its configuration changed)"]
        assert world.take("c") == [LIST_CHANGED]
        assert world.listing("c", session) == ["beta__time", "echo"]

    def test_clashing_prefixes_refused(self, world: Any) -> None:
        svc = world.service(BASE)
        config = svc.config
        clash = {"mcpServers": {"alpha": server("alpha", prefix=""), "beta": server("beta", prefix="")}}
        applied, changes, problems = world.reload(clash)
        assert (applied, changes) == (False, [])
        assert "mcpServers.beta.prefix: the servers 'alpha' and 'beta' would both name" in problems
        assert svc.config is config
