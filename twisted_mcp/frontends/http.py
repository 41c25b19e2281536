"""
The Streamable HTTP front (MCP 2025-03-26 ... 2025-11-25), on twisted.web.

One endpoint path (C{http.path}, C{/mcp} by default) takes:

  - POST: one JSON-RPC message.  A notification or a response is handed to
    the session and answered C{202 Accepted} with no body.  A request is
    answered on its own POST: as C{application/json} when its answer is the
    first thing the gateway has for it, or as an SSE stream
    (C{text/event-stream}) as soon as something must be sent before the
    answer (progress, a log message, a server-to-client request of that
    call); the answer then ends the stream.  A client that closes a POST
    answered as JSON before its answer cancels the call at the backend.
  - GET: the session's own SSE stream, for what belongs to no call
    (list_changed, resource updates, server requests outside a call).  One
    per session (a second is refused with 409).  With C{Last-Event-ID}: a
    stream whose connection dropped goes on (see below).
  - DELETE: ends the session: its calls are cancelled and its per-session
    backends stopped.

With profiles (C{profiles:}), each is served at C{<http.path>/<name>} too,
its sessions' callers carrying its name as their view (C{Caller.view}); a
session belongs to the path it was created on (404 on another).  A listener
bound to one profile (C{--listen profile:<name>:http:...}) serves only that
one, at C{http.path}.

Requests are checked before anything reaches the core: C{Host} on a
listener bound to loopback (421), C{Origin} against C{http.allowedOrigins}
(403), the body's size (413), C{Content-Type} (415), C{Accept} (406),
C{MCP-Protocol-Version} (400) and C{Mcp-Session-Id} (400 missing or
malformed, 404 unknown, ended, expired or another identity's).

With a shared session store (C{state: {redis: URL}}, see
L{twisted_mcp.frontends.http_shared}), replicas behind one load balancer
serve each other's handshake-era sessions: a session's record is saved
once its C{initialize} was answered; a request naming a session unknown
here waits while its record is looked up (one lookup per id), and the
session is rebuilt here when the record is the same client identity's and
path's (else 404).  DELETE ends the session on every replica; an idle
expiry only forgets this replica's copy.  While the store cannot be
reached, an unknown session is 404 (C{state.onUnavailable.sessions:
local}, the default) or 503 with C{Retry-After} (C{refuse}).
Server-to-client requests in flight stay with the replica holding the call.

Streams are resumable (L{twisted_mcp.frontends.http_streams}): every SSE
event carries an id, and the newest C{http.replayBufferBytes} of each stream
are kept.  When a stream's connection drops, the stream (and a POST's call)
goes on for C{http.resumeWindow} seconds; a GET with C{Last-Event-ID} gets
the events after that id and the rest of the stream.  A call whose client
does not come back within the window is cancelled at the backend.

Behind a reverse proxy of C{http.trustedProxies}, the client's address, the
public URL and the host checked against DNS rebinding come from its
forwarded headers (L{twisted_mcp.frontends.forwarded}).

With bearer tokens on (C{http.bearer}; see L{twisted_mcp.frontends.bearer}),
every request's C{Authorization: Bearer} token is verified first (401
otherwise), its principal is who the request runs as, and the protected
resource metadata (RFC 9728) is served at C{/.well-known/oauth-protected-resource}.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Collection

import attrs
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.server import Request as WebRequest

from twisted_mcp.config import GatewaySettings
from twisted_mcp.config.profiles import PROFILE_NAME_RE
from twisted_mcp.dispatch.caller import Caller
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.admission import Admission
from twisted_mcp.frontends.bearer import BearerCheck, metadata_document, metadata_paths, profile_metadata_segment
from twisted_mcp.frontends.deadline import DeadlineChannel
from twisted_mcp.frontends.forwarded import forwarded, forwarded_peer, host_allowed
from twisted_mcp.frontends.http_config import HttpSettings
from twisted_mcp.frontends.http_errors import error_response as _error
from twisted_mcp.frontends.http_errors import plain_response as _plain
from twisted_mcp.frontends.http_modern import StatelessClients
from twisted_mcp.frontends.http_sessions import SESSION_ID_RE, HttpSession, SessionTable, owner_of
from twisted_mcp.frontends.http_shared import SessionRecord, SharedSessions, owner_digest, record_of, restore, session_ref
from twisted_mcp.frontends.http_streams import SseStream, parse_event_id
from twisted_mcp.frontends.oauth_routes import OAuthRoutes
from twisted_mcp.frontends.stream import peer_key
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.meta import claims_modern
from twisted_mcp.mcp.versions import HANDSHAKE_VERSIONS, MODERN_VERSIONS
from twisted_mcp.policy.peers import Peer, peer_of, with_certificate
from twisted_mcp.policy.principal import Principal
from twisted_mcp.state.base import Unavailable
from twisted_mcp.wire.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MessageError,
    decode,
    encode_or_explain,
    id_key,
    valid_id,
)

log = Logger()

#: The version a client that sends no MCP-Protocol-Version is taken to speak.
DEFAULT_HEADER_VERSION = "2025-03-26"
#: Clients of this version and later get a priming event first on every SSE stream.
PRIMING_VERSION = "2025-11-25"
#: The JSON-RPC code for an unknown session (as the MCP SDKs use it).
SESSION_NOT_FOUND = -32001
#: The ids of the requests a replica makes in a session it rebuilt, to subscribe again.
RESUBSCRIBE_ID = "twisted-mcp/resubscribe/"
#: Subscriptions a rebuilt session makes again at once, at most (and at most half its gateway.maxCallsInFlight).
RESUBSCRIBE_WINDOW = 8
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


# -- POST exchanges ------------------------------------------------------------


class PostExchange:
    """
    One POST that carried a request: it is answered as JSON when the
    answer comes first, as an SSE stream once anything must be sent before it.
    """

    def __init__(self, front: "McpResource", hs: HttpSession, request: Request, rid: Any, sse: bool, client_rid: Any = None) -> None:
        self.front = front
        self.hs = hs
        self.request = request
        #: The request's id in the core (the gateway's own for a stateless-era request).
        self.rid = rid
        #: Its id as the client sent it.
        self.client_rid = rid if client_rid is None else client_rid
        self.key = id_key(rid)
        self.accepts_sse = sse
        self.stream: SseStream | None = None
        self.done = False
        #: Its answer is held until the session's record is saved (an initialize's).
        self.held = False
        #: The HTTP status of an answer sent as JSON.
        self.status = 200

    def related(self, data: bytes) -> bool:
        """A message that belongs to this request, before its answer; False if it cannot go here."""
        if self.done:
            return False
        if self.stream is None:
            if not self.accepts_sse:
                return False
            self.stream = self.front.open_stream(self.hs, self.request, self.rid)
        # Written, or kept for the client's resume: what belongs to this call goes nowhere else.
        self.stream.send(data)
        return True

    def answer(self, data: bytes) -> None:
        """The request's answer: it ends the exchange."""
        if self.done:
            return
        self.close()
        if self.stream is not None:
            self.stream.send(data)
            self.front.stream_ended(self.hs, self.stream)
            return
        request = self.request
        if request.finished or request.channel is None:
            return
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(data))  # one write, not chunked
        self.front.session_header(request, self.hs)
        request.write(data)
        request.finish()

    def end_unanswered(self) -> None:
        """The request will not be answered (cancelled, or its session ended): close the POST."""
        if self.done:
            return
        self.close()
        if self.stream is not None:
            self.front.forget_stream(self.hs, self.stream)
            return
        request = self.request
        if not request.finished and request.channel is not None:
            request.setResponseCode(202)
            request.finish()

    def close(self) -> None:
        self.done = True
        if self.hs.posts.get(self.key) is self:
            del self.hs.posts[self.key]
            self.front.table.release(self.hs)


