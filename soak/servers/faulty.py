"""A stdio MCP server (no SDK, starts in milliseconds) with one tool per fault, for the soak run.

Tools:
  echo {text}    -> text
  crash {}       -> exits with status 3 without answering (the gateway restarts it)
  hang {}        -> never answers (the gateway's callTimeout must answer for it);
                    the server keeps serving other calls
  flood {lines}  -> writes `lines` lines to stderr and, when the call has
                    _meta.progressToken, as many notifications/progress, then answers "flooded"
  garbage {text} -> writes a non-JSON line, a JSON line that is not JSON-RPC and a
                    response to an id it was never sent, then answers text
  spawn {}       -> starts `sleep 3600` as its own child and never reaps it (a leak,
                    used only to check that the soak's child-process gate trips)
  escape {}      -> starts `sleep 3600` in a session of its own, out of reach of the
                    gateway's process-group kill (used only to check the soak's
                    no-process-left gate)
"""

import json
import os
import subprocess
import sys

TOOLS = [
    {"name": n, "inputSchema": {"type": "object"}}
    for n in ("echo", "crash", "hang", "flood", "garbage", "spawn", "escape")
]
_leaked = []  # keeps the spawned children referenced, so that they are never reaped


def send(msg):
    data = json.dumps(msg).encode() + b"\n"
    while data:
        data = data[os.write(1, data) :]


def text_result(rid, text):
    send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}})


def flood(rid, arguments, meta):
    lines = int(arguments.get("lines", 100))
    token = meta.get("progressToken")
    for i in range(lines):
        sys.stderr.write(f"faulty.py: flood line {i} of {lines}\n")
        if token is not None:
            params = {"progressToken": token, "progress": i + 1, "total": lines}
            send({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})
    sys.stderr.flush()
    text_result(rid, "flooded")


def garbage(rid, arguments):
    os.write(1, b"this is not JSON at all\n")
    send({"hello": "not JSON-RPC"})
    send({"jsonrpc": "2.0", "id": 987654321, "result": {"unasked": True}})
    text_result(rid, arguments.get("text", ""))


def call(rid, params):
    name = params.get("name")
    arguments = params.get("arguments") or {}
    if name == "echo":
        text_result(rid, arguments.get("text", ""))
    elif name == "crash":
        sys.stderr.write("faulty.py: crashing on request\n")
        sys.stderr.flush()
        os._exit(3)
    elif name == "hang":
        return
    elif name == "flood":
        flood(rid, arguments, params.get("_meta") or {})
    elif name == "garbage":
        garbage(rid, arguments)
    elif name in ("spawn", "escape"):
        child = subprocess.Popen(
            ["sleep", "3600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=name == "escape"
        )
        _leaked.append(child)
        text_result(rid, f"{name}d pid {child.pid}")
    else:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"unknown tool {name}"}})


def handle(msg):
    if "id" not in msg or "method" not in msg:
        return
    rid, method, params = msg["id"], msg["method"], msg.get("params") or {}
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "faulty", "version": "1"},
        }
        send({"jsonrpc": "2.0", "id": rid, "result": result})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        call(rid, params)
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": rid, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": method}})


def main():
    sys.stderr.write(f"faulty.py: starting (pid {os.getpid()})\n")
    for line in sys.stdin.buffer:
        if line.strip():
            handle(json.loads(line))


if __name__ == "__main__":
    main()
