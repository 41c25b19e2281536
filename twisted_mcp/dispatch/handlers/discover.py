"""
C{server/discover} (MCP 2026-07-28): the versions the gateway speaks, of
both eras, and what it offers the caller, without a handshake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from twisted_mcp.mcp.versions import SUPPORTED_VERSIONS

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight

#: Seconds C{server/discover} waits for the backends' first discovery before
#: it answers with what is known (clients probe with a timeout of their own:
#: the official SDKs' is 10 s).
DISCOVER_WAIT = 5.0


def discover(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    gateway = session.gateway
    if gateway.ready:
        return _result(session, request)
    d: Deferred[Any] = Deferred()

    def answer() -> None:
        if not d.called:
            d.callback(None)

    timer = gateway.clock.callLater(DISCOVER_WAIT, answer)

    def ready(_: Any) -> None:
        if timer.active():
            timer.cancel()
        answer()

    gateway.when_ready().addCallback(ready)
    return d.addCallback(lambda _: _result(session, request))


def modern_capabilities(offered: dict[str, Any]) -> dict[str, Any]:
    """
    What the gateway offers a stateless-era client: the families of
    C{offered}, with C{listChanged} for tools, prompts and resources and
    C{resources.subscribe} when a backend the caller sees supports it, all
    delivered on C{subscriptions/listen} streams.
    """
    return {family: dict(flags) for family, flags in offered.items()}


def _result(session: ClientSession, request: InFlight) -> dict[str, Any]:
    gateway = session.gateway
    result: dict[str, Any] = {
        "supportedVersions": list(SUPPORTED_VERSIONS),
        "capabilities": modern_capabilities(gateway.capabilities(session)),
    }
    # The budget of this request's own clientInfo, not the connection's.
    instructions = gateway.instructions(session, request)
    if instructions:
        result["instructions"] = instructions
    return result
