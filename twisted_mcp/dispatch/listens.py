"""
C{subscriptions/listen} (MCP 2026-07-28): a stateless-era client's
long-lived request for change notifications, fed by today's backends.

A listen names what it wants in C{params.notifications}: the three
C{*ListChanged} flags and C{resourceSubscriptions} (URIs).  The gateway
honours what it can deliver to that caller: a list flag when the caller is
offered that family, a URI when it names a resource the caller may see on a
backend that supports subscriptions.  Each honoured URI is subscribed
through L{twisted_mcp.dispatch.subscriptions.Subscriptions} (one upstream
C{resources/subscribe} per URI, however many sessions and listens want it).

Once those subscriptions are made (or refused), the first message is
C{notifications/subscriptions/acknowledged} with the honoured subset; then
come the matching C{notifications/*/list_changed} and
C{notifications/resources/updated}, every one tagged with
C{params._meta["io.modelcontextprotocol/subscriptionId"]}, the listen's id as
the client sent it.  Nothing else travels on a listen (no progress, no log
messages).

A listen is never answered while it is open.  It ends when the client
cancels it (stdio: C{notifications/cancelled}; HTTP: closing the POST):
its subscriptions are dropped and nothing is answered; or when its
session drains (the gateway stopping, the client leaving): it is answered
with the spec's C{SubscriptionsListenResult}, C{{"resultType": "complete",
"_meta": {subscriptionId}}}.  A session holds at most
L{DEFAULT_MAX_LISTENS} at once; one more is refused with -32603.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.surface import reshaped, tools_digest
from twisted_mcp.mcp.errors import GatewayError
from twisted_mcp.mcp.meta import PREFIX
from twisted_mcp.policy.subject import Subject
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight

log = Logger()

#: The key that ties a notification (and the final result) to its listen.
SUBSCRIPTION_ID = PREFIX + "subscriptionId"
#: Open listens a session may hold at once.
DEFAULT_MAX_LISTENS = 8
#: The filter's list flags and the listing each one is about.
LIST_FLAGS = {"toolsListChanged": "tools", "promptsListChanged": "prompts", "resourcesListChanged": "resources"}
_FLAG_OF = {kind: flag for flag, kind in LIST_FLAGS.items()}
#: Notifications kept for a listen not acknowledged yet (its subscriptions
#: are being made); beyond this many the oldest duplicates are not kept twice
#: and the rest are dropped (a list change says only "list again").
_EARLY_LIMIT = 64


class Listen:
    """
    One open listen of a session; to L{Subscriptions} it is a subscriber
    like a handshake-era session (C{closing}, C{peer}, C{notify}).

    @ivar tag: the listen's id as the client sent it (the subscription id).
    @ivar kinds: the listings whose changes it gets.
    """

    def __init__(self, listens: Listens, request: InFlight, tag: Any, kinds: frozenset[str]) -> None:
        self.listens = listens
        self.request = request
        self.tag = tag
        self.kinds = kinds
        self.acked = False
        self.closing = False
        self._early: list[dict[str, Any]] = []
        self.deferred: Deferred[Any] = Deferred(lambda _: listens.cancelled(self))
        #: The digest of the tool list its request would get (list_changed
        #: for tools goes only when that changed); None: unknown.
        self.tools: str | None = tools_digest(listens.session, request) if "tools" in kinds else None

    @property
    def peer(self) -> Any:
        return self.listens.session.peer

    def notify(self, method: str, params: dict[str, Any] | None = None, related: Any = None) -> None:
        """Send one notification on this listen, tagged; kept until the acknowledgment has gone."""
        if self.closing:
            return
        out = dict(params or {})
        meta = out.get("_meta")
        out["_meta"] = {**(meta if type(meta) is dict else {}), SUBSCRIPTION_ID: self.tag}
        message = {"jsonrpc": "2.0", "method": method, "params": out}
        if self.acked:
            self.listens.session.send(message, self.request.rid)
        elif message not in self._early and len(self._early) < _EARLY_LIMIT:
            self._early.append(message)

    def acknowledge(self, honoured: dict[str, Any]) -> None:
        """The first message of the listen: what it will get; then what came meanwhile."""
        if self.closing or self.acked:
            return
        self.acked = True
        self.notify("notifications/subscriptions/acknowledged", {"notifications": honoured})
        early, self._early = self._early, []
        for message in early:
            self.listens.session.send(message, self.request.rid)


class Listens:
    """
    The open listens of one session.

    @ivar limit: how many may be open at once (C{gateway.maxListensPerSession}).
    @ivar client_id: the id a request of this session had as the client
        sent it, from the id the core knows it by (the HTTP front gives
        stateless-era requests ids of its own and sets this).
    """

    def __init__(self, session: ClientSession, limit: int = DEFAULT_MAX_LISTENS) -> None:
        self.session = session
        self.limit = limit
        self.client_id: Callable[[Any], Any] = lambda rid: rid
        self.open: dict[Any, Listen] = {}

    def listen(self, request: InFlight, params: dict[str, Any]) -> Deferred[Any]:
        """Open a listen for C{request}: a Deferred that fires (with the result) only when the gateway ends it."""
        wanted = _read_filter(params)
        session = self.session
        if session.in_flight.get(request.key, request) is not request or request.key in self.open:
            raise JsonRpcError(INVALID_REQUEST, f"Invalid Request: id {request.rid!r} is already used by a request in flight")
        if session.closing:
            # It waited for the first discovery while the session began to end: closed at once.
            return succeed({"_meta": {SUBSCRIPTION_ID: self.client_id(request.rid)}})
        if len(self.open) >= self.limit:
            raise GatewayError(
                INTERNAL_ERROR,
                f"too many open subscriptions/listen streams on this session (the gateway's maxListensPerSession "
                f"is {self.limit}); end one before opening another",
                {"limit": self.limit},
            )
        offered = session.gateway.capabilities(session)
        kinds = frozenset(kind for flag, kind in LIST_FLAGS.items() if wanted.get(flag) is True and kind in offered)
        listen = Listen(self, request, self.client_id(request.rid), kinds)
        self.open[request.key] = listen
        uris, waits = self._subscribe(listen, wanted.get("resourceSubscriptions") or [])
        DeferredList(waits, consumeErrors=True).addCallback(self._made, listen, uris)
        return listen.deferred

    def _subscribe(self, listen: Listen, uris: list[str]) -> tuple[list[str], list[Deferred[Any]]]:
        """Subscribe C{listen} to each URI it may have: the URIs tried and their Deferreds."""
        tried: list[str] = []
        waits: list[Deferred[Any]] = []
        for uri in dict.fromkeys(uris):
            found = self._subscribable(uri)
            if found is None:
                continue
            subject, backend, original = found
            try:
                d = self.session.gateway.subscriptions.subscribe(listen, backend, original, {"uri": original}, None, subject)
            except CancelledError:
                raise
            except Exception as e:
                d = fail(e)  # the backend is down, or refused on the way
            tried.append(uri)
            waits.append(d)
        return tried, waits

    def _subscribable(self, uri: str) -> tuple[Subject, Backend, str] | None:
        """The subject, owning backend and its own URI of C{uri}, if the caller
        may see it and its backend takes subscriptions; else None."""
        gateway = self.session.gateway
        route = gateway.catalog.route_uri(uri)
        if route is None:
            return None
        entry, backend, original = route
        if backend.per_session:
            return None  # a session's own instance stops when idle: its subscriptions would lapse unseen
        resources = backend.capabilities.get("resources")
        if type(resources) is not dict or resources.get("subscribe") is not True:
            return None
        kind = "template" if entry is not None and "uriTemplate" in entry.definition else "resource"
        subject = Subject(kind, uri, backend.name, original)
        policy = gateway.policy
        if policy.active:
            try:
                principal = policy.principal(self.session.peer)
            except JsonRpcError:
                return None
            if not policy.visible(principal, subject):
                return None
        return subject, backend, original

    def _made(self, outcomes: list[tuple[bool, Any]], listen: Listen, uris: list[str]) -> None:
        """The upstream subscriptions are made or refused: acknowledge what is honoured."""
        if listen.closing:
            return
        honoured: dict[str, Any] = {_FLAG_OF[kind]: True for kind in sorted(listen.kinds)}
        kept = []
        for uri, (ok, why) in zip(uris, outcomes, strict=True):
            if ok:
                kept.append(uri)
            else:
                log.info(
                    "client {client}: listen {listen} gets no updates of {uri}: {why}",
                    client=self.session.label,
                    listen=listen.tag,
                    uri=uri,
                    why=why.getErrorMessage(),
                )
        if kept:
            honoured["resourceSubscriptions"] = kept
        listen.acknowledge(honoured)

    def list_changed(self, kind: str, surface_only: bool = False) -> None:
        """
        A listing changed: to every listen that asked for it (while the
        caller is still offered that family).  C{surface_only}: only the
        surface settings or profiles changed (a reload), so a tool list that
        was and stays the catalog's own did not.
        """
        listens = [listen for listen in self.open.values() if kind in listen.kinds]
        if not listens or kind not in self.session.gateway.capabilities(self.session):
            return
        for listen in listens:
            if kind == "tools" and surface_only and listen.tools is None and not reshaped(self.session, listen.request):
                continue
            if kind == "tools" and listen.tools is not None:
                now = tools_digest(self.session, listen.request)
                if now == listen.tools:
                    continue
                listen.tools = now
            listen.notify(f"notifications/{kind}/list_changed")

    def cancelled(self, listen: Listen) -> None:
        """The client ended C{listen}: it is not answered."""
        self._close(listen)
        log.info("client {client}: listen {listen} ended by the client", client=self.session.label, listen=listen.tag)

    def end_all(self) -> None:
        """The session ends: every listen is answered with the spec's graceful close."""
        for listen in list(self.open.values()):
            self._close(listen)
            listen.deferred.callback({"_meta": {SUBSCRIPTION_ID: listen.tag}})

    def _close(self, listen: Listen) -> None:
        listen.closing = True
        self.open.pop(listen.request.key, None)
        # Also withdraws the subscriptions still being made (a closing subscriber is not added).
        self.session.gateway.subscriptions.session_ended(listen)


def _read_filter(params: dict[str, Any]) -> dict[str, Any]:
    """C{params.notifications}, checked (-32602 naming what is wrong)."""
    wanted = params.get("notifications")
    if type(wanted) is not dict:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params: subscriptions/listen needs params.notifications, an object")
    for flag in LIST_FLAGS:
        if flag in wanted and type(wanted[flag]) is not bool:
            raise JsonRpcError(INVALID_PARAMS, f"Invalid params: params.notifications.{flag} must be a boolean")
    uris = wanted.get("resourceSubscriptions")
    if uris is not None and (type(uris) is not list or any(type(u) is not str for u in uris)):
        raise JsonRpcError(INVALID_PARAMS, "Invalid params: params.notifications.resourceSubscriptions must be an array of URIs (strings)")
    return wanted


__all__ = ["DEFAULT_MAX_LISTENS", "SUBSCRIPTION_ID", "Listen", "Listens"]
