"""
A tiny authorization server and protected resource in one, that can be told to misbehave: the
hostile OAuth tests (C{docs/design/oauth.md} §12.2 "Hostile") point a gateway backend at it.

It runs in a thread of the test process on a free loopback port (so nothing outlives the test)
and plays, on one origin C{http://127.0.0.1:<port>} that is both the resource and the issuer:

  POST/GET /mcp                                      401 with C{resource_metadata} (never serves MCP)
  GET  /.well-known/oauth-protected-resource[/mcp]   PRM naming the issuer
  GET  /.well-known/oauth-authorization-server       ASM (S256, C{iss} advertised)
  POST /reg                                          DCR: a public client
  GET  /authorize                                    302 at once to C{redirect_uri?code&state&iss}
  POST /token                                        a Bearer token

L{MODES} names each misbehaviour.  Every request is recorded in L{FakeAuthorizationServer.seen}
(method, path); the codes and tokens it issues are in L{FakeAuthorizationServer.issued}, so a
test can look for them in the gateway's outputs.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

#: What the server can be told to do wrong.
MODES = frozenset(
    {
        "ok",
        "prm-other-resource",  # the PRM names another server as its resource
        "prm-other-origin",  # the 401 names resource metadata on another origin
        "wrong-iss",  # the authorization response names another issuer
        "wrong-iss-error",  # ... and carries an error with a description meant to be shown
        "no-iss",  # ... names none, while the metadata advertises it
        "issuer-mismatch",  # the ASM's issuer is not the one the PRM names
        "no-s256",  # the ASM offers only the plain PKCE method
        "metadata-302",  # the ASM URL redirects
        "metadata-html",  # the ASM is an HTML page
        "metadata-array",  # the ASM is a JSON array
        "metadata-huge",  # the ASM is a 10 MiB JSON document
        "token-mac",  # the token endpoint issues token_type "mac"
        "token-html",  # the token endpoint answers an HTML page
        "token-array",  # ... a JSON array
        "token-huge",  # ... a 10 MiB JSON document
        "token-hang",  # ... never answers
        "hang",  # the AS endpoints accept the connection and never answer
    }
)

HUGE_BYTES = 10 * 1024 * 1024
#: The error_description of mode wrong-iss-error: an attacker's text that must never be shown.
ERROR_BAIT = "Session lost: sign in again at https://evil.example/login"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a gateway that hangs up early (a body too large, a timeout) is what the tests expect


class FakeAuthorizationServer:
    """One server in one L{MODES} mode; L{stop} it (the fixture does)."""

    def __init__(self, mode: str = "ok") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.seen: list[tuple[str, str]] = []
        self.issued: list[str] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                outer._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.issuer = self.origin
        self.url = f"{self.origin}/mcp"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=f"fake-as-{mode}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    # -- the routes ------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(request.path)
        path = parts.path
        self.seen.append((method, path))
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length) if length else b""
        try:
            if path == "/mcp":
                origin = "http://localhost:9" if self.mode == "prm-other-origin" else self.origin
                metadata = f"{origin}/.well-known/oauth-protected-resource/mcp"
                return self._send(request, 401, b"", headers={"WWW-Authenticate": f'Bearer resource_metadata="{metadata}"'})
            if path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
                resource = "http://127.0.0.1:1/mcp" if self.mode == "prm-other-resource" else self.url
                return self._json(request, 200, {"resource": resource, "authorization_servers": [self.issuer]})
            if self.mode == "hang" and path != "/favicon.ico":
                self.release.wait(120)
                return None
            if path == "/.well-known/oauth-authorization-server":
                return self._metadata(request)
            if path == "/reg" and method == "POST":
                registration = json.loads(body or b"{}")
                answer = {
                    "client_id": f"fake-client-{secrets.token_hex(4)}",
                    "redirect_uris": registration.get("redirect_uris", []),
                    "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                }
                return self._json(request, 201, answer)
            if path == "/authorize":
                return self._authorize(request, dict(parse_qsl(parts.query)))
            if path == "/token" and method == "POST":
                return self._token(request)
            return self._json(request, 404, {"error": "not_found"})
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _metadata(self, request: BaseHTTPRequestHandler) -> None:
        if self.mode == "metadata-302":
            return self._send(request, 302, b"", headers={"Location": "http://127.0.0.1:9/elsewhere"})
        if self.mode == "metadata-html":
            return self._send(request, 200, b"<!doctype html><h1>Welcome</h1>", content_type="text/html")
        if self.mode == "metadata-array":
            return self._json(request, 200, [self.issuer])
        if self.mode == "metadata-huge":
            filler = "x" * (HUGE_BYTES - 100)
            return self._send(request, 200, json.dumps({"issuer": self.issuer, "filler": filler}).encode())
        metadata: dict[str, Any] = {
            "issuer": "http://127.0.0.1:1/another" if self.mode == "issuer-mismatch" else self.issuer,
            "authorization_endpoint": f"{self.origin}/authorize",
            "token_endpoint": f"{self.origin}/token",
            "registration_endpoint": f"{self.origin}/reg",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["none"],
            "code_challenge_methods_supported": ["plain"] if self.mode == "no-s256" else ["S256"],
            "authorization_response_iss_parameter_supported": True,
        }
        return self._json(request, 200, metadata)

    def _authorize(self, request: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        code = f"fake-code-{secrets.token_urlsafe(12)}"
        self.issued.append(code)
        answer = {"code": code, "state": query.get("state", "")}
        if self.mode == "wrong-iss-error":
            answer = {"error": "access_denied", "error_description": ERROR_BAIT, "state": query.get("state", "")}
        if self.mode in ("wrong-iss", "wrong-iss-error"):
            answer["iss"] = "http://127.0.0.1:1/evil"
        elif self.mode != "no-iss":
            answer["iss"] = self.issuer
        location = f"{query.get('redirect_uri', '')}?{urlencode(answer)}"
        return self._send(request, 302, b"", headers={"Location": location})

    def _token(self, request: BaseHTTPRequestHandler) -> None:
        if self.mode == "token-html":
            return self._send(request, 200, b"<!doctype html><p>Service temporarily unavailable", content_type="text/html")
        if self.mode == "token-array":
            return self._json(request, 200, ["access_token", "Bearer"])
        if self.mode == "token-huge":
            filler = "x" * (HUGE_BYTES - 100)
            return self._send(request, 200, json.dumps({"access_token": "fake-access-huge", "filler": filler}).encode())
        if self.mode == "token-hang":
            self.release.wait(120)
            return None
        token = f"fake-access-{secrets.token_urlsafe(16)}"
        self.issued.append(token)
        refresh = f"fake-refresh-{secrets.token_urlsafe(16)}"
        self.issued.append(refresh)
        token_type = "mac" if self.mode == "token-mac" else "Bearer"
        return self._json(
            request, 200, {"access_token": token, "token_type": token_type, "expires_in": 3600, "refresh_token": refresh}
        )

    # -- answers ---------------------------------------------------------

    def _json(self, request: BaseHTTPRequestHandler, status: int, document: Any) -> None:
        self._send(request, status, json.dumps(document).encode())

    def _send(
        self,
        request: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)
