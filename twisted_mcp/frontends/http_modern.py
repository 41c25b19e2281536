"""
Stateless-era (MCP 2026-07-28) requests on the Streamable HTTP front.

Such a request belongs to no session: it carries its protocol version and
the client's capabilities in C{params._meta}, repeats its version, method and
name in headers, and is answered on its own POST (as JSON, or as SSE when
progress or log messages of the call come first).  Closing the POST cancels
the call.  It is checked in the spec's order, each refusal with its status:
the envelope (400, -32602), the headers (400, -32020), the version (400,
-32022), the method (404, -32601).

The core still wants a session per client (its requests in flight, its
limits, its per-session backends): each client identity (L{owner_of}: the
bearer token's principal, or the connection's identity) has one, made on
first use, counted against C{http.maxSessions} and
C{http.maxSessionsPerPrincipal}, ended after C{http.sessionIdleTimeout}
with nothing in flight.  Its id is never disclosed.  Request ids are the
gateway's own inside it (two clients of one principal may both use id 1)
and the client's own on the way back, also in the subscription id that tags
a C{subscriptions/listen} stream's notifications.

A C{subscriptions/listen} POST must accept SSE (406 otherwise): it is
answered with an SSE stream at once (the acknowledgment first) that stays
open, with the front's keep-alive comments, until the client closes it (the
listen ends, unanswered) or the gateway stops (its result, then the end).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web.http import Request

from twisted_mcp.frontends.http_errors import error_response
from twisted_mcp.frontends.http_sessions import HttpSession, owner_of
from twisted_mcp.mcp.http_headers import check_headers
from twisted_mcp.mcp.meta import check_envelope, check_version
from twisted_mcp.policy.peers import Peer
from twisted_mcp.wire.jsonrpc import INVALID_REQUEST, JsonRpcError, id_key

if TYPE_CHECKING:
    from twisted_mcp.frontends.http import McpResource

log = Logger()


class StatelessClients:
    """The core sessions of an HTTP front's stateless-era clients, one per client identity."""

    def __init__(self, front: McpResource) -> None:
        self.front = front
        #: By client identity and the view of the path (a profile's name, None for the default view).
        self.by_owner: dict[tuple[tuple[Any, ...], str | None], HttpSession] = {}

    def post(self, request: Request, peer: Peer, message: dict[str, Any], sse_ok: bool, view: str | None = None) -> Any:
        """A stateless-era request on the path of C{view}: checked, then answered on this POST under a caller of that view."""
        rid = message["id"]
        method = message["method"]
        params = message.get("params") or {}
        if request.getHeader(b"mcp-session-id") is not None:
            return error_response(
                request,
                400,
                INVALID_REQUEST,
                "Bad Request: a 2026-07-28 request belongs to no session; send it without Mcp-Session-Id "
                "(or send handshake-era requests, without the io.modelcontextprotocol/protocolVersion envelope, "
                "in the session)",
                rid=rid,
            )
        try:
            envelope = check_envelope(params)
            check_headers(request.getHeader, envelope.version, method, params)
            check_version(envelope)
        except JsonRpcError as e:
            return error_response(request, 400, e.code, e.message, e.data, rid)
        hs = self._session(request, peer, view)
        if not isinstance(hs, HttpSession):
            return hs
        try:
            hs.core.modern_method(method)
        except JsonRpcError as e:
            return error_response(request, 404, e.code, e.message, e.data, rid)
        if method == "subscriptions/listen" and not sse_ok:
            return error_response(
                request,
                406,
                INVALID_REQUEST,
                "Not Acceptable: subscriptions/listen is answered with an SSE stream that stays open; accept text/event-stream",
                rid=rid,
            )
        hs.core.peer = peer  # this request's connection, for the audit trail
        hs.last_id += 1
        return self.front.request(request, hs, {**message, "id": hs.last_id}, sse_ok, client_rid=rid)

    def _session(self, request: Request, peer: Peer, view: str | None = None) -> HttpSession | bytes:
        """The caller's core session on the path of C{view}, made on first use; or the refusal already written (bytes)."""
        key = (owner_of(peer), view)
        hs = self.by_owner.get(key)
        if hs is not None and not hs.ended:
            return hs
        opened = self.front.open_session(request, peer, f"{self.front.label}-stateless", "try again later", view)
        if isinstance(opened, HttpSession):
            opened.stateless = True
            self.by_owner[key] = opened
            # A listen's notifications name it by the client's own id, not the gateway's.
            opened.core.listens.client_id = lambda rid: _client_id(opened, rid)
        return opened

    def forget(self, hs: HttpSession) -> None:
        key = (hs.owner, hs.view)
        if self.by_owner.get(key) is hs:
            del self.by_owner[key]


def _client_id(hs: HttpSession, rid: Any) -> Any:
    """The id the client gave the request the gateway calls C{rid} in C{hs}."""
    exchange = hs.posts.get(id_key(rid))
    return rid if exchange is None else exchange.client_rid


__all__ = ["StatelessClients"]
