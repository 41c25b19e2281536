"""
The OAuth test peers on their own, no gateway involved: a complete OAuth client flow driven by hand
against the real authorization server (C{tests/oauth/as.mjs}, oidc-provider) and the protected MCP
server (C{tests/servers/protected.py}, the SDK), with the scripted browser
(C{tests/oauth/browser.py}). What the gateway's OAuth tests take for granted is proven here:
discovery from a 401, open dynamic registration of a public loopback client (native and web), PKCE
with C{resource}, C{iss} in the response, opaque tokens bound to the resource, refresh with rotation
(and reuse detection), revocation seen at once, insufficient_scope, and the event log.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from tests import mcpclient as mc
from tests.oauth.browser import Browser, authorize
from tests.oauth.peers import (  # noqa: F401  (fixtures)
    AuthorizationServer,
    Peers,
    ProtectedServer,
    authorization_server,
    oauth_peers,
    protected_server,
)

BOTH_SCOPES = "tools:read tools:write"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "peers-test", "version": "1"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def digest(value: str) -> str:
    """How as.mjs names a token in its events."""
    return hashlib.sha256(value.encode()).hexdigest()[:8]


class Callbacks:
    """
    A loopback listener standing in for a client's redirect URI (C{/oauth/callback}): keeps the
    queries it gets. C{/connect} redirects to L{connect_to} (a page that starts an authorization).
    """

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self.connect_to = ""
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/connect":
                    self.send_response(302)
                    self.send_header("location", listener.connect_to)
                else:
                    listener.queries.append({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})
                    self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.redirect_uri = f"{self.origin}/oauth/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def callbacks() -> Iterator[Callbacks]:
    listener = Callbacks()
    try:
        yield listener
    finally:
        listener.stop()


class PublicClient:
    """An OAuth public client written out step by step, the way the gateway is to do it."""

    def __init__(
        self, metadata: dict[str, Any], redirect_uri: str, application_type: str = "native", auth_method: str = "none"
    ) -> None:
        self.metadata = metadata
        self.redirect_uri = redirect_uri
        response = httpx2.post(
            metadata["registration_endpoint"],
            json={
                "client_name": "peers test",
                "application_type": application_type,
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": auth_method,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            },
        )
        assert response.status_code == 201, response.text
        self.client_id: str = response.json()["client_id"]
        secret = response.json().get("client_secret")
        self.auth = httpx2.BasicAuth(self.client_id, secret) if auth_method == "client_secret_basic" else None

    def authorization_url(self, resource: str, scope: str = BOTH_SCOPES, redirect_uri: str | None = None) -> tuple[str, str, str]:
        """A fresh authorization request: (its URL, the state, the code verifier)."""
        verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(32)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri or self.redirect_uri,
            "scope": scope,
            "resource": resource,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
        }
        return f"{self.metadata['authorization_endpoint']}?{urlencode(query)}", state, verifier

    def token(self, **form: str) -> httpx2.Response:
        if self.auth is not None:
            return httpx2.post(self.metadata["token_endpoint"], data=form, auth=self.auth)
        return httpx2.post(self.metadata["token_endpoint"], data={"client_id": self.client_id, **form})

    def tokens_for(self, resource: str, account: str, scope: str = BOTH_SCOPES) -> dict[str, Any]:
        """Authorize C{account} through the browser and exchange the code: the token response."""
        url, state, verifier = self.authorization_url(resource, scope)
        query = parse_qs(urlsplit(authorize(url, account=account)).query)
        assert query["state"] == [state]
        response = self.token(
            grant_type="authorization_code",
            code=query["code"][0],
            redirect_uri=self.redirect_uri,
            code_verifier=verifier,
            resource=resource,
        )
        assert response.status_code == 200, response.text
        return response.json()


def post_mcp(url: str, token: str | None, message: dict[str, Any] = INITIALIZE) -> httpx2.Response:
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx2.post(url, json=message, headers=headers)


def call_tool(url: str, access_token: str, name: str, arguments: dict[str, Any] | None = None) -> str:
    """Call a tool on the protected server through the SDK's Streamable HTTP client, as a bearer."""

    async def scenario() -> str:
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {access_token}"})
        async with http, mc.connect_http(url, http_client=http) as client:
            return await mc.call_text(client, name, arguments or {})

    return str(mc.run(scenario, timeout=60))


