"""
HTTP backends: remote MCP servers over Streamable HTTP (protocol
2025-03-26 and later) or the legacy HTTP+SSE transport (2024-11-05).

Each backend has its own treq client over its own connection pool (no
cookies shared with anything else, no redirects followed).  A I{run} is one
MCP session with the server; when the server cannot be reached the run
ends and a new one is made later with backoff, as for stdio children.

Answers are read incrementally: every event of a C{text/event-stream}
answer is passed on as it arrives (progress before the result), and every
body read is bounded in size (C{maxMessageBytes} per message) and in time
(the call's timeout).

With C{protocol: auto} (the default) a Streamable HTTP server is first sent
a POST C{server/discover}: a server of the stateless era (2026-07-28)
answers it, and is then sent every request as its own POST with the headers
of L{twisted_mcp.backends.http_modern}, without a session, a GET, or a
C{notifications/cancelled} (a call is cancelled by aborting its POST).  Any
other answer (400, 404, 405, an error the probe does not take for modern)
falls back to C{initialize}: a session of the handshake era, as below.  The
verdict is L{twisted_mcp.backends.probe}'s, as for stdio servers.

An event stream that ends or breaks before the response to its call is
resumed, as the transport allows: after the server's C{retry} delay (or a
default), a GET with C{Last-Event-ID} continues it.  Only a stream that
cannot be resumed (its events had no id, the server refused the GET, the
attempts brought nothing new, the call's time ran out) fails its call.  The
session's own event stream (GET) is resumed the same way.
"""

from __future__ import annotations

from time import monotonic
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar  # type: ignore[attr-defined]
from twisted.internet import error as neterror
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from twisted_mcp.backends.base import State
from twisted_mcp.backends.cookies import NoCookies
from twisted_mcp.backends.http_modern import ToolHeaders, request_headers
from twisted_mcp.backends.http_principals import PrincipalRuns, TokenSource, TooManyRuns
from twisted_mcp.backends.oauth.challenge import bearer_challenge
from twisted_mcp.backends.oauth.problems import AuthorizationFailed, AuthorizationRequired, OAuthProblem
from twisted_mcp.backends.probe import ProbeFailed
from twisted_mcp.backends.session import DiscoveryError, McpClientSession
from twisted_mcp.backends.supervisor import RunEvents, SupervisedBackend
from twisted_mcp.config import HttpServer
from twisted_mcp.config.models import OAuthAuth
from twisted_mcp.mcp import errors
from twisted_mcp.urls import shown_url, split_url
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, METHOD_NOT_FOUND, JsonRpcError, MessageError, PeerGone, decode, encode
from twisted_mcp.wire.sse import EventTooLarge, SSEParser

log = Logger()

# One log line per pooled connection opened and closed is noise.
_HTTP11ClientFactory.noisy = False

ACCEPT_BOTH = b"application/json, text/event-stream"
_CONNECT_ERRORS = (
    neterror.ConnectError,
    neterror.DNSLookupError,
    neterror.TimeoutError,
    neterror.ConnectionRefusedError,
)
#: Seconds before resuming a stream whose server gave no C{retry} (doubling
#: on each attempt), and the longest wait, whatever the server asks for.
DEFAULT_RETRY = 1.0
MAX_RETRY = 30.0
#: Attempts in a row to resume a call's stream that bring no new event.
MAX_RESUME_ATTEMPTS = 5
#: The most of an error answer's body read for the JSON-RPC error in it.
MAX_ERROR_BODY = 64 * 1024
#: Statuses with which a server that is not of the stateless era refuses
#: C{server/discover} (the probe then falls back to C{initialize}).
_NOT_MODERN = (400, 404, 405)


@implementer(IPolicyForHTTPS)
class TLSPolicy:
    """Verifies servers against a CA bundle (or the system's), and presents
    a client certificate when one is configured."""

    def __init__(self, ca_file: str | None, cert_file: str | None, key_file: str | None) -> None:
        from twisted.internet import ssl

        self._trust: Any = None
        if ca_file is not None:
            with open(ca_file, "rb") as f:
                pem = f.read()
            marker = b"-----BEGIN CERTIFICATE-----"
            certs = [ssl.Certificate.loadPEM(marker + part) for part in pem.split(marker)[1:]]
            if not certs:
                raise ValueError(f"{ca_file}: no certificate found")
            self._trust = ssl.trustRootFromCertificates(certs)
        self._client: Any = None
        if cert_file is not None:
            with open(cert_file, "rb") as f:
                pem = f.read()
            if key_file is not None:
                with open(key_file, "rb") as f:
                    pem += b"\n" + f.read()
            self._client = ssl.PrivateCertificate.loadPEM(pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        from twisted.internet import ssl

        return ssl.optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust, clientCertificate=self._client)


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory, written at once (treq's and
    twisted.web's file producers go through a cooperator task)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


#: Addresses whose endpoint L{Client} remembers.
_MAX_TARGETS = 16


class Client(HTTPClient):
    """
    treq's client, with a fast path for what the gateway sends most: a
    streamed POST of a JSON body to one address, without redirects.  For
    such a request treq's per-request URL handling (hyperlink, IDNA) and
    the agent's per-request endpoint cost more than everything else in a
    call; here both are computed once per address.
    """

    def __init__(self, agent: Agent) -> None:
        super().__init__(agent, cookiejar=IndexableCookieJar(policy=NoCookies()))
        self._fast_agent = agent
        self._targets: dict[bytes, tuple[Any, Any, Any]] = {}

    def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]:  # type: ignore[override]
        data = kwargs.get("data")
        headers = kwargs.get("headers")
        if (
            method == "POST"
            and isinstance(url, bytes)
            and isinstance(data, bytes)
            and isinstance(headers, Headers)
            and kwargs.get("allow_redirects") is False
            and kwargs.get("unbuffered") is True
            and set(kwargs) <= {"data", "headers", "allow_redirects", "unbuffered"}
            and hasattr(self._fast_agent, "_requestWithEndpoint")
        ):
            target = self._targets.get(url)
            if target is None:
                # A legacy server names a new address for each session: keep a few.
                if len(self._targets) >= _MAX_TARGETS:
                    self._targets.clear()
                uri = URI.fromBytes(url)
                target = self._targets[url] = (
                    (uri.scheme, uri.host, uri.port),
                    self._fast_agent._getEndpoint(uri),
                    uri,
                )
            key, endpoint, uri = target
            return self._fast_agent._requestWithEndpoint(
                key, endpoint, b"POST", uri, headers, _BytesProducer(data), uri.originForm
            )
        return super().request(method, url, **kwargs)


