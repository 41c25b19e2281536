"""A stdio MCP server (no SDK) whose helper daemonizes, for reaping tests.

At start-up it double-forks a `sleep 3600` that calls setsid() first: a
process in a session (and process group) of its own, whose parent exits
at once, as a daemon does. Signalling the server's process group does not
reach it.

Tools:
  daemon_pid {}   -> the daemonized sleep's pid
  short_daemon {} -> daemonizes a `sleep 0.5` the same way; its pid
  crash {}        -> exits with code 3 without answering
"""

import json
import os
import sys


def daemonize(seconds: str = "3600") -> int:
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.setsid()
        pid = os.fork()
        if pid:
            os.write(write_end, str(pid).encode())
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execvp("sleep", ["sleep", seconds])
    os.close(write_end)
    pid = int(os.read(read_end, 32))
    os.wait()
    return pid


DAEMON = daemonize()
TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in ("daemon_pid", "short_daemon", "crash")]


def send(msg):
    os.write(1, json.dumps(msg).encode() + b"\n")


def main():
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        msg = json.loads(line)
        if "id" not in msg or "method" not in msg:
            continue
        rid, method, params = msg["id"], msg["method"], msg.get("params") or {}
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "daemonizer", "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
        elif method == "tools/call" and params.get("name") == "daemon_pid":
            send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": str(DAEMON)}]}})
        elif method == "tools/call" and params.get("name") == "short_daemon":
            send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": str(daemonize("0.5"))}]}})
        elif method == "tools/call" and params.get("name") == "crash":
            os._exit(3)
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": method}})


if __name__ == "__main__":
    main()
