"""
Views: what one profile (or the default, everything) selects of the shaped
catalog's tools, prompts, resources and resource templates, in its order.

A profile's lists are ordered: an exact name keeps its place; a glob
contributes its matches at its place, sorted by the backend's C{priority}
(higher first) then shaped name; an item matched twice keeps its first
place.  Tools and prompts are matched by shaped name, resources by the URI
clients see, resource templates by their C{uriTemplate} text (both by the
profile's C{resources:}).  A profile without a list selects none of that
kind; C{"*"} selects all.  The default view is everything, tools in that
same order (the catalog's own order while no backend sets a priority), the
other kinds in the catalog's order.

Selections are cached per view and per catalog rebuild (the identity of the
rebuilt listings: a backend restarted with the same listing, or a priority
changed by a reload, rebuilds them), not per C{Catalog.generation}, which
is a digest of the listings' text and stays equal across such rebuilds.

Which view a request has: C{gateway.profiles.get(caller.view or "default")};
no such profile, the default view.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted_mcp.config.models import Profile
    from twisted_mcp.dispatch.caller import Caller
    from twisted_mcp.dispatch.catalog import Catalog, Entry, Listing
    from twisted_mcp.dispatch.gateway import Gateway

_GLOB_CHARS = frozenset("*?[")
log = Logger()
#: The views whose selection problems are remembered (a log-once set).
_MOST_WARNED = 256


@attrs.frozen(cache_hash=True)
class View:
    """
    What a listener or HTTP path serves of the catalog.

    @ivar tools: the profile's globs and exact shaped names, in order;
        None: every tool (the default view).
    @ivar prompts: the same for prompts; None: every prompt.
    @ivar resources: URI globs and exact URIs (as clients see them),
        matched against resources' URIs and templates' C{uriTemplate}
        text; None: every resource and template.
    @ivar pinned: tools search mode lists beside the two search tools.
    @ivar maxTools: the profile's budget keys (None: from the client tables).
    """

    name: str = "default"
    tools: tuple[str, ...] | None = None
    pinned: tuple[str, ...] = ()
    maxTools: int | None = None
    maxNameLength: int | None = None
    nameOverhead: int | None = None
    search: str | None = None
    instructions: str | None = None
    prompts: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None

    @classmethod
    def of_profile(cls, profile: Profile) -> View:
        """The view of a L{twisted_mcp.config.models.Profile}."""
        return cls(
            name=profile.name,
            tools=tuple(profile.tools),
            pinned=tuple(profile.pinned),
            maxTools=profile.maxTools,
            maxNameLength=profile.maxNameLength,
            nameOverhead=profile.nameOverhead,
            search=profile.search,
            instructions=profile.instructions,
            prompts=tuple(profile.prompts),
            resources=tuple(profile.resources),
        )


#: Everything, as today.
DEFAULT_VIEW = View()


@attrs.frozen
class Chosen:
    """
    What a view selects of one listing, in its order.

    @ivar names: exposed names (URIs, URI templates), in order.
    @ivar definitions: their served definitions, in the same order.
    @ivar members: the same names, for membership.
    """

    names: tuple[str, ...]
    definitions: list[dict[str, Any]]
    members: frozenset[str]


@attrs.frozen
class Selection(Chosen):
    """
    What a view selects of the catalog: the tools (the fields of
    L{Chosen}), and the other kinds.

    @ivar resource_patterns: the view's resource patterns, for URIs that
        are neither listed nor matched by a template (None: every URI).
    """

    prompts: Chosen = Chosen((), [], frozenset())
    resources: Chosen = Chosen((), [], frozenset())
    templates: Chosen = Chosen((), [], frozenset())
    resource_patterns: tuple[str, ...] | None = None

    def of_kind(self, kind: str) -> Chosen:
        """The selection of C{kind}: C{tools}, C{prompts}, C{resources} or C{resourceTemplates}."""
        return {"tools": self, "prompts": self.prompts, "resources": self.resources, "resourceTemplates": self.templates}[kind]

    def has_uri(self, uri: str, entry: Entry | None) -> bool:
        """
        Whether a client's C{uri}, routed to C{entry} (the listed resource
        or the template it matches; None: neither), is in the view: a
        resource or template it selects, or a URI one of its patterns
        matches (a URI that appeared only in a result).
        """
        if entry is not None:
            exposed = entry.definition.get("uriTemplate", entry.definition.get("uri"))
            if exposed in self.templates.members or exposed in self.resources.members:
                return True
        return uri in self.resources.members or self._uri_matched(uri)

    def _uri_matched(self, uri: str) -> bool:
        patterns = self.resource_patterns
        if patterns is None:
            return True
        return any(fnmatch.fnmatchcase(uri, p) for p in patterns)


def view_of(gateway: Gateway, caller: Caller) -> View:
    """The view of a request from C{caller} (its profile, else the default)."""
    profile = gateway.profiles.get(caller.view or "default")
    if profile is None:
        return DEFAULT_VIEW
    return gateway.views.of_profile(profile)


def _priority(listing: Listing, name: str) -> int:
    return -listing.entries[name].backend.priority


def _ordered(patterns: tuple[str, ...], listing: Listing) -> Chosen:
    """What C{patterns} select of C{listing}, in their order."""
    entries = listing.entries
    ordered: dict[str, None] = {}
    everything: list[str] | None = None
    for pattern in patterns:
        if _GLOB_CHARS.isdisjoint(pattern):
            if pattern in entries:
                ordered.setdefault(pattern)
            continue
        if everything is None:
            everything = sorted(entries, key=lambda n: (_priority(listing, n), n))
        for name in everything:
            if fnmatch.fnmatchcase(name, pattern):
                ordered.setdefault(name)
    chosen = tuple(ordered)
    return Chosen(chosen, [entries[n].definition for n in chosen], frozenset(chosen))


def _all(listing: Listing) -> Chosen:
    """Every item of C{listing}, in the catalog's order (its own list, not copied)."""
    return Chosen(tuple(sorted(listing.entries)), listing.listing, frozenset(listing.entries))


