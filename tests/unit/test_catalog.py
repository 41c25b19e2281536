"""
Tests for L{twisted_mcp.dispatch.catalog}: exposed names and the merged catalog.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.mcp.names import MAX_NAME, exposed_name

VALID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def backend(name: str, *tools: Any) -> Backend:
    b = Backend(name)
    b.tools = [t if isinstance(t, dict) else {"name": t} for t in tools]
    return b


class ExposedNameTests(SynchronousTestCase):
    def test_plain(self) -> None:
        self.assertEqual(exposed_name("time", "get_current_time", "__"), "time__get_current_time")
        self.assertEqual(exposed_name("gh", "create-issue", "-"), "gh-create-issue")

    def test_sanitizes(self) -> None:
        self.assertEqual(exposed_name("fs", "read.file/v2 now", "__"), "fs__read_file_v2_now")
        self.assertEqual(exposed_name("fs", "caf\u00e9:\U0001f600", "__"), "fs__caf___")
        self.assertTrue(VALID.match(exposed_name("a", "\ud800<>", "__")))

    def test_exactly64Kept(self) -> None:
        tool = "t" * (MAX_NAME - len("b__"))
        name = exposed_name("b", tool, "__")
        self.assertEqual(name, "b__" + tool)
        self.assertEqual(len(name), 64)

    def test_longNameHashed(self) -> None:
        tool = "x" * 100
        name = exposed_name("backend", tool, "__")
        self.assertEqual(len(name), 64)
        self.assertTrue(VALID.match(name))
        digest = hashlib.sha256(f"backend__{tool}".encode()).hexdigest()[:8]
        self.assertEqual(name, ("backend__" + tool)[:55] + "_" + digest)
        self.assertEqual(exposed_name("backend", tool, "__"), name)

    def test_longNamesStayDistinct(self) -> None:
        prefix = "a_very_long_tool_name_" * 4
        names = {exposed_name("b", prefix + suffix, "__") for suffix in ["one", "two", "one.", "one_"]}
        self.assertEqual(len(names), 4)
        for n in names:
            self.assertLessEqual(len(n), 64)
            self.assertTrue(VALID.match(n))

    def test_hashUsesUnsanitizedName(self) -> None:
        """
        Two long names that sanitize alike still differ, because the hash is
        of the full original name.
        """
        base = "q" * 70
        self.assertNotEqual(exposed_name("b", base + ".x", "__"), exposed_name("b", base + "/x", "__"))


class CatalogTests(SynchronousTestCase):
    def test_deterministicOrder(self) -> None:
        a = backend("alpha", "zed", {"name": "add", "description": "d", "inputSchema": {"type": "object"}})
        b = backend("beta", "mul", "abs")
        one, two = Catalog("__"), Catalog("__")
        one.rebuild([b, a])
        b.tools.reverse()
        a.tools.reverse()
        two.rebuild([a, b])
        names = [t["name"] for t in one.listing]
        self.assertEqual(names, ["alpha__add", "alpha__zed", "beta__abs", "beta__mul"])
        self.assertEqual(one.listing, two.listing)
        self.assertEqual(list(one.entries), list(two.entries))

    def test_entries(self) -> None:
        tool = {"name": "get.time", "description": "now", "inputSchema": {"type": "object"}, "x-new": 1}
        b = backend("time", tool)
        catalog = Catalog("__")
        catalog.rebuild([b])
        entry = catalog.get("time__get_time")
        assert entry is not None
        self.assertIs(entry.backend, b)
        self.assertEqual(entry.tool, "get.time")
        self.assertEqual(
            entry.definition,
            {"name": "time__get_time", "description": "now", "inputSchema": {"type": "object"}, "x-new": 1},
        )
        self.assertEqual(catalog.listing, [entry.definition])
        # The backend's own definition is not touched.
        self.assertEqual(tool["name"], "get.time")
        self.assertIsNone(catalog.get("get.time"))

    def test_changed(self) -> None:
        b = backend("b", "one")
        catalog = Catalog("__")
        self.assertTrue(catalog.rebuild([b]))
        self.assertFalse(catalog.rebuild([b]))
        b.tools = [{"name": "one", "description": "new text"}]
        self.assertTrue(catalog.rebuild([b]))
        self.assertFalse(catalog.rebuild([b]))
        b.tools = []
        self.assertTrue(catalog.rebuild([b]))
        self.assertEqual(catalog.listing, [])
        self.assertFalse(catalog.rebuild([b]))

    def test_emptyIsUnchanged(self) -> None:
        self.assertFalse(Catalog("__").rebuild([]))

    def test_collisionKeepsFirstBackend(self) -> None:
        first = backend("a", "b__c")
        second = backend("a__b", "c")
        for order in ([second, first], [first, second]):
            catalog = Catalog("__")
            with capturedLogs() as events:
                catalog.rebuild(order)
            entry = catalog.get("a__b__c")
            assert entry is not None
            self.assertIs(entry.backend, first)
            self.assertEqual(entry.tool, "b__c")
            self.assertEqual(len(catalog.listing), 1)
            errors = [e for e in events if "collision" in e.get("log_format", "")]
            self.assertEqual(len(errors), 1)
            self.assertEqual(errors[0]["backend"], "a__b")
            self.assertEqual(errors[0]["other"], "a")

    def test_collisionWithinBackend(self) -> None:
        b = backend("b", "x_y", "x.y")
        catalog = Catalog("__")
        with capturedLogs():
            catalog.rebuild([b])
        self.assertEqual(len(catalog.listing), 1)
        entry = catalog.get("b__x_y")
        assert entry is not None
        # "x.y" sorts before "x_y".
        self.assertEqual(entry.tool, "x.y")

    def test_collisionsRememberedOnlyWhileTheyLast(self) -> None:
        """
        A collision is logged once while it lasts; the memory of it goes
        with it, so a backend that renames its colliding tools on every
        listing cannot grow the catalog's memory, and a collision that
        comes back is logged again.
        """
        b = backend("b")
        catalog = Catalog("__")
        with capturedLogs() as events:
            for i in range(100):
                b.tools = [{"name": f"t.{i}"}, {"name": f"t_{i}"}]
                catalog.rebuild([b])
                catalog.rebuild([b])
            b.tools = [{"name": "t.0"}, {"name": "t_0"}]
            catalog.rebuild([b])
        self.assertLessEqual(len(catalog._reported), 1)
        collisions = [e for e in events if "collision" in e.get("log_format", "")]
        self.assertEqual(len(collisions), 101)
