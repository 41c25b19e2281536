"""
Streamable HTTP backends of the stateless era (MCP 2026-07-28) through the
real `twistd -n mcp-gateway` command (issue 12, step 9): one SDK 2.3 HTTP
server of both eras (tests/servers/http_dual_era.py) is configured twice,
`protocol: auto` (the probe finds it modern: every request is a POST with
the 2026-07-28 headers, which the SDK checks against the body) and
`protocol: legacy` (the handshake era on the same server).  Clients of both
eras (the official SDK client) list and call tools (one whose argument
travels in an `Mcp-Param-*` header), read a resource and get a prompt; the
backend sees each client's own capabilities; a client that cancels a slow
call closes the backend's POST, and the backend's handler is cancelled.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
import pytest
from mcp_types import TextResourceContents

from tests import mcpclient as mc

from .conftest import SERVERS, free_port
from .surface_helpers import all_prompts, all_resources, text_of
from .test_http import HttpServer
from .test_modern_backends import MODERN, admin_get, connector, elicit, sample

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")


@pytest.fixture
def gateway(write_config, tmp_path):
    cancel_log = tmp_path / "cancelled.log"
    server = HttpServer(
        [sys.executable, os.path.join(SERVERS, "http_dual_era.py"), "--port", "{port}"],
        tmp_path,
        "http_dual_era",
        env={"DUAL_CANCEL_LOG": str(cancel_log)},
    )
    config = write_config(
        {
            "dual": {"url": f"{server.url}/mcp"},
            "old": {"url": f"{server.url}/mcp", "protocol": "legacy"},
        }
    )
    admin = free_port()
    connect = connector(config, admin, tmp_path)
    yield connect, admin, tmp_path / "gateway.stderr", cancel_log
    server.stop()


async def what_it_was_told(client: Any, backend: str) -> dict[str, Any]:
    seen = await client.call_tool(f"{backend}__what_i_got", {})
    assert not seen.is_error, text_of(seen)
    told: dict[str, Any] = json.loads(text_of(seen))
    return told


async def use_both_backends(client: Any) -> dict[str, Any]:
    """Tools, resources and prompts of the server through both configurations; what the modern one was told."""
    names = set(await mc.tool_names(client))
    assert {"dual__echo", "dual__region", "dual__slow", "old__echo", "old__region"} <= names
    for backend in ("dual", "old"):
        assert await mc.call_text(client, f"{backend}__echo", {"text": "both eras"}) == "both eras"
        # The region travels in Mcp-Param-Region toward the modern backend (the SDK checks it
        # against the body, base64 form included); the handshake era has no such header.
        for region in ("eu-west1", "Zürich", " padded "):
            text = await mc.call_text(client, f"{backend}__region", {"region": region, "text": "hi"})
            assert text == f"{region}: hi"
        prompt = await client.get_prompt(f"{backend}__greet", {"name": "Ada"})
        assert prompt.messages[0].content.text == "Say hello to Ada"
    assert {"dual__greet", "old__greet"} <= {p.name for p in await all_prompts(client)}
    # The same URI from two backends: each is shown under its server's name.
    uris = {str(r.uri) for r in await all_resources(client)}
    for backend in ("dual", "old"):
        uri = f"twisted-mcp://{backend}/dual://greeting"
        assert uri in uris
        (contents,) = (await client.read_resource(uri)).contents
        assert isinstance(contents, TextResourceContents) and contents.text == "hello from both eras"

    told = await what_it_was_told(client, "dual")
    assert told["protocolVersion"] == MODERN
    assert told["meta"]["io.modelcontextprotocol/clientInfo"]["name"] == "twisted-mcp"
    old = await what_it_was_told(client, "old")
    assert old["protocolVersion"] != MODERN and old["meta"] == {}
    return told


def test_a_handshake_era_client_uses_a_modern_http_backend(gateway):
    connect, admin, stderr, _ = gateway

    async def scenario():
        async with connect("legacy", elicitation_callback=elicit) as client:
            assert client.protocol_version != MODERN
            told = await use_both_backends(client)
            # What its initialize declared, exactly: elicitation, no sampling, no roots.
            assert set(told["clientCapabilities"]) == {"elicitation"}
            assert set(told["meta"]["io.modelcontextprotocol/clientCapabilities"]) == {"elicitation"}

            status = json.loads(admin_get(admin, "/status?format=json"))
            by_name = {b["name"]: b for b in status["backends"]}
            assert (by_name["dual"]["era"], by_name["dual"]["probe"], by_name["dual"]["protocol"]) == ("modern", "discover", MODERN)
            assert (by_name["old"]["era"], by_name["old"]["probe"]) == ("legacy", "pinned")
            metrics = admin_get(admin, "/metrics")
            assert f'twisted_mcp_backend_info{{backend="dual",era="modern",protocol="{MODERN}"}} 1.0' in metrics

    mc.run(scenario, timeout=120)
    log = stderr.read_text()
    assert "backend dual is up: " in log and f"(protocol {MODERN}, modern, discover)" in log
    assert "backend old is up: " in log and "legacy, pinned)" in log


def test_a_stateless_era_client_uses_a_modern_http_backend(gateway):
    connect, _, _, _ = gateway

    async def scenario():
        async with connect(MODERN, sampling_callback=sample) as client:
            assert client.protocol_version == MODERN
            told = await use_both_backends(client)
            # Its own request's capabilities, exactly: sampling only.
            assert set(told["clientCapabilities"]) == {"sampling"}
            assert set(told["meta"]["io.modelcontextprotocol/clientCapabilities"]) == {"sampling"}

    mc.run(scenario, timeout=120)


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_a_cancelled_call_closes_the_backends_post(gateway, mode):
    """The client cancels; the gateway aborts the POST (no notifications/cancelled over HTTP); the handler is cancelled."""
    connect, _, _, cancel_log = gateway

    def noted() -> list[str]:
        return cancel_log.read_text().split() if cancel_log.exists() else []

    async def scenario():
        async with connect(mode) as client:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.call_tool, "dual__slow", {"seconds": 30})
                    await mc.wait_until(lambda: "started" in noted(), 20)
                    scope.cancel()
            await mc.wait_until(lambda: "cancelled" in noted(), 10)
            assert noted() == ["started", "cancelled"]
            assert await mc.call_text(client, "dual__echo", {"text": "after"}) == "after"

    mc.run(scenario, timeout=90)
