"""
OAuth toward a remote MCP server, end to end: the real gateway daemon
(C{twistd mcp-gateway}) in front of an SDK-built MCP server that validates
every token at a real authorization server (oidc-provider, C{tests/oauth}),
principals logging in through C{twisted-mcp login} with a scripted browser,
and the official SDK client calling through the gateway's HTTP front as two
principals (JWT bearer tokens of the gateway's own identity config).

What is shown: discovery and dynamic registration from nothing but the
backend's URL, each principal's calls carrying its own token (the server
says who called), a principal without a token told to log in, no client
token ever reaching the backend, refresh with rotation before expiry,
revocation at the authorization server sending only that principal back to
login, and the tokens surviving a restart of the gateway, encrypted at rest.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from mcp import MCPError

from tests import mcpclient as mc
from tests.oauth.browser import Browser
from tests.oauth.peers import Peers, oauth_peers  # noqa: F401  (fixture)

from .conftest import bin_path, free_port, gateway_env, read_pid, wait_gone

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

SECRET = "oauth-integration-s3cret-oauth-integration"
ISSUER = "https://idp.example.com/"
#: The gateway front's tokens are planted with this marker: it must never reach the backend.
FRONT_MARKER = "front-token-marker"


def front_token(sub: str) -> str:
    now = int(time.time())
    claims = {
        "sub": sub,
        "roles": ["dev"],
        "iss": ISSUER,
        "aud": "twisted-mcp",
        "iat": now,
        "exp": now + 3600,
        "jti": FRONT_MARKER,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


class Gateway:
    """The daemon: started, restarted, stopped (SIGTERM) by the test."""

    def __init__(self, tmp_path: Path, backend_url: str) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.admin = f"unix:{tmp_path / 'admin.sock'}"
        self.pidfile = str(tmp_path / "gw.pid")
        self.logfile = str(tmp_path / "gw.log")
        key = tmp_path / "oauth.key"
        key.write_text(base64.b64encode(os.urandom(32)).decode())  # text: a raw key could end in whitespace
        key.chmod(0o600)
        self.store = tmp_path / "oauth-store"
        config = {
            "mcpServers": {"protected": {"url": backend_url, "auth": "oauth", "restartMaxDelay": 2}},
            "oauth": {"store": {"path": str(self.store), "keyFile": str(key)}, "requestTimeout": 5},
            "identity": {
                "jwt": {
                    "tokenEnv": "UNSET_STDIO_TOKEN",
                    "algorithms": ["HS256"],
                    "secret": SECRET,
                    "issuer": ISSUER,
                    "audience": "twisted-mcp",
                }
            },
            "roles": {"dev": {"allow": ["protected__*"]}},
            "audit": {"sink": "file", "path": str(tmp_path / "audit.jsonl")},
        }
        self.audit_path = tmp_path / "audit.jsonl"
        self.config = tmp_path / "gateway.json"
        self.config.write_text(json.dumps(config, indent=1))
        self.pid: int | None = None

    def start(self) -> None:
        argv = [
            bin_path("twistd"),
            "--pidfile",
            self.pidfile,
            "--logfile",
            self.logfile,
            "mcp-gateway",
            "--config",
            str(self.config),
        ]
        argv += ["--listen", f"http:tcp:{self.port}:interface=127.0.0.1", "--admin", self.admin]
        proc = subprocess.run(argv, env=gateway_env(), cwd=str(self.tmp_path), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 20
        while not os.path.exists(self.pidfile):
            assert time.monotonic() < deadline, "no pid file"
            time.sleep(0.05)
        self.pid = read_pid(self.pidfile)
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP listener never accepted"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        for left in wait_gone({pid}, 30.0):
            os.kill(left, signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def log(self) -> str:
        return Path(self.logfile).read_text(errors="replace") if os.path.exists(self.logfile) else ""

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [bin_path("twisted-mcp"), *args, "--admin", self.admin],
            env=gateway_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]

    def metrics(self) -> str:
        """The admin endpoint's /metrics, over its Unix socket."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(self.admin[len("unix:") :])
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def backend(self) -> dict[str, Any]:
        (backend,) = [b for b in self.status()["backends"] if b["name"] == "protected"]
        return backend

    def login(self, principal: str, account: str, browser: Browser, consent: bool = True) -> subprocess.CompletedProcess[str]:
        """C{twisted-mcp login protected --as PRINCIPAL}, the browser opening the URL it prints."""
        proc = subprocess.Popen(
            [bin_path("twisted-mcp"), "login", "protected", "--as", principal, "--admin", self.admin, "--wait", "30"],
            env=gateway_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        printed = []
        url = None
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("  http"):
                url = line.strip()
                break
        if url is None:
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"login printed no URL: {''.join(printed)}{out}\n{err}")
        browser.authorize(url, account=account, consent=consent)
        out, err = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(printed) + out, err)


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


