"""
A minimal, fast stdio MCP server of both eras (benchmark backend): the
echo server of tests/servers/echo_fast.py (its read loop, its tool, its
answers to handshake-era requests), which also speaks MCP 2026-07-28.

A request whose C{params._meta} carries C{io.modelcontextprotocol/protocolVersion}
is a stateless-era one, judged on its own (no handshake, no session):

  an unknown version -> -32022 with the versions it speaks
  server/discover    -> supportedVersions, capabilities {"tools": {}}, serverInfo
  tools/list         -> the echo tool, resultType "complete", ttlMs 0, cacheScope "public"
  tools/call         -> echo's answer, resultType "complete"
  anything else      -> -32601

Every other message is echo_fast's (C{initialize}, then handshake-era calls).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "servers"))

import echo_fast  # noqa: E402

VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
MODERN_VERSIONS = ("2026-07-28",)
SUPPORTED = list(MODERN_VERSIONS + echo_fast.VERSIONS[::-1])
DISCOVER = {
    "resultType": "complete",
    "supportedVersions": SUPPORTED,
    "capabilities": {"tools": {}},
    "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "echo_dual", "version": "1.0"}},
    "ttlMs": 0,
    "cacheScope": "public",
}
TOOLS_LIST = {**echo_fast.TOOLS_LIST, "resultType": "complete", "ttlMs": 0, "cacheScope": "public"}
_HANDSHAKE_ERA = echo_fast.handle


def handle(msg):
    """The answer to one message (a dict, or an already serialized str), or None."""
    params = msg.get("params") if type(msg) is dict else None
    meta = params.get("_meta") if type(params) is dict else None
    if type(meta) is not dict or VERSION_KEY not in meta or "id" not in msg:
        return _HANDSHAKE_ERA(msg)
    rid, method, version = msg["id"], msg.get("method"), meta[VERSION_KEY]
    if version not in MODERN_VERSIONS:
        error = {"code": -32022, "message": "Unsupported protocol version", "data": {"supported": SUPPORTED, "requested": version}}
        return {"jsonrpc": "2.0", "id": rid, "error": error}
    if method == "tools/call":
        answer = _HANDSHAKE_ERA(msg)
        if type(answer) is str:  # the echo, pre-serialized: {"jsonrpc":"2.0","id":N,"result":{"content":...}}
            return answer.replace('"result":{', '"result":{"resultType":"complete",', 1)
        return answer  # an error
    if method == "server/discover":
        return {"jsonrpc": "2.0", "id": rid, "result": DISCOVER}
    if method == "tools/list":
        return {"jsonrpc": "2.0", "id": rid, "result": TOOLS_LIST}
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"Method not found: {method}"}}


if __name__ == "__main__":
    echo_fast.handle = handle  # echo_fast's read loop answers with this
    try:
        echo_fast.main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
