"""Working backend (mcp SDK 2.x, stdio) that also prints non-JSON lines on stdout.

Tools:
  echo(text) -> text; writes the garbage line "hello from a print statement"
                to stdout just before the answer.
  pid()      -> os.getpid()

At start-up (before any MCP traffic) it writes two garbage lines to stdout.
Every write, JSON or garbage, is one complete "\\n"-terminated line written
with a blocking os.write loop from the event-loop thread, so garbage never
lands inside a JSON line.

Note: SDK 2.x's stdio_server() normally diverts fd 1 to stderr while serving
(so stray prints miss the wire); this server hands stdio_server() its own
stdout writer instead, so fd 1 stays the wire and the garbage really reaches
the client.
"""

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

GARBAGE = "hello from a print statement"

server = MCPServer("garbage", version="1.0")


def _write_line(text: str) -> None:
    data = (text.rstrip("\n") + "\n").encode("utf-8")
    while data:
        n = os.write(1, data)
        data = data[n:]


class _LineWriter:
    """Minimal stand-in for the anyio AsyncFile stdio_server() writes to."""

    async def write(self, text: str) -> int:
        _write_line(text)
        return len(text)

    async def flush(self) -> None:
        pass


@server.tool()
def echo(text: str) -> str:
    """Return `text` unchanged (after printing a garbage line on stdout)."""
    _write_line(GARBAGE)
    return text


@server.tool()
def pid() -> int:
    """Return the server's process id."""
    return os.getpid()


async def main() -> None:
    lowlevel = server._lowlevel_server
    async with stdio_server(stdout=_LineWriter()) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


if __name__ == "__main__":
    print(f"garbage.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    _write_line("garbage.py starting up: this is not JSON")
    _write_line(GARBAGE)
    anyio.run(main)
