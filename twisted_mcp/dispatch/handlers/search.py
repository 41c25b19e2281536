"""
C{search_tools}, the gateway's own tool of search mode: the tools of the
caller's fitted list that best match a query, as a C{CallToolResult}.

Stateless: a function of the principal, the view, the budget and the
query.  A principal the kill switch disables, or over its own rate limit
(the C{principal} bucket), is refused as for any call.  Only the tools the principal may see in the view are ranked (the
policy's cached decisions, as C{tools/list}), so a search never reveals a
tool denied, killed, quarantined or outside the view.  Each search is
audited as what the client sent, a C{tools/call} of the search tool (its
C{tool} and C{subject}), with a listing's reason: C{search: <found> of
<visible> tool(s) found}.
Problems the model can fix (a query too long, a limit out of bounds) are
answered with C{isError: true}.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from twisted_mcp.mcp import errors
from twisted_mcp.policy.decisions import principal_killed

if TYPE_CHECKING:
    from twisted_mcp.dispatch.gateway import Gateway
    from twisted_mcp.dispatch.search import SearchIndex
    from twisted_mcp.dispatch.session import ClientSession, InFlight
    from twisted_mcp.dispatch.surface import Fitted

#: The longest query accepted, in characters.
MAX_QUERY = 1000


@attrs.define
class IndexHolder:
    """
    The gateway's search index (L{Gateway.search_index}), made at the first
    search, and the catalog's tools listing it was last synced with.
    """

    index: SearchIndex
    synced: Any = None


def tool_error(text: str) -> dict[str, Any]:
    """A tool execution error the model can read and fix."""
    return {"content": [{"type": "text", "text": text}], "isError": True}


def search_index(gateway: Gateway) -> SearchIndex:
    """The gateway's search index, in step with its catalog's tools."""
    tools = gateway.catalog.tools
    held = gateway.search_index
    if held is None:
        # Imported at the first search: a gateway that never searches never builds it.
        from twisted_mcp.dispatch.search import SearchIndex

        held = gateway.search_index = IndexHolder(SearchIndex())
    if held.synced is not tools:
        held.index.sync((entry.backend.name, name, entry.definition) for name, entry in tools.entries.items())
        held.synced = tools
    return held.index


def _arguments(arguments: Any, settings: Any) -> tuple[str, int, str | None]:
    """The query and limit of a search's C{arguments}, or why they are not usable (a tool error the model can fix)."""
    if arguments is None:
        arguments = {}
    if type(arguments) is not dict:
        return "", 0, "arguments must be an object: {query, limit}"
    query = arguments.get("query")
    if type(query) is not str:
        return "", 0, "query must be a string: a few words describing the task"
    if not query.strip():
        return "", 0, "query is empty: give a few words describing the task"
    if len(query) > MAX_QUERY:
        return "", 0, f"query is longer than {MAX_QUERY} characters; describe the task in a few words"
    limit = arguments.get("limit", settings.defaultLimit)
    if type(limit) is not int or not 1 <= limit <= settings.maxLimit:
        return "", 0, f"limit must be a whole number from 1 to {settings.maxLimit}, got {json.dumps(limit, default=str)}"
    return query, limit, None


def search_tools(
    session: ClientSession, request: InFlight, params: dict[str, Any], fitted: Fitted, principal: Any
) -> dict[str, Any]:
    """The answer to a call of the search tool (C{params} of the C{tools/call})."""
    settings = session.gateway.surface.search
    policy = session.gateway.policy
    if policy.active and principal_killed(policy.rules, policy.kills, principal):
        raise policy.refuse_request(
            session.label,
            "tools/call",
            errors.PRINCIPAL_DISABLED,
            f"principal {principal.name!r} is disabled by the kill switch",
            session.peer,
            protocol=session.protocol_version,
        )
    if policy.active:
        refused = policy.charge_principal(session.label, "tools/call", principal, session.protocol_version)
        if refused is not None:
            raise refused
    query, limit, problem = _arguments(params.get("arguments"), settings)
    if problem is not None:
        if policy.active:
            policy.audit_listing(
                session.label,
                "tool",
                principal,
                0,
                len(fitted.visible),
                session.protocol_version,
                search=settings.searchName,
                search_error=problem,
            )
        return tool_error(problem)
    hits = search_index(session.gateway).search(query, fitted.visible, limit)
    tools = [fitted.served(hit.name) for hit in hits if hit.name in fitted.definitions]
    if policy.active:
        policy.audit_listing(
            session.label,
            "tool",
            principal,
            len(tools),
            len(fitted.visible),
            session.protocol_version,
            search=settings.searchName,
        )
    found = {"tools": tools, "total": len(fitted.visible), "query": query}
    text = json.dumps(found, separators=(",", ":"), ensure_ascii=False, default=str)
    return {"content": [{"type": "text", "text": text}], "structuredContent": found, "isError": False}


__all__ = ["MAX_QUERY", "IndexHolder", "search_index", "search_tools", "tool_error"]
