"""
What each client request does, one module per family of methods, and
L{METHODS}, the table the session dispatches on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import attrs

from twisted_mcp.dispatch.handlers import completion, discover, lifecycle, listen, logs, prompts, resources, tools

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight


@attrs.frozen
class Method:
    """
    How the session treats one method.

    @ivar handle: C{(session, request, params)} to the result, or a
        Deferred of it; raises L{JsonRpcError} to answer an error.
    @ivar routed: it goes to a backend: admitted against
        C{gateway.maxCallsInFlight} and cancellable while in flight.
    @ivar waits: its answer needs the merged catalog, so it waits (bounded)
        for the backends' first discovery.
    @ivar before_initialize: allowed before C{initialize}.
    @ivar legacy: a method of the handshake era (2024-11-05 to 2025-11-25).
    @ivar modern: a method of the stateless era (2026-07-28).
    @ivar family: the capability a stateless-era client must have been
        offered (in C{server/discover}) for this method to exist for it.
    """

    handle: Callable[[ClientSession, InFlight, dict[str, Any]], Any]
    routed: bool = False
    waits: bool = True
    before_initialize: bool = False
    legacy: bool = True
    modern: bool = True
    family: str | None = None


METHODS: dict[str, Method] = {
    "initialize": Method(lifecycle.initialize, waits=False, before_initialize=True, modern=False),
    "ping": Method(lifecycle.ping, waits=False, before_initialize=True, modern=False),
    "server/discover": Method(discover.discover, waits=False, legacy=False),
    # Held open until the client cancels it or the session ends (at most
    # DEFAULT_MAX_LISTENS per session); what it honours needs the catalog, so
    # a first listen waits (bounded) for the backends' first discovery.
    "subscriptions/listen": Method(listen.listen, legacy=False),
    "tools/list": Method(tools.list_tools),
    "tools/call": Method(tools.call_tool, routed=True),
    "prompts/list": Method(prompts.list_prompts, family="prompts"),
    "prompts/get": Method(prompts.get_prompt, routed=True, family="prompts"),
    "resources/list": Method(resources.list_resources, family="resources"),
    "resources/templates/list": Method(resources.list_templates, family="resources"),
    "resources/read": Method(resources.read, routed=True, family="resources"),
    "resources/subscribe": Method(resources.subscribe, routed=True, modern=False),
    "resources/unsubscribe": Method(resources.unsubscribe, modern=False),
    "completion/complete": Method(completion.complete, routed=True, family="completions"),
    "logging/setLevel": Method(logs.set_level, waits=False, modern=False),
}

__all__ = ["METHODS", "Method"]
