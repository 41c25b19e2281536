"""
Property tests of the catalog's URIs: whatever the backends list and
whatever URIs their results carry, every URI a client is shown leads back
to the backend it came from and to that backend's own URI, and URIs shown
as given never need telling apart.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.mcp.uris import is_reserved, literal_prefix, may_overlap

from .fakes import FakeBackend

# Small pools, so that backends often list the same URIs and overlapping
# templates; arbitrary text beside them.
_URIS = ["x://1", "x://a/1", "y://1", "file:///etc/hosts", "twisted-mcp://a/x://1", "TWISTED-MCP:z", ""]
_TEMPLATES = ["x://{id}", "x://a/{id}", "{+uri}", "y://{id}{?q}", "file:///{path}", "twisted-mcp://a/{x}", "bad{"]
uris = st.one_of(st.sampled_from(_URIS), st.text(max_size=12))
backend_names = st.text(alphabet="abAB09_-", min_size=1, max_size=3)


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[Catalog, list[FakeBackend]]:
    names = draw(st.lists(backend_names, min_size=1, max_size=4, unique=True))
    backends = [
        FakeBackend(
            name,
            [],
            resources=draw(st.lists(uris, max_size=4)),
            resource_templates=draw(st.lists(st.one_of(st.sampled_from(_TEMPLATES), st.text(max_size=8)), max_size=3)),
        )
        for name in names
    ]
    catalog = Catalog("__")
    catalog.rebuild(backends)
    return catalog, backends


#: No deadline (shared machines), no example database (nothing written into the checkout).
SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

@SETTINGS
@given(catalogs())
def test_listedResourcesRouteBack(built: tuple[Catalog, list[FakeBackend]]) -> None:
    catalog, _ = built
    for exposed, entry in catalog.resources.entries.items():
        assert catalog.route_uri(exposed) == (entry, entry.backend, entry.original)


@SETTINGS
@given(catalogs())
def test_shownAsGivenOnlyWhenUnambiguous(built: tuple[Catalog, list[FakeBackend]]) -> None:
    """
    A resource shown as given is in nobody's gateway form and listed by no
    other backend; a template shown as given may overlap no other backend's
    template nor start another backend's URI.
    """
    catalog, backends = built
    listed = {(b.name, r["uri"]) for b in backends for r in b.resources if r["uri"]}
    for exposed, entry in catalog.resources.entries.items():
        if exposed == entry.original:
            assert not is_reserved(exposed)
            assert {name for name, uri in listed if uri == exposed} == {entry.backend.name}
    given_as_is = [e for exposed, e in catalog.templates.entries.items() if exposed == e.original]
    for entry in given_as_is:
        assert not is_reserved(entry.original)
        for other in catalog.templates.entries.values():
            if other.backend.name != entry.backend.name:
                assert not may_overlap(entry.original, other.original)
        for name, uri in listed:
            if name != entry.backend.name:
                assert not uri.startswith(literal_prefix(entry.original))


@SETTINGS
@given(catalogs(), st.lists(st.tuples(st.integers(0, 3), uris, st.sampled_from(["link", "embedded", "read"])), max_size=12))
def test_exposedContentRoutesBack(built: tuple[Catalog, list[FakeBackend]], results: list[tuple[int, str, str]]) -> None:
    """
    Every URI in results from any backend, as clients see it, routes back
    to that backend and its original URI, also after later results from
    other backends with the same URIs; the results are never changed.
    """
    catalog, backends = built
    shown: list[tuple[str, str, str]] = []
    for index, uri, shape in results:
        backend = backends[index % len(backends)]
        value: dict[str, Any]
        if shape == "link":
            value = {"content": [{"type": "resource_link", "uri": uri, "name": "n"}]}
        elif shape == "embedded":
            value = {"messages": [{"role": "user", "content": {"type": "resource", "resource": {"uri": uri, "text": ""}}}]}
        else:
            value = {"contents": [{"uri": uri, "text": ""}]}
        before = copy.deepcopy(value)
        out = catalog.expose_content(backend, value)
        assert value == before
        if shape == "link":
            exposed = out["content"][0]["uri"]
        elif shape == "embedded":
            exposed = out["messages"][0]["content"]["resource"]["uri"]
        else:
            exposed = out["contents"][0]["uri"]
        assert (out is value) == (exposed == uri)
        shown.append((exposed, backend.name, uri))
    for exposed, name, uri in shown:
        route = catalog.route_uri(exposed)
        assert route is not None, (exposed, catalog.why_unrouted(exposed))
        assert (route[1].name, route[2]) == (name, uri)
