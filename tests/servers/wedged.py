"""A stdio MCP server (no SDK) that wedges on request, for supervision tests.

Tools:
  echo {text}     -> text
  deafen {}       -> answers, then never reads its stdin again (stays alive)
  close_stdout {} -> closes its stdout without answering, and stays alive
  pid {}          -> its pid
  busy {seconds}  -> does not read its stdin for `seconds` (a single-threaded
                     server at work), then answers "done" and goes on
"""

import json
import os
import sys
import time

TOOLS = [
    {"name": n, "inputSchema": {"type": "object"}}
    for n in ("echo", "deafen", "close_stdout", "pid", "busy")
]


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
            send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "wedged", "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            name = params.get("name")
            if name == "echo":
                text = (params.get("arguments") or {}).get("text", "")
                send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}})
            elif name == "pid":
                send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": str(os.getpid())}]}})
            elif name == "deafen":
                send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "deaf now"}]}})
                time.sleep(3600)
            elif name == "busy":
                time.sleep(float((params.get("arguments") or {}).get("seconds", 1)))
                send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "done"}]}})
            elif name == "close_stdout":
                os.close(1)
                time.sleep(3600)
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": method}})


if __name__ == "__main__":
    main()
