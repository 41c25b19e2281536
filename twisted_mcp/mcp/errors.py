"""
The gateway's own JSON-RPC error codes, in one place.  L{TABLE} is the
README's table of error codes, row for row (a unit test compares them).

Every code the gateway defines lies in the application-defined band -31000
to -31099, outside JSON-RPC's reserved range, because MCP's error-code rules
(specification 2026-07-28, "Base Protocol", "Error Codes") say:

  - -32000 to -32019 are legacy: "New codes MUST NOT be allocated in this
    sub-range, and new implementations SHOULD NOT use codes from this
    sub-range at all" (and -32002 meant "resource not found" to clients of
    2025-11-25 and earlier);
  - -32020 to -32099 are the specification's own: "Implementations MUST NOT
    emit any code from this sub-range that is not defined by this
    specification";
  - "New error codes for purposes not defined by this specification SHOULD
    be allocated outside the JSON-RPC reserved range (-32768 to -32000)".

The gateway used -320NN before; each code kept its last two digits, so
-320NN became -310NN.  -31000 to -31019 are policy refusals (identity,
access, limits); -31030 to -31039 are the errors of reaching a backend, and
carry C{data.backend}, the backend's name.  The standard JSON-RPC codes
(-32700, -32600 to -32603) keep their meaning.

The gateway raises its own errors as L{GatewayError}.  A backend's error is
relayed as the plain L{JsonRpcError} the wire layer read, whatever its code:
"is this the gateway's own error?" is C{isinstance(e, GatewayError)}, never a
test on the code, since a backend may answer with any integer, ours included.
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.wire.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    JsonRpcError,
)

# -- policy refusals (-31000 to -31019) --------------------------------------
#: The caller's identity could not be established (missing, invalid or
#: expired token).
AUTHENTICATION_FAILED = -31000
#: The kill switch disables this principal.
PRINCIPAL_DISABLED = -31001
#: The kill switch disables this tool.
TOOL_DISABLED = -31002
#: The kill switch disables this backend.
BACKEND_DISABLED = -31003
#: The caller's roles do not allow this tool.
ACCESS_DENIED = -31004
#: Tool pinning quarantined this tool (new, or changed since it was pinned).
TOOL_QUARANTINED = -31005
#: A rate limit was reached.
RATE_LIMITED = -31006
#: A concurrency limit was reached and its queue was full (or the wait timed
#: out); a stdio backend has maxQueuedBytes waiting for it to read; an HTTP
#: backend has maxRequests in flight; or a per-session backend runs as many
#: instances as its caps allow.
BUSY = -31007
#: The backend's circuit breaker is open.
CIRCUIT_OPEN = -31008
#: The audit trail cannot be written, and audit.onFailure is "refuse".
AUDIT_UNAVAILABLE = -31009
#: The session already has gateway.maxCallsInFlight requests in flight.
TOO_MANY_CALLS = -31010
#: A connection refused: too many clients in all, from this peer, or too few
#: descriptors left for the backends.
TOO_MANY_CONNECTIONS = -31011
#: An HTTP client resumed a call's stream after more than
#: http.replayBufferBytes of it had passed: the call was cancelled.
STREAM_LOST = -31012
#: The shared state (state.redis) cannot be reached and state.onUnavailable
#: says to refuse: the rate limits or the kill switch cannot be checked
#: across replicas.
STATE_UNAVAILABLE = -31013

# -- reaching a backend (-31030 to -31039) ------------------------------------
#: The backend that owns the tool is not up (never started, exited, restarting).
BACKEND_UNAVAILABLE = -31030
#: The backend did not answer within the call timeout; it was sent
#: notifications/cancelled.
BACKEND_TIMEOUT = -31031
#: The backend's process exited (or its connection dropped) while the call
#: was in flight.
BACKEND_LOST = -31032
#: The gateway is shutting down and the call could not finish in the grace
#: period.
GATEWAY_SHUTTING_DOWN = -31033
#: The backend's answer was larger than gateway.maxMessageBytes.
BACKEND_RESPONSE_TOO_LARGE = -31034
#: The backend answered with an HTTP error status (or a redirect, which the
#: gateway does not follow).
BACKEND_HTTP_ERROR = -31035

# -- authorizing toward a backend (-31040 to -31049) ---------------------------
#: The principal has no usable OAuth token for this backend (never authorized,
#: revoked, rejected, more scopes needed, consent declined or still pending).
AUTHORIZATION_REQUIRED = -31040
#: An authorization flow ran and failed for a reason the principal can see
#: (refused at the authorization server, a bad state or iss, the token request
#: refused, the step-up limit).
AUTHORIZATION_FAILED = -31041
#: The gateway cannot authorize toward this backend now: the authorization
#: server is down or misconfigured, or so is the gateway's side (the operator acts).
AUTHORIZATION_UNAVAILABLE = -31042

#: The gateway's own codes: every code above, and only those.  Each lies in
#: -31000 to -31099, and none is a code JSON-RPC or MCP defines.
GATEWAY_CODES = frozenset(
    {
        AUTHENTICATION_FAILED,
        PRINCIPAL_DISABLED,
        TOOL_DISABLED,
        BACKEND_DISABLED,
        ACCESS_DENIED,
        TOOL_QUARANTINED,
        RATE_LIMITED,
        BUSY,
        CIRCUIT_OPEN,
        AUDIT_UNAVAILABLE,
        TOO_MANY_CALLS,
        TOO_MANY_CONNECTIONS,
        STREAM_LOST,
        STATE_UNAVAILABLE,
        BACKEND_UNAVAILABLE,
        BACKEND_TIMEOUT,
        BACKEND_LOST,
        GATEWAY_SHUTTING_DOWN,
        BACKEND_RESPONSE_TOO_LARGE,
        BACKEND_HTTP_ERROR,
        AUTHORIZATION_REQUIRED,
        AUTHORIZATION_FAILED,
        AUTHORIZATION_UNAVAILABLE,
    }
)

#: MCP 2026-07-28's "Unsupported protocol version" (data: supported, requested).
UNSUPPORTED_PROTOCOL_VERSION = -32022
#: MCP 2026-07-28's "Header mismatch": an HTTP request's MCP-Protocol-Version,
#: Mcp-Method or Mcp-Name header is missing or says something else than its body.
HEADER_MISMATCH = -32020
#: MCP 2026-07-28's "Missing required client capability": the call needs a
#: capability (sampling, elicitation) its request did not declare
#: (data: requiredCapabilities, an object of the capabilities wanted).
MISSING_CLIENT_CAPABILITY = -32021

#: MCP's own "Resource not found" (2024-11-05 to 2025-11-25; the 2026-07-28
#: era answers -32602 instead and forbids this code).  Not the gateway's.
RESOURCE_NOT_FOUND = -32002
#: The client sent a request before initialize (JSON-RPC's "Invalid Request",
#: not a code of the gateway's own).
NOT_INITIALIZED = INVALID_REQUEST

#: The README's table of error codes, row for row: (code, what it means, the
#: members of C{data}), in Markdown, for every code the gateway itself sends:
#: its own, then JSON-RPC's.
TABLE: list[tuple[int, str, str]] = [
    (AUTHENTICATION_FAILED, "authentication failed (missing, invalid or expired token)", "`reason`"),
    (PRINCIPAL_DISABLED, "the principal is disabled (kill switch)", "`tool`"),
    (TOOL_DISABLED, "the tool is disabled (kill switch)", "`tool`"),
    (BACKEND_DISABLED, "the backend is disabled (kill switch)", "`tool`"),
    (ACCESS_DENIED, "access denied: the caller's roles do not allow the tool", "`tool`"),
    (TOOL_QUARANTINED, "the tool is quarantined (pinning: new, or changed since pinned)", "`tool`"),
    (RATE_LIMITED, "rate limited", "`retryAfter` (seconds), `limit` (`principal`, `tool` or `backend`)"),
    (
        BUSY,
        "busy: the concurrency limit and its queue are full, or the wait timed out; a stdio server's input "
        "queue is full (`maxQueuedBytes`); an HTTP server has `maxRequests` in flight; a per-session "
        "server's instance cap is reached; too many 2026-07-28 calls are held waiting for their clients' input "
        "(`gateway.maxHeldCalls`, `gateway.maxHeldCallsPerPrincipal`)",
        "`backend`; `limit`, and `cap` for the instance caps; `limit` and `value` for held calls",
    ),
    (CIRCUIT_OPEN, "the backend's circuit breaker is open", "`backend`, `retryAfter`, `state`"),
    (
        AUDIT_UNAVAILABLE,
        "the audit trail cannot be written (and `audit.onFailure` is `refuse`), or `audit.maxQueue` records "
        "of calls that ran are waiting for a failed sink (whatever `onFailure` says)",
        "",
    ),
    (TOO_MANY_CALLS, "too many requests in flight on this session (`gateway.maxCallsInFlight`)", "`limit`"),
    (
        TOO_MANY_CONNECTIONS,
        "connection refused: too many connections (`maxClients`, `maxClientsPerPeer`) or too few descriptors "
        "left (`descriptorReserve`); sent as one line, then the connection closes",
        "`limit` (which setting), `value`",
    ),
    (
        STREAM_LOST,
        "an HTTP client resumed a call's stream (`Last-Event-ID`) after more than `http.replayBufferBytes` "
        "of it had passed while it was away; the call was cancelled",
        "`limit`, `value`",
    ),
    (
        STATE_UNAVAILABLE,
        "the shared state (`state.redis`) cannot be reached and `state.onUnavailable` says to refuse: the rate "
        "limits, concurrency limits or kill switch cannot be checked across replicas",
        "`unavailable` (`limits` or `killSwitch`)",
    ),
    (
        BACKEND_UNAVAILABLE,
        "the server that owns the tool is down (exited, restarting, never came up)",
        "`backend`, `state`, `retryAfter` (seconds until its next restart)",
    ),
    (BACKEND_TIMEOUT, "the server did not answer within `callTimeout`; it was sent `notifications/cancelled`", "`backend`, `timeout`"),
    (BACKEND_LOST, "the server exited during the call, or its HTTP stream broke before the answer", "`backend`"),
    (GATEWAY_SHUTTING_DOWN, "the gateway is shutting down and the call did not finish within the grace period", ""),
    (BACKEND_RESPONSE_TOO_LARGE, "the server's answer was larger than `maxMessageBytes`", "`backend`, `limit`"),
    (BACKEND_HTTP_ERROR, "an HTTP server answered an error status (or a redirect)", "`backend`, `status`"),
    (
        AUTHORIZATION_REQUIRED,
        "the server needs an OAuth authorization this principal has not given (or that was revoked, rejected, "
        "or needs more scopes): run the `twisted-mcp login` command the message names",
        "`backend`, `reason`, `login`, `scopes`",
    ),
    (
        AUTHORIZATION_FAILED,
        "an authorization toward the server failed (refused at its authorization server, a forged or stale "
        "redirect, the token request refused, too many step-ups)",
        "`backend`, `reason`, `error`",
    ),
    (
        AUTHORIZATION_UNAVAILABLE,
        "the gateway cannot authorize toward the server now (its authorization server is down, answers "
        "nonsense, or the gateway's OAuth settings or token store need the operator)",
        "`backend`, `reason`",
    ),
    (PARSE_ERROR, "the message is not valid JSON (or not UTF-8, or has NaN, or nests too deeply)", ""),
    (
        INVALID_REQUEST,
        "not a JSON-RPC request object; a batch; a boolean or null id; a message over `maxMessageBytes` (or "
        "over `maxHandshakeBytes` before `initialize` is answered); a request before `initialize`; an id "
        "already in use by a call in flight; a socket client that did not send `initialize` within "
        "`handshakeTimeout` or finish a message within `messageTimeout` (then disconnected)",
        "`limit` for oversized messages",
    ),
    (
        METHOD_NOT_FOUND,
        "method not found; for a 2026-07-28 request also a method of the handshake era only (`initialize`, "
        "`ping`, `logging/setLevel`, `resources/subscribe`) or of a family no server offers the caller",
        "",
    ),
    (
        INVALID_PARAMS,
        "unknown tool, or malformed `tools/call` params; a 2026-07-28 request whose `_meta` envelope is "
        "missing or malformed (the message names the key); a resource not found, for a 2026-07-28 client",
        "`tool`; `reason` for a malformed envelope",
    ),
    (
        UNSUPPORTED_PROTOCOL_VERSION,
        "a 2026-07-28 request names a protocol version the gateway does not speak, or `initialize` arrives "
        "on a connection that speaks 2026-07-28",
        "`supported` (the versions it speaks), `requested`",
    ),
    (
        HEADER_MISMATCH,
        "a 2026-07-28 request over HTTP whose `MCP-Protocol-Version`, `Mcp-Method` or `Mcp-Name` header is "
        "missing or says something else than its body (HTTP 400)",
        "",
    ),
    (
        MISSING_CLIENT_CAPABILITY,
        "a server asked for sampling or elicitation during a 2026-07-28 call whose request did not "
        "declare that capability in `io.modelcontextprotocol/clientCapabilities`",
        "`requiredCapabilities`",
    ),
    (INTERNAL_ERROR, "the gateway failed unexpectedly (the log has the details), or an answer could not be encoded", ""),
]


class GatewayError(JsonRpcError):
    """
    An error the gateway itself answers with: a policy refusal, a failure to
    reach a backend, a limit.  Its code is one of L{GATEWAY_CODES}, or
    JSON-RPC's C{INVALID_PARAMS} when the policy refuses an unknown tool or
    invalid arguments.  A backend's own error is never a L{GatewayError},
    whatever its code.
    """


def backend_error(code: int, backend: str, message: str, **data: Any) -> GatewayError:
    """The gateway's error C{code} about reaching C{backend}: C{data.backend} names it."""
    data["backend"] = backend
    return GatewayError(code, message, data)
