"""Test backend whose tool answers with a JSON-RPC error of the caller's choosing (mcp SDK 2.x, stdio).

Tools:
  fail(code, message) -> never a result: the server answers the call with the
                         JSON-RPC error {code, message, data: {"server": "erring"}}
  sleep(seconds)      -> "slept", after that many seconds (for a call timeout)
"""

import os
import sys

import anyio
from mcp import MCPError
from mcp.server.mcpserver import MCPServer

server = MCPServer("erring", version="1.0")


@server.tool()
def fail(code: int, message: str) -> str:
    """Answer with the JSON-RPC error `code` and `message`."""
    raise MCPError(code, message, {"server": "erring"})


@server.tool()
async def sleep(seconds: float) -> str:
    """Answer "slept" after `seconds`."""
    await anyio.sleep(seconds)
    return "slept"


if __name__ == "__main__":
    print(f"erring.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.run("stdio")
