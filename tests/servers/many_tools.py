"""A stdio MCP server with many generated tools (mcp SDK 2.x, low-level `Server`).

Its MANY_TOOLS_COUNT tools (default 100) are generated from MANY_TOOLS_SEED
(default 0), the same on every run: names `<verb>_<noun>_<i>` from word
lists (every 7th with the suffix `_and_related_records_in_bulk`, so that
some names are long), descriptions from templates, 0 to 6 string
parameters.  The first tool of each verb is `<verb>_item` (no number), so a
test can name e.g. `delete_item` without knowing the seed's choices.

Calling any tool answers the JSON text `{"tool": <name>, "arguments": <as
received>}` (so a test sees what reached the backend); an unknown tool is a
tool error.

Env:
  MANY_TOOLS_COUNT  how many tools (default 100)
  MANY_TOOLS_SEED   the seed of the generator (default 0)
"""

from __future__ import annotations

import json
import os
import random
import sys

import anyio
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp_types import CallToolRequestParams, PaginatedRequestParams

VERBS = ["create", "delete", "list", "get", "update", "archive", "search", "export", "import", "sync"]
NOUNS = ["invoice", "customer", "ticket", "repository", "message", "deployment", "calendar_event", "document", "user", "order"]
PARAMS = ["id", "name", "query", "owner", "status", "limit", "region", "title", "body", "tag"]
TEMPLATES = [
    "{Verb} a {noun} in the {system} system.",
    "{Verb} one or more {noun}s, by {param}.",
    "Use this to {verb} a {noun} when the user asks for it.",
]
SYSTEMS = ["billing", "support", "source control", "chat", "cluster", "scheduling", "docs", "accounts", "shop"]
LONG_SUFFIX = "_and_related_records_in_bulk"


def generate(count: int, seed: int) -> list[dict]:
    """The tool definitions for (count, seed)."""
    rng = random.Random(seed)
    tools = []
    for i in range(count):
        verb = VERBS[i % len(VERBS)]
        noun = rng.choice(NOUNS)
        if i < len(VERBS):
            name = f"{verb}_item"
            noun = "item"
        else:
            name = f"{verb}_{noun}_{i}" + (LONG_SUFFIX if i % 7 == 0 else "")
        params = rng.sample(PARAMS, rng.randint(0, 6))
        description = rng.choice(TEMPLATES).format(
            Verb=verb.capitalize(), verb=verb, noun=noun.replace("_", " "), system=rng.choice(SYSTEMS), param=params[0] if params else "id"
        )
        schema = {
            "type": "object",
            "properties": {p: {"type": "string", "description": f"The {noun}'s {p}."} for p in params},
        }
        tools.append({"name": name, "description": description, "inputSchema": schema})
    return tools


TOOLS = generate(int(os.environ.get("MANY_TOOLS_COUNT", "100")), int(os.environ.get("MANY_TOOLS_SEED", "0")))
NAMES = {tool["name"] for tool in TOOLS}


async def list_tools(ctx, params: PaginatedRequestParams | None) -> dict:
    return {"tools": TOOLS}


async def call_tool(ctx, params: CallToolRequestParams) -> dict:
    if params.name not in NAMES:
        return {"content": [{"type": "text", "text": f"Unknown tool: {params.name}"}], "isError": True}
    text = json.dumps({"tool": params.name, "arguments": params.arguments or {}}, sort_keys=True)
    return {"content": [{"type": "text", "text": text}], "isError": False}


async def main() -> None:
    server = Server("many_tools", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    print(f"many_tools.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    anyio.run(main)
