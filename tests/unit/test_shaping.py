"""
Per-backend shaping (design §2.1, §3.1): L{twisted_mcp.dispatch.shaping}
on its own, then the shaped catalog (L{twisted_mcp.dispatch.catalog}):
filters, renames, overrides, the read filter on URIs, the generation, and
a catalog byte-identical to the unshaped one when nothing is configured.
"""

from __future__ import annotations

import copy
import json
from types import MappingProxyType
from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import Backend, shaping_of
from twisted_mcp.config.loader import build
from twisted_mcp.config.models import Shaping
from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.dispatch.shaping import kept, overridden, shape, uri_allowed

GITHUB_TOOLS = [
    {"name": "create_or_update_file", "description": "Create or update a file", "inputSchema": {"type": "object"}},
    {"name": "delete_file", "description": "Delete a file"},
    {"name": "delete_branch", "description": "Delete a branch"},
    {"name": "fork_repository", "description": "Fork"},
    {
        "name": "search_repositories",
        "description": "Search",
        "annotations": {"readOnlyHint": False, "destructiveHint": False, "title": "server's"},
    },
]


def backend(name: str, listed: list[dict[str, Any]] | None = None, **shaping: Shaping) -> Backend:
    b = Backend(name)
    b.tools = copy.deepcopy(listed or [])
    b.shaping = MappingProxyType(shaping)
    return b


class FilterTests(SynchronousTestCase):
    def test_denyBeatsAllow(self) -> None:
        shaping = Shaping(allow=("delete_*", "get_*"), deny=("delete_branch",))
        self.assertTrue(kept(shaping, "delete_file"))
        self.assertFalse(kept(shaping, "delete_branch"))
        self.assertFalse(kept(shaping, "fork_repository"))
        self.assertTrue(kept(None, "anything"))

    def test_bareNameIsTheName(self) -> None:
        """A glob without wildcards is the tool's name, never a backend's (roles read it so)."""
        shaping = Shaping(deny=("github",))
        self.assertTrue(kept(shaping, "search"))
        self.assertFalse(kept(shaping, "github"))

    def test_uriGlobCrossesSlashes(self) -> None:
        shaping = Shaping(allow=("repo://*",), deny=("repo://private/*",))
        self.assertTrue(kept(shaping, "repo://a/b/readme"))
        self.assertFalse(kept(shaping, "repo://private/keys"))
        self.assertFalse(kept(shaping, "file:///etc/passwd"))

    def test_uriAllowedThroughItsTemplate(self) -> None:
        shaping = Shaping(allow=("repo://{name}",), deny=("repo://secret",))
        self.assertTrue(uri_allowed(shaping, "repo://readme", "repo://{name}"))
        self.assertFalse(uri_allowed(shaping, "repo://readme"))
        self.assertFalse(uri_allowed(shaping, "repo://secret", "repo://{name}"))
        self.assertTrue(uri_allowed(None, "anything"))

    def test_uriDenySeesEveryForm(self) -> None:
        """A deny sees the URI decoded and resolved, as the roles' deny does; an allow must hold once resolved."""
        shaping = Shaping(deny=("file:///secret/*",))
        template = "file:///{+path}"
        self.assertTrue(uri_allowed(shaping, "file:///pub/k", template))
        for uri in (
            "file:///secret/k",
            "file:///pub/../secret/k",
            "file:///%73ecret/k",
            "file:///./secret/k",
            "file:////secret/k",
            "file:///pub/%2e%2e/secret/k",
            "FILE:///Secret/k",
        ):
            self.assertFalse(uri_allowed(shaping, uri, template), uri)
        allow = Shaping(allow=("file:///pub/*",))
        self.assertTrue(uri_allowed(allow, "file:///pub/x"))
        self.assertFalse(uri_allowed(allow, "file:///pub/../x"))
        self.assertFalse(uri_allowed(Shaping(allow=("file:///pub/{+path}",)), "file:///pub/../x", "file:///pub/{+path}"))

    def test_denyFoldsCaseAndDashes(self) -> None:
        """C{deny: ["delete_*"]} removes C{Delete_All} and C{delete-all}, as a role's deny would; allow does not fold."""
        shaping = Shaping(deny=("delete_*",))
        for name in ("delete_all", "Delete_All", "delete-all", "DELETE-ALL"):
            self.assertFalse(kept(shaping, name), name)
        self.assertTrue(kept(shaping, "deleted"))
        self.assertFalse(kept(Shaping(allow=("get_*",)), "Get_x"))


