"""
A client pipelining calls through a gateway that audits every call to a
file: the calls slow down to what the trail can write, and none is refused
because the trail fell behind (AuditLog.behind).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import gateway_argv, server

CALLS = 4000
IN_FLIGHT = 128


def test_a_pipelining_client_is_slowed_down_not_refused_while_the_audit_trail_catches_up(
    tmp_path: Path, raw_gateway: Any
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "gateway.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {"echo": server("echo_fast")},
                "identity": {"principal": {"name": "loader", "roles": ["user"]}},
                "roles": {"user": {"allow": ["echo__*"]}},
                # A small queue: a trail written in a batch every 50 ms is behind within a few batches.
                "audit": {"sink": "file", "path": str(audit), "maxQueue": 200},
            }
        )
    )
    gw = raw_gateway(str(config), argv=gateway_argv(str(config)))
    gw.initialize()
    tools = gw.request("tools/list")["result"]["tools"]
    assert [t["name"] for t in tools] == ["echo__echo"]

    def call(i: int) -> None:
        message = {
            "jsonrpc": "2.0",
            "id": i,
            "method": "tools/call",
            "params": {"name": "echo__echo", "arguments": {"text": f"n{i}"}},
        }
        gw.send(message)

    sent = 0
    while sent < IN_FLIGHT:
        call(sent)
        sent += 1
    answers: dict[int, dict[str, Any]] = {}
    while len(answers) < CALLS:
        message = gw.read_message(timeout=60)
        answers[message["id"]] = message
        if sent < CALLS:
            call(sent)
            sent += 1
    refused = [m for m in answers.values() if "error" in m]
    assert refused == [], refused[:3]
    assert all(answers[i]["result"]["content"][0]["text"] == f"n{i}" for i in range(CALLS))
    gw.close_stdin()
    assert gw.wait(30) == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    calls = [r for r in records if r.get("method") == "tools/call"]
    assert len(calls) == CALLS
    assert {r["outcome"] for r in calls} == {"ok"}
