"""A small stdio MCP server with one of everything beside tools (mcp SDK 2.x, low-level `Server`).

It lists ONE resource whose URI and text are configurable, so that two copies
under different backend names expose the same URI with different content, and
a resource template, a prompt that embeds the resource, completions, logging
and subscriptions, each observable from a test.

Resources:
  SURFACE_URI (default memo://shared/notes), text/plain, text SURFACE_TEXT;
  then SURFACE_RESOURCE_COUNT more: memo://many/<n> (n from 1), text
  "<label> many <n>".  resources/list answers in pages of SURFACE_PAGE_SIZE
  (default: all at once), with nextCursor.
  Template memo://items/{item}: reading memo://items/<x> gives "<label> item <x>".
  resources/subscribe and unsubscribe are accepted for the listed URI only.

Prompts:
  quote(): one text message, then the resource embedded (uri SURFACE_URI).
  greet(name): "Hello <name> from <label>".

Completion:
  greet's `name` and the template's `item`: the values of
  ["apple", "apricot", "banana"] that start with what was typed.

Tools:
  touch()       -> "notified" after sending notifications/resources/updated
                   for SURFACE_URI if a subscription is in place, else
                   "not subscribed" (nothing sent).
  link()        -> a resource_link to SURFACE_URI and the resource embedded.
  log_levels()  -> sends one notifications/message per level, debug to
                   emergency, logger "surface", data "<label> <level>",
                   skipping those below the level set with logging/setLevel
                   (all eight before any setLevel); returns how many it sent.
  pid()         -> the process id.

Env:
  SURFACE_LABEL       name used in texts (default "surface")
  SURFACE_URI         the listed resource's URI (default memo://shared/notes)
  SURFACE_TEXT        its text (default "<label> notes")
  SURFACE_TEXT_BYTES  if set, the text is this many bytes of ASCII instead
                      (for benchmarks)
  SURFACE_RESOURCE_COUNT  how many memo://many/<n> resources to list too (default 0)
  SURFACE_PAGE_SIZE   resources per resources/list page (default: one page)
  SURFACE_EVENT_LOG   a file to which one line is appended for each
                      "start <pid>", "subscribe <uri>", "unsubscribe <uri>",
                      "setLevel <level>", "roots/list_changed" the server
                      receives or does
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp_types import (
    CallToolRequestParams,
    CompleteRequestParams,
    GetPromptRequestParams,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    SetLevelRequestParams,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)

LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
WORDS = ["apple", "apricot", "banana"]
TEMPLATE = "memo://items/{item}"
TEMPLATE_PREFIX = "memo://items/"

LABEL = os.environ.get("SURFACE_LABEL", "surface")
URI = os.environ.get("SURFACE_URI", "memo://shared/notes")
EVENT_LOG = os.environ.get("SURFACE_EVENT_LOG")


def _text() -> str:
    size = os.environ.get("SURFACE_TEXT_BYTES")
    if size:
        line = "0123456789abcdef" * 4 + "\n"
        count = int(size)
        return (line * (count // len(line) + 1))[:count]
    return os.environ.get("SURFACE_TEXT", f"{LABEL} notes")


TEXT = _text()
MANY = int(os.environ.get("SURFACE_RESOURCE_COUNT", "0"))
PAGE_SIZE = int(os.environ.get("SURFACE_PAGE_SIZE", "0"))
MANY_PREFIX = "memo://many/"
subscribed: set[str] = set()
level = {"min": 0}


def record(event: str) -> None:
    if EVENT_LOG:
        with open(EVENT_LOG, "a") as f:
            f.write(event + "\n")


def error(code: int, message: str) -> Exception:
    from mcp.shared.exceptions import MCPError

    return MCPError(code=code, message=message)


async def list_resources(ctx, params: PaginatedRequestParams | None) -> dict:
    listing = [{"uri": URI, "name": f"{LABEL} notes", "mimeType": "text/plain"}]
    listing += [{"uri": f"{MANY_PREFIX}{n}", "name": f"{LABEL} many {n}", "mimeType": "text/plain"} for n in range(1, MANY + 1)]
    if not PAGE_SIZE:
        return {"resources": listing}
    start = int(params.cursor) if params is not None and params.cursor else 0
    result: dict = {"resources": listing[start : start + PAGE_SIZE]}
    if start + PAGE_SIZE < len(listing):
        result["nextCursor"] = str(start + PAGE_SIZE)
    return result


async def list_templates(ctx, params: PaginatedRequestParams | None) -> dict:
    return {"resourceTemplates": [{"uriTemplate": TEMPLATE, "name": f"{LABEL} items", "mimeType": "text/plain"}]}


async def read_resource(ctx, params: ReadResourceRequestParams) -> dict:
    uri = str(params.uri)
    if uri == URI:
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": TEXT}]}
    if uri.startswith(MANY_PREFIX) and uri[len(MANY_PREFIX) :].isdigit() and 1 <= int(uri[len(MANY_PREFIX) :]) <= MANY:
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": f"{LABEL} many {uri[len(MANY_PREFIX) :]}"}]}
    if uri.startswith(TEMPLATE_PREFIX) and len(uri) > len(TEMPLATE_PREFIX):
        item = uri[len(TEMPLATE_PREFIX) :]
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": f"{LABEL} item {item}"}]}
    raise error(-32002, f"Resource not found: {uri}")


async def subscribe(ctx, params: SubscribeRequestParams) -> dict:
    uri = str(params.uri)
    if uri != URI:
        raise error(-32002, f"Resource not found: {uri}")
    subscribed.add(uri)
    record(f"subscribe {uri}")
    return {}


async def unsubscribe(ctx, params: UnsubscribeRequestParams) -> dict:
    uri = str(params.uri)
    subscribed.discard(uri)
    record(f"unsubscribe {uri}")
    return {}


async def set_level(ctx, params: SetLevelRequestParams) -> dict:
    level["min"] = LEVELS.index(params.level)
    record(f"setLevel {params.level}")
    return {}


async def roots_changed(ctx, params) -> None:
    record("roots/list_changed")


async def list_prompts(ctx, params: PaginatedRequestParams | None) -> dict:
    return {
        "prompts": [
            {"name": "quote", "description": f"The {LABEL} notes, embedded"},
            {
                "name": "greet",
                "description": "A greeting",
                "arguments": [{"name": "name", "description": "who to greet", "required": True}],
            },
        ]
    }


async def get_prompt(ctx, params: GetPromptRequestParams) -> dict:
    if params.name == "quote":
        return {
            "messages": [
                {"role": "user", "content": {"type": "text", "text": f"The {LABEL} notes follow."}},
                {
                    "role": "user",
                    "content": {"type": "resource", "resource": {"uri": URI, "mimeType": "text/plain", "text": TEXT}},
                },
            ]
        }
    if params.name == "greet":
        name = (params.arguments or {}).get("name")
        if not name:
            raise error(-32602, "greet needs the argument 'name'")
        return {"messages": [{"role": "user", "content": {"type": "text", "text": f"Hello {name} from {LABEL}"}}]}
    raise error(-32602, f"Unknown prompt: {params.name}")


async def complete(ctx, params: CompleteRequestParams) -> dict:
    ref = params.ref.model_dump(by_alias=True)
    known = (ref.get("type") == "ref/prompt" and ref.get("name") == "greet" and params.argument.name == "name") or (
        ref.get("type") == "ref/resource" and ref.get("uri") == TEMPLATE and params.argument.name == "item"
    )
    values = [w for w in WORDS if w.startswith(params.argument.value)] if known else []
    return {"completion": {"values": values, "total": len(values), "hasMore": False}}


TOOLS = [
    {"name": "touch", "description": "Send notifications/resources/updated for the listed resource if subscribed"},
    {"name": "link", "description": "A resource link to the listed resource, and the resource embedded"},
    {"name": "log_levels", "description": "Send one log message per level at or above the level set"},
    {"name": "pid", "description": "The server's process id"},
]


async def list_tools(ctx, params: PaginatedRequestParams | None) -> dict:
    return {"tools": [dict(tool, inputSchema={"type": "object", "properties": {}}) for tool in TOOLS]}


def text_result(text: str) -> dict:
    return {"content": [{"type": "text", "text": text}], "isError": False}


async def call_tool(ctx, params: CallToolRequestParams) -> dict:
    outbound = ctx.session
    if params.name == "touch":
        if URI not in subscribed:
            return text_result("not subscribed")
        await outbound.send_resource_updated(URI)
        return text_result("notified")
    if params.name == "link":
        return {
            "content": [
                {"type": "resource_link", "uri": URI, "name": f"{LABEL} notes", "mimeType": "text/plain"},
                {"type": "resource", "resource": {"uri": URI, "mimeType": "text/plain", "text": TEXT}},
            ],
            "isError": False,
        }
    if params.name == "log_levels":
        sent = 0
        for index, name in enumerate(LEVELS):
            if index >= level["min"]:
                await outbound.send_log_message(name, f"{LABEL} {name}", logger="surface")
                sent += 1
        return text_result(str(sent))
    if params.name == "pid":
        return text_result(str(os.getpid()))
    return {"content": [{"type": "text", "text": f"Unknown tool: {params.name}"}], "isError": True}


def build() -> Server:
    return Server(
        "surface",
        version="1.0",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_set_logging_level=set_level,
        on_roots_list_changed=roots_changed,
    )


async def main() -> None:
    server = build()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # the SDK warns that logging is deprecated in 2026-07-28
    record(f"start {os.getpid()}")
    print(f"surface.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    anyio.run(main)