class _BodyReader(Protocol):
    """Hands each chunk of a response body to C{on_data}; C{done} fires
    with the reason the body ended.  L{abort} stops reading (and closes
    the connection)."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self.on_data = on_data
        #: Fires (with C{None}) when the body ended; C{reason} says how.
        self.done: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.error: BaseException | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self.on_data(data)
        except Exception as e:
            self.error = e
            self.abort()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.reason = reason
            self.done.callback(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()


def _clean_end(reason: Failure) -> bool:
    return reason is None or bool(reason.check(ResponseDone, PotentialDataLoss))


class _Exchange:
    """One POST of a request, so that it can be aborted."""

    __slots__ = ("request", "reader", "aborted")

    def __init__(self) -> None:
        self.request: Deferred[Any] | None = None
        self.reader: _BodyReader | None = None
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        if self.reader is not None:
            self.reader.abort()
        elif self.request is not None:
            # Even when it has fired: the agent's Deferred waits on the
            # connection's request, whose cancel aborts the connection (a
            # stateless-era server takes that as the cancellation).
            self.request.cancel()


class _HttpSession(McpClientSession):
    """
    An MCP client session whose listings wait for C{before_listing}
    (called with the discovery's deadline): a handshake-era server's event
    stream is opened between the handshake and the listings.
    """

    def __init__(self, *args: Any, before_listing: Callable[[float], Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._before_listing = before_listing

    async def list_everything(self, timeout: float, deadline: float) -> None:
        await self._before_listing(deadline)
        await super().list_everything(timeout, deadline)


class _HttpRun(RunEvents):
    """
    One MCP session with a Streamable HTTP server (of the handshake era),
    or a run of independent requests to one of the stateless era.
    """

    def __init__(self, backend: "HttpBackend", principal: str | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        #: Whose OAuth token the run sends (C{auth: oauth}): a principal's
        #: run, or C{None} for the backend's own run (the catalog principal's).
        self.principal = principal
        #: The token the run's requests carry now (C{auth} backends).
        self.bearer: Any = None
        #: The backend's own run: whose token it opened its session with
        #: (kept for the session's life; a principal's run: None).
        self.catalog_principal: str | None = None
        self.url = backend.config.url.encode("ascii")
        streamable = backend.config.transport != "sse"
        self.session = _HttpSession(
            backend.name,
            self.send,
            backend.clock,
            self._listing_changed,
            on_abort=self.abort,
            max_listing=backend.max_message,
            on_server_request=self._server_request,
            on_server_notification=self._server_notification,
            ties_related=True,
            protocol=backend.config.protocol if streamable else "legacy",
            before_listing=self._before_listing,
        )
        if not streamable:
            self.session.probe = "not probed: the HTTP+SSE transport (2024-11-05) is of the handshake era"
        self.session_id: bytes | None = None
        self.protocol_version: str | None = None
        self.exchanges: dict[Any, _Exchange] = {}
        self.closed = False
        self.close_reason: str | None = None
        self._init_rid: Any = None
        self._reinit: Deferred[None] | None = None
        self._listener: _Exchange | None = None
        self._generation = 0
        self._ended = False
        self._header_cache: dict[Any, Headers] = {}

    # -- the run's life ----------------------------------------------------

    async def discover(self, timeout: float) -> None:
        """
        The era (probed or pinned), the handshake for a handshake-era
        server, then the listings (L{_before_listing} first).  When the
        server could not be reached, that is the reason.
        """
        try:
            await self.session.discover(timeout)
        except DiscoveryError:
            if self.close_reason is not None:
                raise DiscoveryError(self.close_reason) from None
            raise

    async def _before_listing(self, deadline: float) -> None:
        """
        A handshake-era session's event stream is connected before the
        listings: a message the server sends on it right after the
        handshake (a list_changed, an elicitation) is not lost.  A
        stateless-era server has no such stream.
        """
        if self.session.era == "legacy":
            await self._stream_connected((deadline - self.backend.clock.seconds()) / 2)

    async def _stream_connected(self, time_left: float) -> None:
        """
        GET the session's event stream (the server's messages unrelated to
        any call), and wait until its answer's head arrived: the stream is
        open, or the server has none (405).  After C{connectTimeout} seconds
        (at most C{time_left}) without a head, go on without waiting (the
        GET goes on, bounded).
        """
        self._generation += 1
        connected: Deferred[None] = Deferred()
        d = Deferred.fromCoroutine(self._listen(self._generation, connected))
        d.addErrback(lambda f: log.failure("backend {backend}: the event stream failed", f, backend=self.name))
        d.addBoth(lambda _: _fire(connected))
        timeout = max(0.0, min(self.backend.config.connectTimeout, time_left))
        if not await _fired_within(connected, timeout, self.backend.clock):
            log.info(
                "backend {backend}: its event stream did not answer within {timeout:g} s "
                "(connectTimeout, at most half the discovery time left); "
                "going on without it for now (messages the server sends outside a call may be lost until it does)",
                backend=self.name,
                timeout=timeout,
            )

    def close(self, reason: str) -> None:
        """End the session's exchanges; pending requests fail with C{reason}."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for exchange in list(self.exchanges.values()):
            exchange.abort()
        if self._listener is not None:
            self._listener.abort()
        self.session.connection_lost(Exception(reason))

    def end_session(self) -> Deferred[Any]:
        """DELETE the session on the server (bounded; errors only logged)."""
        if self.session_id is None or self._ended:
            return succeed(None)
        self._ended = True
        d = self.backend.http.request(
            "DELETE", self.url, headers=self._headers(json=False), allow_redirects=False, unbuffered=True
        )
        d.addCallback(lambda response: response.deliverBody(_BodyReader(lambda data: None)))
        d.addTimeout(2.0, self.backend.clock)
        d.addErrback(
            lambda f: log.info("backend {backend}: could not end the session: {why}", backend=self.name, why=f.getErrorMessage())
        )
        return d

    def abort(self, rid: int) -> None:
        exchange = self.exchanges.pop(rid, None)
        if exchange is not None:
            exchange.abort()

    # -- sending -----------------------------------------------------------

    def _headers(self, json: bool = True, accept: bytes = ACCEPT_BOTH) -> Headers:
        """The request headers; the same object is reused while nothing in
        it changes (twisted.web does not modify them)."""
        key = (json, accept, self.session_id, self.protocol_version, self.bearer)
        cached = self._header_cache.get(key)
        if cached is not None:
            return cached
        if len(self._header_cache) > 16:
            self._header_cache.clear()
        headers = self._header_cache[key] = self._build_headers(json, accept)
        return headers

    def _build_headers(self, json: bool, accept: bytes) -> Headers:
        headers = Headers(self.backend.headers)
        headers.setRawHeaders(b"accept", [accept])
        if json:
            headers.setRawHeaders(b"content-type", [b"application/json"])
        if self.session_id is not None:
            headers.setRawHeaders(b"mcp-session-id", [self.session_id])
        if self.protocol_version is not None:
            headers.setRawHeaders(b"mcp-protocol-version", [self.protocol_version.encode("ascii")])
        if self.bearer is not None:
            headers.setRawHeaders(b"authorization", [b"Bearer " + self.bearer.token.encode("ascii")])
        return headers

    def pending(self) -> int:
        """Requests sent on this run and not answered yet."""
        return self.session.peer.pending_count

    async def open_like(self, template: McpClientSession, timeout: float) -> None:
        """
        A principal's run: the handshake of a handshake-era server (its own
        session, bound to its token), or what the backend's run learnt of a
        stateless-era one (no session to open).  No event stream of its own:
        what the server says outside a call comes on the backend's run.
        """
        if template.era == "modern":
            session = self.session
            session.era = "modern"
            session.probe = template.probe
            session.protocol_version = template.protocol_version
            session.server_info = template.server_info
            session.capabilities = template.capabilities
        else:
            await self.session.handshake(timeout)
        self.session.ready = True

    async def _authorize(self, rid: Any) -> bool:
        """
        The run's token for the next request (C{auth} backends), refreshed
        by the broker when it is due.  Without one, the backend's own run
        still sends its request (the server's 401 names its authorization
        metadata, which the broker needs before anyone can log in); a
        principal's request fails with the broker's problem.
        """
        principal = self.principal if self.principal is not None else self.catalog_principal
        try:
            self.bearer = await self.backend.oauth.token_for(principal, self.name)
        except OAuthProblem as problem:
            if self.principal is None and isinstance(problem, AuthorizationRequired):
                self.bearer = None
                if self.catalog_principal is not None and self.session_id is not None:
                    # Its session was opened with that principal's token: not
                    # to be carried on with another's.  A new run picks one.
                    self._fail_problem(rid, problem)
                    self.backend._unreachable(self, f"the authorization it was opened with ended ({problem.reason})")
                    return False
                return True
            self._fail_problem(rid, problem)
            return False
        if self.principal is None and self.catalog_principal is None:
            # The backend's own run keeps the principal it started with.
            self.catalog_principal = self.bearer.principal
        return True

    async def _reauthorize(self, rid: Any, response: Any, exchange: _Exchange, again: bool, bearer: Any) -> bool:
        """
        The server answered 401: tell the broker; with a new token (one
        refresh), the request is sent once more (True).  A request sent
        without a token, or refused again, fails with -31040.
        """
        challenge = response.headers.getRawHeaders(b"www-authenticate") or []
        await self._discard(response, exchange)
        oauth = self.backend.oauth
        if bearer is None:
            oauth.challenged(self.name, challenge)
            self._fail_problem(
                rid,
                AuthorizationRequired(
                    "authorization-required",
                    f"backend {self.name!r} needs an authorization: run `twisted-mcp login {self.name}`",
                    login=f"twisted-mcp login {self.name}",
                ),
            )
            return False
        try:
            self.bearer = await oauth.rejected(bearer, self.name, challenge)
        except OAuthProblem as problem:
            self.bearer = None
            self._fail_problem(rid, problem)
            return False
        if again:
            self._fail_problem(
                rid,
                AuthorizationRequired(
                    "token-rejected",
                    f"backend {self.name!r} refused a fresh token too: run `twisted-mcp login {self.name}`",
                    login=f"twisted-mcp login {self.name}",
                ),
            )
            return False
        return True

    async def _step_up(
        self, rid: Any, message: dict[str, Any], response: Any, exchange: _Exchange, bearer: Any, again: bool
    ) -> bool:
        """
        The server answered 403 C{insufficient_scope} to a request sent with
        C{bearer} (§7.4): the broker decides.  A principal's call fails with
        -31040 C{insufficient-scope} (or -31041 C{step-up-limit}); a machine
        token with more scopes (or one replaced meanwhile) is sent once more
        (True); a second time, the call fails with -31041.
        """
        challenge = response.headers.getRawHeaders(b"www-authenticate") or []
        await self._discard(response, exchange)
        try:
            fresh = await self.backend.oauth.forbidden(bearer, self.name, challenge, _tool_of(message))
        except OAuthProblem as problem:
            self._fail_problem(rid, problem)
            return False
        if again:
            self._fail_problem(
                rid,
                AuthorizationFailed("step-up-limit", f"backend {self.name!r} still refuses a token with more scopes"),
            )
            return False
        self.bearer = fresh
        return True

    def _resendable(self, rid: Any, exchange: _Exchange) -> bool:
        """Whether a request refused for its token goes again: not once the run closed or the call ended (its exchange forgotten then)."""
        if exchange.aborted or self.closed:
            return False
        if rid is not None:
            if not self.session.peer.is_pending(rid):
                return False  # Cancelled or timed out meanwhile: not re-sent.
            self.exchanges.pop(rid, None)
        return True

    def _fail_problem(self, rid: Any, problem: OAuthProblem) -> None:
        if rid is None:
            log.warn("backend {backend}: {why}", backend=self.name, why=problem.message)
            return
        self.session.peer.fail(rid, problem.to_error(self.name))

    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            raise PeerGone("the HTTP session is closed")
        method = message.get("method")
        rid = message.get("id") if method is not None else None
        headers = None
        if self.session.era == "modern" or method == "server/discover":
            if rid is None:
                # 2026-07-28 over HTTP has no client notifications (a call is
                # cancelled by aborting its POST) and no answers to the server.
                return
            headers = self._modern_headers(message)
        elif method == "initialize":
            self._init_rid = rid
        d = Deferred.fromCoroutine(self._post(message, encode(message), rid, headers=headers))
        d.addErrback(self._post_failed, rid)

    def _modern_headers(self, message: dict[str, Any]) -> Headers:
        """The headers of a 2026-07-28 request: the run's own, and what they repeat of the body."""
        params = message.get("params")
        param_headers = []
        if message["method"] == "tools/call" and type(params) is dict:
            param_headers = self.backend.tool_headers.for_call(params)
        return request_headers(self._headers(), message, param_headers)

    def _post_failed(self, failure: Failure, rid: Any) -> None:
        log.failure("backend {backend}: POST failed unexpectedly", failure, backend=self.name)
        if rid is not None:
            self.session.peer.fail(rid, failure.value)

    async def _post(
        self,
        message: dict[str, Any],
        body: bytes,
        rid: Any,
        retried: bool = False,
        headers: Headers | None = None,
        reauthorized: bool = False,
        stepped_up: bool = False,
    ) -> None:
        """
        POST a message; C{headers}: those of a 2026-07-28 request (else the
        session's).  C{reauthorized}: sent again after a 401; C{stepped_up}:
        after a 403 C{insufficient_scope}.
        """
        method = message.get("method")
        if self._reinit is not None and method not in ("initialize", "notifications/initialized"):
            await _wait(self._reinit)
        if self.closed:
            return
        if self.backend.oauth is not None:
            if not await self._authorize(rid) or self.closed:
                return
            if headers is not None:
                headers = self._modern_headers(message)
        exchange = _Exchange()
        if rid is not None:
            self.exchanges[rid] = exchange
        sent_with = self.session_id
        sent_bearer = self.bearer
        try:
            request = self.backend.http.request(
                "POST", self.url, data=body, headers=headers or self._headers(), allow_redirects=False, unbuffered=True
            )
            exchange.request = request
            if rid is None:
                # Notifications and our answers: bounded here; requests are
                # bounded by their own timeout.
                request.addTimeout(self.backend.call_timeout, self.backend.clock)
            try:
                response = await request
            except CancelledError:
                if exchange.aborted or self.closed:
                    return
                raise errors.GatewayError(
                    errors.BACKEND_TIMEOUT,
                    f"backend {self.name!r} did not answer within {self.backend.call_timeout:g} s",
                    {"backend": self.name, "timeout": self.backend.call_timeout},
                )
            except DeferredTimeoutError:
                self._not_accepted_in_time(rid)
                return
            except Exception as e:
                self._post_failed(rid, e)
                return
            code = response.code
            if code == 401 and self.backend.oauth is not None:
                if not await self._reauthorize(rid, response, exchange, reauthorized, sent_bearer) or not self._resendable(
                    rid, exchange
                ):
                    return
                await self._post(message, body, rid, retried=retried, headers=headers, reauthorized=True, stepped_up=stepped_up)
                return
            if code == 403 and sent_bearer is not None and self.backend.oauth is not None and _insufficient_scope(response):
                if not await self._step_up(rid, message, response, exchange, sent_bearer, stepped_up) or not self._resendable(
                    rid, exchange
                ):
                    return
                await self._post(message, body, rid, retried=retried, headers=headers, reauthorized=reauthorized, stepped_up=True)
                return
            if code in (400, 404) and sent_with is not None and method != "initialize" and not retried:
                text = await self._snippet(response, exchange)
                # The spec says 404 for a session the server no longer knows;
                # some servers answer 400 "no valid session".
                if code == 400 and "session" not in text.lower():
                    self._fail(rid, errors.BACKEND_HTTP_ERROR, f"backend {self.name!r} answered HTTP {code}: {text}", status=code)
                    return
                if sent_with == self.session_id:
                    await self._reinitialize()
                elif self._reinit is not None:
                    await _wait(self._reinit)  # Another request noticed first.
                if exchange.aborted or self.closed:
                    return
                if rid is not None:
                    if not self.session.peer.is_pending(rid):
                        return  # Cancelled or timed out meanwhile: not re-sent.
                    self.exchanges.pop(rid, None)
                await self._post(message, body, rid, retried=True, reauthorized=reauthorized, stepped_up=stepped_up)
                return
            if method == "initialize" and 200 <= code < 300:
                sid = response.headers.getRawHeaders(b"mcp-session-id")
                self.session_id = sid[0] if sid else None
            if headers is not None and not 200 <= code < 300:
                await self._refused(response, exchange, rid)
                return
            if code in (202, 204):
                await self._discard(response, exchange)
                if rid is not None:
                    self._fail(
                        rid,
                        errors.BACKEND_HTTP_ERROR,
                        f"backend {self.name!r} accepted a request without answering it (HTTP {code})",
                        status=code,
                    )
                return
            if not 200 <= code < 300:
                text = await self._snippet(response, exchange)
                where = _where(response)
                if rid is not None:
                    self._fail(
                        rid, errors.BACKEND_HTTP_ERROR, f"backend {self.name!r} answered HTTP {code}{where}: {text}", status=code
                    )
                else:
                    log.warn(
                        "backend {backend} answered HTTP {code} to {method}{where}: {text}",
                        backend=self.name,
                        code=code,
                        method=method or "a response",
                        where=where,
                        text=text,
                    )
                return
            await self._read_answer(response, exchange, rid)
        except JsonRpcError as e:
            if rid is not None:
                self.session.peer.fail(rid, e)
            else:
                log.warn("backend {backend}: {why}", backend=self.name, why=e.message)
        finally:
            if rid is not None and self.exchanges.get(rid) is exchange:
                del self.exchanges[rid]

    async def _refused(self, response: Any, exchange: _Exchange, rid: Any) -> None:
        """
        A 2026-07-28 request answered with an error status: the JSON-RPC
        error in the body when it answers this request (a modern server
        says -32601, -32022, -32020 so), else the status.  During the probe
        a status other than 400, 404 or 405 without such an error is no
        verdict (an auth failure, a server error): discovery fails on it.
        """
        code = response.code
        body = await self._collect(response, exchange, MAX_ERROR_BODY)
        if exchange.aborted or self.closed:
            return
        try:
            answer = decode(body)
        except MessageError:
            answer = None
        if type(answer) is dict and type(answer.get("error")) is dict and answer.get("id") == rid:
            self.session.received(answer, self.session.related(rid))
            return
        text = body[:300].decode("utf-8", "replace").strip() or "(no body)"
        message = f"backend {self.name!r} answered HTTP {code}{_where(response)}: {text}"
        if self.session.probing and code not in _NOT_MODERN:
            self.session.peer.fail(rid, ProbeFailed(f"server/discover: {message}"))
            return
        self._fail(rid, errors.BACKEND_HTTP_ERROR, message, status=code)

    def _post_failed(self, rid: Any, e: Exception) -> None:
        """A POST raised (after timeouts and cancellation were handled): a
        server that cannot be reached is down; anything else fails this call."""
        if isinstance(e, _CONNECT_ERRORS):
            self.backend._unreachable(self, f"cannot connect to {shown_url(self.backend.config.url)}: {_why(e)}")
        else:
            self._fail(rid, errors.BACKEND_LOST, f"backend {self.name!r}: the connection failed: {_why(e)}")

    def _not_accepted_in_time(self, rid: Any) -> None:
        """A POST bounded by C{addTimeout} got no answer: that raises
        L{twisted.internet.defer.TimeoutError}, not the connect timeout of
        L{twisted.internet.error}."""
        timeout = self.backend.call_timeout
        self._fail(
            rid, errors.BACKEND_TIMEOUT, f"backend {self.name!r} did not accept the message within {timeout:g} s", timeout=timeout
        )

    def _fail(self, rid: Any, code: int, message: str, **data: Any) -> None:
        if rid is None:
            log.warn("backend {backend}: {why}", backend=self.name, why=message)
            return
        self.session.peer.fail(rid, errors.backend_error(code, self.name, message, **data))

    async def _reinitialize(self) -> None:
        """The server forgot our session (404): make a new one, once for
        every request that noticed."""
        if self._reinit is not None:
            await _wait(self._reinit)
            return
        log.info("backend {backend}: the server ended our session; initializing a new one", backend=self.name)
        self._reinit = d = Deferred()
        if self._listener is not None:
            self._listener.abort()
        self._generation += 1  # ends the old session's event-stream loop
        self.session_id = None
        self.protocol_version = None
        # The old session's requests to us will never be answered.
        self.session.session_ended()
        renewed = False
        try:
            await self.session.handshake(self.backend.config.discoveryTimeout)
            if not self.closed and self.session_id is not None:
                await self._stream_connected(self.backend.config.discoveryTimeout / 2)
                renewed = True
        except Exception as e:
            log.warn("backend {backend}: re-initializing failed: {why}", backend=self.name, why=_why(e))
        finally:
            self._reinit = None
            d.callback(None)
        if renewed and not self.closed:
            self.backend._session_renewed(self)

    # -- reading -----------------------------------------------------------

    def _get_stream(self, last_event_id: str | None = None) -> tuple[_Exchange, Deferred[Any]]:
        """GET the session's event stream; the exchange is the listener."""
        exchange = _Exchange()
        self._listener = exchange
        request = self._get(last_event_id)
        exchange.request = request
        return exchange, request

    def _get(self, last_event_id: str | None = None) -> Deferred[Any]:
        """GET an event stream: the session's, or with C{last_event_id}, the
        continuation of the stream that event was on."""
        headers = self._headers(json=False, accept=b"text/event-stream")
        if last_event_id:
            headers = headers.copy()  # the cached headers stay as they are
            headers.setRawHeaders(b"last-event-id", [last_event_id.encode("utf-8")])
        return self.backend.http.request(  # type: ignore[no-any-return]
            "GET", self.url, headers=headers, allow_redirects=False, unbuffered=True
        )

    def _read_events(
        self, response: Any, exchange: _Exchange, handle: Callable[[Any], None], parser: SSEParser | None = None
    ) -> _BodyReader:
        """Read an event stream, handing each event to C{handle} as it
        completes; C{parser} (a new one if not given) keeps the stream's
        last event id and retry delay."""
        if parser is None:
            parser = SSEParser(self.backend.max_message)

        def on_data(data: bytes) -> None:
            for event in parser.feed(data):
                handle(event)

        reader = _BodyReader(on_data)
        exchange.reader = reader
        response.deliverBody(reader)
        return reader

    def _message_event(self, event: Any, related: Any = None) -> None:
        if event.event == "message":
            self._deliver(event.data.encode("utf-8"), related)

    async def _read_answer(self, response: Any, exchange: _Exchange, rid: Any) -> None:
        ctype = _content_type(response)
        limit = self.backend.max_message
        chunks: list[bytes] = []
        # What the server sends with this answer belongs to the call.
        related = self.session.related(rid)
        if ctype == b"text/event-stream":
            await self._read_answer_stream(response, exchange, rid, related)
            return
        if ctype == b"application/json":
            size = [0]

            def on_data(data: bytes) -> None:
                size[0] += len(data)
                if size[0] > limit:
                    raise EventTooLarge(f"a body of more than {limit} bytes")
                chunks.append(data)

            reader = _BodyReader(on_data)
            exchange.reader = reader
            response.deliverBody(reader)
        else:
            await self._discard(response, exchange)
            self._fail(
                rid,
                errors.BACKEND_HTTP_ERROR,
                f"backend {self.name!r} answered with content type {ctype.decode('latin-1')!r}, not JSON or an event stream",
                status=response.code,
            )
            return
        await reader.done
        reason = reader.reason
        if exchange.aborted or self.closed:
            return
        if isinstance(reader.error, EventTooLarge):
            self._fail(
                rid,
                errors.BACKEND_RESPONSE_TOO_LARGE,
                f"backend {self.name!r} sent {reader.error} (gateway.maxMessageBytes)",
                limit=limit,
            )
            return
        if reader.error is not None:
            self._fail(rid, errors.BACKEND_LOST, f"backend {self.name!r}: could not read the answer: {reader.error}")
            return
        if _clean_end(reason):
            self._deliver(b"".join(chunks), related)
        if rid is not None:
            self._fail(rid, errors.BACKEND_LOST, f"backend {self.name!r}: {_why_ended(reason)}")

    async def _read_answer_stream(self, response: Any, exchange: _Exchange, rid: Any, related: Any) -> None:
        """
        Read the event stream that answers C{rid}.  When it ends or breaks
        before the response, resume it (L{_resume}) for as long as it can be
        resumed: its events had ids, and a resumption brings something new
        within L{MAX_RESUME_ATTEMPTS} attempts.
        """
        parser = SSEParser(self.backend.max_message)
        resumed = False
        attempts = 0

        def on_event(event: Any) -> None:
            self._message_event(event, related)
            if resumed and not self.session.peer.is_pending(rid) and exchange.reader is not None:
                # Answered: a resumed stream is the server's GET, which it may keep open.
                exchange.reader.abort()

        while True:
            before = parser.last_event_id
            reader = self._read_events(response, exchange, on_event, parser)
            await reader.done
            if exchange.aborted or self.closed or rid is None or not self.session.peer.is_pending(rid):
                return  # cancelled, or answered
            if isinstance(reader.error, EventTooLarge):
                self._fail(
                    rid,
                    errors.BACKEND_RESPONSE_TOO_LARGE,
                    f"backend {self.name!r} sent {reader.error} (gateway.maxMessageBytes)",
                    limit=self.backend.max_message,
                )
                return
            if reader.error is not None:
                self._fail(rid, errors.BACKEND_LOST, f"backend {self.name!r}: could not read the answer: {reader.error}")
                return
            why = _why_ended(reader.reason)
            if not parser.last_event_id or self.session.era == "modern":
                hint = (
                    "a 2026-07-28 stream cannot be resumed"
                    if self.session.era == "modern"
                    else "it cannot be resumed: the server gave its events no id"
                )
                self._fail(rid, errors.BACKEND_LOST, f"backend {self.name!r}: {why}; {hint}")
                return
            if parser.last_event_id != before:
                attempts = 0  # it made progress: a new series of attempts
            while True:
                attempts += 1
                if attempts > MAX_RESUME_ATTEMPTS:
                    self._fail(
                        rid,
                        errors.BACKEND_LOST,
                        f"backend {self.name!r}: {why}; {MAX_RESUME_ATTEMPTS} attempts in a row to resume it "
                        f"(GET with Last-Event-ID {parser.last_event_id!r}) brought nothing new",
                    )
                    return
                outcome = await self._resume(rid, exchange, parser, attempts, why)
                if outcome is None:
                    return
                if not isinstance(outcome, str):
                    break
                why = f"resuming its stream failed ({outcome})"
            response, parser, resumed = outcome, parser.continued(), True

    async def _resume(self, rid: Any, exchange: _Exchange, parser: SSEParser, attempt: int, why: str) -> Any:
        """
        Wait the stream's retry delay, then GET it again from its last event.

        @return: the response (an event stream) to read on; a reason (a
            string) when this attempt failed but another may succeed; or
            C{None} when the call is over: answered, cancelled, timed out,
            or failed here because the server refused to resume.
        """
        delay = _retry_delay(parser.retry, attempt)
        log.info(
            "backend {backend}: {why}; resuming it in {delay:g} s from event {event!r}",
            backend=self.name,
            why=why,
            delay=delay,
            event=parser.last_event_id,
        )
        wait = deferLater(self.backend.clock, delay)
        exchange.reader = None
        exchange.request = wait  # so that a cancel or the call's timeout stops the wait
        try:
            await wait
        except CancelledError:
            return None
        if exchange.aborted or self.closed or not self.session.peer.is_pending(rid):
            return None
        request = self._get(parser.last_event_id)
        exchange.request = request
        try:
            response = await request
        except CancelledError:
            return None
        except Exception as e:
            return _why(e)
        if exchange.aborted or self.closed:
            return None
        if response.code == 200 and _content_type(response) == b"text/event-stream":
            return response
        text = await self._snippet(response, exchange)
        self._fail(
            rid,
            errors.BACKEND_LOST,
            f"backend {self.name!r}: {why}, and the server refused to resume it "
            f"(GET with Last-Event-ID answered HTTP {response.code}: {text})",
            status=response.code,
        )
        return None

    def _deliver(self, data: bytes, related: Any = None) -> None:
        if not data.strip():
            return  # e.g. the empty event a server sends to prime reconnection
        try:
            payload = decode(data)
        except MessageError as e:
            log.warn("backend {backend} sent something that is not JSON ({why})", backend=self.name, why=e.message)
            return
        for message in payload if type(payload) is list else [payload]:
            if (
                type(message) is dict
                and self._init_rid is not None
                and message.get("id") == self._init_rid
                and type(message.get("result")) is dict
            ):
                version = message["result"].get("protocolVersion")
                if isinstance(version, str) and version.isascii():
                    self.protocol_version = version
            try:
                self.session.received(message, related)
            except MessageError as e:
                log.warn("backend {backend} sent a message that is not JSON-RPC ({why})", backend=self.name, why=e.message)
            except Exception:
                log.failure("backend {backend}: could not handle a message", backend=self.name)

    async def _discard(self, response: Any, exchange: _Exchange | None = None) -> None:
        reader = _BodyReader(lambda data: None)
        if exchange is not None:
            exchange.reader = reader  # so that a cancel or a timeout can stop it
        response.deliverBody(reader)
        await reader.done

    async def _snippet(self, response: Any, exchange: _Exchange | None = None) -> str:
        """The start of an error body (then stop reading it)."""
        text = (await self._collect(response, exchange, 300)).decode("utf-8", "replace").strip()
        return text or "(no body)"

    async def _collect(self, response: Any, exchange: _Exchange | None, limit: int) -> bytes:
        """At most C{limit} bytes of a body (then stop reading it)."""
        chunks: list[bytes] = []
        size = 0

        def keep(data: bytes) -> None:
            nonlocal size
            chunks.append(data)
            size += len(data)
            if size >= limit:
                reader.abort()

        reader = _BodyReader(keep)
        if exchange is not None:
            exchange.reader = reader
        response.deliverBody(reader)
        await reader.done
        return b"".join(chunks)[:limit]

    async def _listen(self, generation: int, connected: Deferred[None]) -> None:
        """GET the server's own event stream (notifications such as
        tools/list_changed), for as long as the session lasts (a new
        session starts a new loop: C{generation}).  C{connected} fires
        once the first GET is answered (or failed)."""
        backoff = 1.0
        parser = SSEParser(self.backend.max_message)
        while not self.closed and generation == self._generation:
            if self.backend.oauth is not None and (not await self._authorize(None) or self.closed):
                _fire(connected)
                return  # No token to open it with now (logged).
            resuming = parser.last_event_id or None
            exchange, request = self._get_stream(resuming)
            request.addTimeout(self.backend.config.connectTimeout + 5, self.backend.clock)
            try:
                response = await request
            except Exception as e:
                _fire(connected)
                if self.closed:
                    return
                log.info("backend {backend}: no event stream ({why})", backend=self.name, why=_why(e))
                return
            _fire(connected)
            if response.code != 200 or _content_type(response) != b"text/event-stream":
                if resuming is None:
                    await self._discard(response)
                    return  # The server offers no stream (405), or not for this session.
                log.info(
                    "backend {backend}: the server refused to resume its event stream from event {event!r} "
                    "(HTTP {code}: {text}); opening a new one (messages sent meanwhile may be lost)",
                    backend=self.name,
                    event=resuming,
                    code=response.code,
                    text=await self._snippet(response),
                )
                parser = SSEParser(self.backend.max_message)
                continue
            started = self.backend.clock.seconds()
            await self._read_events(response, exchange, self._message_event, parser).done
            if self.closed or generation != self._generation:
                return  # Closed, or a new session has its own stream.
            lasted = self.backend.clock.seconds() - started
            if lasted > 30:
                backoff = 1.0
            delay = backoff
            if parser.retry is not None:
                # The server's delay (it may end the stream on purpose, to be
                # polled); but a stream that ends at once is not reopened
                # faster than the backoff.
                delay = _retry_delay(parser.retry, 1)
                if lasted < 1.0:
                    delay = max(delay, backoff)
            backoff = min(backoff * 2, MAX_RETRY)
            wait = deferLater(self.backend.clock, delay)
            exchange.reader, exchange.request = None, wait  # so that close() stops the wait
            try:
                await wait
            except CancelledError:
                return
            parser = parser.continued()
            if generation != self._generation:
                return


