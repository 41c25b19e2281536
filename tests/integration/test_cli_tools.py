"""
`twisted-mcp tools` (design §7.1) through the real command: with
`--config` it starts generated backends (tests/servers/many_tools.py, 100
tools each) itself; with `--admin` it asks a running `twistd mcp-gateway`
daemon, and what it prints is what the official SDK client lists through
that daemon.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from mcp_types import Implementation

from tests import mcpclient as mc

from .conftest import bin_path, gateway_env, server, until, wait_for_path
from .surface_helpers import connect_socket

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")


def backends(count: int = 5) -> dict:
    return {f"gen{i}": server("many_tools", env={"MANY_TOOLS_SEED": str(i)}, protocol="legacy") for i in range(count)}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path("twisted-mcp"), "tools", *args], capture_output=True, text=True, timeout=120, env=gateway_env())


def test_cursor_gets_search_mode_and_the_budget_says_where_it_came_from(write_config):
    config = write_config(backends())
    shown = cli("--config", config, "--client", "cursor-vscode")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "mode: search: 2 tool(s) listed of 500 the principal may use (500 in the view)" in lines
    assert "  maxTools: 40  (built-in Cursor (cursor*))" in lines
    assert "  nameOverhead: 17  (built-in Cursor (cursor*), plus clients.serverKeyLength 16)" in lines
    assert any(line.startswith("  built-in Cursor (cursor*) rests on: count: user reports only") for line in lines)
    listed = lines[lines.index("tools listed:") + 1 : lines.index("every tool the principal may use (found with search):")]
    assert listed == ["     1  search_tools  (the gateway's own)  [gateway]", "     2  call_tool  (the gateway's own)  [gateway]"]
    # Below it, all 500, long names with the alias this client gets.
    everything = lines[lines.index("every tool the principal may use (found with search):") + 1 :]
    assert len(everything) == 500
    assert any("(alias of gen0__" in line for line in everything)


def test_search_ranks_the_expected_tool_first(write_config):
    config = write_config(backends(2))
    found = cli("--config", config, "--search", "delete item", "--limit", "3", "--explain", "--json")
    assert found.returncode == 0, found.stderr
    search = json.loads(found.stdout)["search"]
    assert search["total"] == 200 and search["limit"] == 3
    first = search["results"][0]
    assert first["tool"] == "delete_item" and first["rank"] == 1
    assert set(first["explain"]) >= {"name", "description"}
    assert [r["score"] for r in search["results"]] == sorted((r["score"] for r in search["results"]), reverse=True)


def test_usage_and_config_errors(write_config, tmp_path):
    config = write_config(backends(1))
    with open(config) as f:
        data = json.load(f)
    data["profiles"] = {"ops": {"tools": ["gen0__delete_*"]}}
    with open(config, "w") as f:
        json.dump(data, f)
    unknown = cli("--config", config, "--profile", "nope")
    assert unknown.returncode == 64
    assert "--profile nope: no such profile (profiles: ops)" in unknown.stderr
    nobody = cli("--config", config, "--principal", "mallory")
    assert nobody.returncode == 64 and "no identity is configured" in nobody.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcpServers: {broken: {command: 7}}\n")
    broken = cli("--config", str(bad))
    assert broken.returncode == 78 and "mcpServers.broken.command" in broken.stderr


def test_a_server_that_does_not_come_up_is_named(write_config):
    config = write_config({**backends(1), "down": {"command": "/bin/false"}})
    shown = cli("--config", config, "--json")
    assert shown.returncode == 69
    assert "these servers are not up, and their tools are not shown: down" in shown.stderr
    # What the others offer is still printed.
    report = json.loads(shown.stdout)
    assert report["down"] == ["down"] and report["visible"] == 100


@pytest.mark.parametrize("client", ["claude-code", "cursor-vscode"])
def test_admin_prints_what_the_sdk_client_lists(daemon, tmp_path, client):
    sock = str(tmp_path / "gw.sock")
    admin = f"unix:{tmp_path / 'admin.sock'}"
    daemon(backends(2), f"unix:{sock}", admin=admin)
    wait_for_path(sock)

    def report() -> dict:
        asked = cli("--admin", admin, "--client", client, "--json")
        assert asked.returncode == 0, asked.stderr
        return json.loads(asked.stdout)

    until(lambda: report()["ready"] and report()["visible"] == 200, timeout=60, what="the daemon's discovery")

    async def listed() -> list[str]:
        async with connect_socket(sock, tmp_path, client, client_info=Implementation(name=client, version="1.0")) as c:
            return await mc.tool_names(c)

    seen = mc.run(listed, timeout=120)
    shown = report()
    assert [row["name"] for row in shown["surface"]] == seen
    if client == "cursor-vscode":
        assert seen == ["search_tools", "call_tool"] and shown["mode"] == "search"
    else:
        # Claude Code's mcp__<key>__<tool> within 64: some names are aliases.
        assert shown["mode"] == "full" and len(seen) == 200
        assert any(row["name"] != row["shaped"] for row in shown["surface"])
    text = cli("--admin", admin, "--client", client)
    assert text.returncode == 0 and f"client: {client}" in text.stdout
