"""
Tests for L{twisted_mcp.dispatch.catalog}: exposed names and the merged catalog.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.catalog import MAX_REMEMBERED_URI, Catalog, Entry
from twisted_mcp.mcp.names import MAX_NAME, exposed_name

from .fakes import FakeBackend

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


def kinds(
    name: str,
    tools: list[Any] = [],  # noqa: B006 (never changed)
    prompts: list[Any] = [],  # noqa: B006
    resources: list[Any] = [],  # noqa: B006
    templates: list[Any] = [],  # noqa: B006
) -> FakeBackend:
    return FakeBackend(name, tools, prompts=prompts, resources=resources, resource_templates=templates)


def routed(catalog: Catalog, uri: str) -> tuple[str | None, str, str] | None:
    """L{Catalog.route_uri}'s answer with the entry's exposed key and the backend's name, to compare."""
    route = catalog.route_uri(uri)
    if route is None:
        return None
    entry, backend, original = route
    exposed = None if entry is None else entry.definition.get("uri", entry.definition.get("uriTemplate"))
    return exposed, backend.name, original


class EntryTests(SynchronousTestCase):
    def test_toolIsOriginal(self) -> None:
        """C{Entry.tool}, which the tools code reads, is the backend's own name."""
        entry = Entry(Backend("b"), "get.time", {"name": "b__get_time"})
        self.assertEqual(entry.tool, "get.time")
        self.assertEqual(entry.original, "get.time")


class PromptTests(SynchronousTestCase):
    def test_namedLikeTools(self) -> None:
        prompt = {"name": "simple.prompt", "description": "d", "arguments": [{"name": "x", "required": True}]}
        b = kinds("everything", prompts=[prompt, "complex_prompt"])
        catalog = Catalog("__")
        self.assertEqual(catalog.rebuild([b]), {"prompts"})
        self.assertEqual([p["name"] for p in catalog.prompts.listing], ["everything__complex_prompt", "everything__simple_prompt"])
        entry = catalog.prompts.get("everything__simple_prompt")
        assert entry is not None
        self.assertIs(entry.backend, b)
        self.assertEqual(entry.original, "simple.prompt")
        self.assertEqual(entry.definition, {**prompt, "name": "everything__simple_prompt"})
        self.assertEqual(prompt["name"], "simple.prompt")
        # Prompts are not tools.
        self.assertEqual(catalog.listing, [])
        self.assertIsNone(catalog.get("everything__simple_prompt"))

    def test_longNamesLikeTools(self) -> None:
        long = "p" * 100
        catalog = Catalog("__")
        catalog.rebuild([kinds("b", prompts=[long])])
        (name,) = catalog.prompts.entries
        self.assertEqual(name, exposed_name("b", long, "__"))
        self.assertTrue(VALID.match(name))

    def test_collisionKeepsFirstBackend(self) -> None:
        first = kinds("a", prompts=["b__c"])
        second = kinds("a__b", prompts=["c"])
        catalog = Catalog("__")
        with capturedLogs() as events:
            catalog.rebuild([second, first])
            catalog.rebuild([second, first])
        entry = catalog.prompts.get("a__b__c")
        assert entry is not None
        self.assertIs(entry.backend, first)
        errors = [e for e in events if "collision" in e.get("log_format", "")]
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0]["log_format"].startswith("prompt name collision"))
        self.assertEqual((errors[0]["prompt"], errors[0]["other"], errors[0]["other_prompt"]), ("c", "a", "b__c"))

    def test_toolAndPromptOfTheSameNameDoNotCollide(self) -> None:
        catalog = Catalog("__")
        with capturedLogs() as events:
            catalog.rebuild([kinds("b", tools=["x"], prompts=["x"])])
        self.assertEqual(list(catalog.entries), ["b__x"])
        self.assertEqual(list(catalog.prompts.entries), ["b__x"])
        self.assertEqual([e for e in events if "collision" in e.get("log_format", "")], [])

    def test_malformedSkipped(self) -> None:
        """Definitions without a name are left out; the others are listed."""
        catalog = Catalog("__")
        catalog.rebuild([kinds("b", prompts=[{"name": ""}, {"name": 3}, {"description": "x"}, "ok"])])
        self.assertEqual(list(catalog.prompts.entries), ["b__ok"])


