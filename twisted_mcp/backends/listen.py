"""
One C{subscriptions/listen} stream per stateless-era (2026-07-28) backend.

Such a server sends nothing unsolicited: what it changes reaches only the
clients that listen.  L{BackendListen} keeps one listen open on the
backend's current connection, asking for the C{*ListChanged} notifications
its capabilities advertise (C{listChanged}) and for the updates of the
resource URIs the gateway's clients subscribed to (L{BackendListen.add},
L{BackendListen.remove}; counted by
L{twisted_mcp.dispatch.subscriptions.Subscriptions}).

The first message of a listen is C{notifications/subscriptions/acknowledged}:
what it does not honour is logged (once per kind), and a URI it does not
honour fails its subscription.  Every other notification tagged with the
listen's subscription id (its request id) goes on as a handshake-era
server's unsolicited one would (L{BackendListen.admit}).

A listen's filter is fixed: a new URI set opens a new listen, and the old one
is cancelled once the new one is acknowledged; until L{OVERLAP} seconds
after that, an event both streams carry (by method and URI) is passed on
once.  A listen that ends (an error, or a result: the server closed it) is
a drop: another is opened after a backoff that doubles up to
C{restartMaxDelay}, and once it is acknowledged everything is listed again
(no event is replayed).  A listen request has no timeout once acknowledged;
one not acknowledged within C{callTimeout} is cancelled and counts as a
drop.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends.session import SUBSCRIPTION_ID, McpClientSession
from twisted_mcp.mcp import errors
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, JsonRpcError, PeerGone

log = Logger()

ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
#: Each filter flag, and the server capability that offers it.
FLAGS = {"toolsListChanged": "tools", "promptsListChanged": "prompts", "resourcesListChanged": "resources"}
#: Seconds a replaced listen's events are still taken (and deduplicated)
#: after it was cancelled: a server may have queued some before it saw the
#: cancel, on a stream of its own.
OVERLAP = 2.0


class _Stream:
    """One listen request: its id, what it asked for, and whether it was acknowledged."""

    __slots__ = ("rid", "deferred", "uris", "acked", "since", "seen", "ack_call")

    def __init__(self, uris: frozenset[str]) -> None:
        self.rid = -1
        self.deferred: Deferred[Any] | None = None
        self.uris = uris
        self.acked = False
        self.since = 0.0
        #: Events passed on or dropped while another stream overlapped, by (method, uri).
        self.seen: dict[tuple[str, Any], int] = {}
        #: Gives the listen up if it is not acknowledged in time.
        self.ack_call: IDelayedCall | None = None


class BackendListen:
    """
    The listen stream of one backend, across its restarts.

    @param name: the backend's name (for the log and errors).
    @param clock: the reactor's time API (backoff, overlap).
    @param delay: the first backoff delay after a drop (C{restartDelay}).
    @param max_delay: the longest (C{restartMaxDelay}).
    @param stable_after: a listen open this long resets the backoff
        (C{stableAfter}).
    @param ack_timeout: how long a listen may take to be acknowledged
        (C{callTimeout}); then it is given up as a drop.
    """

    def __init__(
        self, name: str, clock: IReactorTime, delay: float, max_delay: float, stable_after: float, ack_timeout: float
    ) -> None:
        self.name = name
        self._clock = clock
        self._ack_timeout = ack_timeout
        self._first_delay = self._delay = delay
        self._max_delay = max_delay
        self._stable_after = stable_after
        #: The URIs clients want updates of.
        self.uris: set[str] = set()
        #: Subscriptions waiting for a listen that carries their URI.
        self._waiters: dict[str, list[Deferred[Any]]] = {}
        self._session: McpClientSession | None = None
        #: The acknowledged listen, and one opened to replace it.
        self._active: _Stream | None = None
        self._opening: _Stream | None = None
        #: Listens replaced and cancelled, within their overlap.
        self._retired: dict[int, _Stream] = {}
        self._overlap_call: IDelayedCall | None = None
        self._reopen_call: IDelayedCall | None = None
        #: The URI set changed while a listen was being opened.
        self._again = False
        #: The next acknowledgment follows a drop: list everything again.
        self._dropped = False
        #: Filter members a listen did not honour (logged once).
        self._unhonoured: set[str] = set()

    @property
    def is_open(self) -> bool:
        """Whether an acknowledged listen is open."""
        return self._active is not None

    @property
    def requests(self) -> int:
        """Listen requests in flight (not calls: no limit counts them)."""
        return (self._active is not None) + (self._opening is not None)

    # -- the backend's runs ------------------------------------------------------

    def attach(self, session: McpClientSession) -> None:
        """A run of the backend is up (stateless era): open its listen."""
        self.detach()
        self._session = session
        session.on_tagged = self.admit
        self._delay = self._first_delay
        self._open()

    def detach(self) -> None:
        """The run is over (its connection is gone): its listens with it."""
        if self._opening is not None:
            _cancel_call(self._opening)
        self._session = None
        self._active = self._opening = None
        self._again = self._dropped = False
        self._end_overlap()
        self._cancel_reopen()
        self._fail_waiting(
            errors.backend_error(errors.BACKEND_LOST, self.name, f"backend {self.name!r} went away before its listen carried the subscription")
        )

    def stop(self) -> None:
        """The backend stops: its listens are cancelled, nothing is left waiting."""
        streams = [s for s in (self._active, self._opening) if s is not None]
        self._active = self._opening = None
        for stream in streams:
            self._cancel(stream)
        self.detach()
        self.uris.clear()

    # -- what clients subscribe to ----------------------------------------------

    def add(self, uri: str) -> Deferred[Any]:
        """
        Have the listen carry C{uri}: fires (C{{}}) once a listen that
        honours it is acknowledged; fails (L{JsonRpcError}) when the backend
        does not honour it or its listen ends first.
        """
        active = self._active
        if uri in self.uris and active is not None and uri in active.uris:
            return succeed({})
        waiter: Deferred[Any] = Deferred(lambda d: self._withdraw(uri, d))
        self._waiters.setdefault(uri, []).append(waiter)
        if uri not in self.uris:
            self.uris.add(uri)
            self._changed()
        return waiter

    def remove(self, uri: str) -> None:
        """No client wants C{uri} any longer: a listen without it replaces this one."""
        if uri in self.uris:
            self.uris.discard(uri)
            self._changed()

    def _withdraw(self, uri: str, waiter: Deferred[Any]) -> None:
        waiting = self._waiters.get(uri)
        if waiting is not None and waiter in waiting:
            waiting.remove(waiter)
            if not waiting:
                del self._waiters[uri]

    def _changed(self) -> None:
        if self._session is None or self._reopen_call is not None:
            return  # opened with the new set when the run is up (or after the backoff)
        if self._opening is not None:
            self._again = True
        else:
            self._open()

    # -- opening and ending listens ------------------------------------------------

    def _filter(self) -> dict[str, Any]:
        """What to ask for: the list changes the server advertises, the URIs wanted."""
        session = self._session
        assert session is not None
        wanted: dict[str, Any] = {}
        for flag, capability in FLAGS.items():
            offered = session.capabilities.get(capability)
            if type(offered) is dict and offered.get("listChanged") is True:
                wanted[flag] = True
        if self.uris:
            wanted["resourceSubscriptions"] = sorted(self.uris)
        return wanted

    def _open(self) -> None:
        session = self._session
        assert session is not None
        self._again = False
        wanted = self._filter()
        if not wanted:
            # Nothing to listen for: no stream (a later subscription opens one).
            active, self._active = self._active, None
            if active is not None:
                self._cancel(active)
            return
        stream = _Stream(frozenset(self.uris))
        self._opening = stream

        def minted(rid: int) -> None:
            stream.rid = rid

        try:
            d = session.own_request("subscriptions/listen", {"notifications": wanted}, None, minted=minted)
        except PeerGone:
            self._opening = None
            return  # the run is ending: detach follows
        stream.deferred = d
        stream.ack_call = self._clock.callLater(self._ack_timeout, self._unacknowledged, stream)
        d.addBoth(self._ended, stream)

    def _ended(self, outcome: Any, stream: _Stream) -> None:
        """A listen request is over: a drop, unless the gateway cancelled it or the run ended."""
        if isinstance(outcome, Failure) and outcome.check(CancelledError, PeerGone):
            return
        self._lost(stream, outcome.getErrorMessage() if isinstance(outcome, Failure) else "the server closed it")

    def _unacknowledged(self, stream: _Stream) -> None:
        """No acknowledgment within C{callTimeout}: the listen is given up (and cancelled)."""
        stream.ack_call = None
        if stream is self._opening:
            self._lost(stream, f"no acknowledgment within {self._ack_timeout:g} s")
            self._cancel(stream)

    def _lost(self, stream: _Stream, why: str) -> None:
        """
        C{stream} ended without the gateway asking: the open listen (a
        drop: listen again after the backoff, then list everything again)
        or the one being opened (its subscriptions fail; listen again after
        the backoff unless the open listen still carries what is wanted).
        """
        if stream is not self._active and stream is not self._opening:
            return  # replaced, or of a run that ended
        if stream.acked and self._clock.seconds() - stream.since >= self._stable_after:
            self._delay = self._first_delay
        active = self._active
        if stream is self._opening:
            self._opening = None
            _cancel_call(stream)
            self._fail_waiting(
                errors.backend_error(INTERNAL_ERROR, self.name, f"backend {self.name!r} did not open subscriptions/listen: {why}"),
                unless=active,
            )
            if active is not None and active.uris == frozenset(self.uris):
                self._again = False
                return  # the open listen carries what is wanted
        else:
            self._active = None
            self._dropped = True
        delay = self._delay
        self._delay = min(delay * 2, self._max_delay)
        log.warn(
            "backend {backend}: its subscriptions/listen ended ({why}); listening again in {delay:g} s",
            backend=self.name,
            why=why,
            delay=delay,
        )
        self._cancel_reopen()
        self._reopen_call = self._clock.callLater(delay, self._reopen)

    def _reopen(self) -> None:
        self._reopen_call = None
        if self._session is not None and self._opening is None:
            self._open()

    def _cancel(self, stream: _Stream) -> None:
        """Cancel a listen request (stdio: C{notifications/cancelled} for its id)."""
        _cancel_call(stream)
        d = stream.deferred
        if d is not None and not d.called:
            d.cancel()

    def _cancel_reopen(self) -> None:
        call, self._reopen_call = self._reopen_call, None
        if call is not None and call.active():
            call.cancel()

    # -- what a listen sends ---------------------------------------------------------

    def admit(self, method: str, params: dict[str, Any], tag: Any) -> bool:
        """
        A notification tagged with subscription id C{tag}: whether it goes
        on as a handshake-era server's would (the acknowledgment is taken
        here; a notification of no listen of ours, or one the overlapping
        listen already carried, is not).
        """
        opening = self._opening
        if opening is not None and tag == opening.rid:
            if method == ACKNOWLEDGED:
                self._acknowledged(opening, params)
            else:
                log.debug("backend {backend}: {method} before the listen's acknowledgment; ignored", backend=self.name, method=method)
            return False
        if method == ACKNOWLEDGED:
            return False
        active = self._active
        if active is not None and tag == active.rid:
            stream: _Stream | None = active
        else:
            stream = self._retired.get(tag) if type(tag) is int else None
        if stream is None:
            log.debug("backend {backend}: {method} of no listen of the gateway's ({tag!r}); ignored", backend=self.name, method=method, tag=tag)
            return False
        if not self._retired:
            return True
        return self._first_of(stream, (method, params.get("uri")))

    def _first_of(self, stream: _Stream, key: tuple[str, Any]) -> bool:
        """Whether this event, on C{stream}, is new (not a copy of one the overlapping listen carried)."""
        count = stream.seen[key] = stream.seen.get(key, 0) + 1
        others = [s for s in (self._active, *self._retired.values()) if s is not None and s is not stream]
        return all(other.seen.get(key, 0) < count for other in others)

    def _acknowledged(self, stream: _Stream, params: dict[str, Any]) -> None:
        self._opening = None
        _cancel_call(stream)
        self._cancel_reopen()  # a drop of the listen this one replaces had scheduled another
        honoured = params.get("notifications")
        if type(honoured) is not dict:
            honoured = {}
        kept = honoured.get("resourceSubscriptions")
        kept_uris = frozenset(u for u in kept if type(u) is str) if type(kept) is list else frozenset()
        asked = self._filter()
        for flag in FLAGS:
            if asked.get(flag) and honoured.get(flag) is not True:
                self._log_unhonoured(flag)
        refused = stream.uris - kept_uris
        for uri in sorted(refused):
            self._log_unhonoured(uri)
            self.uris.discard(uri)
        stream.uris = stream.uris & kept_uris
        stream.acked = True
        stream.since = self._clock.seconds()
        old, self._active = self._active, stream
        if old is not None:
            self._retire(old, stream)
        for uri in stream.uris:
            for waiter in self._waiters.pop(uri, []):
                waiter.callback({})
        for uri in refused:
            error = errors.backend_error(INTERNAL_ERROR, self.name, f"backend {self.name!r} does not take subscriptions to {uri}")
            for waiter in self._waiters.pop(uri, []):
                waiter.errback(error)
        if self._dropped:
            self._dropped = False
            log.info("backend {backend}: listening again; listing everything again", backend=self.name)
            assert self._session is not None
            self._session.relist_everything()
        if self._again:
            self._open()

    def _retire(self, old: _Stream, new: _Stream) -> None:
        """C{new} replaces C{old}: cancel C{old}, and deduplicate the two within L{OVERLAP}."""
        self._retired[old.rid] = old
        self._cancel(old)
        if self._overlap_call is not None and self._overlap_call.active():
            self._overlap_call.reset(OVERLAP)
        else:
            self._overlap_call = self._clock.callLater(OVERLAP, self._end_overlap)

    def _end_overlap(self) -> None:
        call, self._overlap_call = self._overlap_call, None
        if call is not None and call.active():
            call.cancel()
        self._retired.clear()
        if self._active is not None:
            self._active.seen.clear()

    def _log_unhonoured(self, what: str) -> None:
        if what in self._unhonoured:
            return
        self._unhonoured.add(what)
        log.warn(
            "backend {backend}: its subscriptions/listen does not honour {what}; clients get no such notifications from it",
            backend=self.name,
            what=what,
        )

    def _fail_waiting(self, error: JsonRpcError, unless: _Stream | None = None) -> None:
        """Fail the subscriptions waiting for a listen; those C{unless} (the open listen) carries succeed."""
        for uri in list(self._waiters):
            waiters = self._waiters.pop(uri)
            if unless is not None and uri in unless.uris:
                for waiter in waiters:
                    waiter.callback({})
                continue
            self.uris.discard(uri)
            for waiter in waiters:
                waiter.errback(error)


def _cancel_call(stream: _Stream) -> None:
    call, stream.ack_call = stream.ack_call, None
    if call is not None and call.active():
        call.cancel()


__all__ = ["ACKNOWLEDGED", "OVERLAP", "SUBSCRIPTION_ID", "BackendListen"]
