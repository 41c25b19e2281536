"""
Step-up authorization (C{docs/design/oauth.md} §7.4), end to end: the real
gateway daemon in front of the SDK-built protected server, whose
C{write_note} needs the scope C{tools:write} that its protected resource
metadata does not advertise (it names C{tools:read} only), and a real
authorization server (oidc-provider).

Alice logs in and is granted C{tools:read}; her C{write_note} is answered
403 C{insufficient_scope} by the server, and she gets -31040
C{insufficient-scope} naming the scopes and the login command; the same
C{twisted-mcp login} as before then asks the authorization server for
C{tools:read tools:write}, and the call succeeds.  Bob, who never stepped
up, is still asked for C{tools:read} only.  No token reaches the log or the
CLI's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError

from tests import mcpclient as mc
from tests.oauth.browser import Browser
from tests.oauth.peers import Peers, oauth_peers  # noqa: F401  (fixture)

from .test_oauth_gateway import Gateway, front_token, wait_until

pytestmark = [pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning"), pytest.mark.timeout(180)]


async def write_note(url: str, sub: str, text: str) -> str:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {front_token(sub)}"}, timeout=30) as http_client:
        async with mc.connect_http(url, http_client=http_client) as client:
            return await mc.call_text(client, "protected__write_note", {"text": text})


async def write_refused(url: str, sub: str) -> MCPError:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {front_token(sub)}"}, timeout=30) as http_client:
        async with mc.connect_http(url, http_client=http_client) as client:
            with pytest.raises(MCPError) as e:
                await client.call_tool("protected__write_note", {"text": "refused"})
            return e.value


@pytest.fixture
def stepping_gateway(tmp_path: Path, oauth_peers: Peers):  # noqa: F811
    """The authorization server (hour-long tokens), the protected server, the gateway before them."""
    authorization = oauth_peers.authorization_server(name="as")
    protected = oauth_peers.protected_server(authorization.issuer, name="protected")
    gateway = Gateway(tmp_path, protected.url)
    try:
        gateway.start()
        yield authorization, protected, gateway
    finally:
        gateway.stop()


def scopes_asked(authorization: Any) -> list[set[str]]:
    """The scope of every authorization request the AS accepted, in order (C{offline_access},
    which the gateway adds whenever the AS supports it, left out)."""
    return [set((e.get("scope") or "").split()) - {"offline_access"} for e in authorization.events("authorization")]


def test_insufficient_scope_then_login_with_the_union(stepping_gateway) -> None:
    authorization, protected, gateway = stepping_gateway
    wait_until(lambda: "twisted-mcp login protected" in (gateway.backend()["lastError"] or ""), what="the login hint")

    # The server advertises tools:read only: that is what alice's first login asks for.
    metadata = httpx2.get(protected.metadata_url, timeout=10).json()
    assert metadata["scopes_supported"] == ["tools:read"], metadata
    with Browser() as browser:
        done = gateway.login("alice", "alice", browser)
    assert done.returncode == 0, done.stderr
    assert scopes_asked(authorization) == [{"tools:read"}]
    wait_until(lambda: gateway.backend()["state"] == "up", what="the backend to come up after the first login")

    # write_note needs tools:write: the server says so (403), alice is told to step up.
    error = mc.run(write_refused, gateway.url, "alice")
    assert error.code == -31040, error
    assert error.data["reason"] == "insufficient-scope", error.data
    assert error.data["backend"] == "protected"
    assert set(error.data["scopes"]) == {"tools:read", "tools:write"}, error.data
    assert error.data["login"] == "twisted-mcp login protected --scope tools:write"
    assert "tools:write" in error.message and "--as jwt:alice" in error.message, error.message
    refused = [r for r in protected.requests() if r["tool"] == "write_note"]
    assert [r["status"] for r in refused] == [403], refused  # not resent: the principal must consent first

    # Bob has not stepped up: his login asks for tools:read only.
    with Browser() as browser:
        done = gateway.login("bob", "bob", browser)
    assert done.returncode == 0, done.stderr
    assert scopes_asked(authorization)[-1] == {"tools:read"}

    # The same login command as before now asks for the union, and the call succeeds.
    with Browser() as browser:
        done = gateway.login("alice", "alice", browser)
    assert done.returncode == 0, done.stderr
    assert scopes_asked(authorization)[-1] == {"tools:read", "tools:write"}, authorization.events("authorization")
    assert "tools:write" in done.stdout
    assert mc.run(write_note, gateway.url, "alice", "hello") == "noted 1: hello"
    assert [r["status"] for r in protected.requests() if r["tool"] == "write_note"] == [403, 200]

    # `tokens` shows the wider grant; bob's is unchanged and he is still refused writing.
    listed = gateway.cli("tokens", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["principal"]: row for row in json.loads(listed.stdout)}
    assert {"tools:read", "tools:write"} <= set(rows["jwt:alice"]["scopes"]), rows
    assert "tools:write" not in rows["jwt:bob"]["scopes"], rows
    assert mc.run(write_refused, gateway.url, "bob").data["reason"] == "insufficient-scope"

    # No token anywhere the gateway writes or says.
    everything = gateway.log() + listed.stdout + done.stdout + done.stderr + json.dumps(gateway.status()) + error.message
    for value in protected.authorizations_seen():
        assert value.split()[-1] not in everything