class _SseRun(_HttpRun):
    """
    One session with a server that speaks only the legacy HTTP+SSE
    transport: GET an event stream whose first event (C{endpoint}) names
    the address to POST messages to; every answer comes on the stream.
    """

    def __init__(self, backend: "HttpBackend") -> None:
        super().__init__(backend)
        self.post_url: bytes | None = None
        self._endpoint: Deferred[None] = Deferred()

    async def discover(self, timeout: float) -> None:
        deadline = self.backend.clock.seconds() + timeout
        await self._connect()
        await self.session.handshake(timeout)
        await self.session.list_everything(timeout, deadline)

    async def _before_listing(self, deadline: float) -> None:
        """Its event stream is open already (L{_connect})."""

    def end_session(self) -> Deferred[Any]:
        return succeed(None)

    async def _connect(self) -> None:
        exchange, request = self._get_stream()
        try:
            response = await request
        except _CONNECT_ERRORS as e:
            raise DiscoveryError(f"cannot connect to {shown_url(self.backend.config.url)}: {_why(e)}")
        ctype = _content_type(response)
        if response.code != 200 or ctype != b"text/event-stream":
            text = await self._snippet(response)
            raise DiscoveryError(
                f"GET {shown_url(self.backend.config.url)} answered HTTP {response.code} ({ctype.decode('latin-1') or 'no content type'}), not an event stream: {text}"
            )

        def handle(event: Any) -> None:
            if event.event == "endpoint":
                self._set_endpoint(event.data)
            else:
                self._message_event(event)

        reader = self._read_events(response, exchange, handle)
        reader.done.addCallback(lambda _: self._stream_ended(reader.reason, reader))
        await self._endpoint

    def _set_endpoint(self, data: str) -> None:
        if self._endpoint.called:
            return
        try:
            target = urljoin(self.backend.config.url, data.strip())
        except ValueError:  # an unclosed "[" or a bad IPv6 host
            target = ""
        base, new = urlsplit(self.backend.config.url), split_url(target)
        if not target or new is None or not target.isascii():
            # The server's text, not the operator's: refuse it, never raise out of the stream.
            self._endpoint.errback(DiscoveryError("the server named an endpoint that is not a valid address; refused"))
            return
        if (base.scheme, base.netloc) != (new.scheme, new.netloc):
            self._endpoint.errback(
                DiscoveryError(f"the server named an endpoint on another origin ({shown_url(target)}); refused")
            )
            return
        self.post_url = target.encode("ascii")
        self._endpoint.callback(None)

    def _stream_ended(self, reason: Failure, reader: _BodyReader) -> None:
        if self.closed:
            return
        why = "the event stream ended" if _clean_end(reason) else f"the event stream broke ({_why(reason.value)})"
        if isinstance(reader.error, EventTooLarge):
            why = f"the server sent {reader.error} on its event stream"
        if not self._endpoint.called:
            self._endpoint.errback(DiscoveryError(why + " before naming its endpoint"))
        self.backend._unreachable(self, why)

    def send(self, message: dict[str, Any]) -> None:
        if self.closed or self.post_url is None:
            raise PeerGone("the event stream is closed")
        body = encode(message)
        rid = message.get("id") if message.get("method") is not None else None
        d = Deferred.fromCoroutine(self._post_legacy(body, rid))
        d.addErrback(self._post_failed, rid)

    async def _post_legacy(self, body: bytes, rid: Any) -> None:
        assert self.post_url is not None
        request = self.backend.http.request(
            "POST", self.post_url, data=body, headers=self._headers(), allow_redirects=False, unbuffered=True
        )
        request.addTimeout(self.backend.call_timeout, self.backend.clock)
        try:
            response = await request
        except (CancelledError, neterror.TimeoutError, DeferredTimeoutError):
            self._not_accepted_in_time(rid)
            return
        except Exception as e:
            self._post_failed(rid, e)
            return
        if 200 <= response.code < 300:
            await self._discard(response)
        else:
            text = await self._snippet(response)
            self._fail(
                rid,
                errors.BACKEND_HTTP_ERROR,
                f"backend {self.name!r} answered HTTP {response.code}: {text}",
                status=response.code,
            )


