"""
The server of the era matrix (tests/integration/test_era_matrix.py): one SDK
2.3 `MCPServer` that is a handshake-era backend when the gateway pins it
`protocol: legacy` and a 2026-07-28 backend under `protocol: modern`, so
every cell of the matrix compares like with like.  Its tools ask the client
through `Resolve`, which the SDK renders per era: a real request on a
handshake-era connection, an `InputRequiredResult` round in 2026-07-28.

Tools:
  ask_name()       elicits {"name": str}; returns "hello <name>" (or the action
                   when the user did not accept)
  ask_llm()        samples the client's model; returns "llm said: <text>"
  ask_roots()      lists the client's roots; returns "roots: <uri>,<uri>"
  count()          reports progress 1, 2 and 3 of 3; returns "counted"
  chatty()         logs three info messages; returns "chatted"
  bump()           changes eras://counter and says so to whoever subscribed
  toggle_tool()    adds or removes the tool `dynamic` and announces the change
Resource: eras://counter (text: the counter), subscribable in both eras.
Prompt: greet(name), its argument completed from a fixed list.

Usage: python eras.py [--http PORT]   (stdio by default)
Nothing is written to stdout but the protocol (logs go to stderr).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Annotated, Any

_STDOUT = sys.stdout
sys.stdout = sys.stderr
warnings.filterwarnings("ignore", message="The logging capability is deprecated")

from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp.server.mcpserver.resolve import Elicit, ListRoots, Resolve, Sample  # noqa: E402
from mcp_types import (  # noqa: E402
    Completion,
    CreateMessageResult,
    ListRootsResult,
    SamplingMessage,
    SubscribeRequestParams,
    TextContent,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel  # noqa: E402

URI = "eras://counter"
NAMES = ["ada", "alan", "grace"]
HANDSHAKE_ERA = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

mcp: MCPServer = MCPServer("eras", version="1.0.0")
counter = 0
#: URIs a handshake-era client (the gateway) subscribed to with resources/subscribe.
subscribed: set[str] = set()


class Name(BaseModel):
    name: str


def ask_for_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


def ask_model() -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text="Say hi"))], max_tokens=10)


def ask_for_roots() -> ListRoots:
    return ListRoots()


@mcp.tool(description="Asks the user's name")
def ask_name(person: Annotated[Any, Resolve(ask_for_name)]) -> str:
    data = getattr(person, "data", None)
    if isinstance(data, Name):
        return f"hello {data.name}"
    if isinstance(person, Name):
        return f"hello {person.name}"
    return f"no name ({getattr(person, 'action', person)})"


@mcp.tool(description="Asks the client's model to say hi")
def ask_llm(answer: Annotated[CreateMessageResult, Resolve(ask_model)]) -> str:
    content = answer.content
    return f"llm said: {content.text if isinstance(content, TextContent) else '?'}"


@mcp.tool(description="Lists the client's roots")
def ask_roots(roots: Annotated[ListRootsResult, Resolve(ask_for_roots)]) -> str:
    return "roots: " + ",".join(str(root.uri) for root in roots.roots)


@mcp.tool(description="Reports progress 1, 2 and 3 of 3")
async def count(ctx: Context) -> str:
    for step in (1, 2, 3):
        await ctx.report_progress(step, 3)
    return "counted"


@mcp.tool(description="Logs three info messages")
async def chatty(ctx: Context) -> str:
    for line in ("one", "two", "three"):
        await ctx.log("info", f"chatty says {line}", logger_name="eras")
    return "chatted"


@mcp.tool(description="Changes eras://counter")
async def bump(ctx: Context) -> str:
    global counter
    counter += 1
    await ctx.notify_resource_updated(URI)  # to 2026-07-28 listens
    if ctx.protocol_version in HANDSHAKE_ERA and URI in subscribed:
        await ctx.session.send_resource_updated(URI)
    return f"counter is {counter}"


@mcp.tool(description="Adds or removes the tool `dynamic`")
async def toggle_tool(ctx: Context) -> str:
    if any(tool.name == "dynamic" for tool in mcp._tool_manager.list_tools()):
        mcp.remove_tool("dynamic")
        done = "removed"
    else:
        mcp.add_tool(lambda: "dynamic", name="dynamic", description="Comes and goes with toggle_tool")
        done = "added"
    await ctx.notify_tools_changed()
    if ctx.protocol_version in HANDSHAKE_ERA:
        await ctx.session.send_tool_list_changed()
    return done


@mcp.resource(URI, description="A counter bump() changes")
def read_counter() -> str:
    return f"counter {counter}"


@mcp.prompt(description="Asks to greet someone")
def greet(name: str) -> str:
    return f"Say hello to {name}"


@mcp.completion()
async def complete(ref: Any, argument: Any, context: Any) -> Completion:
    return Completion(values=[name for name in NAMES if name.startswith(argument.value)])


async def subscribe(ctx: Any, params: SubscribeRequestParams) -> dict[str, Any]:
    subscribed.add(str(params.uri))
    return {}


async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> dict[str, Any]:
    subscribed.discard(str(params.uri))
    return {}


mcp._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
mcp._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=0, help="serve Streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    sys.stdout = _STDOUT
    if args.http:
        mcp.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        mcp.run("stdio")
