"""
A stateless-era (MCP 2026-07-28) server on stdio (SDK 2.3 `MCPServer`) whose
tools ask for the client's input the 2026-07-28 way: they answer with an
`InputRequiredResult` (`inputRequests` under fixed keys, and a
`requestState`) and finish when the retry brings the answers.  The gateway
reaches it pinned `protocol: modern`.  Each tool checks, on the retry, that
its `requestState` came back exactly as it sent it.

Tools:
  elicit()       asks a name (form elicitation, key user_name) -> "Hello, <name>!"
  login()        URL-mode elicitation (key login) -> "login: <action>"
  sample()       asks the client's LLM (key llm) -> "The LLM answered: <text>"
  roots()        asks the client's roots (key client_roots) -> "roots: <uri>, ..."
  three()        all three questions in one round -> "name=<n>; llm=<text>; roots=<uris>"
  two_rounds()   a name (key step1), then a colour (key step2), the name riding
                 in requestState; its last round reports progress 1 of 1 when asked
                 -> "Hello <name>, your favourite colour is <colour>"
  poll()         asks nothing: requestState only, twice -> "polled after 2 rounds"
  forever()      asks for the roots (key again) every round, never finishes
Prompt: with_context() asks a context first (key user_context) -> "Use this context: <context>".

Nothing is written to stdout but the protocol (logs go to stderr).
"""

from __future__ import annotations

import json
import sys
from typing import Any

_STDOUT = sys.stdout
sys.stdout = sys.stderr

from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp.server.mcpserver.prompts.base import Message, UserMessage  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402
from mcp_types import (  # noqa: E402
    CallToolResult,
    CreateMessageRequest,
    CreateMessageRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitRequestURLParams,
    InputRequest,
    InputRequiredResult,
    ListRootsRequest,
    SamplingMessage,
    TextContent,
)
from pydantic import BaseModel  # noqa: E402

INVALID_PARAMS = -32602

mcp = MCPServer("asks-modern", instructions="Tools that ask for the client's input in the 2026-07-28 way, for tests.")


def form(message: str, field: str) -> ElicitRequest:
    schema = {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def text(value: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=value)])


USER_NAME = form("What is your name?", "name")
LOGIN = ElicitRequest(params=ElicitRequestURLParams(mode="url", message="Sign in, please", url="https://example.com/login"))
LLM = CreateMessageRequest(
    params=CreateMessageRequestParams(messages=[SamplingMessage(role="user", content=TextContent(type="text", text="What is the capital of France?"))], max_tokens=20)
)
ROOTS = ListRootsRequest()


def answers_of(ctx: Context) -> dict[str, dict[str, Any]]:
    """The retry's answers as plain JSON (those that are not objects are dropped)."""
    plain = {key: a.model_dump(by_alias=True, mode="json", exclude_none=True) if isinstance(a, BaseModel) else a for key, a in (ctx.input_responses or {}).items()}
    return {key: answer for key, answer in plain.items() if isinstance(answer, dict)}


def ask(ctx: Context, questions: dict[str, InputRequest], state: str) -> dict[str, dict[str, Any]] | InputRequiredResult:
    """The answers to every question, or the InputRequiredResult asking for those missing (with C{state})."""
    answers = answers_of(ctx)
    missing = {key: question for key, question in questions.items() if key not in answers}
    if missing:
        return InputRequiredResult(input_requests=missing, request_state=state)
    if ctx.request_state != state:
        raise MCPError(code=INVALID_PARAMS, message=f"requestState came back changed: {ctx.request_state!r}")
    return answers


def said(answer: dict[str, Any], field: str = "") -> str:
    """An answer as text: an elicitation's C{field} (its action when it has no content), an LLM's text, the roots' URIs."""
    if "roots" in answer:
        return ", ".join(str(root.get("uri")) for root in answer["roots"] if isinstance(root, dict))
    content = answer.get("content")
    if "action" in answer:
        return str(content.get(field, "")) if isinstance(content, dict) else str(answer["action"])
    return str(content.get("text", "")) if isinstance(content, dict) else ""


