"""Slow test backend (mcp SDK 2.x, stdio).

Tools:
  sleep(seconds) -> "slept <seconds>"; emits notifications/progress about every
                    0.1 s when the request carries _meta.progressToken.
  echo(text)     -> text
  pid()          -> os.getpid()

Env:
  SLOW_CANCEL_LOG  if set, a line "cancelled <request-id>" is appended to this
                   file whenever a running request is cancelled by the peer
                   (notifications/cancelled).
"""

import os
import sys

import anyio

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("slow", version="1.0")


def _peer_cancelled(ctx: Context) -> bool:
    """Whether the current request was cancelled by notifications/cancelled.

    SDK 2.3 applies a peer cancel by cancelling the handler's anyio scope (and
    setting the dispatch context's ``cancel_requested`` event). The event is not
    exposed publicly on the MCPServer Context, so look it up defensively; a
    cancellation without it set is a server shutdown (stdin EOF), not a cancel.
    """
    dctx = getattr(ctx.request_context.session, "_request_outbound", None)
    event = getattr(dctx, "cancel_requested", None)
    return True if event is None else event.is_set()


def _log_cancel(request_id: str) -> None:
    path = os.environ.get("SLOW_CANCEL_LOG")
    if not path:
        return
    with open(path, "a") as f:
        f.write(f"cancelled {request_id}\n")


@server.tool()
async def sleep(seconds: float, ctx: Context) -> str:
    """Sleep for `seconds`, reporting progress every ~0.1 s."""
    try:
        start = anyio.current_time()
        deadline = start + seconds
        step = 0
        while True:
            now = anyio.current_time()
            if now >= deadline:
                break
            await anyio.sleep(min(0.1, deadline - now))
            step += 1
            elapsed = min(anyio.current_time() - start, seconds)
            # No-op when the request carried no progress token.
            await ctx.report_progress(elapsed, seconds, f"step {step}")
    except anyio.get_cancelled_exc_class():
        if _peer_cancelled(ctx):
            _log_cancel(ctx.request_id)
        raise
    return f"slept {seconds:g}"


@server.tool()
def echo(text: str) -> str:
    """Return `text` unchanged."""
    return text


@server.tool()
def pid() -> int:
    """Return the server's process id."""
    return os.getpid()


if __name__ == "__main__":
    print(f"slow.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.run("stdio")
