"""
Bearer tokens on the Streamable HTTP front through the real daemon: the
official `mcp` SDK's Streamable HTTP client sending `Authorization: Bearer`,
raw HTTP for the 401 challenge and the RFC 9728 metadata, and the token
looked for in the log and the audit trail.
"""

from __future__ import annotations

import json
import socket
import time

import jwt
import pytest
from mcp import MCPError

from tests import mcpclient as mc

from .conftest import free_port, server
from .test_http_front import INIT, Raw

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

SECRET = "integration-s3cret-integration-s3cret"
ISSUER = "https://idp.example.com/"


def token(**overrides) -> str:
    now = int(time.time())
    claims = {"sub": "alice", "roles": ["dev"], "iss": ISSUER, "aud": "twisted-mcp", "iat": now, "exp": now + 600, **overrides}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_sdk_client_with_a_bearer_token_and_refusals_over_http(daemon, tmp_path):
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    extra = {
        "identity": {
            "jwt": {"tokenEnv": "UNSET_STDIO_TOKEN", "algorithms": ["HS256"], "secret": SECRET, "issuer": ISSUER, "audience": "twisted-mcp"}
        },
        "roles": {"dev": {"allow": ["slow__echo"]}},
        "audit": {"sink": "file", "path": str(audit)},
        "http": {"authorizationServers": [ISSUER]},
    }
    _, logfile = daemon({"slow": server("slow")}, f"http:tcp:{port}:interface=127.0.0.1", extra=extra)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the HTTP listener never accepted"
            time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    good = token()

    async def scenario():
        import httpx2

        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {good}"}, timeout=30) as http_client:
            async with mc.connect_http(f"{url}/mcp", http_client=http_client) as alice:
                assert await mc.tool_names(alice) == ["slow__echo"]  # alice's roles, from her token
                assert await mc.call_text(alice, "slow__echo", {"text": "with a token"}) == "with a token"
                with pytest.raises(MCPError):
                    await alice.call_tool("slow__pid", {})
        with pytest.raises(Exception):  # noqa: B017  (the SDK reports the 401 as it can)
            async with mc.connect_http(f"{url}/mcp") as _:
                pass

    mc.run(scenario, timeout=60)

    raw = Raw(url)
    status, headers, body = raw.call("POST", INIT)
    metadata_url = f"{url}/.well-known/oauth-protected-resource/mcp"
    assert status == 401
    assert headers["www-authenticate"] == f'Bearer resource_metadata="{metadata_url}"'
    expired = token(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    status, headers, body = raw.call("POST", INIT, {"authorization": f"Bearer {expired}"})
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert "expired" in json.loads(body)["error"]["message"]

    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/.well-known/oauth-protected-resource/mcp")
    response = conn.getresponse()
    document = json.loads(response.read())
    conn.close()
    assert response.status == 200
    assert document == {"resource": f"{url}/mcp", "authorization_servers": [ISSUER], "bearer_methods_supported": ["header"]}

    # The tokens are nowhere in the log or the audit trail; the refusals are audited.
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
        refusals = [r for r in records if r.get("method") == "http/POST" and r.get("decision") == "deny"]
        if len(refusals) >= 2:
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.1)
    assert any(r.get("principal") == "alice" and r.get("tool") == "slow__echo" and r.get("outcome") == "ok" for r in records)
    with open(logfile) as f:
        log_text = f.read()
    assert "refused (401)" in log_text
    text = audit.read_text() + log_text
    for secret in (good, expired):
        for part in secret.split("."):
            assert part not in text
