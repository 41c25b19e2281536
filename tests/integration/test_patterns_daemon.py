"""
Tool patterns and the kill switch through the real command line:
`twisted-mcp check-config` refuses a malformed pattern, deny rules and the
kill switch with character ranges in a daemon's config and in
`POST /kill` mean what they say, `POST /kill` for a backend matches
its name as the config does and refuses an unknown one, and a flood of
refused calls writes a bounded number of audit records and log lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

from twisted_mcp.mcp import errors

from .conftest import LineClient, bin_path, free_port, server, until, wait_for_path, wait_gone
from .test_daemon_ops import ADMIN_TOKEN, _admin


def test_check_config_refuses_malformed_patterns(write_config, tmp_path):
    config = write_config({"echo": server("echo_fast")})
    with open(config) as f:
        data = json.load(f)
    data["roles"] = {"dev": {"allow": ["echo__[a-f"], "deny": ["echo__[f-a]*"]}}
    data["killSwitch"] = {"tools": ["echo__x]"], "backends": ["nope"]}
    with open(config, "w") as f:
        json.dump(data, f)
    out = subprocess.run([bin_path("twisted-mcp"), "check-config", config], capture_output=True, text=True, timeout=60)
    assert out.returncode == 78, out.stdout + out.stderr
    for fragment in (
        "roles.dev.allow[0]: 'echo__[a-f' is not a valid pattern: the '[' at position 7 is never closed",
        "roles.dev.deny[0]: 'echo__[f-a]*' is not a valid pattern: the range f-a is backwards",
        "killSwitch.tools[0]: 'echo__x]' is not a valid pattern",
        "killSwitch.backends: no server named 'nope' in mcpServers (known: echo)",
    ):
        assert fragment in out.stderr, out.stderr


def test_check_config_checks_the_roles_over_prompts_resources_and_server_requests(write_config):
    """
    The new keys of a role and of the kill switch are checked as the old
    ones: each problem with its key path; the same keys written right pass.
    """
    config = write_config({"echo": server("echo_fast")})
    with open(config) as f:
        data = json.load(f)
    data["roles"] = {
        "viewer": {
            "prompts": ["echo__*"],
            "resources": {"allow": ["file:///srv/[z-a]"], "grant": ["x"]},
            "serverRequests": {"sampling": {"deny": ["nope"]}, "logging": {"deny": ["echo"]}},
        }
    }
    data["killSwitch"] = {"resources": ["file:///x]"], "templates": []}
    with open(config, "w") as f:
        json.dump(data, f)
    out = subprocess.run([bin_path("twisted-mcp"), "check-config", config], capture_output=True, text=True, timeout=60)
    assert out.returncode == 78, out.stdout + out.stderr
    for fragment in (
        "roles.viewer.prompts: expected a mapping with allow and/or deny (each a list of prompt-name patterns), got list",
        "roles.viewer.resources.allow[0]: 'file:///srv/[z-a]' is not a valid pattern: the range z-a is backwards",
        "roles.viewer.resources.grant: unknown key",
        "roles.viewer.serverRequests.sampling.deny[0]: no server named 'nope' in mcpServers (known: echo)",
        "roles.viewer.serverRequests.logging: unknown key (expected one of: sampling, elicitation, roots)",
        "killSwitch.resources[0]: 'file:///x]' is not a valid pattern",
        "killSwitch.templates: unknown key",
    ):
        assert fragment in out.stderr, out.stderr
    data["roles"] = {
        "viewer": {
            "allow": ["echo"],
            "prompts": {"allow": ["echo__*"]},
            "resources": {"allow": ["file:///srv/docs/*", "echo"], "deny": ["*secret*"]},
            "serverRequests": {"sampling": {"deny": ["*"]}, "roots": {"allow": ["echo"]}},
        }
    }
    data["killSwitch"] = {"prompts": ["echo__old_*"], "resources": ["file:///srv/private/*"]}
    with open(config, "w") as f:
        json.dump(data, f)
    out = subprocess.run([bin_path("twisted-mcp"), "check-config", config], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _start(daemon, tmp_path, **extra):
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    identity = {"peers": [{"uid": os.getuid(), "name": "me", "roles": ["dev"]}]}
    pid, _ = daemon(
        {"echo": server("echo_fast"), "echo2": server("echo_fast"), "Echo-3": server("echo_fast")},
        f"unix:{sock}",
        admin=f"tcp:{port}:interface=127.0.0.1",
        extra={"identity": identity, **extra},
        adminToken=ADMIN_TOKEN,
    )
    wait_for_path(sock)
    c = LineClient(sock)
    c.initialize()
    call = lambda rid, name: c.request(rid, "tools/call", {"name": name, "arguments": {"text": "x"}})  # noqa: E731
    return pid, port, c, call


def _stop(pid, c):
    c.close()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()


def test_ranges_in_a_deny_rule_and_in_the_run_time_kill_switch(daemon, tmp_path):
    pid, port, c, call = _start(daemon, tmp_path, roles={"dev": {"allow": ["*"], "deny": ["echo__[d-f]*"]}})
    # The deny rule's range hides and refuses echo__echo; echo2__echo is not covered.
    assert [t["name"] for t in c.request(1, "tools/list")["result"]["tools"]] == ["Echo-3__echo", "echo2__echo"]
    assert call(2, "echo__echo")["error"]["code"] == errors.ACCESS_DENIED
    assert call(3, "echo2__echo")["result"]["content"][0]["text"] == "x"

    # A range in a run-time kill switch, folded: [A-F] covers the e of echo.
    status, body = _admin(port, "/kill", {"kind": "tool", "name": "echo2__[A-F]*"})
    assert status == 200 and json.loads(body)["tools"] == ["echo2__[A-F]*"]
    assert call(4, "echo2__echo")["error"]["code"] == errors.TOOL_DISABLED
    assert call(5, "Echo-3__echo")["result"]["content"][0]["text"] == "x"
    assert _admin(port, "/kill", {"kind": "tool", "name": "echo2__[A-F]*", "disabled": False})[0] == 200
    assert call(6, "echo2__echo")["result"]["content"][0]["text"] == "x"

    # A malformed pattern is refused, and nothing changes.
    status, body = _admin(port, "/kill", {"kind": "tool", "name": "echo2__[e"})
    assert status == 400 and "never closed" in json.loads(body)["error"]
    assert json.loads(_admin(port, "/kill")[1])["tools"] == []
    _stop(pid, c)


def test_post_kill_names_a_backend_as_the_config_does_and_refuses_unknown_ones(daemon, tmp_path):
    pid, port, c, call = _start(daemon, tmp_path, roles={"dev": {"allow": ["*"]}}, killSwitch={"backends": ["echo_3"]})
    assert call(1, "Echo-3__echo")["error"]["code"] == errors.BACKEND_DISABLED  # killSwitch.backends folds like deny rules
    assert call(2, "echo2__echo")["result"]["content"][0]["text"] == "x"

    status, body = _admin(port, "/kill", {"kind": "backend", "name": "ECHO2"})
    assert status == 200 and json.loads(body)["backends"] == ["Echo-3", "echo2"]
    assert call(3, "echo2__echo")["error"]["code"] == errors.BACKEND_DISABLED
    status, body = _admin(port, "/kill", {"kind": "backend", "name": "nope"})
    assert status == 404
    assert json.loads(body)["error"] == "no backend named 'nope' (known backends: Echo-3, echo, echo2)"
    assert json.loads(_admin(port, "/kill")[1])["backends"] == ["Echo-3", "echo2"]
    assert _admin(port, "/kill", {"kind": "backend", "name": "Echo2", "disabled": False})[0] == 200
    assert call(4, "echo2__echo")["result"]["content"][0]["text"] == "x"
    assert call(5, "echo__echo")["result"]["content"][0]["text"] == "x"
    _stop(pid, c)


def _audit_records(path) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def test_a_flood_of_refusals_is_audited_and_logged_within_a_budget(daemon, tmp_path):
    audit = tmp_path / "audit.jsonl"
    pid, port, c, call = _start(
        daemon,
        tmp_path,
        roles={"dev": {"allow": ["echo"]}},
        limits={"refusals": {"rate": 0.001, "burst": 5, "reportSeconds": 2}},
        audit={"sink": "file", "path": str(audit)},
    )
    # Every refused call is answered as refused; none reaches the backend.
    for rid in range(1, 101):
        assert call(rid, "echo2__echo")["error"]["code"] == errors.ACCESS_DENIED
    assert call(101, "echo__echo")["result"]["content"][0]["text"] == "x"

    def report():
        return [r for r in _audit_records(audit) if r["method"] == "policy/refusals-suppressed"]

    until(report, timeout=30, what="the report of suppressed refusals")
    records = _audit_records(audit)
    denied = [r for r in records if r["method"] == "tools/call" and r["decision"] == "deny"]
    assert len(denied) == 5
    (summary,) = report()
    assert summary["principal"] == "me" and "95 refusal(s) over the limit (limits.refusals)" in summary["reason"]
    assert [r for r in records if r["method"] == "tools/call" and r["decision"] == "allow"][0]["tool"] == "echo__echo"
    # Refusals counted when the gateway stops are reported before the trail closes.
    for rid in range(200, 210):
        assert call(rid, "echo2__echo")["error"]["code"] == errors.ACCESS_DENIED
    _stop(pid, c)
    assert "10 refusal(s) over the limit" in report()[-1]["reason"]
    with open(tmp_path / "gw.log") as f:
        text = f.read()
    assert text.count("principal me: 95 refusal(s) over the limit") == 1
    verify = subprocess.run(
        [bin_path("twisted-mcp"), "audit", "verify", "--config", str(tmp_path / "gateway.yaml")], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
