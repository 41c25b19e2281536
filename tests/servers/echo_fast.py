"""Minimal, fast stdio MCP server without the SDK (benchmark backend).

Reads newline-delimited JSON-RPC from fd 0 in big chunks and writes all the
answers produced by one chunk with a single os.write (looping on partial
writes) to fd 1. Exits on EOF.

  initialize   -> echoes the client's protocolVersion if it is a known
                  handshake version, else 2025-11-25; capabilities {"tools":{}}
  ping         -> {}
  tools/list   -> one tool, `echo` (text: string)
  tools/call   -> echo: {"content":[{"type":"text","text": <text>}]}
                  (<text> repeated `repeat` times when that argument is given);
                  ECHO_TEXT_SCHEMA (JSON) is merged into the schema of `text`
  notifications (no id) are ignored; unknown methods get -32601, an unknown
  tool -32602, a non-JSON line -32700 and a non-object -32600 (id null).

With ECHO_FIRST_WRITE=n, the first n bytes of each batch of answers are
written on their own, 0.2 s before the rest, so that the gateway's first
read of an answer is short.
"""

import json
import os
import time

VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST = "2025-11-25"
SERVER_INFO = {"name": "echo_fast", "version": "1.0"}
ECHO_TOOL = {
    "name": "echo",
    "description": "Return the given text.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}, "repeat": {"type": "integer", "minimum": 1}},
        "required": ["text"],
    },
}
ECHO_TOOL["inputSchema"]["properties"]["text"].update(json.loads(os.environ.get("ECHO_TEXT_SCHEMA", "{}")))
TOOLS_LIST = {"tools": [ECHO_TOOL]}
FIRST_WRITE = int(os.environ.get("ECHO_FIRST_WRITE", "0"))

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.JSONDecoder().decode  # str input: skips json.loads' encoding sniffing
_encode_str = json.encoder.encode_basestring  # C accelerated, same output as _dumps for str


def _encode_id(rid):
    if type(rid) is int:
        return str(rid)
    if type(rid) is str:
        return _encode_str(rid)
    return _dumps(rid)


_ECHO_TEMPLATE = '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":%s}]}}'


def _error(rid, code, message):
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def handle(msg):
    """Return the response (a dict, or an already serialized str) for one message, or None."""
    if not isinstance(msg, dict):
        return _error(None, -32600, "Invalid Request")
    if "id" not in msg:
        return None  # notification (or a response to nothing we sent)
    rid = msg["id"]
    method = msg.get("method")
    if method is None:
        return None  # a response; we never send requests
    params = msg.get("params") or {}
    if method == "tools/call":
        if params.get("name") != "echo":
            return _error(rid, -32602, f"Unknown tool: {params.get('name')!r}")
        args = params.get("arguments") or {}
        text = args.get("text", "")
        if not isinstance(text, str):
            text = str(text)
        repeat = args.get("repeat")
        if type(repeat) is int and repeat > 1:
            text = text * repeat
        # Hot path: pre-serialized string instead of a dict for _dumps.
        return _ECHO_TEMPLATE % (_encode_id(rid), _encode_str(text))
    if method == "initialize":
        requested = params.get("protocolVersion")
        version = requested if requested in VERSIONS else LATEST
        return {
            "jsonrpc": "2.0",
            "id": rid,
            "result": {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": SERVER_INFO},
        }
    if method == "ping":
        return {"jsonrpc": "2.0", "id": rid, "result": {}}
    if method == "tools/list":
        return {"jsonrpc": "2.0", "id": rid, "result": TOOLS_LIST}
    return _error(rid, -32601, f"Method not found: {method}")


def write_all(data):
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def send(data):
    if FIRST_WRITE:
        write_all(data[:FIRST_WRITE])
        time.sleep(0.2)
        data = data[FIRST_WRITE:]
    write_all(data)


def main():
    pending = []  # chunks of an unfinished line: joined once, when its newline arrives
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        pending.append(chunk)
        lines = b"".join(pending).split(b"\n")
        pending = [lines.pop()]
        out = []
        # "\n" never occurs inside a UTF-8 multi-byte sequence, so decoding whole lines is safe.
        for line in b"\n".join(lines).decode("utf-8", "replace").split("\n"):
            if not line.strip():
                continue
            try:
                msg = _loads(line)
            except ValueError:
                out.append(_dumps(_error(None, -32700, "Parse error")))
                continue
            resp = handle(msg)
            if resp is not None:
                out.append(resp if isinstance(resp, str) else _dumps(resp))
        if out:
            out.append("")
            send("\n".join(out).encode("utf-8"))


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
