"""
L{Caller}: what the core knows of the client on the other end of a session,
whatever carries its messages and whichever protocol era it speaks: who it
is, what it negotiated and declared, the log level it asked for, and how to
send it a message.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

#: The levels of C{logging/setLevel} and C{notifications/message}, least
#: severe first (RFC 5424's, as MCP names them).
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_SEVERITY = {level: i for i, level in enumerate(LOG_LEVELS)}
#: What a client that never sent C{logging/setLevel} receives.
DEFAULT_LOG_LEVEL = "info"


def severity(level: Any) -> int | None:
    """The rank of a log level (higher is more severe), None for an unknown one."""
    return _SEVERITY.get(level) if type(level) is str else None


@attrs.define(eq=False)
class Caller:
    """
    One client of the gateway, as the core sees it.

    @ivar send: writes one message toward the client and returns its size in
        bytes (0 when it could not be sent).  C{related} is the id of the
        client's request the message belongs to (a progress notification, a
        server-to-client request made during that call), for transports
        that carry it on that request's own stream; C{progress_of} marks a
        progress notification of the call with that key, which a transport
        may coalesce while the client does not read.
    @ivar peer: who is on the other end (a L{twisted_mcp.policy.peers.Peer}),
        which the policy turns into a principal; None on stdio.
    """

    label: str
    send: Callable[..., int]
    peer: Any = None
    #: The protocol version negotiated, or of its first stateless-era request (None before either).
    version: str | None = None
    #: C{legacy} once it sent C{initialize}, C{modern} once it sent a
    #: 2026-07-28 request (other than C{server/discover}); None before.
    era: str | None = None
    #: The capabilities the client declared (sampling, elicitation, roots...).
    capabilities: dict[str, Any] = attrs.field(factory=dict)
    #: The name and version it gave (short strings).
    info: dict[str, str] = attrs.field(factory=dict)
    #: The level it asked for with C{logging/setLevel}, None if it never did.
    log_level: str | None = None
    #: Told (with its key) that a call with progress notifications was
    #: answered: progress a transport still holds for it is stale.
    call_ended: Callable[[Any], None] = lambda key: None
    #: The profile the connection or HTTP path is bound to (C{profiles:}),
    #: None for the default view; set by the front that accepted it.
    view: str | None = None

    def admits_log(self, level: Any) -> bool:
        """Whether a server log message of C{level} is for this client."""
        wanted = severity(self.log_level or DEFAULT_LOG_LEVEL)
        got = severity(level)
        return got is None or wanted is None or got >= wanted

    def can_answer(self, method: str, params: dict[str, Any]) -> str | None:
        """
        Why this (handshake-era) client cannot be sent the server-to-client
        request C{method}, or None when its C{initialize} declared the
        capability it needs.
        """
        return can_answer(self.capabilities, method, params)


def can_answer(capabilities: dict[str, Any], method: str, params: dict[str, Any]) -> str | None:
    """
    Why a client that declared C{capabilities} (at C{initialize}, or in a
    2026-07-28 request's own envelope) cannot answer the server-to-client
    request C{method}, or None when it can.
    """
    caps = capabilities
    if method == "sampling/createMessage":
        if type(caps.get("sampling")) is not dict:
            return "it did not declare the sampling capability"
        return None
    if method == "elicitation/create":
        elicitation = caps.get("elicitation")
        if type(elicitation) is not dict:
            return "it did not declare the elicitation capability"
        mode = params.get("mode", "form")
        if mode == "url":
            if type(elicitation.get("url")) is not dict:
                return "it did not declare URL-mode elicitation (capabilities.elicitation.url)"
        elif elicitation and type(elicitation.get("form")) is not dict:
            # An empty object means form mode (2025-06-18 and later).
            return "it did not declare form-mode elicitation (capabilities.elicitation.form)"
        return None
    if method == "roots/list":
        if type(caps.get("roots")) is not dict:
            return "it did not declare the roots capability"
        return None
    return f"the gateway does not pass {method} on to clients"


def required_capability(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The client capabilities C{method} needs, as C{requiredCapabilities} of a -32021 error names them."""
    if method == "sampling/createMessage":
        return {"sampling": {"tools": {}} if params.get("tools") else {}}
    if method == "elicitation/create":
        return {"elicitation": {"url": {}} if params.get("mode") == "url" else {"form": {}}}
    return {"roots": {}}


__all__ = ["DEFAULT_LOG_LEVEL", "LOG_LEVELS", "Caller", "can_answer", "required_capability", "severity"]
