"""
C{tools/list} and C{tools/call}, through the request's fitted list
(L{twisted_mcp.dispatch.surface}).

A list is the view's selection, filtered by the policy, fitted to the
client's budget (full, search or truncate; aliases), in pages of
C{surface.pageSize} when set.  A call is unwrapped first: an alias becomes
its shaped name, C{call_tool {name, arguments}} an ordinary C{tools/call}
(with the outer request's C{_meta}, C{inputResponses} and C{requestState});
then it goes to its backend exactly as a direct call, so the policy, the
limits and the audit trail see the real tool.  A name outside the view is
an unknown tool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_mcp.dispatch.handlers.search import search_tools
from twisted_mcp.dispatch.lists import principal_or_refuse
from twisted_mcp.dispatch.pages import bound_page
from twisted_mcp.dispatch.routing import forward_named, refuse, unknown
from twisted_mcp.dispatch.surface import Fitted, fitted_for, reshaped
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight

#: The keys of a call's params that stay with the call when C{call_tool} is unwrapped.
_CARRIED = ("_meta", "inputResponses", "requestState")


def list_tools(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    gateway = session.gateway
    settings = gateway.surface
    cursor = params.get("cursor")
    if cursor is not None and not settings.pageSize:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params: unknown cursor (the gateway lists every tool in one page)")
    principal = principal_or_refuse(session, "tools/list")
    fitted = fitted_for(session, request, principal)
    policy = gateway.policy
    if request.envelope is None and reshaped(session, request):
        session.tools_listed = fitted.digest
    if settings.pageSize:
        result = bound_page(
            "tools", f"{fitted.view.name}|{fitted.digest}", fitted.tools, cursor, settings.pageSize, settings.cursorKeys
        )
        result["tools"] = fitted.page(result["tools"])
    else:
        result = {"tools": fitted.listed}
    if policy.active:
        # What this answer carries (a page, search mode's few) of what the principal may see in the view.
        policy.audit_listing(
            session.label, "tool", principal, len(result["tools"]), len(fitted.visible), session.protocol_version
        )
    if request.envelope is not None:
        # A list that depended on clientInfo is not cached: a cache keyed
        # on the authorization would hand it to another client.
        ttl = 0 if fitted.budget.from_client_info else settings.ttlMs
        if ttl:
            result["ttlMs"] = ttl
    return result


def call_tool(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    catalog = session.gateway.catalog
    name = params.get("name")
    if type(name) is not str or not reshaped(session, request):
        return forward_named(session, request, params, "tool", catalog.tools)
    try:
        principal = principal_or_refuse(session, "tools/call")
    except JsonRpcError:
        # Refused with the policy's own answer and audit record, as a direct call.
        return forward_named(session, request, params, "tool", catalog.tools)
    fitted = fitted_for(session, request, principal)
    if fitted.search_names is not None and name == fitted.search_names[0]:
        return search_tools(session, request, params, fitted, principal)
    return forward_named(session, request, _ordinary(session, fitted, params), "tool", catalog.tools)


def ordinary_call(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    """
    The params of the ordinary C{tools/call} C{params} stands for (a call
    by alias or through C{call_tool} unwrapped), before anything else reads
    them (a retry's C{requestState} is bound to the real call); C{params}
    itself when nothing stands for anything else, or for a search.
    """
    name = params.get("name")
    if type(name) is not str or not session.gateway.ready or not reshaped(session, request):
        return params
    try:
        principal = principal_or_refuse(session, "tools/call")
    except JsonRpcError:
        return params
    fitted = fitted_for(session, request, principal)
    if fitted.search_names is not None and name == fitted.search_names[0]:
        return params
    return _ordinary(session, fitted, params)


def _ordinary(session: ClientSession, fitted: Fitted, params: dict[str, Any]) -> dict[str, Any]:
    if fitted.search_names is not None and params["name"] == fitted.search_names[1]:
        params = _unwrapped(session, params)
    return _resolved(session, fitted, params, params["name"])


def _unwrapped(session: ClientSession, params: dict[str, Any]) -> dict[str, Any]:
    """The params of the ordinary C{tools/call} a C{call_tool} call stands for."""
    arguments = params.get("arguments")
    inner = arguments.get("name") if type(arguments) is dict else None
    if type(inner) is not str:
        # Refused and audited as a malformed direct call is.
        raise refuse(
            session, "tools/call", INVALID_PARAMS, "Invalid params: call_tool needs arguments.name, the name of the tool to call"
        )
    assert type(arguments) is dict
    out: dict[str, Any] = {"name": inner}
    if "arguments" in arguments:
        out["arguments"] = arguments["arguments"]
    for key in _CARRIED:
        if key in params:
            out[key] = params[key]
    return out


def _resolved(session: ClientSession, fitted: Fitted, params: dict[str, Any], name: str) -> dict[str, Any]:
    """C{params} naming the shaped tool C{name} stands for; unknown outside the view."""
    shaped = fitted.shaped(name)
    if shaped is None:
        raise unknown(session, "tools/call", "tool", name)
    if shaped == params.get("name"):
        return params
    return {**params, "name": shaped}


__all__ = ["call_tool", "list_tools", "ordinary_call"]
