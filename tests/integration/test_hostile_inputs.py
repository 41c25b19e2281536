"""
Hostile input through the real daemon (`twistd ... mcp-gateway --listen`):
an argument built to make a backtracking regex run for hours, and config
files built to exhaust time or memory.  Another client connected to the
same daemon is answered all along.
"""

from __future__ import annotations

import json
import os
import signal

from .conftest import LineClient, server, wait_for_path

#: How long the other client may wait for its answer: generous, because it
#: only has to tell "answered" from "stuck for hours".
PROMPT = 10.0


def _connect(sock: str) -> LineClient:
    client = LineClient(sock)
    client.sock.settimeout(PROMPT)
    client.initialize()
    return client


def test_a_catastrophic_pattern_does_not_stall_other_clients(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    evil = {"pattern": "^(a+)+$"}
    daemon(
        {"e": server("echo_fast", env={"ECHO_TEXT_SCHEMA": json.dumps(evil)})},
        f"unix:{sock}",
        extra={"breaker": {"failures": 5, "openSeconds": 30}},  # any policy section turns argument checks on
    )
    wait_for_path(sock)
    attacker, other = _connect(sock), _connect(sock)
    assert [t["name"] for t in other.request(1, "tools/list")["result"]["tools"]] == ["e__echo"]

    attacker.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "e__echo", "arguments": {"text": "a" * 40 + "!"}}})
    assert other.request(2, "ping") == {"jsonrpc": "2.0", "id": 2, "result": {}}
    refused = attacker.answer(1)
    assert refused["error"]["code"] == -32602 and refused["error"]["data"]["path"] == "/text"
    fine = other.request(3, "tools/call", {"name": "e__echo", "arguments": {"text": "aaaa"}})
    assert fine["result"]["content"][0]["text"] == "aaaa"
    attacker.close()
    other.close()
