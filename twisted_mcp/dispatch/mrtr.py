"""
Multi-round-trip requests (MCP 2026-07-28) between a stateless-era client
and the gateway: which mechanism a retry belongs to, and the pass-through
toward stateless-era backends.

A stateless-era backend's C{InputRequiredResult} goes to a stateless-era
client as it is (its C{inputRequests} and their keys unchanged) but for its
C{requestState}, wrapped in the gateway's seal (a token of kind C{pass},
L{twisted_mcp.mcp.request_state}): bound to the caller, the request and the
backend (and its restarts), and expiring.  On the retry the token is
opened, checked, and the backend is sent its own state back, byte for
byte, with the client's C{inputResponses} untouched.  The gateway holds
nothing between the two: a pass token may be used more than once (the
backend's state is the backend's business), within its binding and life.

A retry naming a held call (a handshake-era backend's request, kind
C{held}) is resumed by L{twisted_mcp.dispatch.held_calls}; one after an
authorization was asked (kind C{auth}) goes its usual way, and
L{twisted_mcp.dispatch.authorization} waits for the consent first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.authorization import auth_retry
from twisted_mcp.dispatch.held_calls import KIND as HELD
from twisted_mcp.dispatch.held_calls import backend_label, caller_digest
from twisted_mcp.dispatch.instances import principal_name
from twisted_mcp.mcp.errors import GatewayError
from twisted_mcp.mcp.request_state import AUTH, MAX_TOKEN_CHARS, Claims, StateRefused, check_binding, request_digest
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight

log = Logger()

#: The kind of token that wraps a stateless-era backend's own requestState.
PASS = "pass"


def retry(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Deferred[Any] | None:
    """
    A stateless-era retry carrying C{requestState}, its token opened and
    checked (L{StateRefused} otherwise, logged with the reason, never the
    token): a held call's is resumed (its answer); a pass token is kept on
    the request, which goes its usual way (None).
    """
    try:
        held = session.gateway.reverse.held
        claims = held.seal.open(params.get("requestState"))
        if claims.kind not in (HELD, PASS, AUTH):
            raise StateRefused("requestState was not issued by this gateway")
        check_binding(claims, claims.kind, caller_digest(session), request.method, request_digest(params))
        if claims.kind == HELD:
            return held.resume(session, request, params, claims)
        request.passed = auth_retry(claims, params) if claims.kind == AUTH else claims
        return None
    except StateRefused as e:
        refused(session, e)
        raise


def refused(session: ClientSession, e: StateRefused) -> None:
    """Log a refused requestState: the reason and the principal, at info."""
    log.info(
        "client {client} ({principal}): a retry's requestState was refused: {why}",
        client=session.label,
        principal=principal_name(session.gateway, session.peer),
        why=e.data["reason"],
    )


def sealed(request: InFlight, target: Backend, result: dict[str, Any]) -> dict[str, Any]:
    """
    C{target}'s InputRequiredResult for C{request} (a stateless-era
    client's) with its C{requestState} in the gateway's seal (as it is
    when it has none).
    """
    state = result.get("requestState")
    if state is None:
        return result
    session = request.session
    seal = session.gateway.reverse.held.seal
    assert request.holdable is not None  # forward() keeps a stateless-era MRTR request's params
    claims = Claims(PASS, caller_digest(session), request.method, request_digest(request.holdable), backend_label(target), seal.expiry(), state)
    token = seal.seal(claims)
    if len(token) > MAX_TOKEN_CHARS:
        raise GatewayError(
            INTERNAL_ERROR,
            f"backend {target.name!r} sent a requestState too long to pass on ({len(state)} characters)",
            {"backend": target.name},
        )
    return {**result, "requestState": token}


def unsealed(request: InFlight, target: Backend, out: dict[str, Any]) -> dict[str, Any]:
    """
    C{out} (a retry's params, C{inputResponses} untouched) with the
    backend's own state in place of the pass token C{request} carried;
    L{StateRefused} when the token was sealed for another backend, or
    before it restarted.
    """
    claims = request.passed
    assert isinstance(claims, Claims)
    if claims.backend != backend_label(target):
        e = StateRefused("requestState names a server that has restarted or changed since")
        refused(request.session, e)
        raise e
    return {**out, "requestState": claims.state}


__all__ = ["PASS", "refused", "retry", "sealed", "unsealed"]
