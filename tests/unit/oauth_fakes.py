"""
A small authorization server and protected resource in memory for the OAuth
client's unit tests: one twisted.web resource that plays the backend's
protected resource metadata (RFC 9728), the AS metadata (RFC 8414), dynamic
registration (RFC 7591), the token endpoint (RFC 6749) and revocation
(RFC 7009), routed by C{Host} and path, reached through treq's L{StubTreq}.

Every secret it issues contains L{MARK}, so a test can look for it in logs,
messages and reprs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_mcp.backends.oauth.fetch import AuthHttp
from twisted_mcp.backends.oauth.sealing import KeyRing
from twisted_mcp.backends.oauth.store import ClientStore, MemoryStore, PendingStore, TokenStore
from twisted_mcp.config.models import OAuthSettings, OAuthStoreSettings

#: In every token, refresh token, code and client secret the fake issues.
MARK = "Zq9SECRETxv7"
BACKEND_URL = "https://mcp.example/mcp"
ISSUER = "https://as.example"
PRM_URL = "https://mcp.example/.well-known/oauth-protected-resource/mcp"
ASM_URL = "https://as.example/.well-known/oauth-authorization-server"
TOKEN_URL = "https://as.example/token"


def server_metadata(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": TOKEN_URL,
        "registration_endpoint": f"{ISSUER}/register",
        "revocation_endpoint": f"{ISSUER}/revoke",
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["read", "write"],
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def resource_metadata(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"resource": BACKEND_URL, "authorization_servers": [ISSUER], "scopes_supported": ["read"]}
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


class FakeAS(Resource):
    """
    The fake peers.  C{documents} maps C{host + path} to a fixed answer
    C{(status, headers, body)}; the registration, token and revocation
    endpoints have behaviour of their own (below).

    @ivar requests: C{(method, url, headers, body)} of every request.
    @ivar token_forms: the parsed form of every token request.
    @ivar token_replies: answers the token endpoint gives first, in order
        (C{(status, body dict)}); then it issues tokens itself.
    @ivar hold_tokens: when true, token requests are kept unanswered in C{held}.
    """

    isLeaf = True

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.documents: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.serve_json("mcp.example/.well-known/oauth-protected-resource/mcp", resource_metadata())
        self.serve_json("as.example/.well-known/oauth-authorization-server", server_metadata())
        self.requests: list[tuple[str, str, dict[str, list[str]], bytes]] = []
        self.token_forms: list[dict[str, str]] = []
        self.token_headers: list[dict[str, list[str]]] = []
        self.token_replies: list[tuple[int, dict[str, Any]]] = []
        self.registrations: list[dict[str, Any]] = []
        self.registration_reply: tuple[int, dict[str, Any]] | None = None
        self.revocations: list[dict[str, str]] = []
        self.hold_tokens = False
        self.held: list[tuple[Request, dict[str, str]]] = []
        self.issued = 0
        self.expires_in: int | None = 3600
        self.rotate = True
        self.live_refresh: set[str] = set()
        self.with_refresh = True
        #: code -> the authorization request's parameters (what the AS checks at the token endpoint).
        self.codes: dict[str, dict[str, str]] = {}

    def serve_json(self, where: str, document: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.documents[where] = (status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(document).encode())

    def serve(self, where: str, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.documents[where] = (status, headers or {}, body)

    def urls(self) -> list[str]:
        return [url for _, url, _, _ in self.requests]

    def render(self, request: Request) -> Any:
        host = (request.getHeader("host") or "").split(":")[0]
        path = request.path.decode()
        body = request.content.read()
        headers = {k.decode().lower(): [v.decode() for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((request.method.decode(), f"https://{host}{path}", headers, body))
        where = host + path
        if where in self.documents:
            status, extra, answer = self.documents[where]
            request.setResponseCode(status)
            for name, value in extra.items():
                request.setHeader(name, value)
            return answer
        if where == "as.example/token":
            form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
            self.token_forms.append(form)
            self.token_headers.append(headers)
            if self.hold_tokens:
                self.held.append((request, form))
                return NOT_DONE_YET
            status, reply = self.token_answer(form)
            return self.json(request, status, reply)
        if where == "as.example/register":
            self.registrations.append(json.loads(body))
            if self.registration_reply is not None:
                return self.json(request, *self.registration_reply)
            n = len(self.registrations)
            return self.json(request, 201, {"client_id": f"dcr-client-{n}", **json.loads(body)})
        if where == "as.example/revoke":
            self.revocations.append({k: v[0] for k, v in parse_qs(body.decode()).items()})
            return self.json(request, 200, {})
        request.setResponseCode(404)
        return b"not found"

    def json(self, request: Request, status: int, reply: dict[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader("Content-Type", "application/json")
        return json.dumps(reply).encode()

    def authorize(self, url: str) -> dict[str, str]:
        """What the browser and the AS do with an authorization URL: the
        callback's query parameters (a fresh code, the state, the iss)."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        code = f"code-{len(self.codes) + 1}-{MARK}"
        self.codes[code] = query
        return {"code": code, "state": query["state"], "iss": ISSUER}

    def token_answer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.token_replies:
            return self.token_replies.pop(0)
        grant = form.get("grant_type")
        if grant == "authorization_code" and self.codes:
            asked = self.codes.pop(form.get("code", ""), None)
            if asked is None:
                return 400, {"error": "invalid_grant", "error_description": "unknown code"}
            challenge = base64.urlsafe_b64encode(hashlib.sha256(form.get("code_verifier", "").encode()).digest()).rstrip(b"=")
            if challenge.decode() != asked["code_challenge"] or form.get("redirect_uri") != asked["redirect_uri"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE or redirect_uri mismatch"}
        if grant == "refresh_token":
            old = form.get("refresh_token", "")
            if old not in self.live_refresh:
                return 400, {"error": "invalid_grant", "error_description": "refresh token unknown"}
            if self.rotate:
                self.live_refresh.discard(old)
        self.issued += 1
        n = self.issued
        reply: dict[str, Any] = {"access_token": f"access-{n}-{MARK}", "token_type": "bearer"}
        if self.expires_in is not None:
            reply["expires_in"] = self.expires_in
        if self.with_refresh and grant != "client_credentials" and (grant != "refresh_token" or self.rotate):
            refresh = f"refresh-{n}-{MARK}"
            self.live_refresh.add(refresh)
            reply["refresh_token"] = refresh
        return 200, reply

    def release(self) -> None:
        """Answer the held token requests."""
        held, self.held = self.held, []
        for request, form in held:
            status, reply = self.token_answer(form)
            request.write(self.json(request, status, reply))
            request.finish()


def fake_http(clock: Clock, peer: FakeAS, timeout: float = 10.0, max_bytes: int = 65536) -> AuthHttp:
    return AuthHttp(clock, timeout, max_bytes, http=StubTreq(peer))


def settings(**changes: Any) -> OAuthSettings:
    """An C{oauth:} section for tests (the store's path is never used: the stores are in memory)."""
    store = OAuthStoreSettings(path="/nonexistent", keyFile=None, keyEnv="KEY", keyCredential=None)
    return OAuthSettings(store=store, **changes)


@attrs.define
class Stores:
    """The three stores over one L{MemoryStore}."""

    records: MemoryStore
    tokens: TokenStore
    clients: ClientStore
    pending: PendingStore


def memory_stores(clock: Clock) -> Stores:
    records = MemoryStore(clock)
    ring = KeyRing(b"k" * 32)
    return Stores(records, TokenStore(records, ring), ClientStore(records, ring), PendingStore(records, ring))
