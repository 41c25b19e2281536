"""
Views (L{twisted_mcp.dispatch.views}): the order of a profile's selection
(explicit names, globs by priority then name, first place kept), the
default view, the other kinds, and the cache per catalog rebuild.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config.models import Profile
from twisted_mcp.dispatch.catalog import Entry, Listing
from twisted_mcp.dispatch.views import DEFAULT_VIEW, View, Views, selected, view_of


def _catalog(tools: Listing) -> Any:
    """A catalog of C{tools} and nothing else."""
    return SimpleNamespace(tools=tools, prompts=Listing(), resources=Listing(), templates=Listing())


def _listing(**backends: tuple[int, list[str]]) -> Listing:
    entries = {}
    for backend_name, (priority, tools) in backends.items():
        backend: Any = SimpleNamespace(name=backend_name, priority=priority)
        for tool in tools:
            shaped = f"{backend_name}__{tool}"
            entries[shaped] = Entry(backend, tool, {"name": shaped})
    return Listing(entries)


class SelectionTests(SynchronousTestCase):
    def test_default_view_is_the_catalog(self) -> None:
        """Every tool, the catalog's own definitions list (no copy)."""
        listing = _listing(a=(0, ["x", "y"]), b=(0, ["z"]))
        selection = selected(DEFAULT_VIEW, listing)
        self.assertIs(selection.definitions, listing.listing)
        self.assertEqual(selection.names, ("a__x", "a__y", "b__z"))

    def test_default_view_by_priority(self) -> None:
        listing = _listing(a=(0, ["x"]), b=(5, ["z", "y"]))
        self.assertEqual(selected(DEFAULT_VIEW, listing).names, ("b__y", "b__z", "a__x"))

    def test_profile_order(self) -> None:
        """An exact name keeps its place; a glob's matches by priority then
        name; a tool matched twice keeps its first place; unknown names are skipped."""
        listing = _listing(a=(0, ["x", "y"]), b=(1, ["x", "w"]), c=(0, ["q"]))
        view = View("dev", tools=("c__q", "*__x", "a__*", "nothere", "b__w"))
        self.assertEqual(selected(view, listing).names, ("c__q", "b__x", "a__x", "a__y", "b__w"))

    def test_no_tools_selects_nothing(self) -> None:
        self.assertEqual(selected(View("ops", tools=()), _listing(a=(0, ["x"]))).names, ())


class ViewOfTests(SynchronousTestCase):
    def test_profile_or_default(self) -> None:
        profile = Profile(name="dev", tools=("a__*",), pinned=("a__x",), maxTools=5, search="always")
        gateway = SimpleNamespace(profiles={"dev": profile}, views=Views())
        view = view_of(gateway, SimpleNamespace(view="dev"))  # type: ignore[arg-type]
        self.assertEqual((view.name, view.tools, view.pinned, view.maxTools, view.search), ("dev", ("a__*",), ("a__x",), 5, "always"))
        self.assertIs(view_of(gateway, SimpleNamespace(view=None)), DEFAULT_VIEW)  # type: ignore[arg-type]
        self.assertIs(view_of(SimpleNamespace(profiles={}, views=Views()), SimpleNamespace(view=None)), DEFAULT_VIEW)  # type: ignore[arg-type]
        default = Profile(name="default", tools=("a__x",))
        gateway = SimpleNamespace(profiles={"default": default}, views=Views())
        self.assertEqual(view_of(gateway, SimpleNamespace(view=None)).tools, ("a__x",))  # type: ignore[arg-type]


class ViewsCacheTests(SynchronousTestCase):
    def test_cached_per_generation(self) -> None:
        catalog = _catalog(_listing(a=(0, ["x"])))
        views = Views()
        first = views.selection(DEFAULT_VIEW, catalog)
        self.assertIs(views.selection(DEFAULT_VIEW, catalog), first)
        catalog.tools = _listing(a=(0, ["x", "y"]))
        self.assertEqual(views.selection(DEFAULT_VIEW, catalog).names, ("a__x", "a__y"))

    def test_problems_logged_once_while_they_last(self) -> None:
        """A pattern that matches nothing and a pinned tool not selected are logged once while true."""
        view = View("dev", tools=("gitub__*", "a__x"), pinned=("a__y",))
        catalog = _catalog(_listing(a=(0, ["x", "y"])))
        views = Views()
        with capturedLogs() as logged:
            views.selection(view, catalog)
            catalog.tools = _listing(a=(0, ["x", "y", "z"]))
            views.selection(view, catalog)
        texts = sorted(e["problem"] for e in logged)
        self.assertEqual(
            texts,
            ["profile dev: 'gitub__*' matches no tool", "profiles.dev.pinned[0]: a__y is not selected by profiles.dev.tools"],
        )


class OtherKindsTests(SynchronousTestCase):
    def test_prompts_resources_and_templates(self) -> None:
        """Prompts by shaped name; resources by URI and templates by their
        uriTemplate text, both from the profile's resources; none without a list."""
        backend: Any = SimpleNamespace(name="a", priority=0)
        catalog = SimpleNamespace(
            tools=Listing(),
            prompts=Listing({n: Entry(backend, n[3:], {"name": n}) for n in ("a__greet", "a__quote")}),
            resources=Listing({u: Entry(backend, u, {"uri": u}) for u in ("repo://x", "memo://y")}),
            templates=Listing({t: Entry(backend, t, {"uriTemplate": t}) for t in ("repo://{name}", "memo://{id}")}),
        )
        view = View("dev", tools=(), prompts=("a__q*",), resources=("repo://*",))
        selection = selected(view, catalog.tools, catalog)  # type: ignore[arg-type]
        self.assertEqual(selection.prompts.names, ("a__quote",))
        self.assertEqual(selection.resources.names, ("repo://x",))
        self.assertEqual(selection.templates.names, ("repo://{name}",))
        self.assertTrue(selection.has_uri("repo://other", catalog.templates.entries["repo://{name}"]))
        self.assertTrue(selection.has_uri("repo://seen-in-a-result", None))
        self.assertFalse(selection.has_uri("memo://y", catalog.resources.entries["memo://y"]))
        self.assertFalse(selection.has_uri("memo://9", catalog.templates.entries["memo://{id}"]))
        none = selected(View("ops", tools=(), prompts=(), resources=()), catalog.tools, catalog)  # type: ignore[arg-type]
        self.assertEqual((none.prompts.names, none.resources.names, none.templates.names), ((), (), ()))
        self.assertFalse(none.has_uri("repo://x", catalog.resources.entries["repo://x"]))
        everything = selected(DEFAULT_VIEW, catalog.tools, catalog)  # type: ignore[arg-type]
        self.assertEqual(everything.prompts.names, ("a__greet", "a__quote"))
        self.assertTrue(everything.has_uri("anything://at-all", None))
