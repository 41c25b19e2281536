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

from _sleep import sleep_with_progress  # tests/servers/ is sys.path[0] when run as a script
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("slow", version="1.0")


@server.tool()
async def sleep(seconds: float, ctx: Context) -> str:
    """Sleep for `seconds`, reporting progress every ~0.1 s."""
    return await sleep_with_progress(seconds, ctx, "SLOW_CANCEL_LOG")


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
