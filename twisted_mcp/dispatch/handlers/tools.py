"""C{tools/list} and C{tools/call}."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_mcp.dispatch.lists import visible
from twisted_mcp.dispatch.routing import forward_named
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight


def list_tools(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("cursor") is not None:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params: unknown cursor (the gateway lists every tool in one page)")
    return {"tools": visible(session, "tools/list", "tools", session.gateway.catalog.tools)}


def call_tool(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    return forward_named(session, request, params, "tool", session.gateway.catalog.tools)
