"""Test harness around the official ``mcp`` 2.3 SDK *client* (``mcp.Client``).

Integration tests are plain synchronous pytest functions, so the pattern is::

    from tests import mcpclient as mc          # or: import mcpclient

    def test_echo(tmp_path):
        async def scenario():
            async with mc.connect(GATEWAY_CMD + ["--config", str(cfg)]) as client:
                assert "echo" in await mc.tool_names(client)
                assert await mc.call_text(client, "echo", {"text": "hi"}) == "hi"
        mc.run(scenario, timeout=60)

What the SDK does that tests should know about (verified against mcp 2.3.0):

* ``Client`` defaults to ``mode="auto"``: it first sends ``server/discover``
  (2026-07-28 era) and falls back to ``initialize`` (offering 2025-11-25) on
  *any* JSON-RPC error reply, e.g. -32601. A peer that never answers the probe
  hangs the connect (``run``'s timeout catches that). ``connect(mode="legacy")``
  skips the probe. SDK 2.x servers *answer* the probe, so talking to them
  directly in auto mode negotiates "2026-07-28"; through a handshake-only
  gateway it will be "2025-11-25" (see ``client.protocol_version``).
* After a successful (non-error) ``tools/call`` of a tool it has not listed
  yet, the client sends an implicit ``tools/list`` to fetch the output schema.
* The SDK only inherits HOME/LOGNAME/PATH/SHELL/TERM/USER into the child's
  environment; ``connect`` passes the full ``os.environ`` (plus ``env``) instead.
* The child's stderr is passed straight through to ``errlog`` (default: the
  test's stderr); the child runs in its own session (process group). On exit the
  SDK closes the child's stdin, waits 2 s, then SIGTERMs (and after 2 s more
  SIGKILLs) the whole process group.
* Progress: ``client.call_tool(name, args, progress_callback=cb)`` where ``cb``
  is ``async def cb(progress: float, total: float | None, message: str | None)``.
  Passing a callback makes the SDK put ``_meta.progressToken = <request id>``
  on the request. See ``ProgressRecorder`` / ``call_with_progress``.
* Notifications (``notifications/tools/list_changed``, progress, logging...)
  reach ``Client(message_handler=...)``: ``async def h(msg)`` receiving a typed
  ``mcp_types`` notification (``msg.method``) or an ``Exception`` for transport
  faults such as unparsable stdout lines. ``notifications/cancelled`` is never
  surfaced. See ``NotificationRecorder``.
* Cancellation: cancelling the anyio scope/task that awaits ``call_tool`` makes
  the SDK dispatcher send ``notifications/cancelled`` (reason "caller
  cancelled") for the request id before re-raising. A client-side timeout
  (``read_timeout_seconds``) does the same and raises ``MCPError`` (code
  REQUEST_TIMEOUT). See ``cancel_call``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TextIO

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult, Implementation, TextContent

__all__ = [
    "ToolCallError",
    "connect",
    "run",
    "wait_until",
    "tool_names",
    "call_text",
    "result_text",
    "ProgressRecorder",
    "call_with_progress",
    "NotificationRecorder",
    "cancel_call",
]

CLIENT_INFO = Implementation(name="twisted-mcp-tests", version="0")


class ToolCallError(Exception):
    """A tool result came back with ``isError: true`` (or without text content)."""

    def __init__(self, message: str, result: CallToolResult | None = None):
        super().__init__(message)
        self.result = result


def _unwrap(exc: BaseException) -> BaseException:
    """The single leaf ``Exception`` of (nested) one-member exception groups, else ``exc``.

    The SDK runs its transport and session in anyio task groups, so failures
    such as "Connection closed" while connecting arrive wrapped in
    ``ExceptionGroup(ExceptionGroup(MCPError))``; tests want the ``MCPError``.
    """
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf if leaf is not exc and isinstance(leaf, Exception) else exc


def _default_errlog() -> TextIO:
    """sys.stderr if it is backed by a real fd (pytest's fd capture is), else the process stderr."""
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__


@asynccontextmanager
async def connect(
    command: list[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    errlog: TextIO | str | os.PathLike[str] | None = None,
    *,
    message_handler: Callable[[Any], Awaitable[None]] | None = None,
    mode: str = "auto",
    read_timeout: float | None = None,
    inherit_env: bool = True,
    **client_kwargs: Any,
) -> AsyncIterator[Client]:
    """Spawn ``command`` and yield a connected, handshaken ``mcp.Client`` talking stdio to it.

    Args:
        command: argv, e.g. ``["twistd", "-n", "--pidfile=", "mcp-gateway", "--config", f]``.
        env: extra environment variables, layered over ``os.environ`` (over the
            SDK's minimal default environment when ``inherit_env=False``).
        cwd: working directory of the child.
        errlog: where the child's stderr goes: an open file (must have a real
            ``fileno()``), or a path (opened for appending). Default: the test's
            stderr, so pytest shows it for failing tests.
        message_handler: ``async def h(msg)`` receiving server notifications
            (typed, ``msg.method``) and transport exceptions; e.g. a ``NotificationRecorder``.
        mode: ``"auto"`` (SDK default: probe ``server/discover``, fall back to
            ``initialize``) or ``"legacy"`` (``initialize`` only).
        read_timeout: per-request timeout in seconds (None: wait forever).
        client_kwargs: passed through to ``mcp.Client`` (e.g. ``logging_callback``).

    Connecting to a command that exits before answering raises
    ``mcp.MCPError`` (code -32000, "Connection closed"). One-member exception
    groups raised by the SDK's task groups are unwrapped to their leaf exception.
    """
    full_env = dict(os.environ) if inherit_env else {}
    full_env.update(env or {})
    params = StdioServerParameters(
        command=command[0], args=list(command[1:]), env=full_env, cwd=os.fspath(cwd) if cwd is not None else None
    )
    close_errlog = None
    if errlog is None:
        errlog = _default_errlog()
    elif isinstance(errlog, str | os.PathLike):
        errlog = close_errlog = open(errlog, "a")  # noqa: SIM115
    client_kwargs.setdefault("client_info", CLIENT_INFO)
    # No response cache: tests re-list tools after list_changed and must see the server's answer.
    client_kwargs.setdefault("cache", None)
    try:
        client = Client(
            stdio_client(params, errlog=errlog),
            mode=mode,
            message_handler=message_handler,
            read_timeout_seconds=read_timeout,
            **client_kwargs,
        )
        async with client:
            yield client
    except BaseExceptionGroup as group:
        leaf = _unwrap(group)
        if leaf is group:
            raise
        raise leaf from group
    finally:
        if close_errlog is not None:
            close_errlog.close()


@asynccontextmanager
async def connect_http(
    url: str,
    *,
    mode: str = "legacy",
    read_timeout: float | None = 60,
    http_client: Any = None,
    **client_kwargs: Any,
) -> AsyncIterator[Client]:
    """Yield a connected ``mcp.Client`` on the SDK's Streamable HTTP transport to ``url`` (the MCP endpoint).

    ``http_client``: an ``httpx2.AsyncClient`` to send with (e.g. one with event hooks).
    """
    from mcp.client.streamable_http import streamable_http_client

    client_kwargs.setdefault("client_info", CLIENT_INFO)
    client_kwargs.setdefault("cache", None)
    try:
        client = Client(
            streamable_http_client(url, http_client=http_client), mode=mode, read_timeout_seconds=read_timeout, **client_kwargs
        )
        async with client:
            yield client
    except BaseExceptionGroup as group:
        leaf = _unwrap(group)
        if leaf is group:
            raise
        raise leaf from group


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float = 60) -> Any:
    """Run ``await coro_fn(*args)`` to completion from synchronous code and return its result.

    It runs under ``anyio.run`` (asyncio backend) in a fresh event loop on a
    dedicated thread, so it cannot interfere with a Twisted reactor or event
    loop owned by the calling thread (pytest-twisted). The whole call is bounded
    by ``timeout`` seconds: on expiry the coroutine is cancelled (the SDK then
    shuts down its child processes, which takes up to ~5 s) and ``TimeoutError``
    is raised. Exceptions from the coroutine are re-raised in the caller
    (one-member exception groups unwrapped to their leaf exception).
    """
    outcome: dict[str, Any] = {}

    async def main() -> None:
        with anyio.fail_after(timeout):
            outcome["value"] = await coro_fn(*args)

    def target() -> None:
        try:
            anyio.run(main)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"mcpclient.run({getattr(coro_fn, '__name__', coro_fn)})")
    thread.daemon = True
    thread.start()
    thread.join(timeout + 30)  # grace for the SDK's bounded shutdown after a timeout
    if thread.is_alive():
        raise TimeoutError(f"mcpclient.run: {coro_fn!r} did not finish within {timeout + 30} s")
    if "error" in outcome:
        error = outcome["error"]
        leaf = _unwrap(error)
        if leaf is not error:
            raise leaf from error
        raise error
    return outcome.get("value")


