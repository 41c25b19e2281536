"""
Consent asked inside the call (C{docs/design/oauth.md} §5, §4.4, §10.1), end to end: the real
gateway daemon with C{oauth.publicUrl} set to its own loopback HTTP front and no identity config
(one principal, C{local}), in front of the SDK-built protected MCP server and oidc-provider
(C{tests/oauth}); the official SDK client declares URL elicitation and answers it the way a real
client does: the scripted browser opens the URL it was given (the gateway's connect page), logs in
and consents at the authorization server, lands on the gateway's C{/oauth/callback}; then the
client accepts and the same call returns the server's answer.

Also shown: the handshake-era and the 2026-07-28 client both; a declined elicitation; a client
that cannot be asked told to log in; C{/oauth/client.json}; a forged callback refused with
C{state-mismatch}; a connect link used twice; no token or code in the gateway's log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import MCPError
from mcp_types import ElicitResult

from tests import mcpclient as mc
from tests.oauth.browser import Browser
from tests.oauth.peers import Peers, oauth_peers  # noqa: F401  (fixture)

from .test_oauth_gateway import Gateway, wait_until

pytestmark = [pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning"), pytest.mark.timeout(240)]

MODERN = "2026-07-28"


class PublicGateway(Gateway):
    """L{Gateway} with no identity config and C{oauth.publicUrl} = its own HTTP front."""

    def __init__(self, tmp_path: Path, backend_url: str) -> None:
        super().__init__(tmp_path, backend_url)
        config = json.loads(self.config.read_text())
        del config["identity"], config["roles"]
        config["oauth"]["publicUrl"] = self.public_url
        config["oauth"]["consentWait"] = 30
        self.config.write_text(json.dumps(config, indent=1))

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Elicitations:
    """The SDK client's elicitation callback: each URL asked is opened by the browser (or not), then answered."""

    def __init__(self, browser: Browser, account: str, action: str = "accept") -> None:
        self.browser = browser
        self.account = account
        self.action = action
        self.asked: list[Any] = []
        self.delivered: list[str] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        self.asked.append(params)
        if self.action == "accept":
            url = params.url
            self.delivered.append(await anyio.to_thread.run_sync(lambda: self.browser.authorize(url, account=self.account)))
        return ElicitResult(action=self.action)


async def whoami(url: str, mode: str, elicit: Any = None, notes: Any = None) -> str:
    kwargs: dict[str, Any] = {"mode": mode}
    if elicit is not None:
        kwargs["elicitation_callback"] = elicit
    if notes is not None:
        kwargs["message_handler"] = notes
    async with mc.connect_http(url, **kwargs) as client:
        return await mc.call_text(client, "protected__whoami", {})


async def refused(url: str, mode: str, elicit: Any = None) -> MCPError:
    kwargs: dict[str, Any] = {"mode": mode}
    if elicit is not None:
        kwargs["elicitation_callback"] = elicit
    async with mc.connect_http(url, **kwargs) as client:
        with pytest.raises(MCPError) as e:
            await client.call_tool("protected__whoami", {})
        return e.value


@pytest.fixture
def public_gateway(tmp_path: Path, oauth_peers: Peers):  # noqa: F811
    authorization = oauth_peers.authorization_server(name="as")
    protected = oauth_peers.protected_server(authorization.issuer, name="protected")
    gateway = PublicGateway(tmp_path, protected.url)
    try:
        gateway.start()
        yield authorization, protected, gateway
    finally:
        gateway.stop()


def logged_out(gateway: Gateway) -> None:
    done = gateway.cli("logout", "protected")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert gateway.cli("tokens", "--json").stdout.strip() == "[]"


