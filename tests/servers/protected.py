"""A protected MCP server (OAuth resource server) for the OAuth tests, built with the official mcp 2.3 SDK.

Usage:
  python tests/servers/protected.py --port N --issuer AS_URL [--log FILE]
                                    [--introspect-client ID:SECRET] [--verbose]

  --port N        TCP port on 127.0.0.1 (0 = pick a free one). Always loopback.
  --issuer URL    the authorization server (tests/oauth/as.mjs) that issues its tokens.
  --log FILE      append one JSON line per HTTP request: {"authorization": <the raw Authorization
                  header or null>, "method": <the JSON-RPC method or null>, "tool": <tools/call
                  name or null>, "http": <HTTP method>, "path": ..., "status": <answer status>}.
                  This is a test server: it records raw tokens ON PURPOSE, so tests can tell which
                  tokens reached it (and that no other did).
  --introspect-client ID:SECRET
                  the client it introspects tokens with (client_secret_basic); without it, it
                  registers one at the AS at start-up (dynamic client registration).
  --verbose       INFO logging and the uvicorn access log (on stderr).

Its MCP endpoint is http://127.0.0.1:<port>/mcp (Streamable HTTP), and that URL is its resource
identifier. It serves its protected resource metadata (RFC 9728) at
/.well-known/oauth-protected-resource/mcp naming the AS, scopes_supported ["tools:read"] (the
least a client needs; writing is a step-up). A request without a valid token is answered 401 with
`WWW-Authenticate: Bearer error="invalid_token", ..., resource_metadata="<that URL>"`. Every token is
introspected at the AS on every request (RFC 7662; opaque tokens, so a revocation at the AS is seen
at once) and accepted only when active, issued by --issuer, for this very resource (`aud`) and with
the scope tools:read.

Tools:
  whoami() -> the token's subject (`sub`)
  echo(text) -> text
  write_note(text) -> "noted <n>: <text>"; needs the scope tools:write: without it the request is
                answered 403 with `WWW-Authenticate: Bearer error="insufficient_scope",
                scope="tools:read tools:write", resource_metadata="..."`.

Once listening it prints exactly one line "LISTENING <port>" to stdout (nothing else ever goes to
stdout). It exits with status 0 on SIGTERM/SIGINT and when its stdin reaches EOF. (It serves with
http_sdk.py's helpers, so its stderr shows http_sdk.py's start and stdin lines too.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

# http_sdk sends everything but the LISTENING line to stderr when imported; do it first.
from http_sdk import HOST, _Server, _watch_stdin  # noqa: I001  (tests/servers/ is sys.path[0])

print(f"protected.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)

import httpx2  # noqa: E402
import uvicorn  # noqa: E402
from mcp.server.auth.provider import AccessToken  # noqa: E402
from mcp.server.auth.routes import build_resource_metadata_url  # noqa: E402
from mcp.server.auth.settings import AuthSettings  # noqa: E402
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from pydantic import AnyHttpUrl  # noqa: E402

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

READ_SCOPE = "tools:read"
WRITE_SCOPE = "tools:write"
#: Tools a token needs tools:write for.
WRITE_TOOLS = frozenset({"write_note"})
MCP_PATH = "/mcp"
MAX_BODY = 4 << 20

log = logging.getLogger("protected")


class IntrospectingVerifier:
    """
    The SDK's C{TokenVerifier}: asks the AS about every token (RFC 7662), accepts it only when
    active, issued by the expected issuer and for this resource.
    """

    def __init__(self, introspection_endpoint: str, client_id: str, client_secret: str, issuer: str, resource: str) -> None:
        self.introspection_endpoint = introspection_endpoint
        self.auth = httpx2.BasicAuth(client_id, client_secret)
        self.issuer = issuer
        self.resource = resource

    async def introspect(self, token: str) -> dict[str, Any]:
        async with httpx2.AsyncClient(timeout=10) as client:
            response = await client.post(self.introspection_endpoint, data={"token": token}, auth=self.auth)
        if response.status_code != 200:
            log.warning("introspection answered %s", response.status_code)
            return {"active": False}
        answer = response.json()
        return answer if isinstance(answer, dict) else {"active": False}

    async def verify_token(self, token: str) -> AccessToken | None:
        answer = await self.introspect(token)
        if answer.get("active") is not True:
            return None
        audience = answer.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.resource not in audiences:
            log.warning("a token for another resource (aud %r)", audience)
            return None
        if answer.get("iss") != self.issuer:
            log.warning("a token from another issuer (%r)", answer.get("iss"))
            return None
        return AccessToken(
            token=token,
            client_id=str(answer.get("client_id")),
            scopes=str(answer.get("scope") or "").split(),
            expires_at=answer.get("exp"),
            resource=self.resource,
            subject=answer.get("sub"),
            claims={"iss": answer["iss"]},
        )


def build_server(verifier: IntrospectingVerifier, issuer: str, resource: str, log_level: str) -> MCPServer:
    # Strings, not AnyHttpUrl: AuthSettings then keeps a path-less issuer without a trailing slash,
    # and the metadata names the issuer exactly as the AS spells it (RFC 8414 compares strings).
    auth = AuthSettings(
        issuer_url=issuer,  # type: ignore[arg-type]
        resource_server_url=resource,  # type: ignore[arg-type]
        required_scopes=[READ_SCOPE],
        validate_token_resource=True,
    )
    server = MCPServer("protected", version="1.0", log_level=log_level, auth=auth, token_verifier=verifier)
    notes: list[str] = []

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The subject of the access token this request came with."""
        user = ctx.request_context.request.user  # type: ignore[union-attr]
        return str(user.access_token.subject)

    @server.tool()
    def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    @server.tool()
    def write_note(text: str) -> str:
        """Keep a note (needs the scope tools:write)."""
        notes.append(text)
        return f"noted {len(notes)}: {text}"

    return server


