"""
What a stateless-era (2026-07-28) backend is told of each request.

Such a server keeps no session: every request carries, in C{params._meta},
the protocol version, who the client is and what the client can do
(C{io.modelcontextprotocol/*} keys).  Toward a modern backend the gateway is
the client, but the capabilities it passes on are the I{end client's},
exactly (never wider), restricted to what the gateway can bridge: the
backend must not ask for what the person at the other end cannot give.
The gateway's own requests (listings, liveness) declare no capability.
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.mcp.meta import CLIENT_CAPABILITIES, LOG_LEVEL, PROTOCOL_VERSION, without_reserved
from twisted_mcp.mcp.meta import CLIENT_INFO as CLIENT_INFO_KEY
from twisted_mcp.mcp.versions import CLIENT_INFO

#: The client capabilities the gateway can carry between a client and a
#: backend; any other (C{experimental}, C{extensions}) is not passed on.
BRIDGED = ("sampling", "elicitation", "roots")


def bridged(capabilities: Any) -> dict[str, Any]:
    """The part of a client's C{capabilities} the gateway passes on, as the client declared it."""
    if type(capabilities) is not dict:
        return {}
    return {key: capabilities[key] for key in BRIDGED if key in capabilities}


def stamp(params: dict[str, Any] | None, version: str, capabilities: Any, log_level: str | None) -> dict[str, Any]:
    """
    A copy of C{params} whose C{_meta} carries the envelope toward a modern
    backend at C{version}: the gateway's client info, the client's bridged
    C{capabilities}, and C{log_level} when the client asked for log messages
    (none otherwise, so the backend sends none).  Whatever reserved keys
    the params already had are replaced, never passed on.
    """
    out = dict(params) if params else {}
    meta = out.get("_meta")
    kept = without_reserved(meta) if type(meta) is dict else None
    envelope: dict[str, Any] = {
        PROTOCOL_VERSION: version,
        CLIENT_INFO_KEY: dict(CLIENT_INFO),
        CLIENT_CAPABILITIES: bridged(capabilities),
    }
    if log_level is not None:
        envelope[LOG_LEVEL] = log_level
    out["_meta"] = envelope if kept is None else {**kept, **envelope}
    return out


def own(params: dict[str, Any] | None, version: str) -> dict[str, Any]:
    """C{params} of one of the gateway's own requests (a listing, a liveness probe) toward a modern backend."""
    return stamp(params, version, {}, None)


__all__ = ["BRIDGED", "bridged", "own", "stamp"]