class HttpBackend(SupervisedBackend):
    """
    A remote MCP server over HTTP, supervised like a child process: when
    it cannot be reached it is marked down and retried with backoff.

    With C{auth: oauth} every principal's calls go over a run of its own
    carrying its own token (L{call_as}); the backend's own run (discovery,
    listings, the gateway's own requests) carries the catalog principal's.

    @param reactor: provides time, TCP and (for https) TLS.
    @param oauth: the broker that hands out tokens (C{auth} backends).
    """

    def __init__(self, config: HttpServer, reactor: Any, max_message: int, oauth: TokenSource | None = None) -> None:
        super().__init__(config.name, config, reactor)
        self.max_message = max_message
        auth = getattr(config, "auth", None)
        self.oauth = oauth if auth is not None else None
        if auth is not None and oauth is None:
            raise ValueError(f"backend {config.name!r} has auth but the gateway built no OAuth broker")
        self.per_principal = isinstance(auth, OAuthAuth)
        self.principal_runs = PrincipalRuns(
            reactor, lambda principal: _HttpRun(self, principal), self._open_run, config.idleTimeout, config.maxInstances
        )
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = config.maxConnections
        self.pool.retryAutomatically = False
        policy: Any = None
        if config.caFile or config.certFile:
            policy = TLSPolicy(config.caFile, config.certFile, config.keyFile)
        agent = (
            Agent(reactor, contextFactory=policy, connectTimeout=config.connectTimeout, pool=self.pool)
            if policy is not None
            else Agent(reactor, connectTimeout=config.connectTimeout, pool=self.pool)
        )
        self.http: Any = Client(agent)
        self.headers = {k.encode("latin-1"): [v.encode("latin-1")] for k, v in config.headers.items()}
        if not any(k.lower() == b"host" for k in self.headers):
            self.headers[b"Host"] = [_host_header(config.url)]
        self.run: _HttpRun | None = None
        #: The C{Mcp-Param-*} headers of a stateless-era server's tools.
        self.tool_headers = ToolHeaders([], config.name)

    @property
    def session(self) -> McpClientSession | None:  # type: ignore[override]
        run = self.run
        return run.session if run is not None and run.session.ready and not run.closed else None

    def call(
        self,
        method: str,
        params: dict[str, Any] | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
        context: Any = None,
    ) -> Deferred[Any]:
        """
        As L{Backend.call}; refused at once (C{errors.BUSY}) while C{maxRequests}
        requests are in flight: each holds a connection (a descriptor) of
        the gateway's, and a busy server is not a server that is down.  The
        listen of a stateless-era server (one more connection) is not counted.
        A stateless-era server's tool call whose argument cannot travel in
        its C{Mcp-Param-*} header is refused (-32602).
        """
        if method == "tools/call" and self.era == "modern" and type(params) is dict:
            self.tool_headers.check(params)
        self._check_busy()
        return super().call(method, params, on_progress, timeout, context)

    def _check_busy(self) -> None:
        cap = self.config.maxRequests
        busy = self.in_flight()
        if busy >= cap:
            raise errors.backend_error(
                errors.BUSY,
                self.name,
                f"backend {self.name!r} is busy: {busy} requests in flight (maxRequests is {cap}); try again later",
                limit=cap,
            )

    def call_as(
        self,
        principal: str,
        method: str,
        params: dict[str, Any] | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
        context: Any = None,
    ) -> Deferred[Any]:
        """
        As L{call}, over C{principal}'s own run with its own token
        (C{auth: oauth}); a principal without a usable token gets -31040
        before anything is sent.  Other backends: L{call}.
        """
        if not self.per_principal:
            return self.call(method, params, on_progress, timeout, context)
        if self.state is not State.UP or self.run is None:
            raise self.unavailable()
        if method == "tools/call" and self.era == "modern" and type(params) is dict:
            self.tool_headers.check(params)
        self._check_busy()
        if timeout is None:
            timeout = self.call_timeout
        d = Deferred.fromCoroutine(self._call_as(principal, method, params, on_progress, timeout, context))
        d.addBoth(self.latency.observe_since, monotonic(), monotonic)
        return d

    async def _call_as(
        self,
        principal: str,
        method: str,
        params: dict[str, Any] | None,
        on_progress: Callable[[dict[str, Any]], None] | None,
        timeout: float,
        context: Any,
    ) -> Any:
        assert self.oauth is not None
        try:
            await self.oauth.token_for(principal, self.name)
        except OAuthProblem as problem:
            raise problem.to_error(self.name) from None
        try:
            run = await self.principal_runs.run_for(principal)
        except TooManyRuns as e:
            raise errors.backend_error(
                errors.BUSY,
                self.name,
                f"backend {self.name!r} is busy: {e}; try again later",
                limit=e.limit,
                cap="maxInstances",
            ) from None
        except (DiscoveryError, PeerGone) as e:
            raise errors.backend_error(
                errors.BACKEND_UNAVAILABLE,
                self.name,
                f"backend {self.name!r}: could not open a session for this principal: {e}",
                state=self.state.value,
            ) from None
        try:
            d = run.session.request(method, params, timeout, on_progress, context)
        except PeerGone:
            raise self.gone() from None
        d.addErrback(self._call_failed, method, timeout)
        return await d

    async def _open_run(self, run: "_HttpRun") -> None:
        current = self.run
        if current is None or current.closed:
            raise DiscoveryError(f"backend {self.name!r} is {self.state.value}")
        await run.open_like(current.session, self.config.discoveryTimeout)

    def in_flight(self) -> int:
        return super().in_flight() + self.principal_runs.pending()

    def subscribe_resource(self, uri: str, params: dict[str, Any], context: Any = None) -> Deferred[Any]:
        """
        Not on a server reached with each principal's own token: an update
        would come on one principal's session for another's subscription.
        """
        if self.per_principal:
            raise errors.GatewayError(
                METHOD_NOT_FOUND,
                f"backend {self.name!r} is reached with each principal's own OAuth token: "
                "resource subscriptions are not offered on it (read the resource again instead)",
                {"backend": self.name},
            )
        return super().subscribe_resource(uri, params, context)

    def authorized(self) -> None:
        """A principal authorized: a backend waiting to restart for want of a token starts now."""
        call = self._restart_call
        if self.state is State.DOWN and call is not None and call.active():
            call.cancel()
            self._restart()

    def _is_current(self, run: Any) -> bool:
        return run is self.run

    def _run_request(self, run: Any, method: str, params: dict[str, Any], related: Any) -> Deferred[Any]:
        """As for every backend; also a principal's run (its requests tied to that principal's calls)."""
        if self.principal_runs.owns(run):
            if related is None or self._stopping:
                # Tied to no call of that principal's: no client of its to ask.
                raise JsonRpcError(
                    INTERNAL_ERROR, f"backend {self.name!r}: {method} outside a call is refused on a principal's session"
                )
            return self._server_request(method, params, related)
        return super()._run_request(run, method, params, related)

    def _run_notification(self, run: Any, method: str, params: dict[str, Any], related: Any) -> None:
        if self.principal_runs.owns(run):
            if related is not None and not self._stopping:
                # Only what a call of that principal's brought (progress,
                # logs of the call): a principal's run has no other stream.
                self._server_notification(method, params, related)
            return
        super()._run_notification(run, method, params, related)

    def _take_listings(self, session: McpClientSession) -> None:
        """As for every backend; a stateless-era server's tools with invalid C{x-mcp-header} are not offered."""
        super()._take_listings(session)
        if session.era == "modern":
            self.tool_headers = ToolHeaders(self.tools, self.name)
            self.tools = self.tool_headers.usable

    def _attempt(self) -> None:
        run = (_SseRun if self.config.transport == "sse" else _HttpRun)(self)
        self.run = run
        self._set_state(State.STARTING)
        self._discover(run)

    def _why_failed(self, failure: Failure, run: Any) -> str:
        if run.close_reason is not None and not isinstance(failure.value, DiscoveryError):
            return run.close_reason
        return super()._why_failed(failure, run)

    def _abandon(self, run: Any) -> None:
        run.close("discovery failed")
        d = run.end_session()
        d.addBoth(lambda _: self._run_ended(run, self.last_error or "discovery failed"))

    def _unreachable(self, run: Any, why: str) -> None:
        """The server cannot be reached (or its stream ended): this run is over."""
        if self.principal_runs.owns(run):
            self.principal_runs.discard(run, why)
            return
        if not self._is_current(run) or run.closed:
            return
        if self.state is State.STARTING:
            # Discovery will fail on its own; it restarts the backend.
            run.close(why)
            return
        run.close(why)
        self._run_ended(run, why)

    def stopService(self) -> Deferred[None]:
        self._stop_supervising()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        ending = self.principal_runs.close_all("the gateway is stopping")
        run = self.run
        if run is not None:
            run.close("the gateway is stopping")
            await run.end_session()
        for d in ending:
            await d
        await self.pool.closeCachedConnections()
        self._set_state(State.STOPPED)


