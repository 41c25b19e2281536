"""
The OAuth broker against the real peers: discovery from the protected
server's 401, dynamic registration, the consent walked by the scripted
browser, the code exchanged with PKCE and C{resource} at oidc-provider,
the token accepted by the protected server, refresh with rotation (as the
AS's events show), a 401 handled by one refresh, logout with revocation,
and none of the tokens the AS issued in anything the broker logged or
returned.  The broker runs in C{oauth_broker_driver.py} with the real reactor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.oauth.peers import AuthorizationServer, Peers, oauth_peers  # noqa: F401  (fixture)

ACCESS_TTL = 4


def test_the_broker_against_the_peers(oauth_peers: Peers, tmp_path: Path) -> None:  # noqa: F811
    authorization: AuthorizationServer = oauth_peers.authorization_server(name="as", access_ttl=ACCESS_TTL)
    protected = oauth_peers.protected_server(authorization.issuer, name="protected")
    store = tmp_path / "store"
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.oauth_broker_driver", str(store), protected.url, str(ACCESS_TTL)],
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    out = json.loads(run.stdout)

    assert out["first_status"] == 401
    assert out["before_login"]["reason"] == "authorization-required"
    assert out["asked_scopes"] == ["tools:read", "offline_access"]  # the AS lists offline_access
    assert out["callback_has_iss"] is True
    assert out["authorized"] == {"principal": "jwt:alice", "issuer": authorization.issuer, "refreshable": True}
    assert out["on_authorized"] == [["protected", "jwt:alice"]]
    assert out["with_token"] == 200
    assert out["bob"]["reason"] == "authorization-required"
    assert "--as jwt:bob" in out["bob"]["message"]
    assert out["refreshed"] is True
    assert out["after_refresh"] == 200
    assert out["catalog_principal"] == "jwt:alice"
    assert out["after_rejection"] == 200
    assert out["logout"]["revoked"] is True
    assert out["after_logout"] == 401
    assert out["token_after_logout"]["reason"] == "authorization-required"
    [row] = out["rows"]
    assert (row["principal"], row["backend"], row["resource"]) == ("jwt:alice", "protected", protected.url)
    assert out["status"]["clientIdKind"] == "dcr"

    # What the AS saw: resource on every token request; two refreshes, each consuming the
    # previous refresh token and saving a new one; no grant revoked by reuse.
    requests = authorization.events("token.request")
    assert [r["grant_type"] for r in requests] == ["authorization_code", "refresh_token", "refresh_token"]
    assert all(r["resource"] == [protected.url] and r["outcome"] == "ok" for r in requests), requests
    assert len(authorization.events("refresh_token.consumed")) == 2
    assert len(authorization.events("refresh_token.saved")) == 3

    # No token the protected server received is in anything the broker logged or returned.
    issued = {value.split(" ", 1)[1] for value in protected.authorizations_seen()}
    assert len(issued) >= 3
    assert out["secrets_in_log"] == []
    assert any("refreshed (rotation 1)" in line for line in out["log"])
    everything = run.stdout.decode() + run.stderr.decode()
    for token in issued:
        assert token not in everything