def test_consent_inside_the_call_both_eras(public_gateway) -> None:
    authorization, protected, gateway = public_gateway

    # The operator logs in once (the backend's catalog needs a token), then logs out: the tools stay
    # listed and "local" has no token.
    with Browser() as browser:
        done = gateway.login("local", "alice", browser)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: gateway.backend()["state"] == "up", what="the backend to come up")
    assert mc.run(whoami, gateway.url, "legacy") == "alice"
    logged_out(gateway)

    # A client that cannot be asked is told to log in.
    error = mc.run(refused, gateway.url, "legacy")
    assert error.code == -31040, error
    assert error.data["reason"] == "authorization-required"
    assert "twisted-mcp login protected" in error.message

    # Declined: -31040 "declined", no token.
    with Browser() as browser:
        elicit = Elicitations(browser, "carol", action="decline")
        error = mc.run(refused, gateway.url, "legacy", elicit)
    assert error.code == -31040, error
    assert error.data["reason"] == "declined"
    assert len(elicit.asked) == 1
    assert gateway.cli("tokens", "--json").stdout.strip() == "[]"

    # A handshake-era client declaring URL elicitation: asked on the call, the browser consents
    # through /oauth/connect -> the AS -> /oauth/callback, and the same call answers.
    notes = mc.NotificationRecorder()
    with Browser() as browser:
        elicit = Elicitations(browser, "carol")
        assert mc.run(whoami, gateway.url, "legacy", elicit, notes) == "carol"
        visited = list(browser.visited)
    (asked,) = elicit.asked
    assert asked.mode == "url"
    assert asked.url.startswith(gateway.public_url + "/oauth/connect/")
    assert asked.message == "Authorize twisted-mcp to use protected as local"
    assert asked.elicitation_id  # a real elicitation/create on the call (2025-11-25 requires the id)
    assert visited[0] == asked.url
    assert elicit.delivered[0].startswith(gateway.public_url + "/oauth/callback?")
    assert "code=" not in asked.url and "state=" not in asked.url
    assert "notifications/elicitation/complete" in notes.methods(), notes.methods()

    # The connect link was single use.
    with httpx2.Client() as http:
        again = http.get(asked.url)
    assert again.status_code == 404
    assert again.headers["cache-control"] == "no-store"

    # And the token is kept: the next call needs nothing.
    assert mc.run(whoami, gateway.url, "legacy") == "carol"

    # A 2026-07-28 client: an InputRequiredResult asking "authorize", the retry waits and answers.
    logged_out(gateway)
    with Browser() as browser:
        elicit = Elicitations(browser, "dora")
        assert mc.run(whoami, gateway.url, MODERN, elicit) == "dora"
    (asked,) = elicit.asked
    assert asked.mode == "url"
    assert asked.url.startswith(gateway.public_url + "/oauth/connect/")
    assert asked.elicitation_id is None  # an inputRequests entry of an InputRequiredResult (2026-07-28 has no id)

    # The client metadata document.
    with httpx2.Client() as http:
        document = http.get(gateway.public_url + "/oauth/client.json")
        assert document.status_code == 200
        assert document.headers["content-type"] == "application/json"
        body = document.json()
        assert body["client_id"] == gateway.public_url + "/oauth/client.json"
        assert gateway.public_url + "/oauth/callback" in body["redirect_uris"]
        assert body["token_endpoint_auth_method"] == "none"
        assert body["grant_types"] == ["authorization_code", "refresh_token"]

        # A forged callback: 400, state-mismatch, nothing stored.
        forged = http.get(gateway.public_url + "/oauth/callback", params={"state": "forged-state", "code": "forged-code"})
        assert forged.status_code == 400
        assert "state-mismatch" in forged.text
        assert "forged-code" not in forged.text and "forged-state" not in forged.text
        assert forged.headers["cache-control"] == "no-store"
        assert forged.headers["referrer-policy"] == "no-referrer"
        assert "<script" not in forged.text

        # Another Host is refused on these routes too (DNS rebinding).
        rebound = http.get(gateway.public_url + "/oauth/client.json", headers={"host": "evil.example"})
        assert rebound.status_code == 421

    rows = json.loads(gateway.cli("tokens", "--json").stdout)
    assert [r["principal"] for r in rows] == ["local"]

    # No token, code or state in the log.
    text = gateway.log()
    for value in protected.authorizations_seen():
        assert value.split()[-1] not in text
    for url in elicit.delivered:
        for part in url.split("?", 1)[1].split("&"):
            key, _, value = part.partition("=")
            if key in ("code", "state"):
                assert value not in text
    assert "forged-code" not in text