# -- the resource ------------------------------------------------------------


class BoundedRequest(WebRequest):
    """A request whose body is not kept beyond C{maxBodyBytes} (the rest is read and discarded)."""

    too_large = False
    received = 0
    content: Any

    def _limit(self) -> int:
        site: Any = self.channel.site  # type: ignore[attr-defined]
        return int(site.max_body)

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if length is not None and length > limit:
            self.too_large = True
        super().gotLength(None if self.too_large else length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self.received += len(data)
        if self.received > self._limit():
            self.too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


class McpResource(Resource):
    """The MCP endpoint of one HTTP listener (see the module's docstring)."""

    isLeaf = True

    def __init__(
        self,
        gateway: Gateway,
        clock: IReactorTime,
        gateway_settings: GatewaySettings,
        settings: HttpSettings,
        listener: str,
        label: str = "http",
        bearer: BearerCheck | None = None,
        view: str | None = None,
    ) -> None:
        super().__init__()
        #: The profile this listener is bound to (C{--listen profile:<name>:http:...}):
        #: it serves only that one, at C{http.path}; None: the default view there,
        #: and every profile at C{<http.path>/<name>}.
        self.view = view
        self.gateway = gateway
        self.clock = clock
        self.gateway_settings = gateway_settings
        self.settings = settings
        self.listener = listener
        self.label = label
        self.path = settings.path.encode("utf-8")
        #: Verifies bearer tokens (None: C{http.bearer} is off).
        self.bearer = bearer
        self._metadata_paths = metadata_paths(settings) if bearer is not None else ()
        #: The /oauth/* routes (only with oauth.publicUrl).
        self.oauth_routes = OAuthRoutes(gateway.consent) if gateway.consent is not None else None
        self.table = SessionTable(clock, settings, self._expired)
        #: Handshake-era sessions shared with other replicas (with C{state:}'s session store).
        self.shared = SharedSessions(lambda: self.gateway.state, clock, settings.sessionIdleTimeout, self._ended_elsewhere)
        #: The core sessions of stateless-era (2026-07-28) clients.
        self.stateless = StatelessClients(self)
        #: Stopping: no new sessions.
        self.closing = False
        #: Refused hosts and origins already logged.
        self._logged: set[tuple[str, str]] = set()

    # -- what the metrics and /status read ------------------------------------

    def open_streams(self) -> int:
        return sum(hs.streams() for hs in self.table.sessions.values())

    # -- dispatch ------------------------------------------------------------

    def served(self, path: bytes) -> tuple[str | None, str | None] | None:
        """
        What C{path} serves: the view (the profile's name, None for the
        default view) and the profile segment of its URL (None at
        C{http.path} itself); None when it is no MCP endpoint here.
        """
        if path == self.path:
            return self.view, None
        if self.view is None and path.startswith(self.path + b"/"):
            name = path[len(self.path) + 1 :].decode("utf-8", "replace")
            if self._profile_served(name):
                return name, name
        return None

    def _profile_served(self, name: str) -> bool:
        """Whether the profile C{name} is served at C{<http.path>/<name>} here."""
        return self.view is None and PROFILE_NAME_RE.match(name) is not None and name in self.gateway.profiles

    def render(self, request: Request) -> Any:
        if request.path in self._metadata_paths:
            return self.render_metadata(request)
        if self.bearer is not None:
            segment = profile_metadata_segment(self.settings, request.path)
            if segment is not None and self._profile_served(segment):
                return self.render_metadata(request, segment)
        if self.oauth_routes is not None and request.path != self.path and self.oauth_routes.handles(request.path):
            return self._origin_refusal(request) or self.oauth_routes.render(request)
        served = self.served(request.path)
        if served is None:
            # Under the endpoint's path, with profiles: a JSON-RPC error that says no profile has that name.
            if request.path.startswith(self.path + b"/") and (self.view is not None or self.gateway.profiles):
                shown = request.path.decode("utf-8", "replace")[:100]
                return _error(
                    request,
                    404,
                    INVALID_REQUEST,
                    f"Not Found: {shown} is not an MCP endpoint of this gateway (no such profile is served here); "
                    f"the MCP endpoint is {self.settings.path}",
                )
            return _plain(request, 404, f"not found: the MCP endpoint is {self.settings.path}\n")
        view, segment = served
        refusal = self._origin_refusal(request)
        if refusal is not None:
            return refusal
        method = request.method
        if method not in (b"POST", b"GET", b"DELETE"):
            request.setHeader(b"allow", b"GET, POST, DELETE")
            return _plain(request, 405, "the MCP endpoint takes POST, GET and DELETE\n")
        peer = self._identified(request, segment)
        if not isinstance(peer, Peer):
            return peer
        if method == b"POST":
            return self.render_POST(request, peer, view)
        if method == b"GET":
            return self.render_GET(request, peer, view)
        return self.render_DELETE(request, peer, view)

    def _identified(self, request: Request, segment: str | None = None) -> Peer | bytes:
        """The request's peer, with the principal of its bearer token; or the 401 already written (bytes)."""
        peer = self._peer(request)
        if self.bearer is None:
            return peer
        outcome = self.bearer.check(request, peer, segment)
        if isinstance(outcome, Principal):
            return attrs.evolve(peer, principal=outcome)
        if outcome is None:
            return peer  # http.bearer: optional, and no token: the connection's identity
        status, header, message = outcome
        request.setHeader(b"www-authenticate", header)
        return _error(request, status, errors.AUTHENTICATION_FAILED, message)

    def render_metadata(self, request: Request, segment: str | None = None) -> Any:
        """The protected resource metadata (RFC 9728): this endpoint's URL (a profile's with C{segment}) and where clients get tokens."""
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            return _plain(request, 405, "the protected resource metadata is read with GET\n")
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"max-age=3600")
        return metadata_document(self.settings, request, segment)

    def _origin_refusal(self, request: Request) -> Any:
        local = request.getHost()
        via = forwarded(self.settings, request)  # behind a trusted proxy: judge the host its client asked for
        if via is not None and via.host is not None:
            allowed, host = host_allowed(via.host, self.settings.allowedHosts), f"{via.host} ({via.host_from})"
        else:
            allowed = _host_allowed(request.getHeader(b"host"), local, self.settings.allowedHosts)
            host = (request.getHeader(b"host") or b"").decode("latin-1")[:100]
        if _is_loopback(local) and not allowed:
            if self._first("host", host):
                log.warn(
                    "HTTP request to a loopback listener named another host ({host}); refused (DNS rebinding "
                    "protection; add the name to http.allowedHosts if it is yours). Logged once per host.",
                    host=host,
                )
            return _error(
                request,
                421,
                INVALID_REQUEST,
                "Misdirected Request: this listener is bound to loopback and answers only to Host: localhost, "
                "127.0.0.1 or [::1] with its port (add other names to http.allowedHosts)",
            )
        origin = request.getHeader(b"origin")
        if origin is not None:
            given = origin.decode("latin-1").strip().rstrip("/").lower()
            if given not in self.settings.allowedOrigins:
                if self._first("origin", given[:100]):
                    log.warn(
                        "HTTP request from web origin {origin} refused (not in http.allowedOrigins). Logged once per origin.",
                        origin=given[:100],
                    )
                return _error(request, 403, INVALID_REQUEST, f"Forbidden: origin {given[:100]} is not in the gateway's http.allowedOrigins")
        return None

    def _first(self, kind: str, value: str) -> bool:
        """Whether this refusal was not logged yet (at most 1000 kept: a flood of new values is not logged)."""
        key = (kind, value)
        if key in self._logged or len(self._logged) >= 1000:
            return False
        self._logged.add(key)
        return True

    def _version_refusal(self, request: Request, rid: Any = None) -> Any:
        version = request.getHeader(b"mcp-protocol-version")
        if version is None:
            return None
        text = version.decode("latin-1").strip()
        if text in MODERN_VERSIONS:
            return _error(
                request,
                400,
                INVALID_PARAMS,
                f"Invalid params: a {text} request needs params._meta with io.modelcontextprotocol/protocolVersion "
                "and io.modelcontextprotocol/clientCapabilities (handshake-era clients send their negotiated version)",
                rid=rid,
            )
        if text not in HANDSHAKE_VERSIONS:
            return _error(
                request,
                400,
                INVALID_REQUEST,
                f"Bad Request: unsupported MCP-Protocol-Version {text[:40]!r}; this gateway speaks {', '.join(HANDSHAKE_VERSIONS)}",
            )
        return None

    def _peer(self, request: Request) -> Peer:
        transport = request.channel.transport
        peer = peer_of(transport, self.listener)
        if peer.transport == "tls":
            peer = with_certificate(peer, transport)
        return forwarded_peer(self.settings, peer, request)

    def _with_session(
        self, request: Request, peer: Peer, view: str | None, then: Callable[[HttpSession], Any], elsewhere: Callable[[str], Any] | None = None
    ) -> Any:
        """
        C{then(hs)} with the request's session, or the error written for it.
        With a shared session store, a session unknown here is looked up
        there first (the request waits; L{_looked_up} goes on): it is
        rebuilt here from its record, or (with C{elsewhere}) C{elsewhere(sid)}
        is answered once its record showed it is the client's.
        """
        hs = self._find(request, peer, view)
        if type(hs) is not str:
            if isinstance(hs, HttpSession):
                if hs.record is not None:
                    store = self.shared.store()
                    if store is not None:
                        self.shared.touch(store, hs)
                return then(hs)
            return hs
        store = self.shared.store()
        if store is None:
            return _not_found(request)
        if self.closing:
            return _error(request, 503, errors.GATEWAY_SHUTTING_DOWN, "the gateway is shutting down")
        if self.shared.is_ended(hs):
            return _not_found(request)  # its client ended it lately: not looked up, never rebuilt
        waiter = self.shared.lookup(store, hs)
        # The client leaving withdraws this request only: the store's load goes on.
        request.notifyFinish().addErrback(lambda _: waiter.cancel())
        waiter.addCallback(self._looked_up, request, peer, view, hs, then, elsewhere)
        waiter.addErrback(self._lookup_failed, request)
        return NOT_DONE_YET

    def _find(self, request: Request, peer: Peer, view: str | None) -> HttpSession | bytes | str:
        """
        The request's session here; the error already written (bytes); or
        its id when it is unknown here.  A session belongs to the path it
        was created on (C{view}): on another it is unknown.
        """
        header = request.getHeader(b"mcp-session-id")
        if header is None:
            return _error(
                request,
                400,
                INVALID_REQUEST,
                "Bad Request: no Mcp-Session-Id header; begin a session with initialize and send its id with every request",
            )
        sid = header.decode("latin-1")
        if not SESSION_ID_RE.match(sid):
            return _error(request, 400, INVALID_REQUEST, "Bad Request: malformed Mcp-Session-Id")
        hs = self.table.find(sid, owner_of(peer))
        if hs is not None and hs.view != view:
            log.debug("HTTP client session {client}: its id was presented on another path; answered 404", client=hs.label)
            return _not_found(request)
        if hs is None:
            return _not_found(request) if sid in self.table.sessions else sid
        return hs

    # -- sessions other replicas created -------------------------------------------

    def _looked_up(
        self,
        outcome: Any,
        request: Request,
        peer: Peer,
        view: str | None,
        sid: str,
        then: Callable[[HttpSession], Any],
        elsewhere: Callable[[str], Any] | None,
    ) -> None:
        """
        The shared store answered for C{sid}, which this request names:
        the session is served here (rebuilt from its record, once however
        many requests waited), or the request is refused.
        """
        if request.finished or request.channel is None:
            return
        body: Any
        if self.closing:
            body = _error(request, 503, errors.GATEWAY_SHUTTING_DOWN, "the gateway is shutting down")
        else:
            found: Any = self._find(request, peer, view)  # rebuilt meanwhile, for another request that waited
            if type(found) is str and self.shared.is_ended(sid):
                found = _not_found(request)  # ended (DELETE) while it was looked up
            elif type(found) is str:
                found = self._from_record(request, peer, view, sid, outcome)
                if isinstance(found, SessionRecord):
                    if elsewhere is not None:
                        found = elsewhere(sid)
                    else:
                        found = self._rebuild(request, peer, sid, found)
            body = then(found) if isinstance(found, HttpSession) else found
        if body is NOT_DONE_YET or request.finished or request.channel is None:
            return
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    def _lookup_failed(self, failure: Failure, request: Request) -> None:
        if failure.check(CancelledError):
            return  # the client went away while the store was asked
        log.failure("HTTP request: serving a session found in the shared state failed", failure)
        if not request.finished and request.channel is not None:
            body = _error(request, 500, INTERNAL_ERROR, "Internal error: the session could not be served; see the gateway's log")
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()

    def _from_record(self, request: Request, peer: Peer, view: str | None, sid: str, outcome: Any) -> SessionRecord | bytes:
        """The record of C{sid} the store answered (C{outcome}), if this request may use it; else the refusal written."""
        if isinstance(outcome, Unavailable):
            return self._store_unavailable(request, outcome)
        if outcome is None:
            return _not_found(request)
        record: SessionRecord = outcome
        owner = owner_of(peer)
        if record.owner != owner_digest(owner):
            if self.shared.foreign(sid):
                log.warn(
                    "HTTP client session {ref} (created by replica {replica}): its id was presented by another client "
                    "identity; answered 404 (logged once per session)",
                    ref=session_ref(sid),
                    replica=record.replica,
                )
            return _not_found(request)
        if record.view != view:
            log.debug("HTTP client session {ref}: its id was presented on another path; answered 404", ref=session_ref(sid))
            return _not_found(request)
        return record

    def _store_unavailable(self, request: Request, why: Unavailable) -> bytes:
        """A session unknown here while the shared store cannot be reached: 404 or 503, as C{state.onUnavailable.sessions} says."""
        refuse = self.gateway.state.on_unavailable("sessions") == "refuse"
        if self.shared.once_per_outage("lookup"):
            log.warn(
                "shared state (Redis) unreachable ({why}): a request for an HTTP session unknown on this replica was {answer} "
                "(state.onUnavailable.sessions: {choice}); logged once per outage",
                why=str(why),
                answer="refused with 503" if refuse else "answered 404 (its client must initialize again)",
                choice="refuse" if refuse else "local",
            )
        if not refuse:
            return _not_found(request)
        request.setHeader(b"retry-after", b"1")
        return _error(
            request,
            503,
            errors.STATE_UNAVAILABLE,
            "the shared state (Redis) cannot be reached: this session was not opened on this replica and its record "
            "cannot be read now; try again shortly",
        )

    def _rebuild(self, request: Request, peer: Peer, sid: str, record: SessionRecord) -> HttpSession | bytes:
        """
        Serve here the session another replica created: the same id, its
        record's version, capabilities and log level, initialized; its own
        backend sessions (made on first use, as for any session); its
        subscriptions made again (through the core and the policy, like
        the client's own requests).  Counted against the session limits.
        """
        refusal = self._limit_refusal(request, peer, owner_of(peer), "end unused sessions (DELETE) or try again later")
        if refusal is not None:
            return refusal
        hs = self.table.adopt(sid, owner_of(peer), self.label)
        hs.view = record.view
        settings = self.gateway_settings
        core = hs.core = ClientSession(self.gateway, self.caller(hs, peer), settings.maxCallsInFlight, settings.maxListensPerSession)
        restore(record, core)
        hs.record, hs.saved = record, True
        log.info(
            "HTTP client session {client} served on this replica from its record in the shared state (created by replica "
            "{replica}; protocol {version}; {count} subscription(s) made again)",
            client=hs.label,
            replica=record.replica,
            version=record.version,
            count=len(record.subscriptions),
        )
        # It counts on the shared backends (at its level, or info) as after initialize.
        self.gateway.logs.apply()
        hs.resubscribe = list(reversed(record.subscriptions))
        self._resubscribe(hs)
        store = self.shared.store()
        if store is not None:
            self.shared.touch(store, hs, present=True)
        return hs

    def _resubscribe(self, hs: HttpSession) -> None:
        """
        Make the next subscriptions of C{hs}'s record again, a few at a
        time: half of C{gateway.maxCallsInFlight} at most (at least one), so
        that its client's own requests still get in.  Their ids begin with
        L{RESUBSCRIBE_ID}, which a client may not use in this session.
        """
        window = max(1, min(RESUBSCRIBE_WINDOW, self.gateway_settings.maxCallsInFlight // 2))
        while hs.resubscribe and len(hs.internal) < window and not hs.ended:
            uri = hs.resubscribe.pop()
            hs.last_resubscribe += 1
            rid = f"{RESUBSCRIBE_ID}{hs.last_resubscribe}"
            hs.internal[id_key(rid)] = uri
            hs.core.message_received({"jsonrpc": "2.0", "id": rid, "method": "resources/subscribe", "params": {"uri": uri}})

    def _ended_elsewhere(self, sid: str) -> None:
        """Another replica ended session C{sid} (its client's DELETE): the copy here ends too."""
        hs = self.table.sessions.get(sid)
        if hs is not None and not hs.stateless:
            hs.record = None
            self._end(hs, "its client ended it on another replica (DELETE)")

    def _shared_send(self, hs: HttpSession, send: Callable[..., int]) -> Callable[..., int]:
        """
        C{send} for a session that may be shared with other replicas: after
        an answer, its record is saved once C{initialize} was answered, and
        again when what it holds changed (subscriptions, log level); the
        answers to the gateway's own requests (subscriptions made again)
        are not sent to the client.
        """

        def shared_send(message: dict[str, Any], related: Any = None, progress_of: Any = None) -> int:
            if hs.stateless or "method" in message or "id" not in message or not valid_id(message["id"]):
                return send(message, related, progress_of)
            key = id_key(message["id"])
            uri = hs.internal.pop(key, None) if hs.internal else None
            if uri is None:
                if key == id_key(hs.init_rid) and "result" in message and hs.record is None:
                    return self._answer_initialize(hs, send, message, related, progress_of)
                size = send(message, related, progress_of)
            else:
                size = 0
                error = message.get("error")
                if type(error) is dict and not hs.ended:
                    hs.resubscribe_failed = True
                    log.warn(
                        "HTTP client session {client}: its subscription to {uri} could not be made again on this replica "
                        "({why}); its record in the shared state keeps its subscriptions, and is no longer updated from this replica",
                        client=hs.label,
                        uri=uri[:200],
                        why=str(error.get("message"))[:300],
                    )
                self._resubscribe(hs)
            if hs.record is not None:
                self._save_if_changed(hs)
            return size

        return shared_send

    def _answer_initialize(
        self, hs: HttpSession, send: Callable[..., int], message: dict[str, Any], related: Any, progress_of: Any
    ) -> int:
        """
        The answer to C{hs}'s C{initialize}: sent once its record is saved
        (so that the client's next request finds it on any replica), or
        after the state's timeout, whichever comes first.
        """
        saved = self._save_if_changed(hs)
        if saved is None or saved.called:
            return send(message, related, progress_of)
        sent: list[bool] = []
        exchange = hs.posts.get(id_key(message["id"]))
        if exchange is not None:
            exchange.held = True

        def go() -> None:
            if not sent:
                sent.append(True)
                if timer.active():
                    timer.cancel()
                send(message, related, progress_of)

        timer = self.clock.callLater(self.shared.hold_limit(), go)
        saved.addBoth(lambda _: go())
        return 0

    def _save_if_changed(self, hs: HttpSession) -> Deferred[None] | None:
        """
        Save C{hs}'s record, unless the one saved last holds the same (and
        the store took it); the save's Deferred (fires when the store
        answered), None when nothing is saved.  Nothing is saved while its
        record's subscriptions are made again here, nor after one of them
        failed (the record keeps them for the replicas that can).
        """
        core = hs.core
        store = self.shared.store()
        if store is None or core is None or not core.initialized or hs.ended or hs.internal or hs.resubscribe:
            return None  # (its subscriptions are being made again here: the record holds them already)
        if hs.resubscribe_failed or not hs.shareable:
            return None
        subscriptions = self.gateway.subscriptions.uris_of(core)
        old = hs.record
        if old is None or not hs.saved or old.changing() != (core.caller.log_level, tuple(subscriptions)):
            replica = old.replica if old is not None else self.gateway.state.replica
            created = old.created if old is not None else self.clock.seconds()
            return self.shared.save(store, hs, record_of(hs, replica, subscriptions, created))
        return None

    def session_header(self, request: Request, hs: HttpSession) -> None:
        if not hs.stateless:
            request.setHeader(b"mcp-session-id", hs.id.encode("ascii"))

    # -- POST ----------------------------------------------------------------

    def render_POST(self, request: Request, peer: Peer, view: str | None = None) -> Any:
        if getattr(request, "too_large", False):
            return _error(
                request,
                413,
                INVALID_REQUEST,
                f"Content Too Large: a message may be at most {self.settings.maxBodyBytes} bytes (http.maxBodyBytes)",
            )
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            return _error(request, 415, INVALID_REQUEST, "Unsupported Media Type: send the message as Content-Type: application/json")
        json_ok, sse_ok = _accepts(request.getHeader(b"accept"))
        if not json_ok:
            return _error(request, 406, INVALID_REQUEST, "Not Acceptable: the client must accept application/json and text/event-stream")
        content: Any = request.content
        body = content.read() if content is not None else b""
        try:
            message = decode(body)
        except MessageError as e:
            return _error(request, 400, e.code, e.message)
        kind = _kind(message)
        if kind is None:
            why = (
                "JSON-RPC batches are not supported; send each message in its own POST"
                if type(message) is list
                else "expected one JSON-RPC request, notification or response"
            )
            return _error(request, 400, INVALID_REQUEST, f"Invalid Request: {why}")
        if kind == "request" and claims_modern(message.get("params")):
            return self.stateless.post(request, peer, message, sse_ok, view)
        refusal = self._version_refusal(request, message.get("id"))
        if refusal is not None:
            return refusal
        if kind == "request" and message.get("method") == "initialize":
            return self._initialize(request, peer, message, sse_ok, view)
        return self._with_session(request, peer, view, lambda hs: self._post_in(request, hs, message, kind, sse_ok))

    def _post_in(self, request: Request, hs: HttpSession, message: dict[str, Any], kind: str, sse_ok: bool) -> Any:
        """A POST's message in its session C{hs}."""
        core = hs.core
        if kind != "request":
            self.table.hold(hs)
            try:
                core.message_received(message)
                if message.get("method") == "notifications/cancelled":
                    self._cancelled(hs, message.get("params"))
            finally:
                self.table.release(hs)
            request.setResponseCode(202)
            return b""
        return self.request(request, hs, message, sse_ok)

    def _initialize(self, request: Request, peer: Peer, message: dict[str, Any], sse_ok: bool, view: str | None = None) -> Any:
        if request.getHeader(b"mcp-session-id") is not None:
            return _error(
                request,
                400,
                INVALID_REQUEST,
                "Bad Request: initialize begins a new session; send it without an Mcp-Session-Id header",
            )
        hs = self.open_session(request, peer, self.label, "end unused sessions (DELETE) or try again later", view)
        if not isinstance(hs, HttpSession):
            return hs
        hs.init_rid = message["id"]
        result = self.request(request, hs, message, sse_ok)
        if not hs.core.initialized:
            self._end(hs, "its initialize failed")
        return result

    def open_session(self, request: Request, peer: Peer, label: str, advice: str, view: str | None = None) -> HttpSession | bytes:
        """
        A new session of C{peer}'s client identity on the path of C{view}
        (the profile it serves, None for the default view), with its core; or the
        refusal already written (bytes): the gateway is stopping (503), or
        C{http.maxSessions} (503) or C{http.maxSessionsPerPrincipal} (429)
        is reached (C{advice} says what the client may do).
        """
        if self.closing:
            return _error(request, 503, errors.GATEWAY_SHUTTING_DOWN, "the gateway is shutting down")
        owner = owner_of(peer)
        refusal = self._limit_refusal(request, peer, owner, advice)
        if refusal is not None:
            return refusal
        hs = self.table.open(owner, label)
        hs.view = view
        settings = self.gateway_settings
        hs.core = ClientSession(self.gateway, self.caller(hs, peer), settings.maxCallsInFlight, settings.maxListensPerSession)
        who = f" as {peer.principal.name} (bearer token)" if peer.principal is not None else ""
        log.info("HTTP client session {client} opened ({peer}){who}", client=hs.label, peer=peer.describe(), who=who)
        return hs

    def _limit_refusal(self, request: Request, peer: Peer, owner: tuple[Any, ...], advice: str) -> bytes | None:
        """The refusal written when one more session of C{owner} would exceed C{http.maxSessions} (503) or C{http.maxSessionsPerPrincipal} (429)."""
        limit = self.table.refusal(owner)
        if limit is None:
            return None
        setting, value = limit
        log.warn("HTTP client {peer}: new session refused ({setting} is {value})", peer=peer.describe(), setting=setting, value=value)
        request.setHeader(b"retry-after", b"5")
        return _error(
            request,
            429 if setting.endswith("PerPrincipal") else 503,
            errors.TOO_MANY_CONNECTIONS,
            f"too many HTTP sessions are open ({setting} is {value}); {advice}",
            {"limit": setting, "value": value},
        )

    def request(self, request: Request, hs: HttpSession, message: dict[str, Any], sse_ok: bool, client_rid: Any = None) -> Any:
        """Hand a request to C{hs}'s core; it is answered on this POST (C{client_rid}: its id as the client sent it)."""
        rid = message["id"]
        key = id_key(rid)
        if key in hs.posts:
            return _error(request, 400, INVALID_REQUEST, f"Invalid Request: id {rid!r} is already used by a request in flight", rid=rid)
        if not hs.stateless and type(rid) is str and rid.startswith(RESUBSCRIBE_ID):
            return _error(
                request, 400, INVALID_REQUEST, f"Invalid Request: ids beginning with {RESUBSCRIBE_ID!r} are the gateway's own", rid=rid
            )
        exchange = PostExchange(self, hs, request, rid, sse_ok, client_rid)
        hs.posts[key] = exchange
        self.table.hold(hs)
        request.notifyFinish().addErrback(self._post_gone, exchange)
        hs.core.message_received(message)
        if not exchange.done and not exchange.held and key not in hs.core.in_flight:
            # Neither answered nor pending (cannot happen for a well-formed request).
            log.warn("HTTP client {client}: request {rid} was neither answered nor kept", client=hs.label, rid=rid)
            exchange.end_unanswered()
        return NOT_DONE_YET

    def _post_gone(self, failure: Failure, exchange: PostExchange) -> None:
        """
        The client closed a POST before its answer.  Answered as JSON (nothing
        streamed yet), the client cannot resume it: the call is cancelled at
        the backend.  A stream's own handler decides for a POST that streams.
        """
        if exchange.done or exchange.stream is not None:
            return
        exchange.close()
        self._cancel(exchange.hs, exchange.rid, "the client closed the request's HTTP stream")

    def _cancel(self, hs: HttpSession, rid: Any, why: str) -> None:
        """Cancel the call C{rid} of C{hs} at the backend (its POST is already closed)."""
        if hs.ended or hs.core is None:
            return
        log.info("HTTP client {client}: cancelling request {rid}: {why}", client=hs.label, rid=rid, why=why)
        hs.core.message_received({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid, "reason": why}})

    def _cancelled(self, hs: HttpSession, params: Any) -> None:
        """After the client cancelled a request: its POST is closed (a cancelled call is not answered)."""
        rid = params.get("requestId") if type(params) is dict else None
        if not valid_id(rid):
            return
        exchange = hs.posts.get(id_key(rid))
        if exchange is not None and id_key(rid) not in hs.core.in_flight:
            exchange.end_unanswered()

    # -- GET -----------------------------------------------------------------

    def render_GET(self, request: Request, peer: Peer, view: str | None = None) -> Any:
        accept = (request.getHeader(b"accept") or b"").lower()
        if b"text/event-stream" not in accept:
            return _error(request, 406, INVALID_REQUEST, "Not Acceptable: the session's stream is text/event-stream; accept it")
        refusal = self._version_refusal(request)
        if refusal is not None:
            return refusal
        return self._with_session(request, peer, view, lambda hs: self._get_in(request, hs))

    def _get_in(self, request: Request, hs: HttpSession) -> Any:
        """A GET of session C{hs}: its stream, opened or resumed."""
        last = request.getHeader(b"last-event-id")
        if last is not None:
            return self._resume(request, hs, last.decode("latin-1").strip())
        standalone = hs.standalone
        if standalone is not None and standalone.sink is not None:
            return _error(request, 409, INVALID_REQUEST, "Conflict: this session's stream is already open (one GET stream per session)")
        if standalone is not None:
            self.forget_stream(hs, standalone)  # away, and not resumed: a new stream replaces it
        hs.standalone = self.open_stream(hs, request, None)
        return NOT_DONE_YET

    # -- streams and their resumption ------------------------------------------

    def open_stream(self, hs: HttpSession, request: Request, rid: Any) -> SseStream:
        """A new SSE stream of C{hs} on C{request}: the POST of request C{rid}, or (C{rid} None) a GET."""
        if hs.stateless:  # 2026-07-28 has no resumption: no ids, nothing kept
            stream = SseStream(hs.stream_number(), rid, 0, hs.label, ids=False)
        else:
            stream = SseStream(hs.stream_number(), rid, self.settings.replay_limit, hs.label)
        hs.sse[stream.number] = stream
        self._carry(hs, stream, request)
        return stream

    def _carry(self, hs: HttpSession, stream: SseStream, request: Request) -> None:
        """Carry C{stream} on C{request} from now on; a GET holds the session open while it lasts."""
        prime = self._primes(request, hs)
        sink = stream.attach(request, self.settings.maxStreamBufferBytes, prime)
        self.session_header(request, hs)
        if not prime:
            sink.comment(b"stream open")
        finished = request.notifyFinish()
        finished.addErrback(lambda _: self._dropped(hs, stream, sink))
        if request.method == b"GET":
            self.table.hold(hs)
            finished.addBoth(lambda _: self.table.release(hs))

    def _primes(self, request: Request, hs: HttpSession) -> bool:
        """
        Whether a stream opened for C{request} begins with a priming event
        (an id, empty data, the retry delay): for clients of 2025-11-25 and
        later, as the spec asks (older clients may not expect empty events),
        when streams are resumable.
        """
        if self.settings.resumeWindow <= 0 or hs.stateless:
            return False
        header = request.getHeader(b"mcp-protocol-version")
        version = header.decode("latin-1") if header is not None else hs.core.caller.version if hs.core is not None else None
        return version is not None and version >= PRIMING_VERSION

    def _dropped(self, hs: HttpSession, stream: SseStream, sink: Any) -> None:
        """The connection carrying C{stream} closed before the stream ended."""
        if stream.sink is not sink:
            return  # ended, or taken over by a resume
        stream.sink = None
        if stream.log is None or hs.ended:
            self._stream_gone(hs, stream, "its client went away")
            return
        log.info(
            "HTTP client {client}: the connection of stream {stream} closed; resumable for {window:g} s (http.resumeWindow)",
            client=hs.label,
            stream=stream.event_id().decode("ascii"),
            window=self.settings.resumeWindow,
        )
        self._await_resume(hs, stream)

    def _await_resume(self, hs: HttpSession, stream: SseStream) -> None:
        stream.timer = self.clock.callLater(
            self.settings.resumeWindow, self._stream_gone, hs, stream, f"it was not resumed within {self.settings.resumeWindow:g} s (http.resumeWindow)"
        )

    def stream_ended(self, hs: HttpSession, stream: SseStream) -> None:
        """C{stream}'s last event was sent: delivered, it is forgotten; else it stays resumable until its window closes."""
        delivered = stream.sink is not None and stream.sink.open
        stream.end()
        if delivered or stream.log is None:
            self.forget_stream(hs, stream)
        elif stream.timer is None:
            self._await_resume(hs, stream)

    def forget_stream(self, hs: HttpSession, stream: SseStream) -> None:
        """C{stream} ends and cannot be resumed any more."""
        stream.stop_timer()
        stream.end()
        if hs.sse.get(stream.number) is stream:
            del hs.sse[stream.number]
        if hs.standalone is stream:
            hs.standalone = None

    def _stream_gone(self, hs: HttpSession, stream: SseStream, why: str) -> None:
        """C{stream}'s client did not come back: it is forgotten, and a POST's call still running is cancelled."""
        stream.timer = None
        self.forget_stream(hs, stream)
        if stream.rid is None:
            return
        exchange = hs.posts.get(id_key(stream.rid))
        if exchange is not None and exchange.stream is stream and not exchange.done:
            exchange.close()
            self._cancel(hs, stream.rid, f"the client's stream closed and {why}")

    def _resume(self, request: Request, hs: HttpSession, last_id: str) -> Any:
        """A GET with C{Last-Event-ID}: the stream it names goes on here, from the event after it."""
        parsed = parse_event_id(last_id)
        stream = hs.sse.get(parsed[1]) if parsed is not None else None
        if parsed is None or stream is None or stream.kind != parsed[0].encode("ascii") or parsed[2] > stream.seq:
            return _error(
                request,
                400,
                INVALID_REQUEST,
                f"Bad Request: Last-Event-ID {last_id[:40]!r} names no stream of this session that can be resumed "
                f"(it ended, or its client was away longer than http.resumeWindow, {self.settings.resumeWindow:g} s)",
            )
        if stream.sink is not None:
            # The client says that connection is gone: this one takes over.
            old, stream.sink = stream.sink, None
            old.finish()
        if stream.rid is None and hs.standalone is not stream:
            if hs.standalone is not None and hs.standalone.sink is not None:
                return _error(request, 409, INVALID_REQUEST, "Conflict: this session's stream is already open (one GET stream per session)")
            hs.standalone = stream
        seq = parsed[2]
        self._carry(hs, stream, request)
        events, lost = stream.log.since(seq) if stream.log is not None else ([], True)
        log.info(
            "HTTP client {client} resumed stream {stream} after event {seq}: {count} event(s) sent again{lost}",
            client=hs.label,
            stream=last_id,
            seq=seq,
            count=len(events),
            lost=f"; {lost} event(s) were lost (http.replayBufferBytes)" if lost else "",
        )
        if lost:
            self._lost(hs, stream, lost)
            if stream.rid is not None and not stream.ended:
                return NOT_DONE_YET
        stream.replay(events)
        if stream.ended:
            self.forget_stream(hs, stream)
        return NOT_DONE_YET

    def _lost(self, hs: HttpSession, stream: SseStream, lost: int) -> None:
        """
        Some of C{stream}'s events are gone (more than http.replayBufferBytes
        came while its client was away).  A call still running cannot go on
        without them (a server request among them would never be answered):
        it is cancelled and its client told so.  Otherwise the client is
        told with a comment, and gets what was kept.
        """
        if stream.rid is None or stream.ended:
            if stream.sink is not None:
                stream.sink.comment(b"%d event(s) of this stream were lost (http.replayBufferBytes)" % lost)
            return
        exchange = hs.posts.get(id_key(stream.rid))
        if exchange is not None and exchange.stream is stream:
            exchange.close()
            self._cancel(hs, stream.rid, "its stream could not be resumed")
        data, _ = encode_or_explain(
            {
                "jsonrpc": "2.0",
                "id": stream.rid,
                "error": {
                    "code": errors.STREAM_LOST,
                    "message": (
                        f"{lost} message(s) of this call's stream were lost while the client was away (more than "
                        f"{self.settings.replayBufferBytes} bytes, http.replayBufferBytes); the call was cancelled"
                    ),
                    "data": {"limit": "http.replayBufferBytes", "value": self.settings.replayBufferBytes},
                },
            }
        )
        if data is not None:
            stream.send(data)
        self.forget_stream(hs, stream)

    def keep_alive(self) -> None:
        """A comment on every open stream, so that proxies and clients do not take a quiet stream for a dead one."""
        store = None
        for hs in self.table.sessions.values():
            for stream in hs.sse.values():
                if stream.sink is not None:
                    stream.sink.comment(b"keep-alive")
                    if hs.record is not None:
                        # A session held open by a stream keeps its record alive too.
                        store = store or self.shared.store()
                        if store is not None:
                            self.shared.touch(store, hs)

    # -- DELETE --------------------------------------------------------------

    def render_DELETE(self, request: Request, peer: Peer, view: str | None = None) -> Any:
        return self._with_session(request, peer, view, lambda hs: self._delete_in(request, hs), lambda sid: self._delete_elsewhere(request, sid))

    def _delete_in(self, request: Request, hs: HttpSession) -> bytes:
        """DELETE: C{hs} ends here, and (shared) its record goes and every replica ends its copy."""
        self._end(hs, "the client ended it (DELETE)", shared=True)
        request.setResponseCode(204)
        return b""

    def _delete_elsewhere(self, request: Request, sid: str) -> bytes:
        """DELETE of a session other replicas serve (its record is the client's): the record goes, and every replica ends its copy."""
        store = self.shared.store()
        if store is not None:
            self.shared.delete(store, sid, session_ref(sid))
        log.info("HTTP client session {ref} ended by its client (DELETE) on this replica, which did not serve it", ref=session_ref(sid))
        request.setResponseCode(204)
        return b""

    # -- ending sessions -------------------------------------------------------

    def _expired(self, hs: HttpSession) -> None:
        self._close(hs, "it expired")

    def end_removed_profiles(self, profiles: Collection[str]) -> int:
        """
        End the sessions of profiles no longer among C{profiles} (a reload
        removed them): their calls are cancelled, their streams closed,
        their slots freed, and their ids stay unknown should the profile
        come back.  Returns how many were ended.
        """
        gone = [hs for hs in self.table.sessions.values() if hs.view is not None and hs.view not in profiles]
        for hs in gone:
            self._end(hs, f"its profile {hs.view!r} was removed by a reload", shared=True)
        return len(gone)

    def _end(self, hs: HttpSession, why: str, shared: bool = False) -> None:
        """
        End C{hs}.  C{shared}: for every replica (its client ended it): its
        record in the shared state (if saved) is deleted, and the other
        replicas end their copies.
        """
        if self.table.remove(hs):
            if shared and hs.record is not None:
                store = self.shared.store()
                if store is not None:
                    hs.record = None
                    self.shared.delete(store, hs.id, hs.label)
            self._close(hs, why)

    def _close(self, hs: HttpSession, why: str) -> Deferred[Any]:
        """End a session out of the table: its calls cancelled (unanswered), its streams closed, its backends released."""
        log.info("HTTP client session {client} ended: {why}", client=hs.label, why=why)
        if hs.stateless:
            self.stateless.forget(hs)
        core = hs.core
        for exchange in list(hs.posts.values()):
            if core is not None and exchange.key in core.in_flight:
                core.message_received(
                    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": exchange.rid, "reason": why}}
                )
            exchange.end_unanswered()
        self._end_streams(hs)
        if core is None:
            return succeed(None)
        d = core.drain(0, self.clock)
        return d.addErrback(lambda f: log.failure("HTTP client session {client}: ending it failed", f, client=hs.label))

    def _end_streams(self, hs: HttpSession) -> None:
        for stream in list(hs.sse.values()):
            self.forget_stream(hs, stream)

    def stop(self, grace: float) -> Deferred[Any]:
        """Take no new sessions; let every session's calls finish within C{grace}, then end them."""
        self.closing = True
        self.shared.cancel_all()
        waits = []
        for hs in list(self.table.sessions.values()):
            self.table.remove(hs)
            waits.append(self._stop_one(hs, grace))
        return DeferredList(waits, consumeErrors=True)

    def _stop_one(self, hs: HttpSession, grace: float) -> Deferred[Any]:
        d = hs.core.drain(grace, self.clock) if hs.core is not None else succeed(None)

        def close(result: Any) -> Any:
            for exchange in list(hs.posts.values()):
                exchange.end_unanswered()
            self._end_streams(hs)
            return result

        return d.addBoth(close)

    # -- the core's caller -----------------------------------------------------

    def caller(self, hs: HttpSession, peer: Peer) -> Caller:
        def send(message: dict[str, Any], related: Any = None, progress_of: Any = None) -> int:
            out = message
            if hs.stateless and "method" not in message and "id" in message:
                # An answer: the client's own id, not the gateway's.
                exchange = hs.posts.get(id_key(message["id"])) if valid_id(message["id"]) else None
                if exchange is not None:
                    out = {**message, "id": exchange.client_rid}
                    error = message.get("error")
                    if type(error) is dict and error.get("code") == errors.MISSING_CLIENT_CAPABILITY:
                        exchange.status = 400  # the spec's status, when the answer is still a plain response
            data, why = encode_or_explain(out)
            if why is not None:
                log.error("could not encode a message for HTTP client {client}: {why}", client=hs.label, why=why)
            if data is None:
                return 0
            return len(data) if self._route(hs, message, data, related) else 0

        caller = Caller(hs.label, send if self.shared.store() is None else self._shared_send(hs, send), peer)
        caller.view = hs.view
        return caller

    def _route(self, hs: HttpSession, message: dict[str, Any], data: bytes, related: Any) -> bool:
        """
        Put one message on the stream it belongs to: an answer on its POST;
        a message of a call (C{related}) on that call's POST, as an SSE event;
        anything else on the session's GET stream.  A server request or log
        message that the backend's transport could not tie to a call goes to
        the session's only open call when there is exactly one.
        """
        method = message.get("method")
        if method is None and "id" in message:
            rid = message["id"]
            exchange = hs.posts.get(id_key(rid)) if valid_id(rid) else None
            if exchange is not None:
                exchange.answer(data)
                return True
            log.debug("HTTP client {client}: dropped an answer to {rid}: its POST is gone", client=hs.label, rid=rid)
            return False
        if related is not None and valid_id(related):
            exchange = hs.posts.get(id_key(related))
            if exchange is not None and exchange.related(data):
                return True
        elif "id" in message or method == "notifications/message":
            listens = hs.core.listens.open
            open_calls = [p for p in hs.posts.values() if p.accepts_sse and not p.done and p.key not in listens]
            if len(open_calls) == 1 and open_calls[0].related(data):
                return True
        stream = hs.standalone
        if stream is not None:
            stream.send(data)  # written, or kept for the client's resume
            return True
        log.debug("HTTP client {client}: no open stream for {method}; dropped", client=hs.label, method=method)
        return False


# -- helpers -----------------------------------------------------------------


def _not_found(request: Request) -> bytes:
    return _error(
        request,
        404,
        SESSION_NOT_FOUND,
        "Session not found: it ended, expired or was never opened here; initialize a new session",
    )


def _kind(message: Any) -> str | None:
    """C{request}, C{notification} or C{response}; None for anything else."""
    if type(message) is not dict or message.get("jsonrpc") != "2.0":
        return None
    method = message.get("method")
    if method is not None:
        if type(method) is not str:
            return None
        if "id" not in message:
            return "notification"
        if not valid_id(message["id"]):
            return None
        params = message.get("params")
        if params is not None and type(params) is not dict:
            return None
        return "request"
    if "id" in message and ("result" in message or "error" in message):
        return "response"
    return None


def _accepts(header: bytes | None) -> tuple[bool, bool]:
    """Whether an C{Accept} header takes JSON, and whether it takes SSE."""
    if header is None:
        return True, True
    types = {part.split(b";")[0].strip().lower() for part in header.split(b",")}
    anything = b"*/*" in types
    json_ok = anything or b"application/json" in types or b"application/*" in types
    sse_ok = anything or b"text/event-stream" in types or b"text/*" in types
    return json_ok, sse_ok


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return False
    try:
        return ipaddress.ip_address(address.host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _host_allowed(given: bytes | None, local: Any, extra: tuple[str, ...]) -> bool:
    """
    A request to a loopback listener must name it (C{Host}: localhost,
    127.0.0.1 or [::1], with the port it came in on, or a name of
    C{http.allowedHosts}): a web page that rebinds its own name to
    127.0.0.1 sends its own name and is refused.
    """
    if given is None:
        return False  # HTTP/1.1 requires Host; browsers always send it
    host = given.decode("latin-1").strip().lower()
    literal = f"[{local.host}]" if ":" in local.host else local.host
    names = {*_LOOPBACK_NAMES, literal}
    allowed = {f"{name}:{local.port}" for name in names}
    if local.port == 80:
        allowed |= names
    return host in allowed or host in extra


# -- the listener ------------------------------------------------------------


class McpChannel(DeadlineChannel):
    """
    One HTTP connection, counted against the connection caps every
    listener shares (C{gateway.maxClients}, C{gateway.maxClientsPerPeer},
    C{gateway.descriptorReserve}); one over them is answered 503 and closed.

    The idle timeout (C{gateway.messageTimeout}) restarts with every byte,
    so a client trickling its request would keep its place for ever: a
    whole request (head and body) must also arrive within that time of the
    connection or of the last answer, or the connection is closed.
    """

    site: "McpSite"
    admitted: str | None = None
    client_name = "HTTP client"
    timeout_setting = "gateway.messageTimeout"

    def connectionMade(self) -> None:
        admission = self.site.admission
        if admission is not None:
            key = peer_key(peer_of(self.transport, self.site.resource_.listener))
            refusal = admission.enter(key)
            if refusal is not None:
                setting, value, why = refusal
                body = f"connection refused: {why}; try again later\n".encode()
                transport: Any = self.transport
                transport.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
                )
                self.dataReceived = lambda data: None  # type: ignore[method-assign]
                transport.loseConnection()
                return
            self.admitted = key
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        if self.admitted is not None and self.site.admission is not None:
            self.site.admission.leave(self.admitted)
            self.admitted = None
        super().connectionLost(reason)


class McpSite(Site):
    """The HTTP server of one C{--listen http:...} listener (no access log: it would name session ids)."""

    protocol = McpChannel  # type: ignore[assignment]
    requestFactory = BoundedRequest
    noisy = False

    def __init__(self, resource: McpResource, clock: IReactorTime, idle_timeout: float, admission: Admission | None = None) -> None:
        # Bodies are JSON-RPC, never forms: twisted.web must not parse them as
        # form submissions (its Content-Type parsing was a quarter of an
        # HTTP call's cost, and a multipart body was parsed before the 415).
        super().__init__(resource, timeout=idle_timeout, reactor=clock, parsePOSTFormSubmission=False)
        self.resource_ = resource
        self.max_body = resource.settings.maxBodyBytes
        #: The connection caps shared with every listener (None: uncounted).
        self.admission = admission

    def log(self, request: Any) -> None:
        pass


class HttpFrontend(Service):
    """
    A C{--listen http:ENDPOINT} listener.  Stopping it stops listening,
    then lets every session's calls finish (within the shutdown grace)
    and ends the sessions.
    """

    def __init__(self, description: str, port: Any, site: McpSite, grace: float) -> None:
        self.description = description
        self.port = port
        self.site = site
        self.resource = site.resource_
        self.grace = grace
        #: Writes a comment on every open stream each C{http.keepAliveInterval}.
        self.keep_alive: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        interval = self.resource.settings.keepAliveInterval
        if interval > 0:
            self.keep_alive = LoopingCall(self.resource.keep_alive)
            self.keep_alive.clock = self.resource.clock
            self.keep_alive.start(interval, now=False)
        view = self.resource.view
        log.info(
            "serving MCP over HTTP on {endpoint} at {path}{profiles}",
            endpoint=self.description,
            path=self.resource.settings.path,
            profiles=f" (profile {view} only)" if view is not None else " (and each profile at <path>/<name>)" if self.resource.gateway.profiles else "",
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.keep_alive is not None and self.keep_alive.running:
            self.keep_alive.stop()
        if self.port is not None:
            await self.port.stopListening()
        await self.resource.stop(self.grace)


def http_totals(frontends: Any) -> dict[str, int]:
    """The HTTP sessions and open SSE streams over every HTTP listener among C{frontends} (for /metrics and /status)."""
    sessions = streams = expired = 0
    for front in frontends:
        if isinstance(front, HttpFrontend):
            resource = front.resource
            sessions += len(resource.table)
            streams += resource.open_streams()
            expired += resource.table.expired
    return {"sessions": sessions, "streams": streams, "expired": expired}


def http_site(
    gateway: Gateway,
    clock: IReactorTime,
    gateway_settings: GatewaySettings,
    settings: HttpSettings | None,
    listener: str,
    admission: Admission | None = None,
    verify_bearer: Callable[[str], Principal] | None = None,
    view: str | None = None,
) -> McpSite:
    """
    The site for the C{--listen} description C{listener} (C{http:...}).

    @param verify_bearer: the principal of a bearer token (raising
        L{twisted_mcp.policy.principal.IdentityError}), when C{identity.jwt}
        is configured; bearer tokens are then checked unless C{http.bearer}
        is C{off}.
    @param view: the profile the listener is bound to (C{--listen
        profile:<name>:http:...}), served at C{http.path}; None: the default
        view there and every profile at C{<http.path>/<name>}.
    """
    settings = settings or HttpSettings()
    mode = settings.bearer_mode(verify_bearer is not None)
    bearer = None
    if mode != "off" and verify_bearer is not None:
        bearer = BearerCheck(verify_bearer, gateway, settings, required=mode == "required")
    resource = McpResource(gateway, clock, gateway_settings, settings, listener, bearer=bearer, view=view)
    return McpSite(resource, clock, gateway_settings.messageTimeout, admission)


__all__ = ["DEFAULT_HEADER_VERSION", "SESSION_NOT_FOUND", "HttpFrontend", "McpResource", "McpSite", "http_site", "http_totals"]
