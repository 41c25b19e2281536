"""
Search mode and the policy through the real gateway command (issue 14): a
role denying `gen0__delete_*` never finds it with `search_tools`, even with
the query that matches it best; `call_tool` on it is refused as a direct
call would be, and the audit file names the real tool (never `call_tool`);
each search leaves one listing record.

(`test_surface_policy.py` is issue 10's policy over prompts and resources.)
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from mcp import MCPError
from mcp_types import Implementation

from tests import mcpclient as mc
from twisted_mcp.mcp import errors

from .conftest import gateway_argv, gateway_env, server

pytestmark = [
    pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning"),
    pytest.mark.skipif(
        importlib.util.find_spec("twisted_mcp.dispatch.search") is None,
        reason="twisted_mcp.dispatch.search (the search branch) is not merged",
    ),
]


def read_audit(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_denied_tool_is_never_found_and_refused_by_call_tool(write_config, tmp_path, mode):
    audit = tmp_path / "audit.jsonl"
    path = write_config({f"gen{i}": server("many_tools", env={"MANY_TOOLS_SEED": str(i)}, protocol="legacy") for i in range(5)})
    with open(path) as f:
        data = json.load(f)
    data.update(
        identity={"principal": {"name": "alice", "roles": ["dev"]}},
        roles={"dev": {"allow": ["*"], "deny": ["gen0__delete_*"]}},
        audit={"sink": "file", "path": str(audit)},
    )
    with open(path, "w") as f:
        json.dump(data, f)

    seen: dict = {}

    async def scenario():
        async with mc.connect(
            gateway_argv(path),
            env=gateway_env(),
            cwd=str(tmp_path),
            errlog=str(tmp_path / "gateway.stderr"),
            mode=mode,
            read_timeout=60,
            client_info=Implementation(name="cursor-vscode", version="1.0"),
        ) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["search_tools", "call_tool"]
            found = await client.call_tool("search_tools", {"query": "gen0 delete item", "limit": 20})
            shown = [t["name"] for t in found.structured_content["tools"]]
            assert shown and not any(n.startswith("gen0__delete_") for n in shown), shown
            assert "gen1__delete_item" in shown
            seen.update(shown=len(shown), total=found.structured_content["total"])
            assert seen["total"] < 500
            with pytest.raises(MCPError) as refused:
                await client.call_tool("call_tool", {"name": "gen0__delete_item", "arguments": {"id": "1"}})
            assert refused.value.error.code == errors.ACCESS_DENIED
            allowed = await client.call_tool("call_tool", {"name": "gen1__delete_item", "arguments": {"id": "2"}})
            assert json.loads(mc.result_text(allowed)) == {"tool": "delete_item", "arguments": {"id": "2"}}

    mc.run(scenario, timeout=120)
    records = read_audit(audit)
    calls = [r for r in records if r["method"] == "tools/call" and r["tool"] != "search_tools"]
    assert {(r["tool"], r["decision"]) for r in calls} == {("gen0__delete_item", "deny"), ("gen1__delete_item", "allow")}
    assert all(r["principal"] == "alice" for r in calls)
    assert not any("call_tool" in json.dumps(r) for r in calls)
    searches = [r for r in records if r["method"] == "tools/call" and r["tool"] == "search_tools"]
    # The search itself: a call of the search tool, the results of the visible tools.
    assert [r["reason"] for r in searches] == [f"search: {seen['shown']} of {seen['total']} tool(s) found"], searches
    listings = [r for r in records if r["method"] == "tools/list"]
    assert [r["reason"] for r in listings] == [f"2 of {seen['total']} tool(s) visible"], listings