def answered(ctx: Context, questions: dict[str, InputRequest], state: str, reply: str) -> CallToolResult | InputRequiredResult:
    """C{reply} formatted with what was said to each question (C{{key}}; an elicitation's C{name}), once all are answered."""
    answers = ask(ctx, questions, state)
    if isinstance(answers, InputRequiredResult):
        return answers
    return text(reply.format(**{key: said(answer, "name") for key, answer in answers.items()}))


def asking_tool(name: str, description: str, questions: dict[str, InputRequest], reply: str) -> None:
    """A tool that asks C{questions} in one round, then answers C{reply} with what was said."""

    async def tool(ctx: Context) -> CallToolResult | InputRequiredResult:
        return answered(ctx, questions, f"{name}:1", reply)

    mcp.tool(name=name, description=description)(tool)


asking_tool("elicit", "Asks the user's name, then greets them", {"user_name": USER_NAME}, "Hello, {user_name}!")
asking_tool("login", "Sends the user to a URL to sign in", {"login": LOGIN}, "login: {login}")
asking_tool("sample", "Asks the client's LLM the capital of France", {"llm": LLM}, "The LLM answered: {llm}")
asking_tool("roots", "Asks the client for its roots", {"client_roots": ROOTS}, "roots: {client_roots}")
asking_tool(
    "three",
    "Asks a name, the LLM and the roots in one round",
    {"user_name": USER_NAME, "llm": LLM, "client_roots": ROOTS},
    "name={user_name}; llm={llm}; roots={client_roots}",
)


STEP1 = form("Step 1: what is your name?", "name")
STEP2 = form("Step 2: what is your favourite colour?", "colour")


@mcp.tool(description="Two rounds: a name, then a colour (the name rides in requestState)")
async def two_rounds(ctx: Context) -> CallToolResult | InputRequiredResult:
    state = ctx.request_state or ""
    if not state.startswith("round-2:"):
        first = ask(ctx, {"step1": STEP1}, "round-1")
        if isinstance(first, InputRequiredResult):
            return first
        return InputRequiredResult(input_requests={"step2": STEP2}, request_state="round-2:" + json.dumps(said(first["step1"], "name")))
    second = ask(ctx, {"step2": STEP2}, state)
    if isinstance(second, InputRequiredResult):
        return second
    await ctx.report_progress(1, 1, "both answers in")
    name = json.loads(state.removeprefix("round-2:"))
    return text(f"Hello {name}, your favourite colour is {said(second['step2'], 'colour')}")


@mcp.tool(description="Asks nothing of the client: two rounds of requestState only")
async def poll(ctx: Context) -> CallToolResult | InputRequiredResult:
    state = ctx.request_state
    if state is None:
        return InputRequiredResult(request_state="poll-1")
    if state == "poll-1":
        return InputRequiredResult(request_state="poll-2")
    return text(f"polled after {state.removeprefix('poll-')} rounds")


@mcp.tool(description="Asks for the roots every round, never finishes")
async def forever(ctx: Context) -> InputRequiredResult:
    rounds = int((ctx.request_state or "forever-0").removeprefix("forever-"))
    return InputRequiredResult(input_requests={"again": ROOTS}, request_state=f"forever-{rounds + 1}")


@mcp.prompt(description="Asks for a context first (key user_context)")
async def with_context(ctx: Context) -> list[Message] | InputRequiredResult:
    answers = ask(ctx, {"user_context": form("What context should the prompt use?", "context")}, "prompt:1")
    if isinstance(answers, InputRequiredResult):
        return answers
    return [UserMessage(f"Use this context: {said(answers['user_context'], 'context')}")]


if __name__ == "__main__":
    sys.stdout = _STDOUT
    mcp.run("stdio")
