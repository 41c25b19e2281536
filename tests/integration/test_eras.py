"""
Clients of the stateless era (MCP 2026-07-28) through the real `twistd -n
mcp-gateway` command, beside handshake-era ones (issue 12): the official `mcp`
SDK client with `mode="2026-07-28"` (and its default, `auto`, which probes
`server/discover`) against `@modelcontextprotocol/server-everything`,
`mcp-server-time` and a server of our own, all handshake-era backends; and raw
NDJSON where a test must send what no SDK would.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from mcp import MCPError
from mcp_types import PromptReference, TextResourceContents

from tests import mcpclient as mc

from .conftest import everything, gateway_argv, gateway_env, server, time_server
from .surface_helpers import ClientSide, all_prompts, all_resources, all_templates, connect_everything_directly, text_of

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

MODERN = "2026-07-28"


def connect(config: str, tmp_path, mode: str = MODERN, **kwargs):
    return mc.connect(
        gateway_argv(config),
        env=gateway_env(),
        cwd=str(tmp_path),
        errlog=str(tmp_path / "gateway.stderr"),
        mode=mode,
        read_timeout=60,
        **kwargs,
    )


@pytest.fixture
def config(write_config):
    return write_config({"everything": everything(), "time": time_server(), "slow": server("slow")})


@pytest.mark.parametrize("mode", [MODERN, "auto"])
def test_a_stateless_era_client_uses_tools_resources_prompts_and_completion(config, tmp_path, mode):
    async def reference():
        async with connect_everything_directly(tmp_path) as direct:
            resources = await all_resources(direct)
            first = resources[0]
            return first.uri, (await direct.read_resource(first.uri)).contents[0], {p.name for p in await all_prompts(direct)}

    async def scenario():
        uri, text, prompts = await reference()
        async with connect(config, tmp_path, mode=mode) as client:
            assert client.protocol_version == MODERN
            if mode == "auto":  # what the probe's server/discover answered (mode=2026-07-28 does not ask)
                caps = client.server_capabilities
                assert caps.tools is not None and caps.prompts is not None and caps.resources is not None
                assert caps.tools.list_changed is True  # delivered on subscriptions/listen
            names = await mc.tool_names(client)
            assert {"time__get_current_time", "everything__echo", "slow__sleep"} <= set(names)
            now = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not now.is_error and now.structured_content["timezone"] == "UTC"
            assert await mc.call_text(client, "everything__echo", {"message": "modern"}) == "Echo: modern"
            result, progress = await mc.call_with_progress(client, "slow__sleep", {"seconds": 0.5})
            assert mc.result_text(result) == "slept 0.5" and len(progress) >= 3

            assert uri in {r.uri for r in await all_resources(client)}
            (got,) = (await client.read_resource(uri)).contents
            assert isinstance(got, TextResourceContents) and got.text == text.text
            assert await all_templates(client)
            with pytest.raises(MCPError) as missing:
                await client.read_resource("demo://resource/static/document/no-such-file.md")
            assert missing.value.error.code == -32602  # 2026-07-28 forbids -32002

            assert {p.name for p in await all_prompts(client)} == {f"everything__{name}" for name in prompts}
            simple = await client.get_prompt("everything__simple-prompt")
            assert simple.messages
            completed = await client.complete(
                PromptReference(type="ref/prompt", name="everything__completable-prompt"), {"name": "department", "value": "E"}
            )
            assert "Engineering" in completed.completion.values

            with pytest.raises(MCPError) as unknown:
                await client.call_tool("nobody__nothing", {})
            assert unknown.value.error.code == -32602

    mc.run(scenario, timeout=120)


def test_log_messages_reach_a_stateless_era_client_only_for_requests_that_ask(write_config, tmp_path):
    """
    A stdio server's log messages carry no sign of their call: the gateway
    gives them to a request that asked for logs (its logLevel) when it is
    the only call to that server, at that level and above; never to a
    request that did not ask.
    """
    config = write_config({"surface": server("surface")})

    async def levels(**kwargs) -> list[str]:
        side = ClientSide("M")
        async with connect(config, tmp_path, logging_callback=side.log, **kwargs) as client:
            result = await client.call_tool("surface__log_levels", {})
            assert not result.is_error, text_of(result)
        return [entry.level for entry in side.logs if entry.logger.startswith("surface")]

    async def scenario():
        assert await levels(log_level="error") == ["error", "critical", "alert", "emergency"]
        assert await levels() == []

    mc.run(scenario, timeout=60)


def test_a_handshake_era_client_and_a_stateless_one_share_the_gateway(write_config, tmp_path):
    config = write_config({"slow": server("slow")})

    async def scenario():
        async with connect(config, tmp_path, mode="legacy") as legacy:
            assert legacy.protocol_version == "2025-11-25"
            assert await mc.call_text(legacy, "slow__echo", {"text": "old"}) == "old"
        async with connect(config, tmp_path) as modern:
            assert await mc.call_text(modern, "slow__echo", {"text": "new"}) == "new"

    mc.run(scenario, timeout=60)


def raw_session(config: str, tmp_path, lines: list[dict]) -> list[dict]:
    """Send NDJSON lines to a stdio gateway; the answers, in order (one per request)."""
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    proc = subprocess.run(
        gateway_argv(config), input=data, env=gateway_env(), cwd=str(tmp_path), capture_output=True, timeout=60
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def envelope(version: str = MODERN, **more) -> dict:
    return {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        **more,
    }


def test_hostile_stateless_era_requests_each_get_their_error(write_config, tmp_path):
    config = write_config({"slow": server("slow")})
    answers = raw_session(
        config,
        tmp_path,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": "not an object"}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}},
            {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": envelope("v999.0.0")}},
            {"jsonrpc": "2.0", "id": 4, "method": "ping", "params": {"_meta": envelope()}},
            {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "slow__echo", "arguments": {"text": "ok"}, "_meta": envelope()}},
            {"jsonrpc": "2.0", "id": 6, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}},
            {"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
        ],
    )
    by_id = {a["id"]: a for a in answers}
    assert by_id[1]["error"]["code"] == -32600  # before either era: a _meta that is not an object is no envelope
    assert by_id[2]["error"]["code"] == -32602 and "clientCapabilities" in by_id[2]["error"]["message"]
    assert by_id[3]["error"]["code"] == -32022
    assert by_id[3]["error"]["data"]["requested"] == "v999.0.0" and MODERN in by_id[3]["error"]["data"]["supported"]
    assert by_id[4]["error"]["code"] == -32601
    assert by_id[5]["result"]["content"][0]["text"] == "ok" and by_id[5]["result"]["resultType"] == "complete"
    assert by_id[6]["error"]["code"] == -32022 and by_id[6]["error"]["data"]["supported"] == [MODERN]
    assert by_id[7]["error"]["code"] == -32602


def test_a_connection_that_sent_initialize_refuses_stateless_era_requests(write_config, tmp_path):
    config = write_config({"slow": server("slow")})
    answers = raw_session(
        config,
        tmp_path,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": envelope()}},
            {"jsonrpc": "2.0", "id": 3, "method": "server/discover", "params": {"_meta": envelope()}},
            {"jsonrpc": "2.0", "id": 4, "method": "tools/list"},
        ],
    )
    by_id = {a["id"]: a for a in answers}
    assert by_id[1]["result"]["protocolVersion"] == "2025-06-18"
    assert by_id[2]["error"]["code"] == -32600 and "initialize" in by_id[2]["error"]["message"]
    assert by_id[3]["result"]["supportedVersions"][0] == MODERN
    assert "resultType" not in by_id[4]["result"] and by_id[4]["result"]["tools"]


@pytest.mark.parametrize("mode", [MODERN, "auto"])
def test_a_stateless_era_client_over_http_needs_no_session(daemon, tmp_path, mode):
    from .test_http_front import connect_http, start_http

    _, url = start_http(daemon, {"everything": everything(), "slow": server("slow")})

    async def scenario():
        async with connect_http(url, mode=mode) as client:
            assert client.protocol_version == MODERN
            assert {"everything__echo", "slow__sleep"} <= set(await mc.tool_names(client))
            assert await mc.call_text(client, "everything__echo", {"message": "stateless"}) == "Echo: stateless"
            result, progress = await mc.call_with_progress(client, "slow__sleep", {"seconds": 0.5})
            assert mc.result_text(result) == "slept 0.5" and len(progress) >= 3
            assert (await client.get_prompt("everything__simple-prompt")).messages
            assert await all_resources(client)

    mc.run(scenario, timeout=90)
    log = (tmp_path / "gw.log").read_text()
    assert "HTTP client session http-stateless#" in log


def test_raw_stateless_http_requests_get_the_specs_statuses(daemon, tmp_path):
    from .test_http_front import Raw, start_http

    _, url = start_http(daemon, {"slow": server("slow")})
    raw = Raw(url)
    call = {"jsonrpc": "2.0", "id": "x", "method": "tools/call", "params": {"name": "slow__echo", "arguments": {"text": "hi"}, "_meta": envelope()}}
    good = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "slow__echo"}
    status, headers, body = raw.call("POST", call, good)
    answer = json.loads(body)
    assert status == 200 and "mcp-session-id" not in headers
    assert answer["id"] == "x" and answer["result"]["content"][0]["text"] == "hi" and answer["result"]["resultType"] == "complete"
    status, _, body = raw.call("POST", call, {**good, "mcp-name": "slow__other"})
    assert status == 400 and json.loads(body)["error"]["code"] == -32020
    status, _, body = raw.call("POST", call, {**good, "mcp-protocol-version": "2025-11-25"})
    assert status == 400 and json.loads(body)["error"]["code"] == -32020
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"_meta": envelope()}}
    status, _, body = raw.call("POST", ping, {**good, "mcp-method": "ping", "mcp-name": None})
    assert status == 404 and json.loads(body)["error"]["code"] == -32601
    old = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "slow__echo", "arguments": {"text": "hi"}, "_meta": envelope("1999-01-01")}}
    status, _, body = raw.call("POST", old, {**good, "mcp-protocol-version": "1999-01-01"})
    assert status == 400 and json.loads(body)["error"]["code"] == -32022 and MODERN in json.loads(body)["error"]["data"]["supported"]
    # A handshake-era session on the same listener is unaffected; its id is refused with a stateless-era request.
    sid = raw.initialize()
    status, _, body = raw.call("POST", call, {**good, "mcp-session-id": sid})
    assert status == 400 and json.loads(body)["error"]["code"] == -32600
    status, _, body = raw.call("POST", {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}, {"mcp-session-id": sid})
    assert status == 200 and "resultType" not in json.loads(body)["result"]