def discover(protected: ProtectedServer) -> dict[str, Any]:
    """Discovery as a client does it: 401 challenge -> resource metadata -> AS metadata."""
    refused = post_mcp(protected.url, None)
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{protected.metadata_url}"' in challenge
    resource_metadata = httpx2.get(protected.metadata_url).json()
    assert resource_metadata["resource"] == protected.url
    assert resource_metadata["scopes_supported"] == ["tools:read"]
    [issuer] = resource_metadata["authorization_servers"]
    metadata = httpx2.get(f"{issuer}/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == issuer
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    return metadata


@pytest.mark.parametrize("application_type", ["native", "web"])
def test_a_whole_client_flow_against_the_peers(
    application_type: str, authorization_server: AuthorizationServer, protected_server: ProtectedServer, callbacks: Callbacks
) -> None:
    issuer, resource = authorization_server.issuer, protected_server.url
    metadata = discover(protected_server)
    assert metadata["issuer"] == issuer
    client = PublicClient(metadata, callbacks.redirect_uri, application_type)
    registration = authorization_server.events("registration")[-1]
    assert registration["client_id"] == client.client_id
    assert registration["application_type"] == application_type
    assert registration["token_endpoint_auth_method"] == "none"

    # The browser step: login as alice, consent, and the redirect reaches the loopback listener.
    url, state, verifier = client.authorization_url(resource)
    final = authorize(url, account="alice")
    query = {k: v[0] for k, v in parse_qs(urlsplit(final).query).items()}
    assert final.startswith(callbacks.redirect_uri + "?")
    assert callbacks.queries == [query]
    assert query["state"] == state
    assert query["iss"] == issuer
    [asked] = authorization_server.events("authorization")
    assert asked["resource"] == [resource] and asked["code_challenge_method"] == "S256"

    issued = client.token(
        grant_type="authorization_code",
        code=query["code"],
        redirect_uri=client.redirect_uri,
        code_verifier=verifier,
        resource=resource,
    )
    assert issued.status_code == 200, issued.text
    tokens = issued.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == BOTH_SCOPES
    assert tokens["expires_in"] == 3600
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    assert "." not in access  # opaque, not a JWT: revocation is seen by the next introspection
    [saved] = authorization_server.events("access_token.saved")
    assert saved["aud"] == resource and saved["account"] == "alice" and saved["digest"] == digest(access)
    assert [e["digest"] for e in authorization_server.events("refresh_token.saved")] == [digest(refresh)]

    # The protected server knows who the token is for, and the write scope works.
    assert call_tool(resource, access, "whoami") == "alice"
    assert call_tool(resource, access, "write_note", {"text": "hi"}) == "noted 1: hi"
    assert access not in json.dumps(authorization_server.events())

    # Refresh, rotated: the old refresh token consumed, a new one saved, the grant kept.
    refreshed = client.token(grant_type="refresh_token", refresh_token=refresh, resource=resource)
    assert refreshed.status_code == 200, refreshed.text
    access2, refresh2 = refreshed.json()["access_token"], refreshed.json()["refresh_token"]
    assert refresh2 != refresh and access2 != access
    assert [e["digest"] for e in authorization_server.events("refresh_token.consumed")] == [digest(refresh)]
    assert [e["digest"] for e in authorization_server.events("refresh_token.saved")] == [digest(refresh), digest(refresh2)]
    assert authorization_server.events("grant.revoked") == []
    requests = authorization_server.events("token.request")
    assert [(r["grant_type"], r["resource"], r["client_auth"], r["outcome"]) for r in requests] == [
        ("authorization_code", [resource], "none", "ok"),
        ("refresh_token", [resource], "none", "ok"),
    ]
    assert call_tool(resource, access2, "whoami") == "alice"

    # Revoked at the AS: the next request with the token is refused, and so is the refresh.
    assert authorization_server.revoke("alice") == 1
    refused = post_mcp(resource, access2)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    again = client.token(grant_type="refresh_token", refresh_token=refresh2, resource=resource)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert authorization_server.events("test.revoked")[-1]["account"] == "alice"

    # The server saw every token that reached it, raw, and no request without one was served.
    assert protected_server.authorizations_seen() == {f"Bearer {access}", f"Bearer {access2}"}
    unauthenticated = [r for r in protected_server.requests() if r["path"] == "/mcp" and r["authorization"] is None]
    assert [r["status"] for r in unauthenticated] == [401]

    # Nothing secret in the AS's event log.
    log = authorization_server.events_path.read_text()
    for secret in (access, refresh, access2, refresh2, query["code"], verifier, state):
        assert secret not in log


def test_reusing_a_rotated_refresh_token_revokes_the_grant(
    authorization_server: AuthorizationServer, protected_server: ProtectedServer, callbacks: Callbacks
) -> None:
    resource = protected_server.url
    client = PublicClient(authorization_server.metadata(), callbacks.redirect_uri)
    first = client.tokens_for(resource, "alice")
    rotated = client.token(grant_type="refresh_token", refresh_token=first["refresh_token"], resource=resource)
    assert rotated.status_code == 200
    assert authorization_server.events("grant.revoked") == []

    reused = client.token(grant_type="refresh_token", refresh_token=first["refresh_token"], resource=resource)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    [revoked] = authorization_server.events("grant.revoked")
    [grant] = authorization_server.events("grant.saved")
    assert revoked["grant_id"] == grant["grant_id"]
    assert post_mcp(resource, rotated.json()["access_token"]).status_code == 401


def test_a_confidential_client_needs_pkce_and_gets_its_refresh_tokens_rotated_too(
    authorization_server: AuthorizationServer, protected_server: ProtectedServer, callbacks: Callbacks
) -> None:
    """oidc-provider's defaults would neither require PKCE of it nor rotate its refresh tokens on every use."""
    resource = protected_server.url
    client = PublicClient(authorization_server.metadata(), callbacks.redirect_uri, "web", "client_secret_basic")
    url, _, _ = client.authorization_url(resource)
    without_pkce = url.replace("code_challenge_method=S256", "").replace("code_challenge=", "no_challenge=")
    refused = parse_qs(urlsplit(authorize(without_pkce)).query)
    assert refused["error"] == ["invalid_request"]
    assert "PKCE" in refused["error_description"][0]

    tokens = client.tokens_for(resource, "alice")
    refreshed = client.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"], resource=resource)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]
    assert [e["digest"] for e in authorization_server.events("refresh_token.consumed")] == [digest(tokens["refresh_token"])]
    assert [r["client_auth"] for r in authorization_server.events("token.request")] == ["basic", "basic"]
    assert call_tool(resource, refreshed.json()["access_token"], "whoami") == "alice"


def test_a_read_only_token_gets_insufficient_scope_for_write_note(
    authorization_server: AuthorizationServer, protected_server: ProtectedServer, callbacks: Callbacks
) -> None:
    resource = protected_server.url
    client = PublicClient(authorization_server.metadata(), callbacks.redirect_uri)
    tokens = client.tokens_for(resource, "bob", scope="tools:read")
    assert tokens["scope"] == "tools:read"
    access = tokens["access_token"]
    assert call_tool(resource, access, "whoami") == "bob"
    assert call_tool(resource, access, "echo", {"text": "read is enough"}) == "read is enough"

    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "write_note", "arguments": {"text": "x"}}}
    refused = post_mcp(resource, access, call)
    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="tools:read tools:write"' in challenge
    assert f'resource_metadata="{protected_server.metadata_url}"' in challenge
    assert protected_server.requests()[-1] == {
        "authorization": f"Bearer {access}",
        "method": "tools/call",
        "tool": "write_note",
        "http": "POST",
        "path": "/mcp",
        "status": 403,
    }


