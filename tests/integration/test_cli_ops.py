"""
The `twisted-mcp` command against real files and a real daemon: `import`
of MCP client configs, then `check-config` and a gateway started on the
result; `status`, `reload`, `kill` through the admin endpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from tests import mcpclient as mc
from twisted_mcp.mcp import errors

from .conftest import (
    PYTHON,
    SERVERS,
    LineClient,
    bin_path,
    free_port,
    gateway_argv,
    gateway_env,
    server,
    wait_for_path,
    wait_gone,
)

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "clients")
FIXTURES = [
    "claude_desktop_config.json",
    "claude.json",
    "claude-code-project/.mcp.json",
    "cursor/.cursor/mcp.json",
    "vscode/.vscode/mcp.json",
    "vscode-user/settings.json",
]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path("twisted-mcp"), *args], capture_output=True, text=True, timeout=60, env=env or gateway_env())


@pytest.mark.parametrize("name", FIXTURES)
def test_import_then_check_config_on_real_client_files(tmp_path, name):
    out = tmp_path / "gateway.yaml"
    imported = _cli("import", os.path.join(DATA, name), "-o", str(out))
    assert imported.returncode == 0, imported.stderr
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    text = out.read_text()
    # The variables a daemon must be given (VS Code inputs and the like) are set for the check.
    env = gateway_env()
    for var in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)):  # no :-default
        env.setdefault(var, "placeholder")
    checked = _cli("check-config", str(out), env=env)
    assert checked.returncode == 0, checked.stderr + text
    assert "OK" in checked.stdout


def test_an_imported_claude_desktop_config_runs_in_the_gateway(tmp_path):
    desktop = tmp_path / "claude_desktop_config.json"
    desktop.write_text(json.dumps({
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {
            "time": {"command": bin_path("mcp-server-time"), "args": ["--local-timezone", "UTC"]},
            "my echo": {"command": PYTHON, "args": [os.path.join(SERVERS, "echo_fast.py")], "env": {"ECHO_TOKEN": "t0p-s3cret"}},
        },
    }))
    out = tmp_path / "gateway.yaml"
    imported = _cli("import", str(desktop), "-o", str(out))
    assert imported.returncode == 0, imported.stderr
    assert "t0p-s3cret" not in imported.stderr + imported.stdout
    assert "my echo" in imported.stderr  # the rename is reported

    async def scenario():
        async with mc.connect(gateway_argv(str(out)), env=gateway_env()) as client:
            names = await mc.tool_names(client)
            assert "time__get_current_time" in names
            echo = [n for n in names if n.endswith("__echo")]
            assert len(echo) == 1
            assert await mc.call_text(client, echo[0], {"text": "imported"}) == "imported"

    mc.run(scenario, timeout=90)


def test_status_reload_and_kill_from_the_command_line(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    admin = f"tcp:{port}:interface=127.0.0.1"
    pidfile = str(tmp_path / "gw.pid")
    pid, log = daemon({"echo": server("echo_fast")}, f"unix:{sock}", admin=admin, adminToken="cli-token-123")
    wait_for_path(sock)
    env = gateway_env()
    env["TWISTED_MCP_ADMIN_TOKEN"] = "cli-token-123"
    c = LineClient(sock)
    c.initialize()
    c.request(1, "tools/list")

    status = _cli("status", "--admin", admin, "--json", env=env)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert [b["name"] for b in data["backends"]] == ["echo"] and data["backends"][0]["tools"] == ["echo__echo"]
    assert len(data["clients"]) == 1
    assert _cli("status", "--admin", admin).returncode == 77  # no token

    killed = _cli("kill", "--admin", admin, "--tool", "echo__echo", env=env)
    assert killed.returncode == 0, killed.stderr
    assert c.request(2, "tools/call", {"name": "echo__echo", "arguments": {"text": "x"}})["error"]["code"] == errors.TOOL_DISABLED
    assert _cli("kill", "--admin", admin, "--tool", "echo__echo", "--off", env=env).returncode == 0

    config = tmp_path / "gateway.yaml"
    good = config.read_text()
    config.write_text("mcpServers: {broken: {command: 7}}\n")
    rejected = _cli("reload", "--admin", admin, env=env)
    assert rejected.returncode == 78 and "mcpServers.broken.command" in rejected.stdout + rejected.stderr
    data = json.loads(good)
    data["mcpServers"]["echo2"] = server("echo_fast")
    config.write_text(json.dumps(data))
    applied = _cli("reload", "--admin", admin, env=env)
    assert applied.returncode == 0 and "backend echo2: added" in applied.stdout + applied.stderr
    assert _cli("reload", "--pidfile", pidfile).returncode == 0  # SIGHUP: nothing changed now
    assert "echo__echo" in json.dumps(c.request(3, "tools/list")["result"])
    c.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()
    with open(log) as f:
        text = f.read()
    assert "received SIGHUP" in text and "cli-token-123" not in text


def test_the_run_time_kill_switch_is_capped(daemon, tmp_path):
    """gateway.maxKillSwitchEntries: POST /kill beyond it is refused with a
    reason, the entries already thrown stay, and a release makes room."""
    sock = str(tmp_path / "gw.sock")
    admin = f"unix:{tmp_path / 'admin.sock'}"
    pid, log = daemon({"echo": server("echo_fast")}, f"unix:{sock}", admin=admin, maxKillSwitchEntries=2)
    wait_for_path(sock)
    assert _cli("kill", "--admin", admin, "--principal", "mallory").returncode == 0
    assert _cli("kill", "--admin", admin, "--tool", "echo__*").returncode == 0
    refused = _cli("kill", "--admin", admin, "--principal", "eve")
    assert refused.returncode == 65, refused.stderr
    assert "holds 2 run-time entries, its cap (gateway.maxKillSwitchEntries)" in refused.stderr
    assert _cli("kill", "--admin", admin, "--principal", "mallory", "--off").returncode == 0
    assert _cli("kill", "--admin", admin, "--principal", "eve").returncode == 0
    status = json.loads(_cli("status", "--admin", admin, "--json").stdout)
    assert status["killSwitch"] == {"principals": ["eve"], "backends": [], "tools": ["echo__*"]}
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()
    with open(log) as f:
        assert "kill switch not thrown for principal eve" in f.read()


def test_status_lists_a_huge_client_info_cut(daemon, tmp_path):
    """A client's clientInfo as large as an initialize may be: the daemon
    keeps and shows 256 characters of its name and of its version."""
    sock = str(tmp_path / "gw.sock")
    admin = f"unix:{tmp_path / 'admin.sock'}"
    pid, _ = daemon({"echo": server("echo_fast")}, f"unix:{sock}", admin=admin)
    wait_for_path(sock)
    c = LineClient(sock)
    c.initialize(name="n" * 60_000)
    status = _cli("status", "--admin", admin, "--json")
    assert status.returncode == 0, status.stderr
    assert [client["client"] for client in json.loads(status.stdout)["clients"]] == ["n" * 256 + " 1"]
    c.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()
