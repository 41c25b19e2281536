"""The scenario server for the official MCP conformance suite (mcp 2.3 SDK, low-level `Server`).

It implements what the suite's server scenarios (`@modelcontextprotocol/conformance`,
pinned in tests/conformance/package.json) call, under the fixed names they use,
so that the suite can be run against it alone and through the gateway.

Usage:
  python tests/conformance/server.py                 # stdio
  python tests/conformance/server.py --http PORT     # Streamable HTTP at http://127.0.0.1:PORT/mcp

  --http PORT   serve Streamable HTTP on 127.0.0.1 (0 = pick a free port), with
                resumable SSE streams (an in-memory event store, `retry` in the
                priming event) and DNS-rebinding protection (Host and Origin must
                name localhost, 127.0.0.1 or [::1]). Once listening it prints
                exactly one line "LISTENING <port>" to stdout; it exits on
                SIGTERM/SIGINT and when its stdin reaches EOF.

Nothing else is ever written to stdout (logs go to stderr).

Tools (all with a description and an input schema):
  test_simple_text, test_image_content, test_audio_content,
  test_embedded_resource, test_multiple_content_types   fixed content
  test_tool_with_logging      three info log messages ~50 ms apart, on the call's stream
  test_tool_with_progress     progress 0, 50, 100 of 100 ~50 ms apart (with a progressToken)
  test_error_handling         a result with isError: true
  test_sampling(prompt)       sampling/createMessage to the client, answers its text
  test_elicitation(message)   elicitation/create (username, email) to the client
  test_elicitation_sep1034_defaults   elicitation whose fields carry defaults
  test_elicitation_sep1330_enums      elicitation with the five enum shapes
  json_schema_2020_12_tool    an input schema with $schema, $defs, additionalProperties
  test_reconnection           over HTTP, closes the call's SSE stream, then answers
                              (the client gets the result by resuming with Last-Event-ID)

Resources: test://static-text, test://static-binary (a PNG), test://watched-resource
(subscribable); the template test://template/{id}/data.
Prompts: test_simple_prompt, test_prompt_with_arguments(arg1, arg2),
test_prompt_with_embedded_resource(resourceUri), test_prompt_with_image.
Completion answers every argument from a short fixed list; logging/setLevel is accepted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import warnings
from collections import OrderedDict

# Everything but the LISTENING line goes to stderr, whatever a library prints.
_STDOUT = sys.stdout
sys.stdout = sys.stderr

import anyio  # noqa: E402
from mcp.server.lowlevel import Server  # noqa: E402
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId  # noqa: E402
from mcp_types import JSONRPCMessage, SamplingMessage, TextContent  # noqa: E402

HOST = "127.0.0.1"
PATH = "/mcp"
RETRY_MS = 500
EVENTS_KEPT = 1000

# A 1x1 red PNG and a tiny silent WAV (44-byte header, two samples).
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WAV = "UklGRigAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQQAAAAAAAAA"

STATIC_TEXT = "This is the content of the static text resource."
WATCHED_URI = "test://watched-resource"
TEMPLATE = "test://template/{id}/data"
TEMPLATE_PREFIX, TEMPLATE_SUFFIX = "test://template/", "/data"
COMPLETIONS = ["paris", "park", "party", "test-value"]
NO_ARGS = {"type": "object", "properties": {}}

subscriptions: set[str] = set()


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def result(*content: dict, is_error: bool = False) -> dict:
    return {"content": list(content), "isError": is_error}


def tool(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "description": description, "inputSchema": schema or NO_ARGS}


def string_args(**descriptions: str) -> dict:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": d} for name, d in descriptions.items()},
        "required": list(descriptions),
    }


TOOLS = [
    tool("test_simple_text", "Returns simple text content"),
    tool("test_image_content", "Returns image content (a 1x1 PNG)"),
    tool("test_audio_content", "Returns audio content (a short WAV)"),
    tool("test_embedded_resource", "Returns an embedded resource"),
    tool("test_multiple_content_types", "Returns text, an image and an embedded resource"),
    tool("test_tool_with_logging", "Sends three log messages while it runs"),
    tool("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100"),
    tool("test_error_handling", "Always fails with isError: true"),
    tool("test_sampling", "Asks the client for an LLM completion", string_args(prompt="The prompt to send to the LLM")),
    tool("test_elicitation", "Asks the user for input", string_args(message="The message to show the user")),
    tool("test_elicitation_sep1034_defaults", "Asks the user for input, every field with a default"),
    tool("test_elicitation_sep1330_enums", "Asks the user to choose, with the five enum schema shapes"),
    tool(
        "json_schema_2020_12_tool",
        "Tool with JSON Schema 2020-12 features",
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "additionalProperties": False,
        },
    ),
    tool("test_reconnection", "Closes the call's SSE stream before answering (HTTP), to test resumption"),
]

DEFAULTS_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}

ENUMS_SCHEMA = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}


def error(code: int, message: str) -> Exception:
    from mcp.shared.exceptions import MCPError

    return MCPError(code=code, message=message)


async def list_tools(ctx, params) -> dict:
    return {"tools": TOOLS}


async def elicit(ctx, message: str, schema: dict) -> dict:
    answer = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    return answer.model_dump(by_alias=True, exclude_none=True)


async def call_tool(ctx, params) -> dict:
    name, arguments = params.name, params.arguments or {}
    session = ctx.session
    if name == "test_simple_text":
        return result(text("This is a simple text response for testing."))
    if name == "test_image_content":
        return result({"type": "image", "data": PNG, "mimeType": "image/png"})
    if name == "test_audio_content":
        return result({"type": "audio", "data": WAV, "mimeType": "audio/wav"})
    if name == "test_embedded_resource":
        return result(
            {
                "type": "resource",
                "resource": {
                    "uri": "test://embedded-resource",
                    "mimeType": "text/plain",
                    "text": "This is an embedded resource content.",
                },
            }
        )
    if name == "test_multiple_content_types":
        return result(
            text("Multiple content types test:"),
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {
                "type": "resource",
                "resource": {
                    "uri": "test://mixed-content-resource",
                    "mimeType": "application/json",
                    "text": json.dumps({"test": "data", "value": 123}),
                },
            },
        )
    if name == "test_tool_with_logging":
        for index, line in enumerate(["Tool execution started", "Tool processing data", "Tool execution completed"]):
            if index:
                await anyio.sleep(0.05)
            await session.send_log_message("info", line, logger="conformance", related_request_id=ctx.request_id)
        return result(text("Tool with logging executed successfully"))
    if name == "test_tool_with_progress":
        for index, progress in enumerate([0, 50, 100]):
            if index:
                await anyio.sleep(0.05)
            await session.report_progress(progress, 100)  # a no-op when the call has no progressToken
        return result(text("Tool with progress executed successfully"))
    if name == "test_error_handling":
        return result(text("This tool intentionally returns an error for testing"), is_error=True)
    if name == "test_sampling":
        answer = await session.create_message(
            [SamplingMessage(role="user", content=TextContent(type="text", text=str(arguments.get("prompt", ""))))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = answer.content
        reply = content.text if isinstance(content, TextContent) else json.dumps(answer.model_dump(mode="json"))
        return result(text(f"LLM response: {reply}"))
    if name == "test_elicitation":
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        answer = await elicit(ctx, str(arguments.get("message", "")), schema)
        return result(text(f"User response: action={answer.get('action')}, content={json.dumps(answer.get('content'))}"))
    if name in ("test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums"):
        schema = DEFAULTS_SCHEMA if name.endswith("defaults") else ENUMS_SCHEMA
        answer = await elicit(ctx, "Please review and update the form fields", schema)
        return result(text(f"Elicitation completed: action={answer.get('action')}, content={json.dumps(answer.get('content'))}"))
    if name == "json_schema_2020_12_tool":
        return result(text(f"Received: {json.dumps(arguments, sort_keys=True)}"))
    if name == "test_reconnection":
        if ctx.close_sse_stream is not None:
            await anyio.sleep(0.05)
            await ctx.close_sse_stream()
            await anyio.sleep(0.2)
        return result(text("Reconnection test completed successfully"))
    return result(text(f"Unknown tool: {name}"), is_error=True)


RESOURCES = [
    {"uri": "test://static-text", "name": "static-text", "description": "A static text resource", "mimeType": "text/plain"},
    {"uri": "test://static-binary", "name": "static-binary", "description": "A static PNG image", "mimeType": "image/png"},
    {"uri": WATCHED_URI, "name": "watched-resource", "description": "A resource to subscribe to", "mimeType": "text/plain"},
]


async def list_resources(ctx, params) -> dict:
    return {"resources": RESOURCES}


async def list_templates(ctx, params) -> dict:
    return {
        "resourceTemplates": [
            {
                "uriTemplate": TEMPLATE,
                "name": "template",
                "description": "A resource template with an id",
                "mimeType": "application/json",
            }
        ]
    }


async def read_resource(ctx, params) -> dict:
    uri = str(params.uri)
    if uri == "test://static-text":
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": STATIC_TEXT}]}
    if uri == "test://static-binary":
        return {"contents": [{"uri": uri, "mimeType": "image/png", "blob": PNG}]}
    if uri == WATCHED_URI:
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": "Watched resource content"}]}
    if uri.startswith(TEMPLATE_PREFIX) and uri.endswith(TEMPLATE_SUFFIX):
        ident = uri[len(TEMPLATE_PREFIX) : -len(TEMPLATE_SUFFIX)]
        if ident and "/" not in ident:
            body = {"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"}
            return {"contents": [{"uri": uri, "mimeType": "application/json", "text": json.dumps(body)}]}
    raise error(-32002, f"Resource not found: {uri}")


async def subscribe(ctx, params) -> dict:
    subscriptions.add(str(params.uri))
    return {}


async def unsubscribe(ctx, params) -> dict:
    subscriptions.discard(str(params.uri))
    return {}


PROMPTS = [
    {"name": "test_simple_prompt", "description": "A simple prompt without arguments"},
    {
        "name": "test_prompt_with_arguments",
        "description": "A prompt with two required arguments",
        "arguments": [
            {"name": "arg1", "description": "First test argument", "required": True},
            {"name": "arg2", "description": "Second test argument", "required": True},
        ],
    },
    {
        "name": "test_prompt_with_embedded_resource",
        "description": "A prompt that embeds a resource",
        "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed", "required": True}],
    },
    {"name": "test_prompt_with_image", "description": "A prompt with an image"},
]


def user(content: dict) -> dict:
    return {"role": "user", "content": content}


async def list_prompts(ctx, params) -> dict:
    return {"prompts": PROMPTS}


async def get_prompt(ctx, params) -> dict:
    arguments = params.arguments or {}
    if params.name == "test_simple_prompt":
        return {"messages": [user(text("This is a simple prompt for testing."))]}
    if params.name == "test_prompt_with_arguments":
        arg1, arg2 = arguments.get("arg1", ""), arguments.get("arg2", "")
        return {"messages": [user(text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]}
    if params.name == "test_prompt_with_embedded_resource":
        uri = arguments.get("resourceUri", "test://example-resource")
        resource = {"uri": uri, "mimeType": "text/plain", "text": "Embedded resource content for testing."}
        return {
            "messages": [
                user({"type": "resource", "resource": resource}),
                user(text("Please process the embedded resource above.")),
            ]
        }
    if params.name == "test_prompt_with_image":
        return {
            "messages": [
                user({"type": "image", "data": PNG, "mimeType": "image/png"}),
                user(text("Please analyze the image above.")),
            ]
        }
    raise error(-32602, f"Unknown prompt: {params.name}")


async def complete(ctx, params) -> dict:
    values = [v for v in COMPLETIONS if v.startswith(params.argument.value)]
    return {"completion": {"values": values, "total": len(values), "hasMore": False}}


async def set_level(ctx, params) -> dict:
    return {}


def build() -> Server:
    return Server(
        "twisted-mcp-conformance-server",
        version="1.0.0",
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
    )


class MemoryEventStore(EventStore):
    """The last EVENTS_KEPT events of every stream, so a client can resume with Last-Event-ID."""

    def __init__(self) -> None:
        self._events: OrderedDict[str, tuple[StreamId, JSONRPCMessage | None]] = OrderedDict()
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        self._events[event_id] = (stream_id, message)
        while len(self._events) > EVENTS_KEPT:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        if last_event_id not in self._events:
            return None
        stream_id = self._events[last_event_id][0]
        after = False
        for event_id, (stream, message) in list(self._events.items()):
            if after and stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream_id


async def serve_stdio() -> None:
    from mcp.server.stdio import stdio_server

    server = build()
    sys.stdout = _STDOUT  # the SDK takes fd 1 for the protocol and sends stray output to stderr itself
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve_http(port: int) -> None:
    app = build().streamable_http_app(
        streamable_http_path=PATH, event_store=MemoryEventStore(), retry_interval=RETRY_MS, host=HOST
    )
    from http_serving import serve_app  # beside this script (sys.path[0] when it runs)

    serve_app(app, HOST, port, _STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve Streamable HTTP on 127.0.0.1:PORT (0: any free port)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the SDK warns that logging and sampling are deprecated in 2026-07-28
    print(f"conformance server.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    if args.http is None:
        anyio.run(serve_stdio)
    else:
        serve_http(args.http)


if __name__ == "__main__":
    main()