def _rpc_call(body: bytes) -> tuple[str | None, str | None]:
    """The JSON-RPC method of a request body, and the tool name when it is a tools/call."""
    try:
        message = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return None, None
    method = message["method"]
    params = message.get("params")
    tool = params.get("name") if method == "tools/call" and isinstance(params, dict) else None
    return method, tool if isinstance(tool, str) else None


class Guard:
    """
    ASGI wrapper around the SDK's app: records every request in the log, and answers 403
    insufficient_scope to a call of a write tool whose token lacks tools:write (the SDK checks one
    scope set for every request).
    """

    def __init__(self, app: ASGIApp, verifier: IntrospectingVerifier, metadata_url: str, log_path: str | None) -> None:
        self.app = app
        self.verifier = verifier
        self.metadata_url = metadata_url
        self.log_path = log_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        authorization = headers.get("authorization")
        body = await _read_body(receive) if scope["method"] == "POST" else b""
        method, tool = _rpc_call(body)
        entry = {"authorization": authorization, "method": method, "tool": tool, "http": scope["method"], "path": scope["path"]}

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._record({**entry, "status": message["status"]})
            await send(message)

        if tool in WRITE_TOOLS and not await self._may_write(authorization):
            await self._insufficient_scope(logged_send)
            return
        await self.app(scope, _replay(body, receive), logged_send)

    async def _may_write(self, authorization: str | None) -> bool:
        """False only for a valid token without tools:write (an invalid one gets the SDK's 401)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return True
        token = await self.verifier.verify_token(authorization[7:])
        return token is None or WRITE_SCOPE in token.scopes

    async def _insufficient_scope(self, send: Send) -> None:
        body = json.dumps({"error": "insufficient_scope", "error_description": f"{WRITE_SCOPE} is needed"}).encode()
        challenge = (
            f'Bearer error="insufficient_scope", scope="{READ_SCOPE} {WRITE_SCOPE}", '
            f'resource_metadata="{self.metadata_url}", error_description="{WRITE_SCOPE} is needed"'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", challenge.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(self, entry: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            break
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then whatever the client sends next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


def discover(issuer: str) -> dict[str, Any]:
    """The AS's metadata (RFC 8414)."""
    response = httpx2.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10)
    response.raise_for_status()
    metadata = response.json()
    if metadata.get("issuer") != issuer:
        raise SystemExit(f"protected.py: the AS at {issuer} calls itself {metadata.get('issuer')!r}")
    return metadata


def register_introspection_client(metadata: dict[str, Any]) -> tuple[str, str]:
    """Register a confidential client to introspect with (dynamic client registration, RFC 7591)."""
    response = httpx2.post(
        metadata["registration_endpoint"],
        json={
            "client_name": "protected.py introspection",
            "redirect_uris": [],
            "response_types": [],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
        },
        timeout=10,
    )
    if response.status_code != 201:
        raise SystemExit(f"protected.py: registration at the AS failed: {response.status_code} {response.text}")
    client = response.json()
    return client["client_id"], client["client_secret"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--log")
    p.add_argument("--introspect-client")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    log_level = "INFO" if args.verbose else "WARNING"
    logging.basicConfig(level=log_level, stream=sys.stderr, format="protected.py: %(name)s: %(message)s")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, args.port))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    resource = f"http://{HOST}:{port}{MCP_PATH}"

    metadata = discover(args.issuer)
    if args.introspect_client:
        client_id, _, client_secret = args.introspect_client.partition(":")
    else:
        client_id, client_secret = register_introspection_client(metadata)
    verifier = IntrospectingVerifier(metadata["introspection_endpoint"], client_id, client_secret, args.issuer, resource)
    server = build_server(verifier, args.issuer, resource, log_level)
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=HOST)
    metadata_url = str(build_resource_metadata_url(AnyHttpUrl(resource)))
    guarded = Guard(app, verifier, metadata_url, args.log)

    config = uvicorn.Config(
        guarded,
        host=HOST,
        port=port,
        log_level=log_level.lower(),
        access_log=args.verbose,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    uv = _Server(config)
    threading.Thread(target=_watch_stdin, args=(uv,), daemon=True).start()
    uv.run(sockets=[sock])
    print("protected.py: stopped", file=sys.stderr, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
