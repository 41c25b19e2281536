"""
What each client request does, one module per family of methods, and
L{METHODS}, the table the session dispatches on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import attrs

from twisted_mcp.dispatch.handlers import completion, lifecycle, logs, prompts, resources, tools

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
    """

    handle: Callable[[ClientSession, InFlight, dict[str, Any]], Any]
    routed: bool = False
    waits: bool = True
    before_initialize: bool = False


METHODS: dict[str, Method] = {
    "initialize": Method(lifecycle.initialize, waits=False, before_initialize=True),
    "ping": Method(lifecycle.ping, waits=False, before_initialize=True),
    "tools/list": Method(tools.list_tools),
    "tools/call": Method(tools.call_tool, routed=True),
    "prompts/list": Method(prompts.list_prompts),
    "prompts/get": Method(prompts.get_prompt, routed=True),
    "resources/list": Method(resources.list_resources),
    "resources/templates/list": Method(resources.list_templates),
    "resources/read": Method(resources.read, routed=True),
    "resources/subscribe": Method(resources.subscribe, routed=True),
    "resources/unsubscribe": Method(resources.unsubscribe),
    "completion/complete": Method(completion.complete, routed=True),
    "logging/setLevel": Method(logs.set_level, waits=False),
}

__all__ = ["METHODS", "Method"]