class ShapeTests(SynchronousTestCase):
    def test_withoutShapingEverythingAsItIs(self) -> None:
        items = copy.deepcopy(GITHUB_TOOLS)
        out, outcome = shape(None, items, "name")
        self.assertEqual([s.definition for s in out], items)
        self.assertTrue(all(s.definition is item and s.upstream is None for s, item in zip(out, items, strict=True)))
        self.assertEqual((outcome.listed, outcome.kept, outcome.filtered), (5, 5, ()))

    def test_filterRenameOverride(self) -> None:
        shaping = Shaping(
            deny=("delete_*", "fork_repository"),
            rename={"create_or_update_file": "put_file"},
            overrides={
                "search_repositories": {
                    "title": "Search GitHub repositories",
                    "annotations": {"readOnlyHint": True, "title": None, "openWorldHint": True},
                }
            },
        )
        items = copy.deepcopy(GITHUB_TOOLS)
        out, outcome = shape(shaping, items, "name")
        self.assertEqual([s.original for s in out], ["create_or_update_file", "search_repositories"])
        put, search = out
        self.assertEqual(put.definition["name"], "put_file")
        self.assertEqual(put.upstream, GITHUB_TOOLS[0])
        self.assertEqual(
            search.definition,
            {
                "name": "search_repositories",
                "description": "Search",
                "title": "Search GitHub repositories",
                "annotations": {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": True},
            },
        )
        self.assertEqual(search.upstream, GITHUB_TOOLS[4])
        self.assertEqual(items, GITHUB_TOOLS, "the server's definitions are not changed")
        self.assertEqual(outcome.filtered, ("delete_branch", "delete_file", "fork_repository"))
        self.assertEqual(dict(outcome.renamed), {"create_or_update_file": "put_file"})
        self.assertEqual(dict(outcome.overridden), {"search_repositories": ("annotations", "title")})
        self.assertEqual((outcome.listed, outcome.kept), (5, 2))

    def test_annotationsAddedWhereTheServerHasNone(self) -> None:
        self.assertEqual(overridden({"name": "t"}, {"annotations": {"readOnlyHint": True}}), {"name": "t", "annotations": {"readOnlyHint": True}})
        self.assertEqual(overridden({"name": "t"}, {"annotations": {"readOnlyHint": None}}), {"name": "t"})

    def test_resourcesOverriddenNotRenamed(self) -> None:
        shaping = Shaping(overrides={"repo://readme": {"name": "readme", "description": "The README"}})
        out, _ = shape(shaping, [{"uri": "repo://readme", "name": "README.md"}], "uri")
        self.assertEqual(out[0].definition, {"uri": "repo://readme", "name": "readme", "description": "The README"})


class ShapedCatalogTests(SynchronousTestCase):
    def test_noShapingIsByteIdentical(self) -> None:
        """A backend whose config sets no shaping key gives the catalog of today, byte for byte."""
        config = build({"mcpServers": {"github": {"command": "npx"}}}, "test")
        plain, configured = Backend("github"), backend("github", GITHUB_TOOLS)
        plain.tools = copy.deepcopy(GITHUB_TOOLS)
        configured.priority, configured.shaping = shaping_of(config.servers[0])
        one, two = Catalog("__"), Catalog("__")
        one.rebuild([plain])
        two.rebuild([configured])
        self.assertEqual(json.dumps(one.listing, sort_keys=False), json.dumps(two.listing, sort_keys=False))
        self.assertEqual(one.generation, two.generation)
        self.assertTrue(all(e.upstream is None for e in two.entries.values()))
        self.assertEqual(two.shaped, {})

    def test_shapedNamesAndOriginals(self) -> None:
        b = backend(
            "github",
            GITHUB_TOOLS,
            tools=Shaping(deny=("delete_*",), rename={"create_or_update_file": "put_file"}, overrides={"fork_repository": {"description": "Fork it"}}),
        )
        catalog = Catalog("__")
        catalog.rebuild([b])
        self.assertEqual(sorted(catalog.entries), ["github__fork_repository", "github__put_file", "github__search_repositories"])
        put = catalog.entries["github__put_file"]
        self.assertEqual(put.original, "create_or_update_file", "the backend still receives its own name")
        self.assertEqual(put.definition["name"], "github__put_file")
        self.assertEqual(put.upstream, GITHUB_TOOLS[0])
        self.assertEqual(catalog.entries["github__fork_repository"].definition["description"], "Fork it")
        self.assertIsNone(catalog.entries["github__search_repositories"].upstream)
        outcome = catalog.shaped["github"]["tools"]
        self.assertEqual(outcome.filtered, ("delete_branch", "delete_file"))

    def test_promptsShapedToo(self) -> None:
        b = backend("g", prompts=Shaping(deny=("secret*",), rename={"greet": "hello"}))
        b.prompts = [{"name": "greet"}, {"name": "secret_plan"}]
        catalog = Catalog("__")
        catalog.rebuild([b])
        self.assertEqual(sorted(catalog.prompts.entries), ["g__hello"])
        self.assertEqual(catalog.prompts.entries["g__hello"].original, "greet")

    def test_aRenameOrOverrideOfAnUnlistedNameIsWarnedOfOnce(self) -> None:
        """A typo in rename or overrides is logged at the rebuild, once while it lasts; a template's override is no typo."""
        b = backend(
            "g",
            [{"name": "echo"}],
            tools=Shaping(rename={"ecoh": "say"}, overrides={"echo": {"title": "E"}, "gone": {"title": "G"}}),
            resources=Shaping(overrides={"repo://{path}": {"title": "T"}, "repo://typo": {"title": "X"}}),
        )
        b.resources = [{"uri": "repo://readme", "name": "r"}]
        b.resource_templates = [{"uriTemplate": "repo://{path}", "name": "t"}]
        catalog = Catalog("__")

        def warned() -> list[tuple[str, str]]:
            with capturedLogs() as events:
                catalog.rebuild([b])
            return [(e["section"], e["own"]) for e in events if "does not list" in e["log_format"]]

        self.assertEqual(warned(), [("tools", "ecoh"), ("tools", "gone"), ("resources", "repo://typo")])
        self.assertEqual(warned(), [])
        self.assertEqual(catalog.shaped["g"]["tools"].unmatched, ("ecoh", "gone"))

    def test_collisionAfterRenameLogged(self) -> None:
        b = backend("g", [{"name": "a"}, {"name": "b"}], tools=Shaping(rename={"a": "b"}))
        catalog = Catalog("__")
        with capturedLogs() as events:
            catalog.rebuild([b])
        self.assertEqual(catalog.entries["g__b"].original, "a")
        (event,) = [e for e in events if "collision" in e["log_format"]]
        self.assertIn("tool name collision after rename", event["log_format"])

    def test_generationFollowsChanges(self) -> None:
        b = backend("g", [{"name": "a"}])
        catalog = Catalog("__")
        empty = catalog.generation
        catalog.rebuild([b])
        first = catalog.generation
        self.assertNotEqual(first, empty)
        self.assertEqual(catalog.rebuild([b]), frozenset())
        self.assertEqual(catalog.generation, first)
        b.shaping = MappingProxyType({"tools": Shaping(overrides={"a": {"title": "A"}})})
        self.assertEqual(catalog.rebuild([b]), frozenset({"tools"}))
        self.assertNotEqual(catalog.generation, first)
        other = Catalog("__")
        other.rebuild([b])
        self.assertEqual(other.generation, catalog.generation)


class ResourceFilterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.docs = backend("docs", resources=Shaping(allow=("repo://*",), deny=("repo://private/*",)))
        self.docs.resources = [{"uri": "repo://readme", "name": "r"}, {"uri": "repo://private/keys", "name": "k"}, {"uri": "file:///x", "name": "x"}]
        self.docs.resource_templates = [{"uriTemplate": "repo://{path}", "name": "t"}, {"uriTemplate": "file:///{path}", "name": "f"}]
        self.catalog = Catalog("__")
        self.catalog.rebuild([self.docs])

    def test_filteredNotListed(self) -> None:
        self.assertEqual(sorted(self.catalog.resources.entries), ["repo://readme"])
        self.assertEqual(sorted(self.catalog.templates.entries), ["repo://{path}"])
        self.assertEqual(self.catalog.shaped["docs"]["resources"].filtered, ("file:///x", "repo://private/keys"))
        self.assertEqual(self.catalog.shaped["docs"]["resourceTemplates"].filtered, ("file:///{path}",))

    def test_filteredNotRouted(self) -> None:
        """However a client names a URI the filter removes, it reaches no backend."""
        route = self.catalog.route_uri("repo://readme")
        assert route is not None
        self.assertEqual(route[2], "repo://readme")
        self.assertIsNotNone(self.catalog.route_uri("repo://a/b"))
        for uri in ("repo://private/keys", "twisted-mcp://docs/repo://private/keys", "file:///x", "twisted-mcp://docs/file:///x"):
            self.assertIsNone(self.catalog.route_uri(uri), uri)
            self.assertIn("no server lists the resource", self.catalog.why_unrouted(uri))

    def test_disguisedFilteredUriNotRouted(self) -> None:
        """A denied URI written with dot segments, escapes or doubled slashes reaches no backend, in either form."""
        files = backend("files", resources=Shaping(deny=("file:///secret/*",)))
        files.resource_templates = [{"uriTemplate": "file:///{+path}", "name": "f"}]
        catalog = Catalog("__")
        catalog.rebuild([files])
        self.assertIsNotNone(catalog.route_uri("file:///pub/k"))
        for uri in ("file:///pub/../secret/k", "file:///%73ecret/k", "file:///./secret/k", "file:////secret/k"):
            for asked in (uri, f"twisted-mcp://files/{uri}"):
                self.assertIsNone(catalog.route_uri(asked), asked)

    def test_rememberedFilteredUriNotRouted(self) -> None:
        """A URI shown in a result (remembered for its backend) is filtered when read back."""
        self.assertEqual(self.catalog.expose_uri(self.docs, "file:///etc/passwd"), "file:///etc/passwd")
        self.assertIsNone(self.catalog.route_uri("file:///etc/passwd"))
        self.assertEqual(self.catalog.expose_uri(self.docs, "repo://seen"), "repo://seen")
        self.assertIsNotNone(self.catalog.route_uri("repo://seen"))
