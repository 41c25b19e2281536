"""
The scale-out deployment examples are valid for the tools that read them:
C{deploy/haproxy-replicas.cfg} for C{haproxy -c}, C{deploy/twisted-mcp@.service}
for C{systemd-analyze verify} (each skipped, saying so, where the tool is
not installed), and they say what the README's scale-out section promises.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "deploy")
HAPROXY = os.path.join(DEPLOY, "haproxy-replicas.cfg")
UNIT = os.path.join(DEPLOY, "twisted-mcp@.service")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def directives(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)")
def test_haproxyAcceptsTheFile() -> None:
    checked = subprocess.run(["haproxy", "-c", "-f", HAPROXY], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "[WARNING]" not in checked.stdout + checked.stderr


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)")
def test_haproxyRefusesABrokenCopy(tmp_path) -> None:
    """The check above can fail: a typo in a directive is caught."""
    broken = tmp_path / "broken.cfg"
    broken.write_text(read(HAPROXY).replace("stick match req.hdr(mcp-session-id)", "stick matchh req.hdr(mcp-session-id)"))
    checked = subprocess.run(["haproxy", "-c", "-f", str(broken)], capture_output=True, text=True, timeout=30)
    assert checked.returncode != 0


def test_haproxyAffinityHealthAndRetries() -> None:
    lines = directives(read(HAPROXY))
    for expected in (
        "balance roundrobin",
        "stick store-response res.hdr(mcp-session-id)",
        "stick match req.hdr(mcp-session-id)",
        "option redispatch",
        "option httpchk GET /readyz",
        "http-check expect status 200",
    ):
        assert expected in lines, expected
    servers = [line for line in lines if line.startswith("server ")]
    assert servers == [f"server replica{n} 127.0.0.1:808{n} check port 910{n}" for n in (1, 2, 3)]
    assert any(re.fullmatch(r"retries [1-9]", line) for line in lines)
    # SSE streams: no timeout shorter than the gateway's keep-alive comments (25 s) on an open stream.
    for kind in ("client", "server", "tunnel"):
        assert f"timeout {kind} 1h" in lines


def test_unitRunsReplicasOnOnePortEachWithItsOwnAdmin() -> None:
    text = read(UNIT)
    assert "--listen http:tcp:8080:reusePort=yes" in text
    assert "--listen http:tcp:808%i:interface=127.0.0.1" in text
    assert "--admin tcp:910%i:interface=127.0.0.1" in text
    assert "--pidfile /run/twisted-mcp/%i/twistd.pid" in text
    assert "Environment=TWISTED_MCP_REPLICA=%H-%i" in directives(text)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd units are for Linux")
def test_systemdAcceptsTheUnit(tmp_path) -> None:
    """C{systemd-analyze verify} on an instance (the binary pointed at this venv's twistd): no warning at all."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    unit = tmp_path / "twisted-mcp@.service"
    unit.write_text(read(UNIT).replace("/opt/twisted-mcp/bin/twistd", twistd))
    for name in ("twisted-mcp@.service", "twisted-mcp@2.service"):
        if name != unit.name:
            shutil.copy(unit, tmp_path / name)
        checked = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60, cwd=str(tmp_path)
        )
        assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stdout + checked.stderr
    broken = tmp_path / "broken@1.service"
    broken.write_text(read(UNIT).replace("/opt/twisted-mcp/bin/twistd", twistd).replace("Type=notify", "Type=notifyy"))
    checked = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "Failed to parse service type" in checked.stderr  # the check above can fail
