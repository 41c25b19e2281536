"""
Tool budgets per client through the real gateway command (issue 14): five
generated backends of 100 tools each (500); the official SDK client
announcing itself as Cursor (`cursor-vscode`) gets search mode (at most 40
tools), finds a tool with `search_tools` and calls it with `call_tool`; as
Claude Code (`claude-code`) it gets all 500, long names aliased to fit
`mcp__<key>__<tool>` in 64, and a call by alias reaches the tool.  Both
eras over stdio, and the stateless era over HTTP without a session.

`search_tools` needs `twisted_mcp.dispatch.search` (the search branch):
without it these tests skip that part's assertions with a clear reason.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from mcp_types import Implementation

from tests import mcpclient as mc

from .conftest import gateway_argv, gateway_env, server

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

MODERN = "2026-07-28"
CURSOR = Implementation(name="cursor-vscode", version="1.0")
CLAUDE_CODE = Implementation(name="claude-code", version="1.0")
HAS_SEARCH = importlib.util.find_spec("twisted_mcp.dispatch.search") is not None
needs_search = pytest.mark.skipif(not HAS_SEARCH, reason="twisted_mcp.dispatch.search (the search branch) is not merged")


def backends() -> dict:
    return {f"gen{i}": server("many_tools", env={"MANY_TOOLS_SEED": str(i)}, protocol="legacy") for i in range(5)}


async def all_tools(client) -> list:
    tools, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor) if cursor else await client.list_tools()
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            return tools


def connect(config: str, tmp_path, mode: str, client_info: Implementation):
    """An SDK client on a `twistd -n mcp-gateway` child (stdio), announcing C{client_info}."""
    return mc.connect(
        gateway_argv(config),
        env=gateway_env(),
        cwd=str(tmp_path),
        errlog=str(tmp_path / "gateway.stderr"),
        mode=mode,
        read_timeout=60,
        client_info=client_info,
    )


def reached(result) -> dict:
    """What the generated backend says it received."""
    return json.loads(mc.result_text(result))


async def search_and_call(client) -> None:
    names = [t.name for t in await all_tools(client)]
    assert names == ["search_tools", "call_tool"], names
    if not HAS_SEARCH:
        return
    found = await client.call_tool("search_tools", {"query": "delete item", "limit": 5})
    assert not found.is_error, found
    structured = found.structured_content
    assert structured["total"] == 500 and structured["query"] == "delete item"
    shown = [t["name"] for t in structured["tools"]]
    assert 1 <= len(shown) <= 5 and any(n.endswith("__delete_item") for n in shown), shown
    target = next(n for n in shown if n.endswith("__delete_item"))
    result = await client.call_tool("call_tool", {"name": target, "arguments": {"id": "42"}})
    assert reached(result) == {"tool": "delete_item", "arguments": {"id": "42"}}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_cursor_gets_search_mode(write_config, tmp_path, mode):
    config = write_config(backends())

    async def scenario():
        async with connect(config, tmp_path, mode, CURSOR) as client:
            assert (client.protocol_version == MODERN) == (mode == "auto")
            await search_and_call(client)
            # A tool learnt from search may also be called directly.
            direct = await client.call_tool("gen3__get_item", {"id": "7"})
            assert reached(direct) == {"tool": "get_item", "arguments": {"id": "7"}}

    mc.run(scenario, timeout=120)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_claude_code_gets_everything_with_aliases(write_config, tmp_path, mode):
    config = write_config(backends())

    async def scenario():
        async with connect(config, tmp_path, mode, CLAUDE_CODE) as client:
            tools = await all_tools(client)
            assert len(tools) == 500
            limit = 64 - 16 - 7  # mcp__<16-character key>__<tool> within 64
            assert all(len(t.name) <= limit for t in tools), [t.name for t in tools if len(t.name) > limit]
            aliased = [t for t in tools if (t.meta or {}).get("io.github.twisted-mcp/name")]
            assert aliased, "some generated names are longer than the limit"
            alias = aliased[0]
            shaped = alias.meta["io.github.twisted-mcp/name"]
            backend, own = shaped.split("__", 1)
            result = await client.call_tool(alias.name, {"id": "1"})
            assert reached(result) == {"tool": own, "arguments": {"id": "1"}}
            # The full shaped name works too (a client that kept an older list).
            assert reached(await client.call_tool(shaped, {}))["tool"] == own

    mc.run(scenario, timeout=120)


def test_stateless_http_without_a_session(daemon, tmp_path):
    from .test_http_front import connect_http, start_http

    _, url = start_http(daemon, backends())

    async def scenario():
        async with connect_http(url, mode=MODERN, client_info=CURSOR) as client:
            assert client.protocol_version == MODERN
            await search_and_call(client)
        async with connect_http(url, mode=MODERN, client_info=CLAUDE_CODE) as client:
            assert len(await all_tools(client)) == 500

    mc.run(scenario, timeout=120)
