"""C{prompts/list} and C{prompts/get}."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_mcp.dispatch.lists import visible
from twisted_mcp.dispatch.pages import page
from twisted_mcp.dispatch.routing import forward, refuse, unknown
from twisted_mcp.policy.subject import Subject
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight


def list_prompts(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    shown = visible(session, "prompts/list", "prompts", session.gateway.catalog.prompts)
    return page("prompts", shown, params.get("cursor"))


def get_prompt(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    name = params.get("name")
    if type(name) is not str:
        raise refuse(session, "prompts/get", INVALID_PARAMS, "Invalid params: prompts/get needs params.name, a string")
    catalog = session.gateway.catalog
    entry = catalog.prompts.entries.get(name)
    if entry is None:
        raise unknown(session, "prompts/get", "prompt", name)
    arguments = params.get("arguments")
    if arguments is not None and type(arguments) is not dict:
        raise refuse(session, "prompts/get", INVALID_PARAMS, "Invalid params: prompts/get arguments must be an object")
    backend = entry.backend
    out = dict(params)
    out["name"] = entry.original
    subject = Subject("prompt", name, backend.name, entry.original)
    return forward(session, request, subject, backend, params, out, lambda result: catalog.expose_content(backend, result))
