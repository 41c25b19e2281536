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
Resource: dual://greeting (text "hello from both eras").
Prompt: greet(name) -> one user message "Say hello to <name>".

Nothing is written to stdout but the protocol (logs go to stderr).
"""

from __future__ import annotations

import json
import sys
from typing import Any

_STDOUT = sys.stdout
sys.stdout = sys.stderr

from mcp.server.mcpserver import Context, MCPServer  # noqa: E402

mcp = MCPServer("dual-era", instructions="A server of both MCP eras, for tests.")


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


if __name__ == "__main__":
    sys.stdout = _STDOUT
    mcp.run("stdio")
