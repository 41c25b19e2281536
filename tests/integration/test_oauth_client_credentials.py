"""
C{auth: {clientCredentials: ...}} end to end (C{docs/design/oauth.md} §7.5): one machine identity
toward a protected MCP server, its token fetched from the real authorization server (oidc-provider,
a confidential client registered by the test) with no login and no consent, renewed when it
expires, and the client secret never in any output. A stdio backend and a static-header HTTP
backend run beside it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import mcpclient as mc
from tests.oauth.peers import Peers, oauth_peers  # noqa: F401  (fixture)

from .test_oauth_gateway import wait_until
from .test_oauth_hostile import BesideGateway, assert_nowhere, beside, call, neighbours_answer, static_backend

pytestmark = [pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning"), pytest.mark.timeout(180)]


def register_machine_client(issuer: str) -> tuple[str, str]:
    """Dynamic registration of a confidential client allowed only the client credentials grant."""
    metadata = {
        "client_name": "twisted-mcp machine",
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    request = urllib.request.Request(
        f"{issuer}/reg", data=json.dumps(metadata).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        registered: dict[str, Any] = json.loads(answer.read())
    return registered["client_id"], registered["client_secret"]


def test_client_credentials_call_refresh_and_no_secret_anywhere(tmp_path: Path, oauth_peers: Peers) -> None:  # noqa: F811
    authorization = oauth_peers.authorization_server(name="as", access_ttl=3)
    protected = oauth_peers.protected_server(authorization.issuer, name="protected")
    client_id, secret = register_machine_client(authorization.issuer)
    secret_file = tmp_path / "machine.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)

    wrong_secret = "not-the-secret-0123456789abcdef"
    wrong_file = tmp_path / "wrong.secret"
    wrong_file.write_text(wrong_secret)
    wrong_file.chmod(0o600)

    servers = beside(static_backend(oauth_peers))
    servers["refused"] = {
        "url": protected.url,
        "auth": {"clientCredentials": {"id": "unknown-client", "secretFile": str(wrong_file), "scopes": ["tools:read"]}},
        "restartMaxDelay": 2,
    }
    servers["protected"] = {
        "url": protected.url,
        "auth": {"clientCredentials": {"id": client_id, "secretFile": str(secret_file), "scopes": ["tools:read"]}},
        "restartMaxDelay": 2,
    }
    gateway = BesideGateway(tmp_path, servers)
    try:
        gateway.start()
        wait_until(lambda: gateway.backend_named("protected")["state"] == "up", what="the backend to come up")

        # No login: any principal's call runs as the machine identity. The token the server saw was
        # issued by the client credentials grant, which names no subject (oidc-provider's introspection
        # has no sub for it: the server reports None); the grant was the client's, as the AS records.
        first = mc.run(call, gateway.url, "alice", "protected__whoami", {})
        assert first == mc.run(call, gateway.url, "bob", "protected__whoami", {})
        assert first == "None", first
        grants = [e for e in authorization.events("token.request") if e["outcome"] == "ok"]
        assert grants and all(e["grant_type"] == "client_credentials" for e in grants), grants
        assert all(e["client_id"] == client_id and e["client_auth"] == "basic" and e["outcome"] == "ok" for e in grants)
        assert all(e["resource"] == [protected.url] for e in grants), grants
        neighbours_answer(gateway)

        # A client the authorization server does not know: refused there, the backend down with
        # -31042 and the AS's error; the good one beside it unaffected.
        wait_until(lambda: "invalid_client" in (gateway.backend_named("refused")["lastError"] or ""), what="the refusal")
        refused = gateway.backend_named("refused")
        assert refused["state"] == "down", refused
        assert "refused the client credentials" in refused["lastError"] and "(-31042)" in refused["lastError"], refused
        assert mc.run(call, gateway.url, "alice", "protected__whoami", {}) == first

        # Access tokens live 3 s: past that, calls still work on a new token.
        time.sleep(4)
        assert mc.run(call, gateway.url, "alice", "protected__whoami", {}) == first
        assert len([e for e in authorization.events("token.request") if e["outcome"] == "ok"]) >= 2
        seen = {value.split()[-1] for value in protected.authorizations_seen()}
        assert len(seen) >= 2, "the token was not renewed"
        neighbours_answer(gateway)

        # Nothing to log in to, and nothing kept at rest.
        login = gateway.cli("login", "protected", "--as", "alice", "--wait", "5")
        assert login.returncode == 78, (login.stdout, login.stderr)
        assert "does not use auth: oauth" in login.stderr, login.stderr
        tokens = gateway.cli("tokens", "--json")
        stored = b"".join(p.read_bytes() for p in gateway.store.rglob("*") if p.is_file()) if gateway.store.exists() else b""
        for token in seen:
            assert token.encode() not in stored
        assert_nowhere(
            [secret, wrong_secret, *seen],
            gateway.log(),
            json.dumps(gateway.status()),
            gateway.cli("status").stdout,
            tokens.stdout,
            login.stdout,
            login.stderr,
        )
        assert secret not in gateway.config.read_text()
    finally:
        gateway.stop()


def test_status_says_why_client_credentials_are_refused(tmp_path: Path, oauth_peers: Peers) -> None:  # noqa: F811
    authorization = oauth_peers.authorization_server(name="as")
    protected = oauth_peers.protected_server(authorization.issuer, name="protected")
    secret_file = tmp_path / "wrong.secret"
    secret_file.write_text("not-the-secret-0123456789abcdef")
    secret_file.chmod(0o600)
    servers = beside(static_backend(oauth_peers))
    servers["refused"] = {
        "url": protected.url,
        "auth": {"clientCredentials": {"id": "unknown-client", "secretFile": str(secret_file), "scopes": ["tools:read"]}},
    }
    gateway = BesideGateway(tmp_path, servers)
    try:
        gateway.start()
        wait_until(lambda: "invalid_client" in (gateway.backend_named("refused")["lastError"] or ""), what="the refusal")
        auth = gateway.backend_named("refused")["auth"]
        assert (auth["state"], auth["reason"]) == ("unavailable", "client-rejected"), auth
    finally:
        gateway.stop()
