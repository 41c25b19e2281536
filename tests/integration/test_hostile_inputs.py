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
import subprocess
import time

import pytest

from .conftest import LineClient, bin_path, gateway_argv, gateway_env, server, wait_for_path

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


def alias_bomb(levels: int = 7) -> str:
    """A "billion laughs": a few hundred bytes, 9**levels nodes once expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias-bomb": (alias_bomb(), "YAML aliases expand to more than 10000 nodes (the limit)"),
    "deep-yaml": ("mcpServers: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64 levels (the limit)"),
    "deep-json": ('{"mcpServers": ' + "[" * 100000 + "]" * 100000 + "}", "nested deeper than 64 levels (the limit)"),
}


def _hostile_file(tmp_path, kind: str) -> tuple[str, str]:
    if kind == "dev-zero":
        return "/dev/zero", "/dev/zero: larger than 4 MiB (the limit for this file)"
    text, expected = HOSTILE[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    return str(path), f"{path}: {expected}"


@pytest.mark.parametrize("kind", [*HOSTILE, "dev-zero"])
def test_a_hostile_config_file_gets_one_clean_error(tmp_path, kind):
    path, expected = _hostile_file(tmp_path, kind)
    for argv in (gateway_argv(path), [bin_path("twisted-mcp"), "check-config", path]):
        out = subprocess.run(argv, env=gateway_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert out.returncode == 78, out.stderr
        problems = [line for line in out.stderr.splitlines() if line.startswith("  - ")]
        assert len(problems) == 1 and problems[0].startswith(f"  - {expected}"), out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.parametrize("url", ["https://bob:s3cret@example[com/mcp", "http://[zz]/mcp", "http://example.test:99999/mcp"])
def test_an_unreadable_server_url_gets_one_clean_error(write_config, tmp_path, url):
    """An address urlsplit refuses is a config error naming its key, not a traceback at start-up."""
    path = write_config({"api": {"type": "http", "url": url}})
    for argv in (gateway_argv(path), [bin_path("twisted-mcp"), "check-config", path]):
        out = subprocess.run(argv, env=gateway_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert out.returncode == 78, out.stderr
        problems = [line for line in out.stderr.splitlines() if line.startswith("  - ")]
        assert len(problems) == 1 and problems[0].startswith("  - mcpServers.api.url: "), out.stderr
        assert "Traceback" not in out.stderr and "s3cret" not in out.stderr


def test_a_bomb_reloaded_by_sighup_is_rejected_and_nobody_waits(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    pid, log = daemon({"e": server("echo_fast")}, f"unix:{sock}")
    wait_for_path(sock)
    client = _connect(sock)
    assert [t["name"] for t in client.request(1, "tools/list")["result"]["tools"]] == ["e__echo"]

    (tmp_path / "gateway.yaml").write_text(alias_bomb(levels=9))
    os.kill(pid, signal.SIGHUP)
    for rid in range(2, 20):
        assert client.request(rid, "ping") == {"jsonrpc": "2.0", "id": rid, "result": {}}
    answer = client.request(20, "tools/call", {"name": "e__echo", "arguments": {"text": "still here"}})
    assert answer["result"]["content"][0]["text"] == "still here"
    rejected = "YAML aliases expand to more than 10000 nodes (the limit)"
    deadline = time.monotonic() + PROMPT
    while True:  # the rejection is logged once the worker thread is done
        with open(log) as f:
            text = f.read()
        if rejected in text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "reload rejected, the running configuration stays" in text and rejected in text
    client.close()
