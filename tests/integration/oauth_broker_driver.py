"""
Drives the gateway's L{OAuthBroker} with the real reactor against the real
OAuth peers (C{tests/oauth/as.mjs} and C{tests/servers/protected.py}), the
way C{backends/http.py} and C{twisted-mcp login} are to use it, and prints
what happened as one JSON object on stdout.  Run by
C{test_oauth_broker_peers.py}; the scripted browser walks the consent in a
thread, and a loopback listener of the driver's own takes the callback.

    python -m tests.integration.oauth_broker_driver STORE_DIR PROTECTED_URL ACCESS_TTL
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import treq
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogBeginner
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.oauth.browser import authorize
from twisted_mcp.backends.oauth.broker import OAuthBroker
from twisted_mcp.backends.oauth.fetch import AuthHttp
from twisted_mcp.backends.oauth.file_store import FileStore
from twisted_mcp.backends.oauth.problems import OAuthProblem
from twisted_mcp.backends.oauth.sealing import KeyRing
from twisted_mcp.backends.oauth.store import ClientStore, PendingStore, TokenStore
from twisted_mcp.config.models import OAuthAuth, OAuthSettings, OAuthStoreSettings

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "broker-driver", "version": "1"}},
}


class Callback(Resource):
    """The loopback redirect URI: answers 200 and keeps the query."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[dict[str, str]] = []

    def render_GET(self, request: Request) -> bytes:
        self.queries.append({k.decode(): v[0].decode() for k, v in request.args.items()})
        return b"done"


async def post_mcp(url: str, token: str | None) -> tuple[int, list[bytes]]:
    headers = {b"Accept": [b"application/json, text/event-stream"], b"Content-Type": [b"application/json"]}
    if token is not None:
        headers[b"Authorization"] = [b"Bearer " + token.encode()]
    response = await treq.post(url, json.dumps(INITIALIZE).encode(), headers=headers, persistent=False)
    await treq.content(response)
    return response.code, response.headers.getRawHeaders(b"www-authenticate", [])


async def problem_of(d: Deferred[Any]) -> dict[str, Any]:
    try:
        await d
    except OAuthProblem as e:
        return {"class": type(e).__name__, "reason": e.reason, "message": e.message, "data": e.data}
    return {"class": None}


async def scenario(reactor: Any, store_dir: str, url: str, access_ttl: float) -> None:
    lines: list[str] = []
    globalLogBeginner.beginLoggingTo([lambda event: lines.append(formatEvent(event))], redirectStandardIO=False)
    out: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    callback = Callback()
    site = Site(callback)
    site.log = lambda request: None  # the harness's own access log would name the code
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    redirect_uri = f"http://127.0.0.1:{port.getHost().port}/oauth/callback"
    settings = OAuthSettings(store=OAuthStoreSettings(path=store_dir, keyFile=None, keyEnv="X", keyCredential=None))
    records = FileStore(store_dir, reactor)
    records.check()
    ring = KeyRing(os.urandom(32))
    http = AuthHttp(reactor, 10.0, 65536)
    broker = OAuthBroker(reactor, http, TokenStore(records, ring), ClientStore(records, ring), PendingStore(records, ring), settings)
    authorized: list[list[str]] = []
    broker.on_authorized(lambda backend, principal: authorized.append([backend, principal]))
    try:
        broker.add_backend("protected", url, OAuthAuth())
        status, challenge = await post_mcp(url, None)
        out["first_status"] = status
        broker.challenged("protected", challenge)
        out["before_login"] = await problem_of(broker.token_for("jwt:alice", "protected"))

        started = await broker.begin("jwt:alice", "protected", redirect_uri)
        out["asked_scopes"] = list(started.scopes)
        arrived = await deferToThread(authorize, started.url, "alice")
        params = {k: v[0] for k, v in parse_qs(urlsplit(arrived).query).items()}
        out["callback_has_iss"] = "iss" in params
        done = await broker.complete(params, redirect_uri)
        secrets = {name: params[name] for name in ("code", "state")}
        out["authorized"] = {"principal": done.principal, "issuer": done.issuer, "refreshable": done.refreshable}
        out["on_authorized"] = authorized

        first = await broker.token_for("jwt:alice", "protected")
        out["with_token"] = (await post_mcp(url, first.token))[0]
        out["bob"] = await problem_of(broker.token_for("jwt:bob", "protected"))

        # Into the refresh window (80 % of the lifetime): refreshed, rotated, written.
        await deferLater(reactor, access_ttl * 0.85, lambda: None)
        second = await broker.token_for("jwt:alice", "protected")
        out["refreshed"] = second.token != first.token
        out["after_refresh"] = (await post_mcp(url, second.token))[0]
        out["catalog_principal"] = (await broker.token_for(None, "protected")).principal

        # A 401 to a token: one refresh, the new token works.
        third = await broker.rejected(second, "protected", [])
        out["after_rejection"] = (await post_mcp(url, third.token))[0]
        out["rows"] = await broker.list_tokens()
        out["status"] = broker.status("protected")

        # A second login (new port, new registration), then logout with revocation.
        out["logout"] = await broker.logout("jwt:alice", "protected", revoke=True)
        out["after_logout"] = (await post_mcp(url, third.token))[0]
        out["token_after_logout"] = await problem_of(broker.token_for("jwt:alice", "protected"))
    finally:
        await port.stopListening()
        await http.close()
    out["log"] = lines
    out["secrets_in_log"] = sorted(name for name, value in secrets.items() if any(value in line for line in lines))
    sys.stdout.write(json.dumps(out) + "\n")


def main() -> None:
    store_dir, url, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    react(lambda reactor: Deferred.fromCoroutine(scenario(reactor, store_dir, url, ttl)))


if __name__ == "__main__":
    main()
