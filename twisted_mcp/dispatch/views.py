"""
Views: what one profile (or the default, everything) selects of the shaped
catalog's tools, in its order.

A profile's C{tools} list is ordered: an exact name keeps its place; a
glob contributes its matches at its place, sorted by the backend's
C{priority} (higher first) then shaped name; a tool matched twice keeps its
first place.  The default view is every tool, in that same order (the
catalog's own order while no backend sets a priority).  Selections are
cached per (view, catalog generation).

Which view a request has: C{gateway.profiles.get(caller.view or "default")};
no such profile, the default view.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted_mcp.dispatch.catalog import Catalog, Listing

_GLOB_CHARS = frozenset("*?[")
log = Logger()


@attrs.frozen(cache_hash=True)
class View:
    """
    What a listener or HTTP path serves of the catalog's tools.

    @ivar tools: the profile's globs and exact shaped names, in order;
        None: every tool (the default view).
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

    @classmethod
    def of_profile(cls, profile: Any) -> View:
        """The view of a L{twisted_mcp.config.models.Profile}."""
        return cls(
            name=profile.name,
            tools=tuple(profile.tools),
            pinned=tuple(getattr(profile, "pinned", ())),
            maxTools=getattr(profile, "maxTools", None),
            maxNameLength=getattr(profile, "maxNameLength", None),
            nameOverhead=getattr(profile, "nameOverhead", None),
            search=getattr(profile, "search", None),
            instructions=getattr(profile, "instructions", None),
        )


#: Every tool, as today.
DEFAULT_VIEW = View()


@attrs.frozen
class Selection:
    """
    The tools a view selects, in its order.

    @ivar names: shaped names, in order.
    @ivar definitions: their served definitions, in the same order.
    @ivar members: the same names, for membership.
    """

    names: tuple[str, ...]
    definitions: list[dict[str, Any]]
    members: frozenset[str]


def view_of(gateway: Any, caller: Any) -> View:
    """The view of a request from C{caller} (its profile, else the default)."""
    profiles = getattr(gateway, "profiles", None) or {}
    profile = profiles.get(getattr(caller, "view", None) or "default")
    if profile is None:
        return DEFAULT_VIEW
    return gateway.views.of_profile(profile)


def _priority(listing: Listing, name: str) -> int:
    return -int(getattr(listing.entries[name].backend, "priority", 0) or 0)


def selected(view: View, listing: Listing) -> Selection:
    """What C{view} selects of C{listing} (the catalog's tools), in its order."""
    entries = listing.entries
    if view.tools is None:
        names = sorted(entries)
        if any(_priority(listing, n) for n in names):
            names.sort(key=lambda n: (_priority(listing, n), n))
            return Selection(tuple(names), [entries[n].definition for n in names], frozenset(names))
        # The catalog's own order and definitions, not copied.
        return Selection(tuple(names), listing.listing, frozenset(entries))
    ordered: dict[str, None] = {}
    everything: list[str] | None = None
    for pattern in view.tools:
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
    return Selection(chosen, [entries[n].definition for n in chosen], frozenset(chosen))


class Views:
    """Views made from profiles, and their selections cached per (view, catalog generation)."""

    def __init__(self) -> None:
        self._cache: dict[View, tuple[Any, Selection]] = {}
        self._profiles: dict[int, tuple[Any, View]] = {}
        #: The problems of the views' selections logged, and still true.
        self._warned: dict[View, frozenset[str]] = {}

    def of_profile(self, profile: Any) -> View:
        """The view of C{profile} (made once per profile object)."""
        cached = self._profiles.get(id(profile))
        if cached is None or cached[0] is not profile:
            if len(self._profiles) > 1024:
                self._profiles.clear()
            cached = self._profiles[id(profile)] = (profile, View.of_profile(profile))
        return cached[1]

    def selection(self, view: View, catalog: Catalog) -> Selection:
        """What C{view} selects of C{catalog}'s tools now."""
        marker = getattr(catalog, "generation", None) or catalog.tools
        cached = self._cache.get(view)
        if cached is None or cached[0] != marker:
            if len(self._cache) > 256:
                self._cache.clear()
            cached = self._cache[view] = (marker, selected(view, catalog.tools))
            self._check(view, cached[1], catalog.tools)
        return cached[1]

    def _check(self, view: View, selection: Selection, listing: Listing) -> None:
        """Log once, while it lasts, a pattern of C{view} that matches no
        tool and a pinned tool it does not select."""
        if view.tools is None:
            return
        problems = set()
        for pattern in view.tools:
            if pattern not in listing.entries and not any(fnmatch.fnmatchcase(n, pattern) for n in listing.entries):
                problems.add(f"profile {view.name}: {pattern!r} matches no tool")
        for i, name in enumerate(view.pinned):
            if name not in selection.members:
                problems.add(f"profiles.{view.name}.pinned[{i}]: {name} is not selected by profiles.{view.name}.tools")
        before = self._warned.get(view, frozenset())
        for problem in sorted(problems - before):
            log.warn("{problem}", problem=problem)
        self._warned[view] = frozenset(problems)


__all__ = ["DEFAULT_VIEW", "Selection", "View", "Views", "selected", "view_of"]
