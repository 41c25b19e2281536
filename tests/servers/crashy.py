"""Crashing test backend (mcp SDK 2.x, stdio).

Tools:
  echo(text) -> text
  crash()    -> never answers: the process exits with os._exit(3) mid-call
  pid()      -> os.getpid()

Env:
  CRASHY_TOOLS_FILE  if set and the file exists, every non-empty line of it is
                     registered at start-up as an extra tool with exactly that
                     name (no arguments, returns its own name); a line
                     "name=text" gives the tool that description. Rewrite the file
                     and restart the server to change the tool set.
"""

import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("crashy", version="1.0")


@server.tool()
def echo(text: str) -> str:
    """Return `text` unchanged."""
    return text


@server.tool()
def crash() -> str:
    """Kill the server process without answering."""
    sys.stderr.write("crashy.py: crashing on request\n")
    sys.stderr.flush()
    os._exit(3)


@server.tool()
def pid() -> int:
    """Return the server's process id."""
    return os.getpid()


def _add_extra_tools() -> None:
    path = os.environ.get("CRASHY_TOOLS_FILE")
    if not path or not os.path.exists(path):
        return
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    for line in names:
        # "name" or "name=description" (so a test can redefine a tool).
        name, _, description = line.partition("=")
        server.add_tool(_make_extra(name), name=name, description=description or f"extra tool {name}")


def _make_extra(name: str):
    def extra() -> str:
        return name

    return extra


if __name__ == "__main__":
    _add_extra_tools()
    print(f"crashy.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.run("stdio")
