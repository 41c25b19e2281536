"""The scale-out tests' backend (mcp SDK 2.x, stdio): one per replica.

Tools:
  echo(text, seconds=0) -> text, after sleeping `seconds` (so that a call
                           with a unique text can be in flight when its
                           replica is killed, and its answer checked)
  sleep(seconds)        -> "slept <seconds>"
  pid()                 -> os.getpid()
"""

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("cluster", version="1.0")


@server.tool()
async def echo(text: str, seconds: float = 0.0) -> str:
    """Return `text` unchanged, after `seconds`."""
    if seconds > 0:
        await anyio.sleep(seconds)
    return text


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep for `seconds`."""
    await anyio.sleep(seconds)
    return f"slept {seconds:g}"


@server.tool()
def pid() -> int:
    """Return the server's process id."""
    return os.getpid()


if __name__ == "__main__":
    print(f"cluster_server.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.run("stdio")
