"""Test backend that floods a call with progress notifications (no SDK, fast).

Tools:
  flood(count, size) -> sends `count` notifications/progress of about `size`
                        bytes each (when the call carries _meta.progressToken),
                        then answers "flooded <count>"; once everything is
                        written it prints "flood done" to stderr.
"""

import json
import os
import sys

TOOL = {
    "name": "flood",
    "description": "Send many large progress notifications, then answer.",
    "inputSchema": {
        "type": "object",
        "properties": {"count": {"type": "integer"}, "size": {"type": "integer"}},
        "required": ["count", "size"],
    },
}


def write(message):
    data = memoryview(json.dumps(message).encode() + b"\n")
    while data:
        data = data[os.write(1, data) :]


def flood(rid, params):
    args = params.get("arguments") or {}
    token = (params.get("_meta") or {}).get("progressToken")
    count, size = args["count"], args["size"]
    if token is not None:
        pad = "p" * size
        for i in range(count):
            write({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progressToken": token, "progress": i + 1, "total": count, "message": pad}})
    write({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": f"flooded {count}"}]}})
    print("flood done", file=sys.stderr, flush=True)


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        rid, method, params = msg.get("id"), msg.get("method"), msg.get("params") or {}
        if rid is None or method is None:
            continue
        if method == "initialize":
            write({"jsonrpc": "2.0", "id": rid, "result": {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "progress_flood", "version": "1"}}})
        elif method == "tools/list":
            write({"jsonrpc": "2.0", "id": rid, "result": {"tools": [TOOL]}})
        elif method == "tools/call":
            flood(rid, params)
        else:
            write({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"Method not found: {method}"}})


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
