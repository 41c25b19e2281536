"""
The admin endpoint's own limits, through the real daemon (`twistd ...
mcp-gateway --listen ... --admin tcp:PORT:interface=127.0.0.1`): requests
refused from their head before any body is read, the Host check against DNS
rebinding, its connection cap and idle timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from .conftest import LineClient, free_port, read_until_closed, server, until, wait_for_path, wait_gone


def _http(port: int, head: str, timeout: float = 10.0) -> bytes:
    """Send a request head (no body) and read the answer until the gateway closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        return read_until_closed(s, timeout)


def test_admin_refuses_before_the_body_checks_host_and_caps_connections(daemon, tmp_path):
    sock = str(tmp_path / "gw.sock")
    port = free_port()
    pid, log = daemon(
        {"crashy": server("crashy")}, f"unix:{sock}", admin=f"tcp:{port}:interface=127.0.0.1",
        adminToken="t0ken", adminMaxConnections=3, adminTimeout=1,
    )
    wait_for_path(sock)
    until(lambda: _try_http(port, f"GET /healthz HTTP/1.1\nHost: 127.0.0.1:{port}\nAuthorization: Bearer t0ken\n"), what="the admin endpoint")
    host = f"Host: 127.0.0.1:{port}"
    post = f"POST /reload HTTP/1.1\n{host}\nContent-Type: application/json\n"
    # A 90 MiB body announced without the token: 401 at once, the body never read.
    answer = _http(port, post + "Content-Length: 94371840\n")
    assert answer.startswith(b"HTTP/1.1 401 ")
    # With the token, a body over adminMaxBodyBytes: 413, unread.
    answer = _http(port, post + "Authorization: Bearer t0ken\nContent-Length: 1048576\n")
    assert answer.startswith(b"HTTP/1.1 413 ") and b"adminMaxBodyBytes" in answer
    # DNS rebinding: a page whose name now points at 127.0.0.1 sends its own name.
    answer = _http(port, f"GET /status HTTP/1.1\nHost: attacker.example:{port}\nAuthorization: Bearer t0ken\n")
    assert answer.startswith(b"HTTP/1.1 421 ")
    for name in ("localhost", "127.0.0.1", "LOCALHOST"):
        answer = _http(port, f"GET /status?format=json HTTP/1.1\nHost: {name}:{port}\nAuthorization: Bearer t0ken\nConnection: close\n")
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]

    # Its own connection cap: idle connections up to it, the next gets 503 ...
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    time.sleep(0.3)
    answer = _http(port, f"GET /healthz HTTP/1.1\n{host}\nAuthorization: Bearer t0ken\n")
    assert answer.startswith(b"HTTP/1.1 503 ") and b"adminMaxConnections" in answer
    # ... and idle ones are closed after adminTimeout, freeing their places.
    for s in idle:
        assert read_until_closed(s) == b""
        s.close()
    answer = _http(port, f"GET /healthz HTTP/1.1\n{host}\nAuthorization: Bearer t0ken\nConnection: close\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    # MCP clients never noticed.
    client = LineClient(sock)
    client.initialize()
    client.close()
    with open(log) as f:
        assert "refusing more" in f.read()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone({pid}, 30) == set()


def _try_http(port: int, head: str) -> bool:
    try:
        return _http(port, head + "Connection: close\n").startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False
