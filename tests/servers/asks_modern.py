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
    answers: dict[str, dict[str, Any]] = {}
    for key, answer in (ctx.input_responses or {}).items():
        plain = answer.model_dump(by_alias=True, mode="json", exclude_none=True) if isinstance(answer, BaseModel) else answer
        if isinstance(plain, dict):
            answers[key] = plain
    return answers


def ask(ctx: Context, questions: dict[str, InputRequest], state: str) -> dict[str, dict[str, Any]] | InputRequiredResult:
    """The answers to every question, or the InputRequiredResult asking for those missing (with C{state})."""
    answers = answers_of(ctx)
    missing = {key: question for key, question in questions.items() if key not in answers}
    if missing:
        return InputRequiredResult(input_requests=missing, request_state=state)
    if ctx.request_state != state:
        raise MCPError(code=INVALID_PARAMS, message=f"requestState came back changed: {ctx.request_state!r}")
    return answers


def elicited(answer: dict[str, Any], field: str) -> str:
    content = answer.get("content") if answer.get("action") == "accept" else None
    return str(content.get(field, "")) if isinstance(content, dict) else f"({answer.get('action', 'no answer')})"


def sampled(answer: dict[str, Any]) -> str:
    content = answer.get("content")
    return str(content.get("text", "")) if isinstance(content, dict) else ""


def root_uris(answer: dict[str, Any]) -> str:
    roots = answer.get("roots")
    return ", ".join(str(root.get("uri")) for root in roots if isinstance(root, dict)) if isinstance(roots, list) else ""


@mcp.tool(description="Asks the user's name, then greets them")
async def elicit(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = ask(ctx, {"user_name": USER_NAME}, "elicit:1")
    if isinstance(answers, InputRequiredResult):
        return answers
    return text(f"Hello, {elicited(answers['user_name'], 'name')}!")


@mcp.tool(description="Sends the user to a URL to sign in")
async def login(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = ask(ctx, {"login": LOGIN}, "login:1")
    if isinstance(answers, InputRequiredResult):
        return answers
    return text(f"login: {answers['login'].get('action')}")


@mcp.tool(description="Asks the client's LLM the capital of France")
async def sample(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = ask(ctx, {"llm": LLM}, "sample:1")
    if isinstance(answers, InputRequiredResult):
        return answers
    return text(f"The LLM answered: {sampled(answers['llm'])}")


@mcp.tool(description="Asks the client for its roots")
async def roots(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = ask(ctx, {"client_roots": ROOTS}, "roots:1")
    if isinstance(answers, InputRequiredResult):
        return answers
    return text(f"roots: {root_uris(answers['client_roots'])}")


@mcp.tool(description="Asks a name, the LLM and the roots in one round")
async def three(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = ask(ctx, {"user_name": USER_NAME, "llm": LLM, "client_roots": ROOTS}, "three:1")
    if isinstance(answers, InputRequiredResult):
        return answers
    name, llm, where = elicited(answers["user_name"], "name"), sampled(answers["llm"]), root_uris(answers["client_roots"])
    return text(f"name={name}; llm={llm}; roots={where}")


STEP1 = form("Step 1: what is your name?", "name")
STEP2 = form("Step 2: what is your favourite colour?", "colour")


@mcp.tool(description="Two rounds: a name, then a colour (the name rides in requestState)")
async def two_rounds(ctx: Context) -> CallToolResult | InputRequiredResult:
    state = ctx.request_state or ""
    if state.startswith("round-2:"):
        answers = ask(ctx, {"step2": STEP2}, state)
        if isinstance(answers, InputRequiredResult):
            return answers
        await ctx.report_progress(1, 1, "both answers in")
        name = json.loads(state.removeprefix("round-2:"))
        return text(f"Hello {name}, your favourite colour is {elicited(answers['step2'], 'colour')}")
    answers = ask(ctx, {"step1": STEP1}, "round-1")
    if isinstance(answers, InputRequiredResult):
        return answers
    return InputRequiredResult(input_requests={"step2": STEP2}, request_state="round-2:" + json.dumps(elicited(answers["step1"], "name")))


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
    return [UserMessage(f"Use this context: {elicited(answers['user_context'], 'context')}")]


if __name__ == "__main__":
    sys.stdout = _STDOUT
    mcp.run("stdio")
