"""
The audit trail through the real `twistd ... mcp-gateway` command and the
`twisted-mcp audit` commands: what one record may store, and what happens
to records while the sink fails.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

from .conftest import bin_path, gateway_env, server
from .test_policy import call, policy_config, read_audit, start  # noqa: F401  (fixture)


def audit_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_path("twisted-mcp"), "audit", *args], capture_output=True, text=True, timeout=60, env=gateway_env())


def test_a_huge_tool_name_is_stored_bounded(policy_config, raw_gateway, monkeypatch, tmp_path):
    """A refused call naming a 4 MiB tool adds about a kilobyte per field to the trail, not 8 MiB."""
    path = tmp_path / "audit.jsonl"
    config = policy_config({"echo": server("echo_fast")}, audit={"sink": "file", "path": str(path)})
    gw = start(raw_gateway, monkeypatch, config)
    name = "x" * (4 << 20)
    answer = call(gw, name)
    assert answer["error"]["code"] == -32602
    assert "result" in call(gw, "echo__echo", {"text": "still serving"})
    gw.close_stdin()
    assert gw.wait(30) == 0
    assert path.stat().st_size < 16 * 1024
    [refused] = [r for r in read_audit(path) if r.get("error_code") == -32602]
    assert refused["tool"].endswith(f"…[{4 << 20} bytes, sha256:{hashlib.sha256(name.encode()).hexdigest()}]")
    assert len(refused["reason"].encode()) <= 1024
    verify = audit_command("verify", "--config", config)
    assert verify.returncode == 0, verify.stdout + verify.stderr
