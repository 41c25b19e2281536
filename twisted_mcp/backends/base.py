"""
The MCP client side of one backend connection, independent of transport.

L{McpClientSession} drives the handshake, tool discovery (following
C{nextCursor}), routing of progress notifications, and the answers to the
few requests a server may send us.  It sits on a L{JsonRpcPeer} and is fed
decoded messages by whatever transport carries them (a child's stdio here;
HTTP later).

L{Backend} is the interface the gateway's dispatch code sees: a name, a
state, the tools, and L{Backend.call}.  It does not care what transport is
underneath.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from time import monotonic
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_mcp.mcp import errors
from twisted_mcp.mcp.versions import CLIENT_INFO, HANDSHAKE_VERSIONS, LATEST_HANDSHAKE
from twisted_mcp.wire.jsonrpc import (
    METHOD_NOT_FOUND,
    JsonRpcError,
    JsonRpcPeer,
    MessageError,
    PeerGone,
    RequestTimeout,
    encode,
)

log = Logger()

MAX_TOOL_PAGES = 1000

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


class State(enum.Enum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"
    STOPPED = "stopped"


class DiscoveryError(Exception):
    """The server could not be initialized or its tools listed."""


class McpClientSession:
    """
    One MCP client session with one server connection.

    @ivar peer: the JSON-RPC peer; the transport calls its
        C{messageReceived} and C{connectionLost}.
    """

    def __init__(
        self,
        name: str,
        send: Callable[[dict[str, Any]], None],
        clock: IReactorTime,
        on_tools_changed: Callable[[], None],
        on_abort: Callable[[int], None] | None = None,
        *,
        max_listing: int,
    ) -> None:
        self.name = name
        #: Bytes a server's tool definitions may add up to: the gateway lists
        #: every tool to a client in one message (gateway.maxMessageBytes).
        self._max_listing = max_listing
        self._clock = clock
        self._on_tools_changed = on_tools_changed
        self._on_abort = on_abort
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
        self.tools: list[dict[str, Any]] = []
        self.ready = False
        self._progress: dict[Any, Callable[[dict[str, Any]], None]] = {}
        self._listing: Deferred[None] | None = None
        self._relist = False
        self._init_rid: int | None = None
        self._timeout = 60.0

    # -- start-up ----------------------------------------------------------

    async def discover(self, timeout: float) -> None:
        """Handshake, then list every tool. Raises L{DiscoveryError}."""
        self._timeout = timeout
        await self.handshake(timeout)
        if "tools" in self.capabilities:
            try:
                self.tools = await self._list_tools(timeout)
            except JsonRpcError as e:
                raise DiscoveryError(f"tools/list was refused: {e}")
            except RequestTimeout:
                raise DiscoveryError(f"no answer to tools/list within {timeout:g} s")
        self.ready = True

    async def handshake(self, timeout: float) -> None:
        """C{initialize}, then C{notifications/initialized}."""
        try:
            result = await self.peer.request(
                "initialize",
                {
                    "protocolVersion": LATEST_HANDSHAKE,
                    "capabilities": {},
                    "clientInfo": CLIENT_INFO,
                },
                timeout,
                minted=self._initializing,
            )
        except JsonRpcError as e:
            raise DiscoveryError(f"initialize was refused: {e}")
        except RequestTimeout:
            raise DiscoveryError(f"no answer to initialize within {timeout:g} s")
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

    async def _list_tools(self, timeout: float) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        size = 0
        seen_cursors: set[str] = set()
        cursor: Any = None
        for _ in range(MAX_TOOL_PAGES):
            params = {"cursor": cursor} if cursor is not None else None
            page = await self.peer.request("tools/list", params, timeout)
            if type(page) is not dict or type(page.get("tools")) is not list:
                raise JsonRpcError(-32603, f"tools/list answered {str(page)[:200]}")
            for tool in page["tools"]:
                if type(tool) is dict and isinstance(tool.get("name"), str) and tool["name"]:
                    tools.append(tool)
                    # What decode() accepted, encode() writes (depth and numbers are checked there).
                    size += len(encode(tool))
                else:
                    log.warn(
                        "backend {backend}: ignoring a malformed tool definition {tool}",
                        backend=self.name,
                        tool=str(tool)[:200],
                    )
            if size > self._max_listing:
                raise JsonRpcError(
                    -32603, f"tools/list gave more than {self._max_listing} bytes of tool definitions (gateway.maxMessageBytes)"
                )
            cursor = page.get("nextCursor")
            if cursor is None:
                return tools
            if not isinstance(cursor, str) or cursor in seen_cursors:
                raise JsonRpcError(-32603, f"tools/list repeated or gave a bad nextCursor {cursor!r}")
            seen_cursors.add(cursor)
        raise JsonRpcError(-32603, f"tools/list gave more than {MAX_TOOL_PAGES} pages")

    def _relist_tools(self, timeout: float) -> None:
        if self._listing is not None:
            self._relist = True
            return
        self._relist = False
        d = Deferred.fromCoroutine(self._list_tools(timeout))
        self._listing = d

        def done(tools: list[dict[str, Any]]) -> None:
            self._listing = None
            if tools != self.tools:
                self.tools = tools
                self._on_tools_changed()
            if self._relist:
                self._relist_tools(timeout)

        def failed(f: Any) -> None:
            self._listing = None
            if not f.check(PeerGone):
                log.warn(
                    "backend {backend}: could not re-list tools after list_changed: {why}",
                    backend=self.name,
                    why=f.getErrorMessage(),
                )

        d.addCallbacks(done, failed)

    # -- calls -------------------------------------------------------------

    def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        timeout: float | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> Deferred[Any]:
        """
        Send a request.  If C{on_progress} is given and C{params._meta} has a
        C{progressToken}, the token is replaced by one of our own toward the
        server, and progress notifications for it are passed to
        C{on_progress} until the request completes.
        """
        if on_progress is None:
            return self.peer.request(method, params, timeout)
        routes = self._progress
        token: list[Any] = []

        def minted(rid: int) -> None:
            # Our request id is unique on this connection: use it as the token.
            assert params is not None
            params["_meta"]["progressToken"] = rid
            routes[rid] = on_progress
            token.append(rid)

        d = self.peer.request(method, params, timeout, minted=minted)

        def forget(result: Any) -> Any:
            if token:
                routes.pop(token[0], None)
            return result

        return d.addBoth(forget)

    def _send_cancel(self, rid: int, reason: str) -> None:
        self._progress.pop(rid, None)
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

    def _request_received(self, message: dict[str, Any]) -> None:
        method = message["method"]
        if method == "ping":
            self.peer.respond(message["id"], {})
            return
        self.peer.respond_error(
            message["id"],
            JsonRpcError(
                METHOD_NOT_FOUND,
                f"the gateway does not pass {method} on to its clients",
            ),
        )

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
        elif method == "notifications/tools/list_changed":
            if self.ready:
                self._relist_tools(self._timeout)
        elif method == "notifications/message":
            level = _LOG_LEVELS.get(str(params.get("level")), "info")
            getattr(log, level)(
                "backend {backend} says ({logger}): {data}",
                backend=self.name,
                logger=params.get("logger") or "-",
                data=str(params.get("data"))[:2000],
            )
        elif method == "notifications/cancelled":
            pass
        else:
            log.debug("backend {backend}: ignored notification {method}", backend=self.name, method=method)


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


class Backend(Service):
    """
    What dispatch sees of a backend, whatever its transport.

    Listeners added with L{add_listener} are called with the backend after
    its tools or its state changed.
    """

    log = Logger()
    state = State.STOPPED
    last_error: str | None = None
    call_timeout: float = 60.0
    session: McpClientSession | None = None
    #: An instance per client session (the one in the catalog only discovers).
    per_session = False
    #: Per-session instances at once: over every session, and for one
    #: principal; an instance without a call for idle_timeout seconds is
    #: stopped (0: never).
    max_instances = 32
    max_instances_per_principal = 4
    idle_timeout = 600.0
    #: Whether a discovery has succeeded at least once.
    discovered = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Callable[[Backend], None]] = []
        self._discovery_waiters: list[Deferred[None]] | None = []
        #: The last tools this backend listed (kept while it is down, so
        #: that clients' view stays stable across restarts).
        self.tools: list[dict[str, Any]] = []
        #: Call latency (seconds) as the gateway saw it, for /metrics.
        self.latency = Histogram()

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

    def call(
        self,
        method: str,
        params: dict[str, Any] | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> Deferred[Any]:
        """
        Send a request to the backend and return a Deferred for its result.

        Failures are L{JsonRpcError}s ready to pass to the client: the
        backend's own error, or one of L{twisted_mcp.mcp.errors}.  Cancelling
        the Deferred sends C{notifications/cancelled} to the backend.
        C{params} is sent as given (the caller passes a fresh dict) and
        may be modified.
        """
        session = self.session
        if self.state is not State.UP or session is None:
            raise self.unavailable()
        if timeout is None:
            timeout = self.call_timeout
        try:
            d = session.request(method, params, timeout, on_progress)
        except PeerGone:
            raise self.unavailable()
        d.addErrback(self._call_failed, method, timeout)
        d.addBoth(self.latency.observe_since, monotonic(), monotonic)
        return d

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


class SupervisedBackend(Backend):
    """
    What every transport shares: runs, each discovered (bounded by the
    discovery timeout) and, when a run ends, a new one after a backoff
    delay that doubles up to C{restartMaxDelay} and resets after the
    backend stayed up C{stableAfter} seconds.

    A I{run} is one child process or one HTTP session; it has a
    C{session} (L{McpClientSession}).  Subclasses implement L{_attempt}
    (start a run), L{_abandon} (end a run whose discovery failed; it must
    lead to L{_run_ended}) and L{_is_current}.
    """

    def __init__(self, name: str, config: Any, clock: IReactorTime) -> None:
        super().__init__(name)
        self.config = config
        self.clock = clock
        self.call_timeout = config.callTimeout
        self.per_session = getattr(config, "perSession", False)
        self.max_instances = config.maxInstances
        self.max_instances_per_principal = config.maxInstancesPerPrincipal
        self.idle_timeout = config.idleTimeout
        self.restarts = 0
        self._delay = config.restartDelay
        self._restart_call: Any = None
        self._up_since: float | None = None
        self._stopping = False

    def _attempt(self) -> None:
        raise NotImplementedError()

    def _abandon(self, run: Any) -> None:
        raise NotImplementedError()

    def _is_current(self, run: Any) -> bool:
        raise NotImplementedError()

    def _why_failed(self, failure: Any, run: Any) -> str:
        if isinstance(failure.value, DiscoveryError):
            return str(failure.value)
        if failure.check(TimeoutError, CancelledError):
            return f"discovery did not finish within {self.config.discoveryTimeout:g} s"
        return f"discovery failed: {failure.getErrorMessage()}"

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._attempt()

    def _stop_supervising(self) -> None:
        super().stopService()
        self._stopping = True
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        self._first_discovery_done()

    def _discover(self, run: Any) -> None:
        timeout = self.config.discoveryTimeout
        d = Deferred.fromCoroutine(run.discover(timeout))
        d.addTimeout(timeout, self.clock)
        d.addCallbacks(self._discovered, self._discovery_failed, callbackArgs=(run,), errbackArgs=(run,))

    def _discovered(self, _: None, run: Any) -> None:
        if not self._is_current(run) or self._stopping:
            return
        session = run.session
        self.tools = session.tools
        self.discovered = True
        self._up_since = self.clock.seconds()
        self.last_error = None
        info = session.server_info
        log.info(
            "backend {backend} is up: {count} tool(s) from {server} {version} (protocol {protocol})",
            backend=self.name,
            count=len(session.tools),
            server=info.get("name", "?"),
            version=info.get("version", "?"),
            protocol=session.protocol_version,
        )
        self._set_state(State.UP)
        self._first_discovery_done()

    def _discovery_failed(self, failure: Any, run: Any) -> None:
        if not self._is_current(run):
            return
        why = self._why_failed(failure, run)
        self.last_error = why
        log.error("backend {backend} is down: {why}", backend=self.name, why=why)
        self._set_state(State.DOWN)
        self._abandon(run)
        self._first_discovery_done()

    def _session_tools_changed(self, run: Any) -> None:
        if self._is_current(run) and self.state is State.UP:
            self.tools = run.session.tools
            log.info(
                "backend {backend}: tool list changed, now {count} tool(s)",
                backend=self.name,
                count=len(self.tools),
            )
            self._changed()

    def _run_ended(self, run: Any, why: str) -> None:
        """A run is over (process exited, connection lost): start another later."""
        if not self._is_current(run) or self._stopping:
            return
        if self.state is State.UP:
            log.warn("backend {backend}: {why}", backend=self.name, why=why)
        self.last_error = why
        now = self.clock.seconds()
        if self._up_since is not None and now - self._up_since >= self.config.stableAfter:
            self._delay = self.config.restartDelay
        self._up_since = None
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        if self._stopping:
            return
        delay = self._delay
        self._delay = min(delay * 2, self.config.restartMaxDelay)
        self.restarts += 1
        log.info("backend {backend}: restarting in {delay:g} s", backend=self.name, delay=delay)
        self._restart_call = self.clock.callLater(delay, self._restart)
        self._set_state(State.DOWN)

    def _restart(self) -> None:
        self._restart_call = None
        self._attempt()

    def unavailable(self) -> JsonRpcError:
        error = super().unavailable()
        call = self._restart_call
        if call is not None and call.active():
            retry = max(0.0, call.getTime() - self.clock.seconds())
            error.data["retryAfter"] = round(retry, 3)
            error.message += f"; restarting in {retry:.1f} s"
        return error

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self._changed()


__all__ = ["Backend", "DiscoveryError", "McpClientSession", "MessageError", "State", "SupervisedBackend"]
