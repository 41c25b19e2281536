"""
A dual-era MCP server (SDK 2.3 `MCPServer`) on stdio, for the gateway's
backend-era tests: under `protocol: auto` the gateway finds it speaks
2026-07-28 (it answers `server/discover`); pinned `protocol: legacy`, the
same process is a handshake-era server.

Tools:
  echo(text)        returns the text
  what_i_got()      returns, as JSON text, what the server was told by the
                    request: its protocol version (`protocolVersion`), the
                    client capabilities it saw (`clientCapabilities`) and the
                    reserved `_meta` keys of the request (`meta`)
  change_tools()     adds or removes the tool `dynamic` and says the tool list changed
  change_prompts()   adds or removes the prompt `dynamic` and says the prompt list changed
  touch()            bumps the counter of watch://counter and says it was updated
  crash()            never answers: the process exits mid-call (a restart)
Resources: dual://greeting (text "hello from both eras"); watch://counter (the
number of touches so far, subscribable).
Prompt: greet(name) -> one user message "Say hello to <name>".

Changes are announced on the 2026-07-28 listen streams (`subscriptions/listen`),
and, on a handshake-era connection, as that era's notifications too.

Nothing is written to stdout but the protocol (logs go to stderr).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Awaitable, Callable

_STDOUT = sys.stdout
sys.stdout = sys.stderr

from mcp.server.mcpserver import Context, MCPServer  # noqa: E402

mcp = MCPServer("dual-era", instructions="A server of both MCP eras, for tests.")
HANDSHAKE_ERA = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
DYNAMIC = "dynamic"
WATCHED = "watch://counter"
touches = 0


@mcp.tool(description="Returns the text")
def echo(text: str) -> str:
    return text


@mcp.tool(description="What this request told the server: protocol version, client capabilities, reserved _meta keys")
def what_i_got(ctx: Context) -> str:
    caps = ctx.client_capabilities
    meta: Any = ctx.request_context.meta
    raw = dict(meta) if isinstance(meta, dict) else (meta.model_dump(by_alias=True, exclude_none=True) if meta is not None else {})
    reserved = {key: value for key, value in raw.items() if key.startswith("io.modelcontextprotocol/")}
    return json.dumps(
        {
            "protocolVersion": ctx.protocol_version,
            "clientCapabilities": caps.model_dump(by_alias=True, exclude_none=True) if caps is not None else None,
            "meta": reserved,
        },
        sort_keys=True,
        default=str,
    )


@mcp.resource("dual://greeting", description="A fixed greeting")
def greeting() -> str:
    return "hello from both eras"


@mcp.prompt(description="Asks to greet someone")
def greet(name: str) -> str:
    return f"Say hello to {name}"


async def announce(ctx: Context, on_listens: Awaitable[None], on_connection: Callable[[], Awaitable[None]]) -> None:
    """A change, on the 2026-07-28 listen streams, and on a handshake-era connection as that era's notification."""
    await on_listens
    if ctx.protocol_version in HANDSHAKE_ERA:
        await on_connection()


@mcp.tool(description="Adds or removes the tool `dynamic`; says the tool list changed")
async def change_tools(ctx: Context) -> str:
    if any(tool.name == DYNAMIC for tool in mcp._tool_manager.list_tools()):
        mcp.remove_tool(DYNAMIC)
    else:
        mcp.add_tool(lambda: "dynamic", name=DYNAMIC, description="Comes and goes with change_tools")
    await announce(ctx, ctx.notify_tools_changed(), ctx.session.send_tool_list_changed)
    return "tools changed"


@mcp.tool(description="Adds or removes the prompt `dynamic`; says the prompt list changed")
async def change_prompts(ctx: Context) -> str:
    if any(prompt.name == DYNAMIC for prompt in mcp._prompt_manager.list_prompts()):
        mcp.remove_prompt(DYNAMIC)
    else:
        mcp.prompt(name=DYNAMIC, description="Comes and goes with change_prompts")(lambda: "dynamic")
    await announce(ctx, ctx.notify_prompts_changed(), ctx.session.send_prompt_list_changed)
    return "prompts changed"


@mcp.tool(description="Bumps watch://counter; says it was updated")
async def touch(ctx: Context) -> str:
    global touches
    touches += 1
    await announce(ctx, ctx.notify_resource_updated(WATCHED), lambda: ctx.session.send_resource_updated(WATCHED))
    return f"touched {touches}"


@mcp.tool(description="The process exits mid-call")
def crash() -> str:
    sys.stderr.write("dual_era.py: crashing on request\n")
    sys.stderr.flush()
    os._exit(3)


@mcp.resource(WATCHED, description="How many times touch was called")
def counter() -> str:
    return str(touches)


if __name__ == "__main__":
    sys.stdout = _STDOUT
    mcp.run("stdio")