class ResourceTests(SynchronousTestCase):
    def test_uniqueKeptAsGiven(self) -> None:
        resource = {"uri": "test://static/resource/1", "name": "Resource 1", "mimeType": "text/plain"}
        a = kinds("everything", resources=[resource, "test://static/resource/2"])
        b = kinds("files", resources=["file:///etc/hosts"])
        catalog = Catalog("__")
        self.assertEqual(catalog.rebuild([b, a]), {"resources"})
        self.assertEqual(
            [r["uri"] for r in catalog.resources.listing],
            ["file:///etc/hosts", "test://static/resource/1", "test://static/resource/2"],
        )
        entry = catalog.resources.get("test://static/resource/1")
        assert entry is not None
        self.assertEqual(entry.definition, resource)
        self.assertIsNot(entry.definition, resource)
        self.assertEqual(routed(catalog, "file:///etc/hosts"), ("file:///etc/hosts", "files", "file:///etc/hosts"))

    def test_sharedUriPrefixedForEveryBackend(self) -> None:
        """
        Two backends listing the same URI: both copies are shown in the
        gateway's form, each maps back to its backend and the original URI,
        and the URI as given is ambiguous.
        """
        a = kinds("a", resources=[{"uri": "file:///x", "name": "a's"}])
        b = kinds("b", resources=[{"uri": "file:///x", "name": "b's"}, "file:///y"])
        catalog = Catalog("__")
        with capturedLogs() as events:
            catalog.rebuild([b, a])
            catalog.rebuild([a, b])
        self.assertEqual(
            [(r["uri"], r["name"]) for r in catalog.resources.listing],
            [("file:///y", "file:///y"), ("twisted-mcp://a/file:///x", "a's"), ("twisted-mcp://b/file:///x", "b's")],
        )
        self.assertEqual(routed(catalog, "twisted-mcp://a/file:///x"), ("twisted-mcp://a/file:///x", "a", "file:///x"))
        self.assertEqual(routed(catalog, "twisted-mcp://b/file:///x"), ("twisted-mcp://b/file:///x", "b", "file:///x"))
        self.assertIsNone(catalog.route_uri("file:///x"))
        self.assertEqual(
            catalog.why_unrouted("file:///x"),
            "the URI 'file:///x' could belong to several servers (a, b); "
            "ask for one of: twisted-mcp://a/file:///x, twisted-mcp://b/file:///x",
        )
        shared = [e for e in events if "several servers" in e.get("log_format", "")]
        self.assertEqual(len(shared), 1)
        self.assertEqual((shared[0]["uri"], shared[0]["backends"]), ("file:///x", "a, b"))

    def test_whyUnroutedNamesOnlyVisibleCandidates(self) -> None:
        catalog = Catalog("__")
        catalog.rebuild([kinds("a", resources=["file:///x"]), kinds("b", resources=["file:///x"])])
        why = catalog.why_unrouted("file:///x", visible=lambda backend, uri: backend.name == "a")
        self.assertEqual(why, "the URI 'file:///x' is not unique on this gateway; ask for twisted-mcp://a/file:///x")
        why = catalog.why_unrouted("file:///x", visible=lambda backend, uri: False)
        self.assertTrue(why.startswith("no server lists the resource 'file:///x'"), why)

    def test_gatewaySchemeAlwaysPrefixed(self) -> None:
        """A backend's URI in the gateway's own scheme (a gateway behind this one) is prefixed too."""
        inner = kinds("inner", resources=["twisted-mcp://other/x"])
        other = kinds("other", resources=["x"])
        catalog = Catalog("__")
        catalog.rebuild([inner, other])
        self.assertEqual(sorted(catalog.resources.entries), ["twisted-mcp://inner/twisted-mcp://other/x", "x"])
        self.assertEqual(routed(catalog, "twisted-mcp://other/x"), ("x", "other", "x"))
        self.assertEqual(
            routed(catalog, "twisted-mcp://inner/twisted-mcp://other/x"),
            ("twisted-mcp://inner/twisted-mcp://other/x", "inner", "twisted-mcp://other/x"),
        )

    def test_repeatWithinBackend(self) -> None:
        catalog = Catalog("__")
        catalog.rebuild([kinds("a", resources=[{"uri": "x://1", "name": "first"}, {"uri": "x://1", "name": "second"}])])
        self.assertEqual(catalog.resources.listing, [{"uri": "x://1", "name": "first"}])

    def test_collisionGoesAway(self) -> None:
        """When the second backend stops listing the URI, the first's is shown as given again."""
        a, b = kinds("a", resources=["x://1"]), kinds("b", resources=["x://1"])
        catalog = Catalog("__")
        catalog.rebuild([a, b])
        b.resources = []
        self.assertEqual(catalog.rebuild([a, b]), {"resources"})
        self.assertEqual(list(catalog.resources.entries), ["x://1"])
        self.assertEqual(routed(catalog, "x://1"), ("x://1", "a", "x://1"))


