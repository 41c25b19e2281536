"""
C{prompts/list} and C{prompts/get}: the prompts of the caller's view; a
prompt outside it is answered as an unknown one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_mcp.dispatch.lists import selection_of, visible
from twisted_mcp.dispatch.pages import page
from twisted_mcp.dispatch.routing import forward_named, unknown

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight


def list_prompts(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    shown = visible(session, "prompts/list", "prompts", session.gateway.catalog.prompts)
    return page("prompts", shown, params.get("cursor"))


def get_prompt(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    prompts = session.gateway.catalog.prompts
    name = params.get("name")
    if type(name) is str and name in prompts.entries and name not in selection_of(session).prompts.members:
        raise unknown(session, "prompts/get", "prompt", name)
    return forward_named(session, request, params, "prompt", prompts)
