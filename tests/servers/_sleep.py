"""The `sleep` tool body shared by the SDK test servers (slow.py, http_sdk.py).

Sleeps, reporting progress about every 0.1 s when the request carries a
progress token, and appends "cancelled <request-id>" to the file named by the
environment variable `log_env` when the peer cancels the request.
"""

import os

import anyio
from mcp.server.mcpserver import Context


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


async def sleep_with_progress(seconds: float, ctx: Context, log_env: str) -> str:
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
        path = os.environ.get(log_env)
        if path and _peer_cancelled(ctx):
            with open(path, "a") as f:
                f.write(f"cancelled {ctx.request_id}\n")
        raise
    return f"slept {seconds:g}"