def _chosen(patterns: tuple[str, ...] | None, listing: Listing) -> Chosen:
    return _all(listing) if patterns is None else _ordered(patterns, listing)


def selected(view: View, listing: Listing, catalog: Catalog | None = None) -> Selection:
    """What C{view} selects of C{listing} (the catalog's tools), in its
    order, and of C{catalog}'s other kinds (none without it)."""
    others: dict[str, Any] = {"resource_patterns": view.resources}
    if catalog is not None:
        others.update(
            prompts=_chosen(view.prompts, catalog.prompts),
            resources=_chosen(view.resources, catalog.resources),
            templates=_chosen(view.resources, catalog.templates),
        )
    entries = listing.entries
    if view.tools is not None:
        tools = _ordered(view.tools, listing)
        return Selection(tools.names, tools.definitions, tools.members, **others)
    names = sorted(entries)
    if any(_priority(listing, n) for n in names):
        names.sort(key=lambda n: (_priority(listing, n), n))
        return Selection(tuple(names), [entries[n].definition for n in names], frozenset(names), **others)
    # The catalog's own order and definitions, not copied.
    return Selection(tuple(names), listing.listing, frozenset(entries), **others)


class Views:
    """Views made from profiles, and their selections cached per (view, catalog rebuild)."""

    def __init__(self) -> None:
        self._cache: dict[View, tuple[tuple[Listing, ...], Selection]] = {}
        self._profiles: dict[int, tuple[Profile, View]] = {}
        #: The problems of the views' selections logged, and still true.
        self._warned: dict[View, frozenset[str]] = {}

    def of_profile(self, profile: Profile) -> View:
        """The view of C{profile} (made once per profile object)."""
        cached = self._profiles.get(id(profile))
        if cached is None or cached[0] is not profile:
            if len(self._profiles) > 1024:
                self._profiles.clear()
            cached = self._profiles[id(profile)] = (profile, View.of_profile(profile))
        return cached[1]

    def selection(self, view: View, catalog: Catalog) -> Selection:
        """What C{view} selects of C{catalog} now."""
        # Every rebuild makes new listings (a restarted backend's entries
        # name the new backend; a reload's priorities are read again), so
        # their identity, not the generation's digest, says what is current.
        listings = (catalog.tools, catalog.prompts, catalog.resources, catalog.templates)
        cached = self._cache.get(view)
        if cached is None or any(a is not b for a, b in zip(cached[0], listings, strict=True)):
            if len(self._cache) > 256:
                self._cache.clear()
            cached = self._cache[view] = (listings, selected(view, catalog.tools, catalog))
            self._check(view, cached[1], catalog)
        return cached[1]

    def _check(self, view: View, selection: Selection, catalog: Catalog) -> None:
        """Log once, while it lasts, a pattern of C{view} that matches
        nothing and a pinned tool it does not select."""
        problems = set()
        kinds = (
            (view.tools, "tool", (catalog.tools,)),
            (view.prompts, "prompt", (catalog.prompts,)),
            (view.resources, "resource", (catalog.resources, catalog.templates)),
        )
        for patterns, noun, listings in kinds:
            for pattern in patterns or ():
                if not any(_matches(pattern, listing) for listing in listings):
                    problems.add(f"profile {view.name}: {pattern!r} matches no {noun}")
        for i, name in enumerate(view.pinned):
            if view.tools is not None and name not in selection.members:
                problems.add(f"profiles.{view.name}.pinned[{i}]: {name} is not selected by profiles.{view.name}.tools")
        before = self._warned.get(view, frozenset())
        for problem in sorted(problems - before):
            log.warn("{problem}", problem=problem)
        if view not in self._warned and len(self._warned) >= _MOST_WARNED:
            # Views of profiles reloaded away: forget the oldest.
            del self._warned[next(iter(self._warned))]
        self._warned[view] = frozenset(problems)


def _matches(pattern: str, listing: Listing) -> bool:
    return pattern in listing.entries or any(fnmatch.fnmatchcase(n, pattern) for n in listing.entries)


__all__ = ["DEFAULT_VIEW", "Chosen", "Selection", "View", "Views", "selected", "view_of"]
