"""
The gateway's own JSON-RPC error codes, in one place (the README's error
table is written from this module).

The range -32000 to -32019 is kept for policy refusals (identity, access,
limits); the errors of reaching a backend use -32030 to -32039.  Every
error of a backend carries C{data.backend}, the backend's name.
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.wire.jsonrpc import JsonRpcError

# -- policy refusals (-32000 to -32019) --------------------------------------
#: The caller's identity could not be established (missing, invalid or
#: expired token).
AUTHENTICATION_FAILED = -32000
#: The kill switch disables this principal.
PRINCIPAL_DISABLED = -32001
#: The kill switch disables this tool.
TOOL_DISABLED = -32002
#: The kill switch disables this backend.
BACKEND_DISABLED = -32003
#: The caller's roles do not allow this tool.
ACCESS_DENIED = -32004
#: Tool pinning quarantined this tool (new, or changed since it was pinned).
TOOL_QUARANTINED = -32005
#: A rate limit was reached.
RATE_LIMITED = -32006
#: A concurrency limit was reached and its queue was full (or the wait timed
#: out); a stdio backend has maxQueuedBytes waiting for it to read; an HTTP
#: backend has maxRequests in flight; or a per-session backend runs as many
#: instances as its caps allow.
BUSY = -32007
#: The backend's circuit breaker is open.
CIRCUIT_OPEN = -32008
#: The audit trail cannot be written, and audit.onFailure is "refuse".
AUDIT_UNAVAILABLE = -32009
#: The session already has gateway.maxCallsInFlight requests in flight.
TOO_MANY_CALLS = -32010
#: A connection refused: too many clients in all, from this peer, or too few
#: descriptors left for the backends.
TOO_MANY_CONNECTIONS = -32011

# -- reaching a backend (-32030 to -32039) ------------------------------------
#: The backend that owns the tool is not up (never started, exited, restarting).
BACKEND_UNAVAILABLE = -32030
#: The backend did not answer within the call timeout; it was sent
#: notifications/cancelled.
BACKEND_TIMEOUT = -32031
#: The backend's process exited (or its connection dropped) while the call
#: was in flight.
BACKEND_LOST = -32032
#: The gateway is shutting down and the call could not finish in the grace
#: period.
GATEWAY_SHUTTING_DOWN = -32033
#: The backend's answer was larger than gateway.maxMessageBytes.
BACKEND_RESPONSE_TOO_LARGE = -32034
#: The backend answered with an HTTP error status (or a redirect, which the
#: gateway does not follow).
BACKEND_HTTP_ERROR = -32035
#: The client sent a request before initialize.
NOT_INITIALIZED = -32600

TABLE = [
    (AUTHENTICATION_FAILED, "authentication failed", "reason"),
    (PRINCIPAL_DISABLED, "principal disabled (kill switch)", "tool"),
    (TOOL_DISABLED, "tool disabled (kill switch)", "tool"),
    (BACKEND_DISABLED, "backend disabled (kill switch)", "tool"),
    (ACCESS_DENIED, "access denied", "tool"),
    (TOOL_QUARANTINED, "tool quarantined (pinning)", "tool"),
    (RATE_LIMITED, "rate limited", "retryAfter (seconds), limit (principal, tool or backend)"),
    (BUSY, "busy (concurrency limit, backend input queue, HTTP requests in flight, per-session instance caps)", "backend, limit, cap (maxInstances or maxInstancesPerPrincipal)"),
    (CIRCUIT_OPEN, "circuit breaker open", "backend, retryAfter (seconds), state"),
    (AUDIT_UNAVAILABLE, "audit trail unavailable", "none"),
    (TOO_MANY_CALLS, "too many requests in flight on this session", "limit"),
    (TOO_MANY_CONNECTIONS, "connection refused: too many connections", "limit (which limit), value"),
    (BACKEND_UNAVAILABLE, "backend unavailable", "backend, state, retryAfter (seconds until the next restart, when one is scheduled)"),
    (BACKEND_TIMEOUT, "backend call timed out", "backend, timeout (seconds)"),
    (BACKEND_LOST, "backend exited during the call", "backend"),
    (GATEWAY_SHUTTING_DOWN, "gateway shutting down", "none"),
    (BACKEND_RESPONSE_TOO_LARGE, "backend response too large", "backend, limit (bytes)"),
    (BACKEND_HTTP_ERROR, "backend HTTP error", "backend, status"),
]


def backend_error(code: int, backend: str, message: str, **data: Any) -> JsonRpcError:
    data["backend"] = backend
    return JsonRpcError(code, message, data)
