"""
C{resources/list}, C{resources/templates/list}, C{resources/read} and
C{resources/subscribe}/C{unsubscribe}: URIs as clients see them are mapped
to the owning backend's own (L{twisted_mcp.dispatch.catalog.Catalog.route_uri}).
A URI the backend's C{resources:} filter removes is routed nowhere there,
however the client names it, so it is refused here as an unknown one; so is
a URI outside the caller's view (L{twisted_mcp.dispatch.views}), with the
very answer an unknown URI gets: a profile cannot probe another's resources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.catalog import REMEMBERED, Catalog
from twisted_mcp.dispatch.lists import selection_of, visible
from twisted_mcp.dispatch.pages import page
from twisted_mcp.dispatch.routing import forward, refuse
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.versions import HANDSHAKE_VERSIONS
from twisted_mcp.policy.subject import Subject
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight


def list_resources(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    shown = visible(session, "resources/list", "resources", session.gateway.catalog.resources)
    return page("resources", shown, params.get("cursor"))


def list_templates(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    shown = visible(session, "resources/templates/list", "resourceTemplates", session.gateway.catalog.templates)
    return page("resourceTemplates", shown, params.get("cursor"))


def resolve(session: ClientSession, method: str, params: dict[str, Any]) -> tuple[Subject, Backend, str]:
    """The subject, owning backend and backend's own URI of C{params.uri};
    an unknown URI is refused (audited)."""
    uri = params.get("uri")
    if type(uri) is not str:
        raise refuse(session, method, INVALID_PARAMS, f"Invalid params: {method} needs params.uri, a string")
    catalog = session.gateway.catalog
    route = catalog.route_uri(uri)
    in_view = route is None or selection_of(session).has_uri(uri, route[0])
    if route is None or not in_view:
        # MCP's "Resource not found" up to 2025-11-25; later eras use -32602.
        code = errors.RESOURCE_NOT_FOUND if session.caller.version in HANDSHAKE_VERSIONS else INVALID_PARAMS
        why = catalog.why_unrouted(uri, _visible_to(session)) if in_view else not_found(uri)
        policy = session.gateway.policy
        if not policy.active:
            raise JsonRpcError(code, f"Resource not found: {why}", {"uri": uri})
        # Audited with the URI's secrets taken out; the client is told why.
        error = policy.refuse_unknown(session.label, method, "resource", uri, session.peer, session.protocol_version)
        if error.code == errors.RESOURCE_NOT_FOUND:
            error.code = code
            error.message = f"Resource not found: {why}"
        raise error
    assert route is not None
    entry, backend, original = route
    kind = "template" if entry is not None and "uriTemplate" in entry.definition else "resource"
    return Subject(kind, uri, backend.name, original), backend, original


def not_found(uri: str) -> str:
    """Why a URI no backend lists, matches or showed is not found (what
    L{Catalog.why_unrouted} says of one), as quoted to the client."""
    shown = uri if len(uri) <= 200 else uri[:199] + "\u2026"
    return (
        f"no server lists the resource {shown!r} or has a resource template that matches it (a URI that "
        f"appeared only in a result can be read back while it is among the last {REMEMBERED} such URIs)"
    )


def _in_view(session: ClientSession, catalog: Catalog) -> Callable[[Backend, str], bool] | None:
    """Whether a URI in the gateway's form is in the caller's view (None: every one is)."""
    selection = selection_of(session)
    if selection.resource_patterns is None:
        return None

    def in_view(backend: Backend, exposed: str) -> bool:
        route = catalog.route_uri(exposed)
        return route is not None and selection.has_uri(exposed, route[0])

    return in_view


def _visible_to(session: ClientSession) -> Callable[[Backend, str], bool] | None:
    """Whether the caller may be told of a backend's URI (None: of every
    one): in its view, and visible to it by the policy."""
    in_view = _in_view(session, session.gateway.catalog)
    policy = session.gateway.policy
    if not policy.active:
        return in_view
    try:
        principal = policy.principal(session.peer)
    except JsonRpcError:
        return lambda backend, exposed: False

    def visible(backend: Backend, exposed: str) -> bool:
        if in_view is not None and not in_view(backend, exposed):
            return False
        entry = session.gateway.catalog.resources.entries.get(exposed)
        kind = "resource"
        if entry is None:
            entry = session.gateway.catalog.templates.entries.get(exposed)
            kind = "template"
        if entry is None:
            return False
        return policy.visible(principal, Subject(kind, exposed, backend.name, entry.original))

    return visible


def read(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    subject, backend, original = resolve(session, "resources/read", params)
    out = dict(params)
    out["uri"] = original
    catalog = session.gateway.catalog
    return forward(session, request, subject, backend, params, out, lambda result: catalog.expose_content(backend, result))


def subscribe(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    subject, backend, original = resolve(session, "resources/subscribe", params)
    out = dict(params)
    out["uri"] = original
    subscriptions = session.gateway.subscriptions

    def send_to(target: Backend, out: dict[str, Any], context: Any) -> Any:
        return subscriptions.subscribe(session, target, original, out, context, subject)

    return forward(session, request, subject, backend, params, out, send_to=send_to)


def unsubscribe(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    uri = params.get("uri")
    if type(uri) is not str:
        raise refuse(session, "resources/unsubscribe", INVALID_PARAMS, "Invalid params: resources/unsubscribe needs params.uri, a string")
    session.gateway.subscriptions.unsubscribe(session, uri)
    return {}
