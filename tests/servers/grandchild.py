"""Working backend (mcp SDK 2.x, stdio) that spawns a long-lived grandchild.

At start-up it runs `sleep 3600` with subprocess.Popen (same session/process
group as the server, stdin/stdout on /dev/null, stderr inherited) and never
reaps or kills it: the gateway is expected to clean it up.

Tools:
  echo(text) -> text
  pids()     -> {"server": <server pid>, "grandchild": <sleep pid>}
"""

import os
import subprocess
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("grandchild", version="1.0")
_grandchild: subprocess.Popen | None = None


@server.tool()
def echo(text: str) -> str:
    """Return `text` unchanged."""
    return text


@server.tool()
def pids() -> dict[str, int]:
    """Return the pids of this server and of its `sleep 3600` grandchild."""
    assert _grandchild is not None
    return {"server": os.getpid(), "grandchild": _grandchild.pid}


if __name__ == "__main__":
    _grandchild = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    print(f"grandchild.py: starting (pid {os.getpid()}, grandchild {_grandchild.pid})", file=sys.stderr, flush=True)
    server.run("stdio")
