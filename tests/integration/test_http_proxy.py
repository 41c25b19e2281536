"""
The Streamable HTTP front behind a real reverse proxy (issue 11): HAProxy
and nginx from Debian, each terminating TLS in front of the real daemon
(`twistd ... mcp-gateway --listen http:tcp:PORT:interface=127.0.0.1` with
`http.trustedProxies: [127.0.0.1]`), each running the example shipped in
deploy/ (as README's "Behind a reverse proxy" shows it).  Through each: the official `mcp` SDK's client with
a progress stream, the log naming the client's address (not the proxy's,
not one the client forged), the RFC 9728 resource URL with the scheme and
host the client used, and DNS rebinding through the proxy refused.

A proxy that is not installed skips its test, unless
TWISTED_MCP_REQUIRE_PROXIES=1 (`apt-get install haproxy nginx-light`),
which makes it a failure.  The test without a proxy (headers sent directly
from a trusted and an untrusted address) always runs.

The client connects from 127.0.0.3 and an untrusted sender from 127.0.0.2
(any 127/8 address is the loopback interface on Linux), so each is told
apart from the proxy (127.0.0.1) in the log.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests import mcpclient as mc

from . import certs
from .conftest import free_port, server
from .test_http_bearer import ISSUER, SECRET, token
from .test_http_front import INIT, JSON_AND_SSE

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

CLIENT = "127.0.0.3"
STRANGER = "127.0.0.2"
PUBLIC = "mcp.example.com"


def wait_listening(port: int, what: str, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                pytest.fail(f"{what} exited with {proc.returncode} before listening")
            assert time.monotonic() < deadline, f"{what} never listened on {port}"
            time.sleep(0.05)


def start_gateway(daemon, tmp_path, **http: Any) -> tuple[int, str]:
    """The daemon with bearer tokens on and an HTTP listener on loopback trusting 127.0.0.1; (port, log file)."""
    port = free_port()
    extra = {
        "identity": {
            "jwt": {"tokenEnv": "UNSET_STDIO_TOKEN", "algorithms": ["HS256"], "secret": SECRET, "issuer": ISSUER, "audience": "twisted-mcp"}
        },
        "roles": {"dev": {"allow": ["slow__*"]}},
        "http": {"trustedProxies": ["127.0.0.1"], "allowedHosts": [PUBLIC], "authorizationServers": [ISSUER], **http},
    }
    _, logfile = daemon({"slow": server("slow")}, f"http:tcp:{port}:interface=127.0.0.1", extra=extra)
    wait_listening(port, "the gateway's HTTP listener")
    return port, logfile


def raw(port: int, method: str, path: str, source: str, headers: dict[str, str], body: Any = None, tls: ssl.SSLContext | None = None):
    """One request from the address C{source}; (status, headers, body)."""
    if tls is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls, source_address=(source, 0))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    data = json.dumps(body).encode() if body is not None else None
    h = {"content-type": "application/json", "accept": JSON_AND_SSE, **headers}
    conn.request(method, path, body=data, headers=h)
    response = conn.getresponse()
    content = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, content


def log_text(logfile: str) -> str:
    with open(logfile) as f:
        return f.read()


def wait_for_log(logfile: str, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = log_text(logfile)
        if needle in text:
            return text
        assert time.monotonic() < deadline, f"{needle!r} not in the log:\n{text[-3000:]}"
        time.sleep(0.05)


def test_forwarded_headers_are_believed_only_from_trusted_addresses(daemon, tmp_path):
    """Without a proxy: the same headers, sent from 127.0.0.1 (trusted) and from 127.0.0.2 (not)."""
    port, logfile = start_gateway(daemon, tmp_path)
    forged = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https", "x-forwarded-host": PUBLIC}
    metadata = "/.well-known/oauth-protected-resource/mcp"

    status, _, body = raw(port, "GET", metadata, STRANGER, forged)
    assert status == 200 and json.loads(body)["resource"] == f"http://127.0.0.1:{port}/mcp"
    status, _, body = raw(port, "POST", "/mcp", STRANGER, {**forged, "authorization": f"Bearer {token()}"}, INIT)
    assert status == 200, body
    text = wait_for_log(logfile, f"(tcp client {STRANGER}:")
    assert "203.0.113.9" not in text

    status, _, body = raw(port, "GET", metadata, "127.0.0.1", forged)
    assert status == 200 and json.loads(body)["resource"] == f"https://{PUBLIC}/mcp"
    status, _, body = raw(port, "POST", "/mcp", "127.0.0.1", {**forged, "authorization": f"Bearer {token()}"}, INIT)
    assert status == 200, body
    wait_for_log(logfile, "(tcp client 203.0.113.9 via proxy 127.0.0.1:")


# -- real proxies --------------------------------------------------------------


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def shipped(name: str, replacements: dict[str, str]) -> str:
    """A file of deploy/ with its example port, certificate and upstream replaced (each must be there)."""
    text = (DEPLOY / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"deploy/{name} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def haproxy_config(listen: int, upstream: int, pem: str) -> str:
    """deploy/haproxy-mcp.cfg, on this test's port, certificate and gateway."""
    site = shipped(
        "haproxy-mcp.cfg",
        {"bind :443 ": f"bind 127.0.0.1:{listen} ", "/etc/haproxy/mcp.example.com.pem": pem, "127.0.0.1:8080": f"127.0.0.1:{upstream}"},
    )
    return "global\n    maxconn 100\n\n" + site