class TemplateTests(SynchronousTestCase):
    def test_uniqueKeptAsGiven(self) -> None:
        template = {"uriTemplate": "test://dynamic/resource/{id}", "name": "Dynamic", "mimeType": "text/plain"}
        catalog = Catalog("__")
        self.assertEqual(
            catalog.rebuild([kinds("everything", templates=[template]), kinds("files", templates=["file:///{path}"])]),
            {"resourceTemplates"},
        )
        self.assertEqual(
            [t["uriTemplate"] for t in catalog.templates.listing], ["file:///{path}", "test://dynamic/resource/{id}"]
        )
        self.assertEqual(
            routed(catalog, "test://dynamic/resource/7"), ("test://dynamic/resource/{id}", "everything", "test://dynamic/resource/7")
        )
        self.assertEqual(routed(catalog, "file:///a/b"), ("file:///{path}", "files", "file:///a/b"))

    def test_overlappingPrefixed(self) -> None:
        """
        Templates of two backends whose literal prefixes could start a common
        URI are both shown in the gateway's form, and a URI made from either
        goes to its backend.
        """
        a = kinds("a", templates=["file:///{path}", "a://{x}"])
        b = kinds("b", templates=["file:///home/{user}"])
        catalog = Catalog("__")
        catalog.rebuild([a, b])
        self.assertEqual(
            [t["uriTemplate"] for t in catalog.templates.listing],
            ["a://{x}", "twisted-mcp://a/file:///{path}", "twisted-mcp://b/file:///home/{user}"],
        )
        self.assertEqual(routed(catalog, "twisted-mcp://a/file:///home/x"), ("twisted-mcp://a/file:///{path}", "a", "file:///home/x"))
        self.assertEqual(
            routed(catalog, "twisted-mcp://b/file:///home/x"), ("twisted-mcp://b/file:///home/{user}", "b", "file:///home/x")
        )
        # As given: matched by both backends' own templates, so ambiguous ...
        self.assertIsNone(catalog.route_uri("file:///home/x"))
        self.assertIn("twisted-mcp://a/file:///home/x, twisted-mcp://b/file:///home/x", catalog.why_unrouted("file:///home/x"))
        # ... unless only one of them matches.
        self.assertEqual(routed(catalog, "file:///etc/x"), ("twisted-mcp://a/file:///{path}", "a", "file:///etc/x"))

    def test_sameBackendMayOverlap(self) -> None:
        catalog = Catalog("__")
        catalog.rebuild([kinds("a", templates=["file:///{path}", "file:///home/{user}"])])
        self.assertEqual(sorted(catalog.templates.entries), ["file:///home/{user}", "file:///{path}"])

    def test_templateStartingAnotherBackendsUri(self) -> None:
        """
        A template that could make a URI another backend lists is shown in
        the gateway's form (the other backend's resource keeps its URI).
        """
        a = kinds("a", templates=["file:///{path}"])
        b = kinds("b", resources=["file:///etc/hosts"])
        catalog = Catalog("__")
        self.assertEqual(catalog.rebuild([a, b]), {"resources", "resourceTemplates"})
        self.assertEqual(list(catalog.templates.entries), ["twisted-mcp://a/file:///{path}"])
        self.assertEqual(list(catalog.resources.entries), ["file:///etc/hosts"])
        self.assertEqual(routed(catalog, "file:///etc/hosts"), ("file:///etc/hosts", "b", "file:///etc/hosts"))
        self.assertEqual(
            routed(catalog, "twisted-mcp://a/file:///etc/hosts"), ("twisted-mcp://a/file:///{path}", "a", "file:///etc/hosts")
        )

    def test_identicalTemplates(self) -> None:
        catalog = Catalog("__")
        catalog.rebuild([kinds("a", templates=["x://{id}"]), kinds("b", templates=["x://{id}"])])
        self.assertEqual(sorted(catalog.templates.entries), ["twisted-mcp://a/x://{id}", "twisted-mcp://b/x://{id}"])

    def test_invalidListedAndLogged(self) -> None:
        """
        A template that is not valid RFC 6570 is listed as given and logged
        once; URIs can reach it only in the gateway's form.
        """
        b = kinds("b", templates=["x://{id"])
        catalog = Catalog("__")
        with capturedLogs() as events:
            catalog.rebuild([b])
            catalog.rebuild([b])
        self.assertEqual(list(catalog.templates.entries), ["x://{id"])
        self.assertIsNone(catalog.route_uri("x://{id"))
        self.assertEqual(routed(catalog, "twisted-mcp://b/x://1"), (None, "b", "x://1"))
        logged = [e for e in events if "not a valid URI template" in e.get("log_format", "")]
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged[0]["why"], "the expression at character 5 is not closed with '}'")


class RouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.a = kinds("a", resources=["x://listed", "twisted-mcp://b/z"], templates=["x://{id}"])
        self.b = kinds("b", resources=["y://listed"], templates=["y://t/{id}"])
        self.catalog = Catalog("__")
        self.catalog.rebuild([self.a, self.b])

    def test_listedFirst(self) -> None:
        """A listed URI wins over the template that also matches it."""
        self.assertEqual(routed(self.catalog, "x://listed"), ("x://listed", "a", "x://listed"))

    def test_gatewayFormOfExistingBackend(self) -> None:
        """
        The gateway's form goes to the backend it names, with the entry of
        that backend's resource or template when one has that URI.
        """
        self.assertEqual(routed(self.catalog, "twisted-mcp://b/y://listed"), ("y://listed", "b", "y://listed"))
        self.assertEqual(routed(self.catalog, "twisted-mcp://b/y://t/9"), ("y://t/{id}", "b", "y://t/9"))
        self.assertEqual(routed(self.catalog, "twisted-mcp://b/x://listed"), (None, "b", "x://listed"))
        self.assertEqual(routed(self.catalog, "twisted-mcp://a/x://listed"), ("x://listed", "a", "x://listed"))

    def test_gatewayFormOfUnknownBackend(self) -> None:
        self.assertIsNone(self.catalog.route_uri("twisted-mcp://c/x://1"))
        self.assertEqual(
            self.catalog.why_unrouted("twisted-mcp://c/x://1"),
            "the URI 'twisted-mcp://c/x://1' names the server 'c', which this gateway does not have",
        )
        self.assertIsNone(self.catalog.route_uri("twisted-mcp://a"))
        self.assertEqual(
            self.catalog.why_unrouted("Twisted-MCP:a"),
            "the URI 'Twisted-MCP:a' is not of the form twisted-mcp://<server>/<the server's own URI>",
        )

    def test_listedBeforeGatewayForm(self) -> None:
        """
        A backend's listed URI in the gateway's scheme is shown prefixed, so
        the gateway's form, which names backend b, goes to b.
        """
        self.assertEqual(routed(self.catalog, "twisted-mcp://b/z"), (None, "b", "z"))
        self.assertEqual(
            routed(self.catalog, "twisted-mcp://a/twisted-mcp://b/z"),
            ("twisted-mcp://a/twisted-mcp://b/z", "a", "twisted-mcp://b/z"),
        )

    def test_template(self) -> None:
        self.assertEqual(routed(self.catalog, "x://7"), ("x://{id}", "a", "x://7"))
        self.assertEqual(routed(self.catalog, "y://t/7"), ("y://t/{id}", "b", "y://t/7"))

    def test_unknown(self) -> None:
        self.assertIsNone(self.catalog.route_uri("z://1"))
        self.assertEqual(
            self.catalog.why_unrouted("z://1"),
            "no server lists the resource 'z://1' or has a resource template that matches it (a URI that "
            "appeared only in a result can be read back while it is among the last 10000 such URIs)",
        )

    def test_notAString(self) -> None:
        for uri in [None, 3, ["x://1"], {"uri": "x://1"}]:
            self.assertIsNone(self.catalog.route_uri(uri))  # type: ignore[arg-type]
            self.assertEqual(
                self.catalog.why_unrouted(uri),  # type: ignore[arg-type]
                f"a resource URI is a string, not {type(uri).__name__}",
            )

    def test_whyQuotesLongUrisShort(self) -> None:
        why = self.catalog.why_unrouted("z://" + "q" * 10_000)
        self.assertLess(len(why), 400)
        self.assertIn("q\u2026'", why)

    def test_seenInResult(self) -> None:
        """A URI that came out of a backend's result as given is routed back to it."""
        shown = self.catalog.expose_uri(self.b, "z://from-b")
        self.assertEqual(shown, "z://from-b")
        self.assertEqual(routed(self.catalog, "z://from-b"), (None, "b", "z://from-b"))

    def test_seenAndTemplateOfAnotherBackendAmbiguous(self) -> None:
        """
        A URI remembered from b's results that a's template (added later)
        also matches is routed to neither.
        """
        self.catalog.expose_uri(self.b, "w://1")
        self.a.resource_templates = [{"uriTemplate": "w://{id}", "name": "w"}]
        self.catalog.rebuild([self.a, self.b])
        self.assertIsNone(self.catalog.route_uri("w://1"))
        self.assertIn("ask for one of: twisted-mcp://a/w://1, twisted-mcp://b/w://1", self.catalog.why_unrouted("w://1"))

    def test_backendGone(self) -> None:
        """URIs remembered for a backend that is no longer configured route nowhere."""
        self.catalog.expose_uri(self.b, "z://from-b")
        self.catalog.rebuild([self.a])
        self.assertIsNone(self.catalog.route_uri("z://from-b"))
        self.assertIsNone(self.catalog.route_uri("twisted-mcp://b/y://listed"))
        self.assertIsNone(self.catalog.route_uri("y://listed"))


class ExposeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.a = kinds("a", resources=["shared://1", "a://only"], templates=["t://{id}"])
        self.b = kinds("b", resources=["shared://1"])
        self.catalog = Catalog("__")
        self.catalog.rebuild([self.a, self.b])

    def test_exposeUri(self) -> None:
        expose = self.catalog.expose_uri
        self.assertEqual(expose(self.a, "a://only"), "a://only")  # listed, as given
        self.assertEqual(expose(self.a, "shared://1"), "twisted-mcp://a/shared://1")  # listed, prefixed
        self.assertEqual(expose(self.b, "shared://1"), "twisted-mcp://b/shared://1")
        self.assertEqual(expose(self.b, "a://only"), "twisted-mcp://b/a://only")  # a lists it
        self.assertEqual(expose(self.b, "t://5"), "twisted-mcp://b/t://5")  # a's template matches it
        self.assertEqual(expose(self.a, "t://5"), "t://5")  # a's own template
        self.assertEqual(expose(self.b, "twisted-mcp://a/x"), "twisted-mcp://b/twisted-mcp://a/x")
        self.assertEqual(expose(self.b, "new://1"), "new://1")  # nothing claims it: as given, remembered
        self.assertEqual(expose(self.a, "new://1"), "twisted-mcp://a/new://1")  # b's, remembered
        self.assertEqual(expose(self.b, "new://1"), "new://1")

    def test_toolResult(self) -> None:
        result = {
            "content": [
                {"type": "text", "text": "shared://1"},
                {"type": "resource_link", "uri": "shared://1", "name": "r", "_meta": {"k": 1}},
                {"type": "resource", "resource": {"uri": "shared://1", "text": "hello", "mimeType": "text/plain"}},
                {"type": "resource_link", "uri": "a://only", "name": "kept"},
                {"type": "image", "data": "AA==", "mimeType": "image/png"},
            ],
            "structuredContent": {"uri": "shared://1"},
            "isError": False,
        }
        before = copy.deepcopy(result)
        shown = self.catalog.expose_content(self.a, result)
        self.assertEqual(result, before)
        content = shown["content"]
        self.assertEqual(content[1], {"type": "resource_link", "uri": "twisted-mcp://a/shared://1", "name": "r", "_meta": {"k": 1}})
        self.assertEqual(
            content[2], {"type": "resource", "resource": {"uri": "twisted-mcp://a/shared://1", "text": "hello", "mimeType": "text/plain"}}
        )
        for i in (0, 3, 4):
            self.assertIs(content[i], result["content"][i])
        self.assertIs(shown["structuredContent"], result["structuredContent"])
        self.assertEqual(shown["isError"], False)
        self.assertEqual(routed(self.catalog, content[1]["uri"]), ("twisted-mcp://a/shared://1", "a", "shared://1"))

    def test_promptResult(self) -> None:
        result = {
            "description": "d",
            "messages": [
                {"role": "user", "content": {"type": "text", "text": "hi"}},
                {"role": "user", "content": {"type": "resource", "resource": {"uri": "shared://1", "blob": "AA=="}}},
                {"role": "assistant", "content": {"type": "resource_link", "uri": "b://made", "name": "n"}},
            ],
        }
        before = copy.deepcopy(result)
        shown = self.catalog.expose_content(self.b, result)
        self.assertEqual(result, before)
        self.assertIs(shown["messages"][0], result["messages"][0])
        self.assertEqual(shown["messages"][1]["content"]["resource"], {"uri": "twisted-mcp://b/shared://1", "blob": "AA=="})
        self.assertIs(shown["messages"][2], result["messages"][2])  # nothing claims it: as given
        self.assertEqual(routed(self.catalog, "b://made"), (None, "b", "b://made"))

    def test_readResult(self) -> None:
        result = {"contents": [{"uri": "shared://1", "text": "x"}, {"uri": "t://2", "blob": "AA=="}, {"text": "no uri"}]}
        before = copy.deepcopy(result)
        shown = self.catalog.expose_content(self.a, result)
        self.assertEqual(result, before)
        self.assertEqual(shown["contents"][0], {"uri": "twisted-mcp://a/shared://1", "text": "x"})
        self.assertIs(shown["contents"][1], result["contents"][1])
        self.assertIs(shown["contents"][2], result["contents"][2])

    def test_unchangedIsTheSameObject(self) -> None:
        for value in [
            {"content": [{"type": "text", "text": "x"}, {"type": "resource_link", "uri": "a://only"}]},
            {"messages": [{"role": "user", "content": {"type": "text", "text": "x"}}]},
            {"contents": [{"uri": "a://only", "text": ""}]},
            {"structuredContent": {"content": [{"type": "resource_link", "uri": "shared://1"}]}},
            {},
            None,
            "text",
            [{"type": "resource_link", "uri": "shared://1"}],
        ]:
            self.assertIs(self.catalog.expose_content(self.a, value), value)

    def test_malformedLeftAlone(self) -> None:
        """Shapes other than the documented ones pass through as they are."""
        for value in [
            {"content": "x"},
            {"content": [None, 3, {"type": "resource_link", "uri": 5}, {"type": "resource", "resource": "x"}]},
            {"messages": [None, {"content": None}, {"content": [{"type": "resource_link", "uri": "shared://1"}]}]},
            {"contents": [None, {"uri": None}]},
        ]:
            self.assertIs(self.catalog.expose_content(self.a, value), value)

    def test_twoCopiesOfOneServer(self) -> None:
        """
        Two copies of server-everything (say, over stdio and over HTTP): every
        resource and template is shown in the gateway's form, and a link to a
        dynamic resource in one copy's tool result leads back to that copy.
        """
        listings = {
            "resources": ["demo://resource/static/document/architecture.md"],
            "templates": ["demo://resource/dynamic/text/{resourceId}", "demo://resource/dynamic/blob/{resourceId}"],
        }
        stdio, http = kinds("stdio", **listings), kinds("http", **listings)
        catalog = Catalog("__")
        catalog.rebuild([stdio, http])
        self.assertEqual(
            [r["uri"] for r in catalog.resources.listing],
            [
                "twisted-mcp://http/demo://resource/static/document/architecture.md",
                "twisted-mcp://stdio/demo://resource/static/document/architecture.md",
            ],
        )
        self.assertTrue(all(t["uriTemplate"].startswith("twisted-mcp://") for t in catalog.templates.listing))
        result = {"content": [{"type": "resource_link", "uri": "demo://resource/dynamic/text/3", "name": "3"}]}
        (link,) = catalog.expose_content(http, result)["content"]
        self.assertEqual(link["uri"], "twisted-mcp://http/demo://resource/dynamic/text/3")
        self.assertEqual(
            routed(catalog, link["uri"]),
            ("twisted-mcp://http/demo://resource/dynamic/text/{resourceId}", "http", "demo://resource/dynamic/text/3"),
        )
        self.assertIsNone(catalog.route_uri("demo://resource/dynamic/text/3"))

    def test_lruBound(self) -> None:
        """
        Only the last C{remembered} URIs seen in results are remembered; a
        route refreshes one.
        """
        catalog = Catalog("__", remembered=3)
        a = kinds("a")
        catalog.rebuild([a])
        for i in range(3):
            catalog.expose_uri(a, f"z://{i}")
        self.assertIsNotNone(catalog.route_uri("z://0"))  # now the most recent
        catalog.expose_uri(a, "z://3")
        self.assertEqual(len(catalog._seen), 3)
        self.assertIsNone(catalog.route_uri("z://1"))
        for uri in ["z://0", "z://2", "z://3"]:
            self.assertIsNotNone(catalog.route_uri(uri), uri)

    def test_longUriPrefixed(self) -> None:
        """A URI too long to remember is shown in the gateway's form, which needs no memory."""
        a = self.a
        long = "z://" + "q" * MAX_REMEMBERED_URI
        self.assertEqual(self.catalog.expose_uri(a, long), "twisted-mcp://a/" + long)
        self.assertNotIn(long, self.catalog._seen)
        self.assertEqual(routed(self.catalog, "twisted-mcp://a/" + long), (None, "a", long))
        # Matched by its backend's template, it needs no memory either.
        long = "t://" + "q" * MAX_REMEMBERED_URI
        self.assertEqual(self.catalog.expose_uri(a, long), long)


