"""
A large answer is sent on with its server's own bytes under the client's
id (issue 16), through the real `twistd -n --pidfile= mcp-gateway`: the
echo server spaces its result as no encoder of the gateway would, so what
the client reads tells a copy from a re-encoding.
"""

from __future__ import annotations

import json

from twisted_mcp.wire.jsonrpc import KEEP_RESULT_BYTES

from .conftest import server

SPACED = {"ECHO_RESULT_SPACING": "1"}
MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def answer_line(raw: bytes, rid: object) -> bytes:
    """The line of the answer to C{rid} in what the gateway wrote."""
    marker = b'"id":' + json.dumps(rid).encode() + b',"result"'
    start = raw.index(marker)
    return raw[raw.rindex(b"\n", 0, start) + 1 : raw.index(b"\n", start)]


def test_a_large_answer_keeps_the_servers_bytes_under_the_clients_id(raw_gateway, write_config):
    gw = raw_gateway(write_config({"echo": server("echo_fast", env=SPACED)}))
    gw.initialize()
    text = "0123456789" * (KEEP_RESULT_BYTES // 10 + 100)
    for rid in ("big-1", 2**70, 7.0):
        gw.send({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "echo__echo", "arguments": {"text": text}}})
        out = gw.response(rid)
        assert out["result"] == {"content": [{"type": "text", "text": text}]}
        line = answer_line(gw.raw, rid)
        assert line.startswith(b'{"jsonrpc":"2.0","id":' + json.dumps(rid).encode() + b',"result":{"content": [{"type": "text", "text": "0123')
    # A small answer is encoded by the gateway, as before (no spaces).
    small = gw.request("tools/call", {"name": "echo__echo", "arguments": {"text": "hi"}})
    assert small["result"]["content"][0]["text"] == "hi"
    assert answer_line(gw.raw, small["id"]).endswith(b'"result":{"content":[{"type":"text","text":"hi"}]}}')


def test_a_stateless_era_answer_is_written_with_its_envelope(raw_gateway, write_config):
    # The result changes on the way (resultType, the gateway in _meta): encoded again, whole.
    gw = raw_gateway(write_config({"echo": server("echo_fast", env=SPACED)}))
    text = "x" * (KEEP_RESULT_BYTES + 10)
    # A first request says the era (before it, a message may be no longer than maxHandshakeBytes).
    assert gw.request("tools/list", {"_meta": MODERN_META})["result"]["tools"]
    out = gw.request("tools/call", {"name": "echo__echo", "arguments": {"text": text}, "_meta": MODERN_META})
    result = out["result"]
    assert result["content"] == [{"type": "text", "text": text}]
    assert result["resultType"] == "complete"
    assert b'"content": [' not in answer_line(gw.raw, out["id"])
