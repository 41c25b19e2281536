"""
The MCP client side of one backend connection, independent of transport.

L{McpClientSession} learns which era the server speaks (the probe of
L{twisted_mcp.backends.probe}: a 2026-07-28 server is sent no handshake,
and every request to it carries the envelope of
L{twisted_mcp.backends.envelope}: the session stamps its own, dispatch the
clients'), drives the handshake, discovery (tools, prompts,
resources and resource templates, each following C{nextCursor}), the
re-listing a C{list_changed} asks for, routing of progress notifications,
and the requests and notifications a server sends on its own: those go to
the callables the backend gives (the gateway's L{BackendEvents
<twisted_mcp.backends.base.BackendEvents>}), with the context of the call
whose answer carried them when the transport ties them to one.  It sits on
a L{JsonRpcPeer} and is fed decoded messages (L{McpClientSession.received})
by whatever transport carries them (a child's stdio, an HTTP server's
answers).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends import envelope
from twisted_mcp.backends.listings import LISTINGS, RELISTED_ON, TOOLS, Listing, fetch
from twisted_mcp.backends.probe import ProbeFailed, Verdict, settle
from twisted_mcp.backends.server_requests import Handler, HeldRequests
from twisted_mcp.mcp.meta import PREFIX, SERVER_INFO, without_reserved
from twisted_mcp.mcp.versions import CLIENT_INFO, HANDSHAKE_VERSIONS, LATEST_HANDSHAKE
from twisted_mcp.wire.jsonrpc import (
    METHOD_NOT_FOUND,
    Answer,
    JsonRpcError,
    JsonRpcPeer,
    MessageError,
    PeerGone,
    RequestTimeout,
)

log = Logger()

#: What the gateway declares it can do as a client: it passes sampling,
#: elicitation (both modes) and roots on to whichever of its own clients can
#: answer, and refuses per request when none can.
CLIENT_CAPABILITIES: dict[str, Any] = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}

#: A server notification the backend hands on: (method, params, related).
NotificationHandler = Callable[[str, dict[str, Any], Any], None]
#: Whether a notification tagged with a subscription id goes on: (method, params, tag).
TaggedFilter = Callable[[str, dict[str, Any], Any], bool]
#: The C{_meta} key that ties a notification to a C{subscriptions/listen}.
SUBSCRIPTION_ID = PREFIX + "subscriptionId"

_LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "notice": "info",
    "warning": "warn",
    "error": "error",
    "critical": "critical",
    "alert": "critical",
    "emergency": "critical",
}


class DiscoveryError(Exception):
    """The server could not be initialized or its tools listed."""


class McpClientSession:
    """
    One MCP client session with one server connection.

    @ivar peer: the JSON-RPC peer; the transport hands it messages through
        L{received} and tells it of the end with L{connection_lost}.
    @ivar listed: each listing (by kind: C{"tools"}, C{"prompts"},
        C{"resources"}, C{"resourceTemplates"}), as last listed.

    @param on_changed: called with a kind after a re-listing changed it.
    @param on_abort: called with the id of a request that was cancelled or
        timed out (HTTP: stop reading its answer).
    @param max_listing: bytes each listing may add up to
        (C{gateway.maxMessageBytes}).
    @param on_server_request: hands on a request from the server (not
        ping); C{None}: refused.
    @param on_server_notification: hands on a notification from the server
        (not progress, cancelled or list_changed).
    @param ties_related: the transport ties messages to the call whose
        answer carried them (L{received}'s C{related}); the contexts of calls
        are kept only then.
    @param protocol: the server's C{protocol} setting (C{auto}, C{legacy},
        C{modern}; see L{twisted_mcp.backends.probe}).
    @param initialize_first: (C{auto}) send C{initialize} before probing.

    @ivar era: C{"legacy"} (the handshake era) or C{"modern"} (2026-07-28)
        once discovered; a modern server's requests all carry the envelope.
    @ivar probe: how the era was decided (C{pinned}, C{discover},
        C{fallback: <why>}).
    @ivar on_tagged: decides whether a modern server's notification tagged
        with a subscription id (its listen stream's) goes on as a
        handshake-era server's unsolicited one would (see
        L{twisted_mcp.backends.listen}); C{None}: none does.
    """

    def __init__(
        self,
        name: str,
        send: Callable[[dict[str, Any]], None],
        clock: IReactorTime,
        on_changed: Callable[[str], None],
        on_abort: Callable[[int], None] | None = None,
        *,
        max_listing: int,
        on_server_request: Handler | None = None,
        on_server_notification: NotificationHandler | None = None,
        ties_related: bool = False,
        protocol: str = "legacy",
        initialize_first: bool = False,
    ) -> None:
        self.name = name
        self.protocol = protocol
        self.initialize_first = initialize_first
        self.era = "legacy"
        self.probe = "pinned"
        #: The probe is waiting for its answer (a server that exits now may
        #: crash on unknown first requests).
        self.probing = False
        self._max_listing = max_listing
        self._clock = clock
        self._on_changed = on_changed
        self._on_abort = on_abort
        self._on_server_request = on_server_request
        self._on_server_notification = on_server_notification
        self._ties_related = ties_related
        self.peer = JsonRpcPeer(
            send,
            clock,
            on_request=self._request_received,
            on_notification=self._notification_received,
            on_cancel=self._send_cancel,
            label=name,
        )
        self.protocol_version: str | None = None
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None
        self.listed: dict[str, list[dict[str, Any]]] = {listing.kind: [] for listing in LISTINGS}
        self.ready = False
        self.on_tagged: TaggedFilter | None = None
        self._progress: dict[Any, Callable[[dict[str, Any]], None]] = {}
        #: The context of each call in flight that has one (ties_related only).
        self._contexts: dict[int, Any] = {}
        #: The server's requests being answered.
        self._held = HeldRequests(self.peer, name)
        #: What the message being handled is related to (see L{received}).
        self._related: Any = None
        self._listing: dict[str, Deferred[Any]] = {}  # the re-listings in progress, by kind
        self._again: set[str] = set()  # kinds changed again while being re-listed
        self._stale: dict[str, Listing] = {}  # kinds changed during discovery
        self._init_rid: int | None = None
        self._timeout = 60.0

    @property
    def tools(self) -> list[dict[str, Any]]:
        return self.listed["tools"]

    @property
    def held_requests(self) -> int:
        """Requests from the server being answered."""
        return len(self._held)

    # -- start-up ----------------------------------------------------------

    async def discover(self, timeout: float) -> None:
        """
        The era (probed or pinned: L{settle}), the handshake for a
        handshake-era server, then every listing, within C{timeout}.
        Raises L{DiscoveryError} (or L{PeerGone} when the server went away).
        """
        deadline = self._clock.seconds() + timeout
        self.probing = self.protocol == "auto" and not self.initialize_first
        try:
            verdict = await settle(self.protocol, self._send_discover, self._send_initialize, timeout, self.initialize_first)
        except ProbeFailed as e:
            raise DiscoveryError(str(e))
        except RequestTimeout:
            raise DiscoveryError(f"no answer to initialize within {timeout:g} s")
        finally:
            self.probing = False
        self.probe = verdict.how
        if verdict.era == "modern":
            self._adopt(verdict)
        else:
            self._take_initialize(verdict.result)
        await self.list_everything(timeout, deadline)

    async def _send_discover(self, version: str, timeout: float) -> Any:
        return await self.peer.request("server/discover", envelope.own(None, version), timeout)

    async def _send_initialize(self, timeout: float) -> Any:
        self.probing = False
        return await self.peer.request(
            "initialize",
            {
                "protocolVersion": LATEST_HANDSHAKE,
                "capabilities": CLIENT_CAPABILITIES,
                "clientInfo": CLIENT_INFO,
            },
            timeout,
            minted=self._initializing,
        )

    def _adopt(self, verdict: Verdict) -> None:
        """A stateless-era server: what its C{DiscoverResult} says (no C{initialize}, no C{initialized})."""
        result = verdict.result
        self.era = "modern"
        self.protocol_version = verdict.version
        meta = result.get("_meta")
        info = meta.get(SERVER_INFO) if type(meta) is dict else None
        self.server_info = info if type(info) is dict else {}
        caps = result.get("capabilities")
        self.capabilities = caps if type(caps) is dict else {}
        instructions = result.get("instructions")
        self.instructions = instructions if isinstance(instructions, str) else None

    def stamped(self, params: dict[str, Any] | None) -> dict[str, Any] | None:
        """C{params} of one of the gateway's own requests: with the envelope toward a modern server."""
        if self.era != "modern" or self.protocol_version is None:
            return params
        return envelope.own(params, self.protocol_version)

    def own_request(
        self, method: str, params: dict[str, Any] | None, timeout: float | None, minted: Callable[[int], None] | None = None
    ) -> Deferred[Any]:
        """One of the gateway's own requests (a listing page, a liveness probe, a listen), stamped for a modern server."""
        return self.peer.request(method, self.stamped(params), timeout, minted=minted)

    def liveness_request(self, timeout: float) -> Deferred[Any]:
        """A request any live server answers: C{ping}, or C{server/discover} for a modern one (it has no ping)."""
        if self.era == "modern":
            return self.own_request("server/discover", None, timeout)
        return self.peer.request("ping", None, timeout)

    async def handshake(self, timeout: float) -> None:
        """C{initialize}, then C{notifications/initialized}."""
        try:
            result = await self._send_initialize(timeout)
        except JsonRpcError as e:
            raise DiscoveryError(f"initialize was refused: {e}")
        except RequestTimeout:
            raise DiscoveryError(f"no answer to initialize within {timeout:g} s")
        self._take_initialize(result)

    def _take_initialize(self, result: Any) -> None:
        """What a handshake-era server's C{initialize} result says; then C{notifications/initialized}."""
        if type(result) is not dict:
            raise DiscoveryError(f"initialize answered {result!r}, not an object")
        version = result.get("protocolVersion")
        if version not in HANDSHAKE_VERSIONS:
            raise DiscoveryError(
                f"the server answered protocol version {version!r}; the gateway speaks "
                + ", ".join(HANDSHAKE_VERSIONS)
            )
        self.protocol_version = version
        info = result.get("serverInfo")
        self.server_info = info if type(info) is dict else {}
        caps = result.get("capabilities")
        self.capabilities = caps if type(caps) is dict else {}
        instructions = result.get("instructions")
        self.instructions = instructions if isinstance(instructions, str) else None
        self.peer.notify("notifications/initialized")

    def _initializing(self, rid: int) -> None:
        self._init_rid = rid

    async def list_everything(self, timeout: float, deadline: float) -> None:
        """
        Every listing the server's capabilities offer, in turn.  Only a
        failure to list tools fails discovery (L{DiscoveryError}); the
        others are logged and left empty, and must end a little before
        C{deadline} (when discovery as a whole is given up), so that a
        server that never answers one of them is still brought up.  A
        C{list_changed} that arrives meanwhile is honoured once the session
        is ready.
        """
        self._timeout = timeout
        reserve = min(1.0, timeout / 10)
        for listing in LISTINGS:
            if listing.capability not in self.capabilities:
                self.listed[listing.kind] = []
                continue
            try:
                if listing is TOOLS:
                    entries = await fetch(self.own_request, listing, timeout, self._max_listing, self.name)
                else:
                    entries = await self._fetch_by(listing, deadline - reserve)
            except (JsonRpcError, RequestTimeout, DeferredTimeout) as e:
                if isinstance(e, JsonRpcError):
                    why = f"{listing.method} was refused: {e}"
                elif listing is TOOLS:
                    why = f"no answer to {listing.method} within {timeout:g} s"
                else:
                    why = f"{listing.method} did not finish within discoveryTimeout ({timeout:g} s)"
                if listing is TOOLS:
                    raise DiscoveryError(why)
                log.warn(
                    "backend {backend}: {why}; it is listed without {kind} until it says they changed or restarts",
                    backend=self.name,
                    why=why,
                    kind=listing.noun + "s",
                )
                entries = []
            self.listed[listing.kind] = entries
        self.ready = True
        stale, self._stale = self._stale, {}
        for listing in stale.values():
            self._relist(listing)

    async def _fetch_by(self, listing: Listing, deadline: float) -> list[dict[str, Any]]:
        """One listing, given up (L{DeferredTimeout}) at C{deadline}."""
        left = deadline - self._clock.seconds()
        if left <= 0:
            raise DeferredTimeout()
        d = Deferred.fromCoroutine(fetch(self.own_request, listing, left, self._max_listing, self.name))
        entries: list[dict[str, Any]] = await d.addTimeout(left, self._clock)
        return entries

    def _relist(self, listing: Listing) -> None:
        """List one kind again (once at a time: a change meanwhile lists it once more)."""
        kind = listing.kind
        if kind in self._listing:
            self._again.add(kind)
            return
        self._again.discard(kind)
        d = Deferred.fromCoroutine(fetch(self.own_request, listing, self._timeout, self._max_listing, self.name))
        self._listing[kind] = d

        def done(entries: list[dict[str, Any]]) -> None:
            del self._listing[kind]
            if entries != self.listed[kind]:
                self.listed[kind] = entries
                self._on_changed(kind)
            if kind in self._again:
                self._relist(listing)

        def failed(f: Failure) -> None:
            del self._listing[kind]
            self._again.discard(kind)
            if not f.check(PeerGone):
                log.warn(
                    "backend {backend}: could not list its {kind} again after it said they changed: {why}",
                    backend=self.name,
                    kind=listing.noun + "s",
                    why=f.getErrorMessage(),
                )

        d.addCallbacks(done, failed)

    def relist_everything(self) -> None:
        """List again every kind the server offers (a new session on the same server)."""
        for listing in LISTINGS:
            if listing.capability in self.capabilities:
                self._relist(listing)

    # -- calls -------------------------------------------------------------

    def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        timeout: float | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        context: Any = None,
    ) -> Deferred[Any]:
        """
        Send a request.  If C{on_progress} is given and C{params._meta} has a
        C{progressToken}, the token is replaced by one of our own toward the
        server, and progress notifications for it are passed to
        C{on_progress} until the request completes.  C{context} is what the
        server's messages carried with this request's answer are related to
        (see L{received}).
        """
        keep_context = context is not None and self._ties_related
        if on_progress is None and not keep_context:
            return self.peer.request(method, params, timeout)
        routes, contexts = self._progress, self._contexts
        minted_id: list[int] = []

        def minted(rid: int) -> None:
            minted_id.append(rid)
            if on_progress is not None:
                # Our request id is unique on this connection: use it as the token.
                assert params is not None
                params["_meta"]["progressToken"] = rid
                routes[rid] = on_progress
            if keep_context:
                contexts[rid] = context

        d = self.peer.request(method, params, timeout, minted=minted)

        def forget(result: Any) -> Any:
            if minted_id:
                routes.pop(minted_id[0], None)
                contexts.pop(minted_id[0], None)
            return result

        return d.addBoth(forget)

    def send_request(self, method: str, params: dict[str, Any] | None, timeout: float | None, answer: Answer) -> int:
        """
        L{request} without a Deferred, progress or context: C{answer} gets
        the outcome (L{JsonRpcPeer.send_request}); the id is returned, for
        L{JsonRpcPeer.cancel}.
        """
        return self.peer.send_request(method, params, timeout, answer)

    def related(self, rid: Any) -> Any:
        """The context the request C{rid} was sent with (C{None} if none)."""
        return self._contexts.get(rid) if type(rid) is int else None

    def _send_cancel(self, rid: int, reason: str) -> None:
        self._progress.pop(rid, None)
        self._contexts.pop(rid, None)
        if self._on_abort is not None:
            # Stop reading the answer's stream (HTTP).
            self._on_abort(rid)
        if rid == self._init_rid:
            return  # The spec forbids cancelling initialize.
        try:
            self.peer.notify("notifications/cancelled", {"requestId": rid, "reason": reason})
        except Exception:
            log.failure("backend {backend}: could not send notifications/cancelled", backend=self.name)

    # -- messages from the server -----------------------------------------

    def received(self, message: Any, related: Any = None) -> None:
        """
        Handle one decoded message from the server.  C{related} is the
        context of the call whose answer carried it (the transport ties
        them); the server's requests and notifications are handed on with
        it.

        @raise MessageError: for a message that is not JSON-RPC.
        """
        outer, self._related = self._related, related
        try:
            self.peer.messageReceived(message)
        finally:
            self._related = outer

    def connection_lost(self, reason: BaseException) -> None:
        """The connection is gone: pending requests fail, the server's own are cancelled."""
        self._held.cancel_all()
        self.peer.connectionLost(reason)

    def session_ended(self) -> None:
        """The server ended this MCP session (a new one follows on the same
        connection): its requests in progress will never be answered."""
        self._held.cancel_all()

    def _request_received(self, message: dict[str, Any]) -> None:
        method = message["method"]
        if method == "ping":
            self.peer.respond(message["id"], {})
            return
        if self._on_server_request is None:
            self.peer.respond_error(
                message["id"],
                JsonRpcError(
                    METHOD_NOT_FOUND,
                    f"the gateway does not pass {method} on to its clients",
                ),
            )
            return
        self._held.received(message, self._on_server_request, self._related)

    def _notification_received(self, message: dict[str, Any]) -> None:
        method = message["method"]
        params = message.get("params")
        if type(params) is not dict:
            params = {}
        if method == "notifications/progress":
            token = params.get("progressToken")
            if type(token) is int:
                route = self._progress.get(token)
                if route is not None:
                    route(params)
            return
        if self.era == "modern" and not self._untagged(method, params):
            return
        if method in RELISTED_ON:
            for listing in RELISTED_ON[method]:
                if listing.capability not in self.capabilities:
                    continue
                if self.ready:
                    self._relist(listing)
                else:
                    self._stale[listing.kind] = listing
        elif method == "notifications/cancelled":
            self._held.cancelled(params.get("requestId"))
        else:
            if method == "notifications/message":
                self._log_message(params)
            self._hand_on(method, params)

    def _untagged(self, method: str, params: dict[str, Any]) -> bool:
        """
        Whether a modern server's notification goes on: one of a listen's
        (tagged with its subscription id) only if L{on_tagged} says so, and
        then without the keys MCP reserves (the tag: the gateway's clients
        have listens of their own).
        """
        meta = params.get("_meta")
        if type(meta) is not dict or SUBSCRIPTION_ID not in meta:
            return True
        on_tagged = self.on_tagged
        if on_tagged is None or not on_tagged(method, params, meta[SUBSCRIPTION_ID]):
            return False
        kept = without_reserved(meta)
        if kept is None:
            del params["_meta"]
        else:
            params["_meta"] = kept
        return True

    def _log_message(self, params: dict[str, Any]) -> None:
        level = _LOG_LEVELS.get(str(params.get("level")), "info")
        getattr(log, level)(
            "backend {backend} says ({logger}): {data}",
            backend=self.name,
            logger=str(params.get("logger") or "-")[:200],
            data=str(params.get("data"))[:2000],
        )

    def _hand_on(self, method: str, params: dict[str, Any]) -> None:
        if self._on_server_notification is None:
            log.debug("backend {backend}: ignored notification {method}", backend=self.name, method=method)
            return
        try:
            self._on_server_notification(method, params, self._related)
        except Exception:
            log.failure("backend {backend}: handing on {method} failed", backend=self.name, method=method)


__all__ = ["CLIENT_CAPABILITIES", "DiscoveryError", "McpClientSession", "MessageError"]