class RebuildTests(SynchronousTestCase):
    def test_changedKinds(self) -> None:
        b = kinds("b")
        catalog = Catalog("__")
        self.assertEqual(catalog.rebuild([b]), frozenset())
        steps: list[tuple[str, Any, str]] = [
            ("tools", [{"name": "t"}], "tools"),
            ("prompts", [{"name": "p"}], "prompts"),
            ("resources", [{"uri": "r://1", "name": "r"}], "resources"),
            ("resource_templates", [{"uriTemplate": "r://{id}", "name": "t"}], "resourceTemplates"),
            ("resources", [{"uri": "r://1", "name": "r", "description": "new"}], "resources"),
        ]
        for attribute, value, kind in steps:
            setattr(b, attribute, value)
            self.assertEqual(catalog.rebuild([b]), {kind}, attribute)
            self.assertEqual(catalog.rebuild([b]), frozenset(), attribute)

    def test_anotherBackendChangesExposedUris(self) -> None:
        """A backend that starts listing a URI changes how the other's copy is shown: both kinds report it."""
        a, b = kinds("a", resources=["x://1"], templates=["x://{id}"]), kinds("b")
        catalog = Catalog("__")
        catalog.rebuild([a, b])
        b.resources = [{"uri": "x://1", "name": "x"}]
        self.assertEqual(catalog.rebuild([a, b]), {"resources", "resourceTemplates"})
        self.assertEqual(list(catalog.templates.entries), ["twisted-mcp://a/x://{id}"])

    def test_backendWithoutNewKinds(self) -> None:
        """A backend that has only tools (no prompts or resources attributes) still works."""
        catalog = Catalog("__")
        self.assertEqual(catalog.rebuild([backend("old", "t")]), {"tools"})

    def test_sortedListings(self) -> None:
        one = kinds("z", prompts=["b", "a"], resources=["r://b", "r://a", "q://shared"], templates=["t://b/{x}", "t://a/{x}"])
        two = kinds("y", resources=["q://shared"])
        catalog = Catalog("__")
        catalog.rebuild([one, two])
        self.assertEqual([p["name"] for p in catalog.prompts.listing], ["z__a", "z__b"])
        self.assertEqual(
            [r["uri"] for r in catalog.resources.listing],
            ["r://a", "r://b", "twisted-mcp://y/q://shared", "twisted-mcp://z/q://shared"],
        )
        self.assertEqual([t["uriTemplate"] for t in catalog.templates.listing], ["t://a/{x}", "t://b/{x}"])
