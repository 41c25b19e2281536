"""
Several gateway processes on one port (C{--listen ...:reusePort=yes},
SO_REUSEPORT, Linux): two real C{twistd -n mcp-gateway} processes listen
on the same HTTP port, the official C{mcp} SDK client connects again and
again (a stateless-era client: no session to keep on one process), every
call is answered, and each process's own admin C{/metrics} shows it served
some of them.  A third process without C{reusePort} cannot take the port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests import mcpclient as mc

from .conftest import bin_path, free_port, gateway_env, server, wait_gone

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections only on Linux"),
    pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning"),
]

CONNECTIONS = 16


def start(tmp_path, config: str, name: str, *listen: str, admin: int | None = None) -> subprocess.Popen:
    argv = [bin_path("twistd"), "-n", "--pidfile=", "mcp-gateway", "--config", config]
    for endpoint in listen:
        argv += ["--listen", endpoint]
    if admin is not None:
        argv += ["--admin", f"tcp:{admin}:interface=127.0.0.1"]
    errlog = open(tmp_path / f"{name}.log", "wb")
    try:
        return subprocess.Popen(
            argv,
            env=gateway_env(),
            cwd=str(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=errlog,
            stderr=errlog,
            start_new_session=True,
        )
    finally:
        errlog.close()


def served_calls(admin: int) -> int:
    """Tool calls this process answered, from its own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("twisted_mcp_requests_total{") and 'method="tools/call"' in line and 'outcome="ok"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def ready(admin: int, proc: subprocess.Popen, log: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, f"the gateway exited ({proc.returncode}):\n{open(log).read()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the gateway never became ready"
        time.sleep(0.1)


def test_twoProcessesShareOnePort(tmp_path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"mcpServers": {"echo": server("echo_fast")}}))
    port = free_port()
    listen = f"http:tcp:{port}:interface=127.0.0.1:reusePort=yes"
    admins = [free_port(), free_port()]
    procs = [start(tmp_path, str(config), f"gw{n}", listen, admin=admin) for n, admin in enumerate(admins)]
    try:
        for n, (proc, admin) in enumerate(zip(procs, admins, strict=True)):
            ready(admin, proc, str(tmp_path / f"gw{n}.log"))

        async def scenario() -> list[str]:
            texts = []
            for n in range(CONNECTIONS):  # a new client, so a new connection, each time
                async with mc.connect_http(f"http://127.0.0.1:{port}/mcp", mode="2026-07-28") as client:
                    texts.append(await mc.call_text(client, "echo__echo", {"text": f"call {n}"}))
            return texts

        assert mc.run(scenario, timeout=120) == [f"call {n}" for n in range(CONNECTIONS)]
        served = [served_calls(admin) for admin in admins]
        assert sum(served) == CONNECTIONS, served
        assert all(count > 0 for count in served), f"one process served every connection: {served}"

        # A process that does not set SO_REUSEPORT cannot take the port from them: start-up fails, loudly.
        plain = start(tmp_path, str(config), "plain", f"http:tcp:{port}:interface=127.0.0.1")
        assert plain.wait(60) == 69
        assert "Address already in use" in (tmp_path / "plain.log").read_text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        left = wait_gone({p.pid for p in procs}, 30.0)
        for pid in left:
            os.killpg(pid, signal.SIGKILL)
    for n, proc in enumerate(procs):
        assert proc.wait(10) == 0, (tmp_path / f"gw{n}.log").read_text()[-3000:]
    assert not re.search(r"Unhandled|Traceback", (tmp_path / "gw0.log").read_text() + (tmp_path / "gw1.log").read_text())


def test_aBadReusePortValueStopsStartUp(tmp_path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"mcpServers": {"echo": server("echo_fast")}}))
    proc = start(tmp_path, str(config), "bad", f"http:tcp:{free_port()}:reusePort=maybe")
    assert proc.wait(60) == 64
    assert "reusePort must be yes or no, not 'maybe'" in (tmp_path / "bad.log").read_text()
