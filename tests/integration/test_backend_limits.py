"""
Backends under pressure, through the real daemonized `twistd ... mcp-gateway
--listen ...`: credentials in an HTTP backend's address, a busy shared
stdio backend, caps on per-session instances, and descendants that start
sessions of their own.
"""

from __future__ import annotations

import base64
import subprocess

from .conftest import LineClient, bin_path, free_port, gateway_env, server, wait_for_path
from .test_daemon_ops import ADMIN_TOKEN, _admin, _text, _until
from .test_http import http_server  # noqa: F401 (a fixture)


def test_url_credentials_authenticate_and_are_never_shown(daemon, http_server, write_config, tmp_path):  # noqa: F811
    remote = http_server("http_faults")
    closed = free_port()
    secrets = ("s3cret-pw", "SECRETPATHTOKEN", "QUERYSECRET")
    servers = {
        "auth": {"url": f"http://alice:s3cret-pw@127.0.0.1:{remote.port}/mcp"},
        "hidden": {"url": f"http://bob:s3cret-pw@127.0.0.1:{closed}/mcp/SECRETPATHTOKEN?key=QUERYSECRET"},
    }
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    pid, log = daemon(servers, f"unix:{sock}", admin=f"tcp:{port}:interface=127.0.0.1", adminToken=ADMIN_TOKEN)
    wait_for_path(sock)
    client = LineClient(sock)
    client.initialize()
    assert _text(client.request(1, "tools/call", {"name": "auth__echo", "arguments": {"text": "hi"}})) == "hi"
    assert remote.admin("stats")["last_authorization"] == "Basic " + base64.b64encode(b"alice:s3cret-pw").decode()

    status = _until(lambda: (s := _admin(port, "/status"))[0] == 200 and "cannot connect" in s[1] and s[1], what="/status")
    _, page = _admin(port, "/status?format=html")
    _, metrics = _admin(port, "/metrics")
    with open(log) as f:
        logged = f.read()
    assert "cannot connect to http://127.0.0.1" in logged
    checked = subprocess.run(
        [bin_path("twisted-mcp"), "check-config", write_config(servers)],
        capture_output=True, text=True, timeout=60, env=gateway_env(),
    )
    assert checked.returncode == 0, checked.stderr
    for where, text in (("/status", status), ("status page", page), ("/metrics", metrics), ("log", logged),
                        ("check-config", checked.stdout + checked.stderr)):
        for secret in secrets:
            assert secret not in text, f"{secret} shown in {where}"
    client.close()