def nginx_config(listen: int, upstream: int, cert: str, key: str, run: str) -> str:
    """deploy/nginx-mcp.conf, on this test's port, certificate and gateway, in a main config of its own."""
    site = shipped(
        "nginx-mcp.conf",
        {
            "listen 443 ssl;": f"listen 127.0.0.1:{listen} ssl;",
            "/etc/ssl/mcp.example.com.pem": cert,
            "/etc/ssl/mcp.example.com.key": key,
            "127.0.0.1:8080": f"127.0.0.1:{upstream}",
        },
    )
    user = "user root;" if os.geteuid() == 0 else ""
    temps = "\n".join(f"    {kind}_temp_path {run}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
{user}
daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log;
events {{ worker_connections 128; }}
http {{
    access_log off;
{temps}
{site}
}}
"""


def start_proxy(kind: str, tmp_path, upstream: int, pki: dict[str, str]) -> Iterator[int]:
    binary = shutil.which(kind) or (f"/usr/sbin/{kind}" if os.path.exists(f"/usr/sbin/{kind}") else None)
    if binary is None:
        why = f"{kind} is not installed (apt-get install {'nginx-light' if kind == 'nginx' else kind})"
        if os.environ.get("TWISTED_MCP_REQUIRE_PROXIES") == "1":
            pytest.fail(why + "; TWISTED_MCP_REQUIRE_PROXIES=1 makes this a failure")
        pytest.skip(why + ", or set TWISTED_MCP_REQUIRE_PROXIES=1 to fail instead of skipping")
    listen = free_port()
    run = tmp_path / kind
    run.mkdir()
    config = run / f"{kind}.conf"
    if kind == "haproxy":
        pem = run / "server-with-key.pem"
        pem.write_bytes(Path(pki["server.pem"]).read_bytes() + Path(pki["server-key.pem"]).read_bytes())
        config.write_text(haproxy_config(listen, upstream, str(pem)))
        argv = [binary, "-db", "-f", str(config)]
    else:
        config.write_text(nginx_config(listen, upstream, pki["server.pem"], pki["server-key.pem"], str(run)))
        argv = [binary, "-c", str(config), "-p", str(run)]
    errors = open(run / "stderr", "wb")
    proc = subprocess.Popen(argv, stdout=errors, stderr=errors, start_new_session=True)
    try:
        wait_listening(listen, kind, proc)
        yield listen
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        errors.close()


@pytest.fixture(params=["haproxy", "nginx"])
def proxied(request, daemon, tmp_path):
    """(proxy port, gateway port, log file, a TLS context trusting the proxy's certificate)."""
    port, logfile = start_gateway(daemon, tmp_path)
    pki = certs.make(str(tmp_path))
    tls = ssl.create_default_context(cafile=pki["ca.pem"])
    proxy = start_proxy(request.param, tmp_path, port, pki)
    listen = next(proxy)
    yield listen, port, logfile, tls
    proxy.close()


def test_through_a_reverse_proxy(proxied):
    listen, _, logfile, tls = proxied
    good = token()

    # The SDK's client, over TLS to the proxy: calls, and a progress stream (SSE through the proxy).
    async def scenario():
        import httpx2

        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {good}"}, verify=tls, timeout=30) as http_client:
            async with mc.connect_http(f"https://127.0.0.1:{listen}/mcp", http_client=http_client) as client:
                assert await mc.call_text(client, "slow__echo", {"text": "through the proxy"}) == "through the proxy"
                result, progress = await mc.call_with_progress(client, "slow__sleep", {"seconds": 0.5})
                assert mc.result_text(result) == "slept 0.5"
                assert len(progress) >= 3

    mc.run(scenario, timeout=60)

    # From 127.0.0.3, with an X-Forwarded-For of its own: the log names 127.0.0.3 (what the proxy saw).
    forged = {"x-forwarded-for": "198.51.100.66", "x-forwarded-host": "evil.example", "forwarded": "for=198.51.100.66"}
    status, _, body = raw(listen, "POST", "/mcp", CLIENT, {**forged, "authorization": f"Bearer {good}"}, INIT, tls)
    assert status == 200, body
    text = wait_for_log(logfile, f"(tcp client {CLIENT} via proxy 127.0.0.1:")
    assert "198.51.100.66" not in text

    # A refused token: the 401's log line and challenge name the client and the public URL.
    status, headers, _ = raw(listen, "POST", "/mcp", CLIENT, {"host": PUBLIC}, INIT, tls)
    assert status == 401
    assert headers["www-authenticate"] == f'Bearer resource_metadata="https://{PUBLIC}/.well-known/oauth-protected-resource/mcp"'
    wait_for_log(logfile, f"HTTP request from tcp client {CLIENT} via proxy 127.0.0.1:")

    # The metadata's resource URL is the one the client used: https (the proxy's TLS), its host.
    status, _, body = raw(listen, "GET", "/.well-known/oauth-protected-resource/mcp", CLIENT, {"host": PUBLIC}, tls=tls)
    assert status == 200
    assert json.loads(body)["resource"] == f"https://{PUBLIC}/mcp"
    status, _, body = raw(listen, "GET", "/.well-known/oauth-protected-resource/mcp", CLIENT, {"host": f"127.0.0.1:{listen}"}, tls=tls)
    assert json.loads(body)["resource"] == f"https://127.0.0.1:{listen}/mcp"

    # DNS rebinding through the proxy: a page of evil.example resolving to 127.0.0.1 is refused.
    status, _, _ = raw(listen, "POST", "/mcp", CLIENT, {"host": "evil.example", "authorization": f"Bearer {good}"}, INIT, tls)
    assert status == 421