async def wait_until(predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.02) -> None:
    """Poll ``predicate()`` until it is truthy; raise ``TimeoutError`` after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(interval)


async def tool_names(client: Client) -> list[str]:
    """Names of all tools (follows ``nextCursor`` pagination; always asks the server)."""
    names: list[str] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        names.extend(tool.name for tool in page.tools)
        cursor = page.next_cursor
        if not cursor:
            return names


def result_text(result: CallToolResult) -> str:
    """First text content of a tool result (no isError check); ``ToolCallError`` if there is none."""
    for item in result.content:
        if isinstance(item, TextContent):
            return item.text
    raise ToolCallError(f"tool result has no text content: {result!r}", result)


async def call_text(client: Client, name: str, args: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """Call tool ``name`` and return the first text content of its result.

    Raises ``ToolCallError`` if the result has ``isError: true`` (message = its
    text) and ``mcp.MCPError`` for a JSON-RPC error answer. ``kwargs`` go to
    ``client.call_tool`` (``read_timeout_seconds``, ``progress_callback``, ``meta``).
    """
    result = await client.call_tool(name, args or {}, **kwargs)
    if result.is_error:
        try:
            text = result_text(result)
        except ToolCallError:
            text = repr(result)
        raise ToolCallError(text, result)
    return result_text(result)


class ProgressRecorder:
    """A ``progress_callback`` that records ``(progress, total, message)`` tuples in ``events``.

    Usage::

        rec = ProgressRecorder()
        result = await client.call_tool("sleep", {"seconds": 1}, progress_callback=rec)
        assert len(rec.events) >= 5
    """

    def __init__(self) -> None:
        self.events: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))

    async def wait(self, count: int = 1, timeout: float = 10) -> None:
        """Wait until at least ``count`` progress notifications have arrived."""
        await wait_until(lambda: len(self.events) >= count, timeout)


async def call_with_progress(
    client: Client, name: str, args: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[CallToolResult, list[tuple[float, float | None, str | None]]]:
    """Call a tool with a progress callback; return ``(result, [(progress, total, message), ...])``."""
    rec = ProgressRecorder()
    result = await client.call_tool(name, args or {}, progress_callback=rec, **kwargs)
    # Progress callbacks run in spawned tasks; let any already-received ones finish.
    await anyio.sleep(0)
    return result, rec.events


class NotificationRecorder:
    """A ``message_handler`` that records every server notification (and transport exception).

    Usage::

        notes = NotificationRecorder()
        async with connect(cmd, message_handler=notes) as client:
            ...  # something that changes the tool set
            await notes.wait_for("notifications/tools/list_changed", timeout=10)

    ``notifications`` holds the typed ``mcp_types`` notification objects
    (``n.method``, ``n.params``), ``errors`` the exceptions the transport
    reported (e.g. a non-JSON line on the server's stdout).
    """

    def __init__(self) -> None:
        self.notifications: list[Any] = []
        self.errors: list[Exception] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.errors.append(message)
        else:
            self.notifications.append(message)

    def methods(self) -> list[str]:
        return [n.method for n in self.notifications]

    def count(self, method: str) -> int:
        return sum(1 for n in self.notifications if n.method == method)

    async def wait_for(self, method: str, count: int = 1, timeout: float = 10) -> None:
        """Wait until at least ``count`` notifications with this ``method`` were received."""
        await wait_until(lambda: self.count(method) >= count, timeout)


async def cancel_call(
    client: Client,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    after: float | None = None,
    progress_timeout: float = 10,
) -> ProgressRecorder:
    """Start ``tools/call name(args)`` and cancel it while it is in flight.

    With ``after=None`` (default) the call is made with a progress callback and
    cancelled as soon as the first progress notification arrives, which proves
    the request reached the server and is running (``slow.py``'s ``sleep``
    reports every ~0.1 s). With ``after=<seconds>`` it is cancelled after that
    delay instead (use this for tools that report no progress).

    Cancelling the anyio scope that runs ``client.call_tool`` makes the SDK send
    ``notifications/cancelled {"requestId": <id>, "reason": "caller cancelled"}``
    before unwinding. Returns the ``ProgressRecorder`` used for the call.
    Raises if the call finishes (or fails) before it could be cancelled.
    """
    rec = ProgressRecorder()
    finished: dict[str, Any] = {}

    async def call() -> None:
        finished["result"] = await client.call_tool(name, args or {}, progress_callback=rec)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        if after is None:
            await wait_until(lambda: rec.events or finished, progress_timeout)
        else:
            await anyio.sleep(after)
        tg.cancel_scope.cancel()
    if "result" in finished:
        raise AssertionError(f"{name} finished before it could be cancelled: {finished['result']!r}")
    # Give the shielded notifications/cancelled write a moment to reach the transport.
    await anyio.sleep(0.05)
    return rec
