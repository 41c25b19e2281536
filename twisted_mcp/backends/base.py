"""
L{Backend} is the interface the gateway's dispatch code sees: a name, a
state, what the server lists (tools, prompts, resources, resource
templates) and said in its handshake, L{Backend.call} and
L{Backend.notify}.  It does not care what transport is underneath.  What
the server sends on its own (requests such as sampling, notifications such
as log messages) goes to its L{BackendEvents}.  L{Histogram} is the latency
of its calls, for /metrics.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from time import monotonic
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger

from twisted_mcp.backends.direct import DirectCall, Receiver
from twisted_mcp.backends.session import McpClientSession
from twisted_mcp.config.models import Shaping
from twisted_mcp.config.shaping import shaping_of  # re-exported: it lived here
from twisted_mcp.mcp import errors
from twisted_mcp.wire.jsonrpc import (
    METHOD_NOT_FOUND,
    JsonRpcError,
    PeerGone,
    RequestTimeout,
)

#: The notifications a client of the stateless era (2026-07-28) sends.
_MODERN_NOTIFICATIONS = frozenset({"notifications/cancelled", "notifications/progress"})


class State(enum.Enum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"
    STOPPED = "stopped"


class Histogram:
    """
    Call latencies in fixed buckets (seconds), cheap to update on every
    call; read by the admin endpoint's /metrics.
    """

    BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.BOUNDS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def observe_since(self, result: Any, started: float, now: Callable[[], float]) -> Any:
        self.observe(now() - started)
        return result

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (upper bound, calls at or under it), ending with +Inf."""
        out, running = [], 0
        for bound, n in zip(self.BOUNDS, self.counts, strict=False):
            running += n
            out.append((repr(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out


class BackendEvents(Protocol):
    """
    What the gateway does with the messages a backend's server sends on its
    own (set as L{Backend.events}).

    C{related} is the context given to L{Backend.call} for the call whose
    answer carried the message, when the transport ties them (Streamable
    HTTP: the message came on the stream answering that call's POST);
    otherwise C{None}.
    """

    def server_request(self, backend: Backend, method: str, params: dict[str, Any], related: Any) -> Deferred[Any]:
        """
        A request from the server, any but ping (which the backend answers
        itself).  The result is sent back as the result; a L{JsonRpcError}
        failure as the error; any other failure as -32603.  The backend
        cancels the Deferred when the server cancels the request
        (C{notifications/cancelled}) or its connection ends.  May raise
        L{JsonRpcError} to refuse at once.
        """

    def server_notification(self, backend: Backend, method: str, params: dict[str, Any], related: Any) -> None:
        """
        A notification from the server: C{notifications/message},
        C{notifications/resources/updated} and any other but progress
        (routed to its call), cancelled and the C{list_changed} ones
        (handled by listing again).
        """


class Backend(Service):
    """
    What dispatch sees of a backend, whatever its transport.

    Listeners added with L{add_listener} are called with the backend after
    any of its listings or its state changed.

    @ivar events: where the server's own requests and notifications go (set
        by the gateway); C{None}: its requests are refused, its
        notifications only logged.
    """

    log = Logger()
    state = State.STOPPED
    last_error: str | None = None
    call_timeout: float = 60.0
    session: McpClientSession | None = None
    #: An instance per client session (the one in the catalog only discovers).
    per_session = False
    #: Calls are made as the principal they run for (L{call_as}): an HTTP
    #: server reached with each principal's own OAuth token.
    per_principal = False
    #: Whether L{call_direct} may stand for L{call} (the common call's way):
    #: only where a call is L{call}'s work alone, and the server's messages
    #: are not tied to the call they came with (no context kept).
    answers_directly = False
    #: Per-session instances at once: over every session, and for one
    #: principal; an instance without a call for idle_timeout seconds is
    #: stopped (0: never).
    max_instances = 32
    max_instances_per_principal = 4
    idle_timeout = 600.0
    #: Whether a discovery has succeeded at least once.
    discovered = False
    #: MCP sessions made with the server so far: one more after a restart,
    #: or when an HTTP server that forgot the session is given a new one
    #: (what clients asked of the old session, subscriptions and log
    #: level, is to be asked again).
    handshakes = 0
    #: The MCP era the server speaks: C{legacy} (the handshake era) or
    #: C{modern} (2026-07-28), and how that was decided (C{pinned} by its
    #: config, C{discover}, C{fallback: <why>}); its protocol version.
    era = "legacy"
    probe = "pinned"
    protocol_version: str | None = None

    #: The backend's name in the configuration (Service's is untyped).
    name: str
    #: Its configured tool-name prefix (twisted_mcp.mcp.names.name_prefix);
    #: None: the default, C{<name><separator>}.
    name_prefix: str | None = None
    #: Its order among backends when a client's budget cuts the list (higher first).
    priority: int = 0
    #: What is done to its listings before clients see them, by kind
    #: (C{tools}, C{prompts}, C{resources}; twisted_mcp.config.models.Shaping);
    #: a kind not in it is served as the server lists it.
    shaping: Mapping[str, Shaping] = MappingProxyType({})

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Callable[[Backend], None]] = []
        self._discovery_waiters: list[Deferred[None]] | None = []
        #: The last tools, prompts, resources and resource templates this
        #: backend listed (kept while it is down, so that clients' view
        #: stays stable across restarts).
        self.tools: list[dict[str, Any]] = []
        self.prompts: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.resource_templates: list[dict[str, Any]] = []
        #: What the server said in its last handshake ({} and None before the first).
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None
        self.server_info: dict[str, Any] = {}
        self.events: BackendEvents | None = None
        #: Call latency (seconds) as the gateway saw it, for /metrics.
        self.latency = Histogram()

    @property
    def listen_state(self) -> str | None:
        """A stateless-era backend's C{subscriptions/listen} stream: C{open} or
        C{closed}; C{None} for a backend that has none (handshake era)."""
        return None

    def add_listener(self, listener: Callable[[Backend], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Backend], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def in_flight(self) -> int:
        """Requests sent to this backend and not answered yet."""
        session = self.session
        return session.peer.pending_count if session is not None else 0

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:
                self.log.failure("listener of backend {backend} failed", backend=self.name)

    def when_discovered(self) -> Deferred[None]:
        """Fires once the first discovery attempt has finished, either way."""
        if self._discovery_waiters is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._discovery_waiters.append(d)
        return d

    def _first_discovery_done(self) -> None:
        waiting, self._discovery_waiters = self._discovery_waiters, None
        for d in waiting or ():
            d.callback(None)

    def unavailable(self) -> JsonRpcError:
        """The error for a call made while the backend is not up."""
        return errors.backend_error(
            errors.BACKEND_UNAVAILABLE,
            self.name,
            f"backend {self.name!r} is {self.state.value}"
            + (f": {self.last_error}" if self.last_error else ""),
            state=self.state.value,
        )

    def gone(self) -> JsonRpcError:
        """
        The error for a call made as the backend's connection was lost (its
        session refused it), before the backend is marked down: a call let
        go while the calls in flight are failed (a freed concurrency slot).
        """
        if self.state is not State.UP:
            return self.unavailable()
        return errors.backend_error(
            errors.BACKEND_UNAVAILABLE,
            self.name,
            f"backend {self.name!r} went away (its connection was lost)",
            state=State.DOWN.value,
        )

    def call(
        self,
        method: str,
        params: dict[str, Any] | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
        context: Any = None,
    ) -> Deferred[Any]:
        """
        Send a request to the backend and return a Deferred for its result.

        Failures are L{JsonRpcError}s ready to pass to the client: the
        backend's own error, or one of L{twisted_mcp.mcp.errors}.  Cancelling
        the Deferred sends C{notifications/cancelled} to the backend.
        C{params} is sent as given (the caller passes a fresh dict) and
        may be modified.

        @param context: an opaque object: the server's requests and
            notifications the transport ties to this call reach L{events}
            with C{related=context}.
        """
        session = self.session
        if self.state is not State.UP or session is None:
            raise self.unavailable()
        if timeout is None:
            timeout = self.call_timeout
        try:
            d = session.request(method, params, timeout, on_progress, context)
        except PeerGone:
            raise self.gone()
        # One pair of callbacks (latency, then the error's translation): each
        # pair on a call's Deferred costs every call.
        started = monotonic()
        d.addCallbacks(self._call_answered, self._call_failed_after, callbackArgs=(started,), errbackArgs=(method, timeout, started))
        return d

    def call_direct(self, method: str, params: dict[str, Any] | None, receiver: Receiver, context: Any) -> DirectCall:
        """
        L{call} without a Deferred, progress or timeout of the caller's
        (the backend's C{call_timeout} applies): C{receiver} is given the
        outcome (L{DirectCall}), with C{context}.  Only where
        L{answers_directly}; refused at once as L{call} refuses.
        """
        session = self.session
        if self.state is not State.UP or session is None:
            raise self.unavailable()
        timeout = self.call_timeout
        call = DirectCall(self, method, timeout, receiver, context)
        try:
            rid = session.send_request(method, params, timeout, call)
        except PeerGone:
            raise self.gone()
        call.sent(session.peer, rid)
        return call

    def _call_answered(self, result: Any, started: float) -> Any:
        self.latency.observe(monotonic() - started)
        return result

    def _call_failed_after(self, failure: Any, method: str, timeout: float, started: float) -> Any:
        self.latency.observe(monotonic() - started)
        return self._call_failed(failure, method, timeout)

    def notify(self, method: str, params: dict[str, Any] | None) -> None:
        """
        Send a notification to the backend's current session (progress of a
        server request, cancelled, roots/list_changed); dropped (with a debug
        line) when the backend is not up.
        """
        session = self.session
        if self.state is not State.UP or session is None:
            self.log.debug("backend {backend} is {state}: {method} not sent", backend=self.name, state=self.state.value, method=method)
            return
        if self.era == "modern" and method not in _MODERN_NOTIFICATIONS:
            # A 2026-07-28 server has no session for it to be about.
            self.log.debug("backend {backend} speaks 2026-07-28: {method} not sent", backend=self.name, method=method)
            return
        try:
            session.peer.notify(method, params)
        except Exception as e:
            self.log.debug("backend {backend}: {method} not sent ({why})", backend=self.name, method=method, why=e)

    def subscribe_resource(self, uri: str, params: dict[str, Any], context: Any = None) -> Deferred[Any]:
        """
        Have the server send C{notifications/resources/updated} for C{uri}
        (C{params}: the client's C{resources/subscribe} params, the URI the
        server's own); fails as L{call} does.
        """
        return self.call("resources/subscribe", params, context=context)

    def unsubscribe_resource(self, uri: str) -> Deferred[Any]:
        """No more updates of C{uri} (nothing to undo while the server is not up: it forgot them)."""
        if self.state is not State.UP:
            return succeed({})
        return self.call("resources/unsubscribe", {"uri": uri})

    def _server_request(self, method: str, params: dict[str, Any], related: Any) -> Deferred[Any]:
        """A request from the server, handed to L{events} (refused without)."""
        events = self.events
        if events is None:
            raise JsonRpcError(METHOD_NOT_FOUND, f"the gateway does not pass {method} on to its clients")
        return events.server_request(self, method, params, related)

    def _server_notification(self, method: str, params: dict[str, Any], related: Any) -> None:
        """A notification from the server, handed to L{events} (dropped without)."""
        events = self.events
        if events is None:
            self.log.debug("backend {backend}: ignored notification {method}", backend=self.name, method=method)
            return
        events.server_notification(self, method, params, related)

    def _call_failed(self, failure: Any, method: str, timeout: float) -> Any:
        e = failure.value
        if isinstance(e, (JsonRpcError, CancelledError)):
            return failure
        if isinstance(e, RequestTimeout):
            raise errors.backend_error(
                errors.BACKEND_TIMEOUT,
                self.name,
                f"backend {self.name!r} did not answer {method} within {timeout:g} s; the call was cancelled",
                timeout=timeout,
            )
        if isinstance(e, PeerGone):
            raise errors.backend_error(
                errors.BACKEND_LOST,
                self.name,
                f"backend {self.name!r} went away during {method} ({e}); it will be restarted",
            )
        return failure


__all__ = ["Backend", "BackendEvents", "Histogram", "State", "shaping_of"]
