"""
Backends of the stateless era (MCP 2026-07-28) over stdio, through the real
`twistd -n mcp-gateway` command (issue 12, step 6): with `protocol: auto`
the gateway probes each backend with `server/discover`.  An SDK 2.3
`MCPServer` of our own (tests/servers/dual_era.py) answers it and is served
in the new era; `@modelcontextprotocol/server-everything` answers -32601 and
is sent `initialize` on the same process.  Clients of both eras (the official
SDK client, `mode="legacy"` and `mode="2026-07-28"`) use the modern backend's
tools, resources and prompts, and the backend sees each client's own
capabilities; /status, /metrics and the log say which era each backend
speaks and how that was decided.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
from mcp_types import CreateMessageResult, ElicitResult, TextContent, TextResourceContents

from tests import mcpclient as mc

from .conftest import everything, free_port, gateway_argv, gateway_env, server
from .surface_helpers import all_prompts, all_resources, text_of

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

MODERN = "2026-07-28"


async def elicit(context: Any, params: Any) -> ElicitResult:
    return ElicitResult(action="decline")


async def sample(context: Any, params: Any) -> CreateMessageResult:
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="no"), model="none")


def admin_get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, path
        return response.read().decode()
    finally:
        conn.close()


def connector(config: str, admin: int, tmp_path: Any) -> Any:
    """connect(mode, **callbacks): an SDK client of that era to the gateway on C{config}, with its admin endpoint on C{admin}."""

    def connect(mode: str, **callbacks: Any):
        return mc.connect(
            [*gateway_argv(config), "--admin", f"tcp:{admin}:interface=127.0.0.1"],
            env=gateway_env(),
            cwd=str(tmp_path),
            errlog=str(tmp_path / "gateway.stderr"),
            mode=mode,
            read_timeout=60,
            **callbacks,
        )

    return connect


@pytest.fixture
def gateway(write_config, tmp_path):
    config = write_config({"dual": server("dual_era"), "everything": everything()})
    admin = free_port()
    return connector(config, admin, tmp_path), admin, tmp_path / "gateway.stderr"


async def use_the_modern_backend(client: Any) -> dict[str, Any]:
    """Tools, resources and prompts of dual_era.py through the gateway; what it was told by the last call."""
    names = await mc.tool_names(client)
    assert {"dual__echo", "dual__what_i_got", "everything__echo"} <= set(names)
    assert await mc.call_text(client, "dual__echo", {"text": "both eras"}) == "both eras"
    assert await mc.call_text(client, "everything__echo", {"message": "old"}) == "Echo: old"

    (greeting,) = [r.uri for r in await all_resources(client) if str(r.uri).startswith("dual://")]
    (contents,) = (await client.read_resource(greeting)).contents
    assert isinstance(contents, TextResourceContents) and contents.text == "hello from both eras"

    assert "dual__greet" in {p.name for p in await all_prompts(client)}
    prompt = await client.get_prompt("dual__greet", {"name": "Ada"})
    assert prompt.messages[0].content.text == "Say hello to Ada"

    seen = await client.call_tool("dual__what_i_got", {})
    assert not seen.is_error, text_of(seen)
    told: dict[str, Any] = json.loads(text_of(seen))
    assert told["protocolVersion"] == MODERN
    assert told["meta"]["io.modelcontextprotocol/clientInfo"]["name"] == "twisted-mcp"
    return told


def test_a_handshake_era_client_uses_a_modern_backend(gateway):
    connect, admin, stderr = gateway

    async def scenario():
        async with connect("legacy", elicitation_callback=elicit) as client:
            assert client.protocol_version != MODERN
            told = await use_the_modern_backend(client)
            # What its initialize declared, exactly: elicitation, no sampling, no roots.
            assert set(told["clientCapabilities"]) == {"elicitation"}
            assert set(told["meta"]["io.modelcontextprotocol/clientCapabilities"]) == {"elicitation"}
            assert "io.modelcontextprotocol/logLevel" not in told["meta"]  # it never set a level

            status = json.loads(admin_get(admin, "/status?format=json"))
            by_name = {b["name"]: b for b in status["backends"]}
            assert (by_name["dual"]["era"], by_name["dual"]["probe"], by_name["dual"]["protocol"]) == ("modern", "discover", MODERN)
            everything_backend = by_name["everything"]
            assert everything_backend["era"] == "legacy"
            assert everything_backend["probe"].startswith("fallback: server/discover answered -32601")
            metrics = admin_get(admin, "/metrics")
            assert f'twisted_mcp_backend_info{{backend="dual",era="modern",protocol="{MODERN}"}} 1.0' in metrics
            assert 'twisted_mcp_backend_info{backend="everything",era="legacy",protocol="2025-' in metrics

    mc.run(scenario, timeout=120)
    log = stderr.read_text()
    assert "backend dual is up: " in log and f"(protocol {MODERN}, modern, discover)" in log
    assert "legacy, fallback: server/discover answered -32601" in log


def test_a_stateless_era_client_uses_a_modern_backend(gateway):
    connect, admin, _ = gateway

    async def scenario():
        async with connect(MODERN, sampling_callback=sample) as client:
            assert client.protocol_version == MODERN
            told = await use_the_modern_backend(client)
            # Its own request's capabilities, exactly: sampling only.
            assert set(told["clientCapabilities"]) == {"sampling"}
            assert set(told["meta"]["io.modelcontextprotocol/clientCapabilities"]) == {"sampling"}

    mc.run(scenario, timeout=120)


def test_protocol_legacy_is_honoured(write_config, tmp_path):
    """The same server pinned legacy is sent initialize, and told the handshake's version."""
    config = write_config({"dual": server("dual_era", protocol="legacy")})

    async def scenario():
        async with mc.connect(gateway_argv(config), env=gateway_env(), cwd=str(tmp_path), errlog=str(tmp_path / "gw.stderr"), mode=MODERN, read_timeout=60) as client:
            seen = json.loads(text_of(await client.call_tool("dual__what_i_got", {})))
            assert seen["protocolVersion"] != MODERN and seen["meta"] == {}

    mc.run(scenario, timeout=120)
    assert "(protocol 2025-11-25, legacy, pinned)" in (tmp_path / "gw.stderr").read_text()
