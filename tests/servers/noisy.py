"""Working backend (mcp SDK 2.x, stdio) that writes as much to stderr as it is asked.

Tools:
  stderr(count, length, text) -> count; writes `count` lines to stderr, each
      `text` followed by dots up to `length` bytes (then "\\n"), with a
      blocking os.write loop, before answering.
  pid() -> os.getpid()
"""

import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("noisy", version="1.0")


@server.tool()
def stderr(count: int, length: int, text: str = "") -> int:
    """Write `count` lines of `length` bytes (starting with `text`) to stderr."""
    head = text.encode("utf-8")
    line = head + b"." * max(0, length - len(head)) + b"\n"
    for _ in range(count):
        data = memoryview(line)
        while data:
            data = data[os.write(2, data) :]
    return count


@server.tool()
def pid() -> int:
    """Return the server's process id."""
    return os.getpid()


if __name__ == "__main__":
    print(f"noisy.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.run("stdio")
