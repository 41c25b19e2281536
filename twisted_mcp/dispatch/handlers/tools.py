"""C{tools/list} and C{tools/call}."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_mcp.dispatch.lists import visible
from twisted_mcp.dispatch.routing import forward, refuse, unknown
from twisted_mcp.policy.subject import Subject
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight


def list_tools(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("cursor") is not None:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params: unknown cursor (the gateway lists every tool in one page)")
    return {"tools": visible(session, "tools/list", "tools", session.gateway.catalog.tools)}


def call_tool(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    name = params.get("name")
    if type(name) is not str:
        raise refuse(session, "tools/call", INVALID_PARAMS, "Invalid params: tools/call needs params.name, a string")
    catalog = session.gateway.catalog
    entry = catalog.tools.entries.get(name)
    if entry is None:
        raise unknown(session, "tools/call", "tool", name)
    arguments = params.get("arguments")
    if arguments is not None and type(arguments) is not dict:
        raise refuse(session, "tools/call", INVALID_PARAMS, "Invalid params: tools/call arguments must be an object")
    backend = entry.backend
    out = dict(params)
    out["name"] = entry.original
    subject = Subject("tool", name, backend.name, entry.original)
    return forward(session, request, subject, backend, params, out, lambda result: catalog.expose_content(backend, result), entry=entry)