def _insufficient_scope(response: Any) -> bool:
    """The answer's Bearer challenge says C{insufficient_scope} (RFC 6750 §3.1): a step-up, not an HTTP error."""
    challenge = bearer_challenge(response.headers.getRawHeaders(b"www-authenticate") or [])
    return challenge is not None and challenge.error == "insufficient_scope"


def _tool_of(message: dict[str, Any]) -> str:
    """What step-ups are counted per: the tool a C{tools/call} names, else the request's method."""
    params = message.get("params")
    if message.get("method") == "tools/call" and type(params) is dict and type(params.get("name")) is str:
        return str(params["name"])
    return str(message.get("method") or "a response")


def _content_type(response: Any) -> bytes:
    value = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
    return value.split(b";")[0].strip().lower()


def _where(response: Any) -> str:
    """Where a redirect points (an empty string for any other answer), for an error message."""
    if not 300 <= response.code < 400:
        return ""
    location = response.headers.getRawHeaders(b"location") or [b"?"]
    return f" to {shown_url(location[0].decode('latin-1'))} (redirects are not followed: configure the final address)"


def _host_header(url: str) -> bytes:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = host.encode("idna") if not host.isascii() else host.encode("ascii")
    if b":" in host:
        host = b"[" + host + b"]"
    default = 443 if parts.scheme == "https" else 80
    if parts.port is not None and parts.port != default:
        host += b":%d" % parts.port
    return host


