"""C{prompts/list} and C{prompts/get}."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_mcp.dispatch.lists import visible
from twisted_mcp.dispatch.pages import page
from twisted_mcp.dispatch.routing import forward_named

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight


def list_prompts(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    shown = visible(session, "prompts/list", "prompts", session.gateway.catalog.prompts)
    return page("prompts", shown, params.get("cursor"))


def get_prompt(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    return forward_named(session, request, params, "prompt", session.gateway.catalog.prompts)