def test_a_token_for_another_resource_is_refused(
    authorization_server: AuthorizationServer, protected_server: ProtectedServer, callbacks: Callbacks
) -> None:
    client = PublicClient(authorization_server.metadata(), callbacks.redirect_uri)
    elsewhere = "http://127.0.0.1:9/mcp"
    tokens = client.tokens_for(elsewhere, "alice")
    assert authorization_server.events("access_token.saved")[-1]["aud"] == elsewhere
    assert post_mcp(protected_server.url, tokens["access_token"]).status_code == 401


def test_refused_consent_comes_back_as_access_denied(authorization_server: AuthorizationServer, callbacks: Callbacks) -> None:
    client = PublicClient(authorization_server.metadata(), callbacks.redirect_uri)
    url, state, _ = client.authorization_url("http://127.0.0.1:9/mcp")
    query = parse_qs(urlsplit(authorize(url, account="alice", consent=False)).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == [state]
    assert query["iss"] == [authorization_server.issuer]
    assert "code" not in query
    assert authorization_server.events("authorization_code.consumed") == []


def test_a_browser_keeps_its_login_session(authorization_server: AuthorizationServer, callbacks: Callbacks) -> None:
    client = PublicClient(authorization_server.metadata(), callbacks.redirect_uri)
    with Browser() as browser:
        browser.authorize(client.authorization_url("http://127.0.0.1:9/mcp")[0], account="alice")
        browser.visited.clear()
        url, state, _ = client.authorization_url("http://127.0.0.1:9/mcp")
        query = parse_qs(urlsplit(browser.authorize(url, account="ignored")).query)
    assert query["state"] == [state] and "code" in query
    assert not any(visited.endswith("/login") for visited in browser.visited)
    assert [e["account"] for e in authorization_server.events("grant.saved")] == ["alice", "alice"]


def test_the_browser_may_start_at_a_page_that_redirects_to_the_authorization(
    authorization_server: AuthorizationServer, callbacks: Callbacks
) -> None:
    client = PublicClient(authorization_server.metadata(), callbacks.redirect_uri)
    callbacks.connect_to, state, _ = client.authorization_url("http://127.0.0.1:9/mcp")
    final = authorize(f"{callbacks.origin}/connect", account="carol")
    assert final.startswith(callbacks.redirect_uri + "?")
    assert callbacks.queries[0]["state"] == state and "code" in callbacks.queries[0]
    assert [e["account"] for e in authorization_server.events("grant.saved")] == ["carol"]


def test_only_native_clients_may_change_the_loopback_port(authorization_server: AuthorizationServer) -> None:
    """RFC 8252 §7.3 at oidc-provider: a native client's loopback redirect may use any port; a web client's may not."""
    metadata = authorization_server.metadata()
    registered = "http://127.0.0.1/oauth/callback"
    used = "http://127.0.0.1:8765/oauth/callback"
    started = {}
    for application_type in ("native", "web"):
        client = PublicClient(metadata, registered, application_type)
        url, _, _ = client.authorization_url("http://127.0.0.1:9/mcp", redirect_uri=used)
        started[application_type] = httpx2.get(url)
    assert started["native"].status_code == 303
    assert urlsplit(started["native"].headers["location"]).path.startswith("/interaction/")
    assert started["web"].status_code == 400
    assert "redirect_uri" in started["web"].text


def test_access_tokens_live_as_long_as_AS_ACCESS_TTL(oauth_peers: Peers, callbacks: Callbacks) -> None:
    authorization = oauth_peers.authorization_server(access_ttl=2)
    protected = oauth_peers.protected_server(authorization.issuer)
    client = PublicClient(authorization.metadata(), callbacks.redirect_uri)
    tokens = client.tokens_for(protected.url, "alice")
    assert tokens["expires_in"] == 2
    assert post_mcp(protected.url, tokens["access_token"]).status_code == 200
    deadline = time.monotonic() + 10
    while post_mcp(protected.url, tokens["access_token"]).status_code != 401:
        assert time.monotonic() < deadline, "the access token outlived its lifetime"
        time.sleep(0.25)