def _retry_delay(retry_ms: int | None, attempt: int) -> float:
    """Seconds to wait before resuming a stream: the server's C{retry}
    (milliseconds), else L{DEFAULT_RETRY} doubled on each attempt; at most
    L{MAX_RETRY}."""
    if retry_ms is not None:
        return min(retry_ms / 1000.0, MAX_RETRY)
    return min(DEFAULT_RETRY * 2 ** (attempt - 1), MAX_RETRY)


def _why_ended(reason: Failure | None) -> str:
    """How an answer ended without its response, for an error message."""
    if _clean_end(reason):  # type: ignore[arg-type]
        return "the server ended its answer without a response"
    assert reason is not None
    return f"the stream broke before the response ({_why(reason.value)})"


def _why(e: Any) -> str:
    if isinstance(e, Failure):
        e = e.value
    text = str(e) or type(e).__name__
    reasons = getattr(e, "reasons", None)
    if reasons:
        text = "; ".join(r.getErrorMessage() for r in reasons)
    return text[:300]


def _fire(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)


async def _fired_within(d: Deferred[None], timeout: float, clock: Any) -> bool:
    """Whether C{d} fires within C{timeout} seconds (C{d} is left as it is)."""
    if d.called:
        return True
    waiter: Deferred[bool] = Deferred()
    d.addBoth(lambda r: (waiter.called or waiter.callback(True), r)[1])
    call = clock.callLater(timeout, lambda: waiter.called or waiter.callback(False))
    try:
        return await waiter
    finally:
        if call.active():
            call.cancel()


async def _wait(d: Deferred[Any]) -> None:
    waiter: Deferred[None] = Deferred()
    d.addBoth(lambda r: (waiter.called or waiter.callback(None), r)[1])
    await waiter
