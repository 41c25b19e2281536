"""
The MCP client side of one backend connection, independent of transport.

L{McpClientSession} drives the handshake, tool discovery (following
C{nextCursor}), routing of progress notifications, and the answers to the
few requests a server may send us.  It sits on a L{JsonRpcPeer} and is fed
decoded messages by whatever transport carries them (a child's stdio, an
HTTP server's answers).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

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
        self._listing: Deferred[Any] | None = None  # the tools/list in progress
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


__all__ = ["DiscoveryError", "McpClientSession", "MessageError"]
