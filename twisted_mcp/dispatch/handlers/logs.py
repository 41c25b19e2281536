"""C{logging/setLevel}."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_mcp.dispatch.caller import LOG_LEVELS
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight


def set_level(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    level = params.get("level")
    if level not in LOG_LEVELS:
        raise JsonRpcError(INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(LOG_LEVELS)}")
    session.gateway.logs.set_level(session, level)
    return {}