async def whoami(url: str, sub: str) -> str:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {front_token(sub)}"}, timeout=30) as http_client:
        async with mc.connect_http(url, http_client=http_client) as client:
            return await mc.call_text(client, "protected__whoami", {})


async def refused(url: str, sub: str) -> MCPError:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {front_token(sub)}"}, timeout=30) as http_client:
        async with mc.connect_http(url, http_client=http_client) as client:
            with pytest.raises(MCPError) as e:
                await client.call_tool("protected__whoami", {})
            return e.value


@pytest.fixture
def gateway_in_front(tmp_path: Path, oauth_peers: Peers):  # noqa: F811
    """An authorization server with 3-second access tokens, the protected server, the gateway before them."""
    authorization = oauth_peers.authorization_server(name="as", access_ttl=3)
    protected = oauth_peers.protected_server(authorization.issuer, name="protected")
    gateway = Gateway(tmp_path, protected.url)
    try:
        gateway.start()
        yield authorization, protected, gateway
    finally:
        gateway.stop()


def test_two_principals_their_own_tokens_refresh_revocation_and_restart(gateway_in_front) -> None:
    authorization, protected, gateway = gateway_in_front

    # Nobody has authorized yet: the backend is down, and says what to run.
    wait_until(lambda: "twisted-mcp login protected" in (gateway.backend()["lastError"] or ""), what="the login hint")
    assert gateway.backend()["state"] != "up"

    with Browser() as browser:
        done = gateway.login("alice", "alice", browser)
    assert done.returncode == 0, done.stderr
    assert "protected: authorized for jwt:alice" in done.stdout
    wait_until(lambda: gateway.backend()["state"] == "up", what="the backend to come up after the first login")

    # Alice's call carries her own token: the server says who called.
    assert mc.run(whoami, gateway.url, "alice") == "alice"

    # Bob has not authorized: told to log in, with the command; nothing of his reached the server.
    error = mc.run(refused, gateway.url, "bob")
    assert error.code == -31040, error
    assert error.data["reason"] == "authorization-required"
    assert error.data["login"] == "twisted-mcp login protected"
    assert "--as" in error.message

    with Browser() as browser:
        done = gateway.login("bob", "bob", browser)
    assert done.returncode == 0, done.stderr
    assert mc.run(whoami, gateway.url, "bob") == "bob"
    assert mc.run(whoami, gateway.url, "alice") == "alice"

    # Access tokens live 3 s: past that, calls still work, refreshed with rotation and the resource.
    time.sleep(4)
    assert mc.run(whoami, gateway.url, "alice") == "alice"
    consumed = authorization.events("refresh_token.consumed")
    assert consumed, authorization.events()
    token_requests = [e for e in authorization.events("token.request") if e.get("grant_type") == "refresh_token"]
    assert token_requests and all(e.get("resource") in (protected.url, [protected.url]) for e in token_requests), token_requests
    assert authorization.events("grant.revoked") == []  # a reused rotated refresh token would revoke the grant

    metrics = gateway.metrics()
    assert 'twisted_mcp_oauth_principals{backend="protected"} 2.0' in metrics, metrics
    assert 'twisted_mcp_oauth_runs{backend="protected"} 2.0' in metrics, metrics
    for value in protected.authorizations_seen():
        assert value.split()[-1] not in metrics

    # `tokens` lists both, and never a token.
    listed = gateway.cli("tokens", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["principal"] for r in rows} == {"jwt:alice", "jwt:bob"}
    seen = protected.authorizations_seen()
    assert seen
    for value in seen:
        assert value.split()[-1] not in listed.stdout

    # Revoked at the authorization server: alice is sent back to login; bob still works.
    assert authorization.revoke("alice") >= 1
    error = mc.run(refused, gateway.url, "alice")
    assert error.code == -31040, error
    assert error.data["reason"] in ("reauthorization-required", "token-rejected"), error.data
    assert mc.run(whoami, gateway.url, "bob") == "bob"
    with Browser() as browser:
        done = gateway.login("alice", "alice", browser)
    assert done.returncode == 0, done.stderr
    assert mc.run(whoami, gateway.url, "alice") == "alice"

    # A restart keeps the tokens (encrypted at rest: no token in clear in the store).
    gateway.stop()
    gateway.start()
    wait_until(lambda: gateway.backend()["state"] == "up", what="the backend to come up after the restart")
    assert mc.run(whoami, gateway.url, "alice") == "alice"
    assert mc.run(whoami, gateway.url, "bob") == "bob"
    stored = b"".join(p.read_bytes() for p in gateway.store.rglob("*") if p.is_file())
    everything = gateway.log() + listed.stdout + json.dumps(gateway.status())
    for value in protected.authorizations_seen():
        token = value.split()[-1]
        assert token.encode() not in stored
        assert token not in everything

    # Logout with revocation: bob is sent back to login; alice is not.
    out = gateway.cli("logout", "protected", "--as", "bob", "--revoke")
    assert out.returncode == 0, out.stderr
    assert "forgot jwt:bob's tokens (revoked at the authorization server: yes" in out.stdout
    error = mc.run(refused, gateway.url, "bob")
    assert (error.code, error.data["reason"]) == (-31040, "authorization-required"), error
    assert mc.run(whoami, gateway.url, "alice") == "alice"

    # The audit trail names who authorized and logged out, and whose calls went where; no token.
    wait_until(lambda: any(r["method"] == "oauth/logout" for r in gateway.audit()), what="the logout's audit record")
    records = gateway.audit()
    authorized = [(r["principal"], r["backend"]) for r in records if r["method"] == "oauth/authorized"]
    assert authorized.count(("jwt:alice", "protected")) == 2 and authorized.count(("jwt:bob", "protected")) == 1, authorized
    assert [(r["principal"], r["backend"]) for r in records if r["method"] == "oauth/logout"] == [("jwt:bob", "protected")]
    calls = [r for r in records if r.get("tool") == "protected__whoami" and r.get("outcome") == "ok"]
    assert {r["principal"] for r in calls} == {"alice", "bob"}
    trail = gateway.audit_path.read_text()
    for value in protected.authorizations_seen():
        assert value.split()[-1] not in trail

    # No request reached the server with the gateway front's own tokens.
    for value in protected.authorizations_seen():
        assert FRONT_MARKER not in value
        token = value.split()[-1]
        assert token.count(".") != 2 or FRONT_MARKER not in str(jwt.decode(token, options={"verify_signature": False}))


def test_a_refused_consent_fails_the_login(gateway_in_front) -> None:
    authorization, protected, gateway = gateway_in_front
    with Browser() as browser:
        done = gateway.login("alice", "alice", browser, consent=False)
    assert done.returncode == 77, (done.stdout, done.stderr)
    assert "access_denied" in done.stderr
    assert gateway.cli("tokens", "--json").stdout.strip() == "[]"
