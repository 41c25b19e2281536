"""The 2026-07-28 scenario server for the official MCP conformance suite (mcp 2.3 SDK, `MCPServer`).

It implements what the suite's server scenarios of the 2026-07-28 requirement set
(`--requirements 2026-07-28` of `@modelcontextprotocol/conformance`, pinned in
tests/conformance/package.json) call, under the fixed names they use.  The SDK's
`MCPServer` serves both eras: a request carrying the 2026-07-28 `_meta` is served
statelessly (`server/discover`, `subscriptions/listen`, `InputRequiredResult`,
caching hints, sealed `requestState`), and an `initialize` selects the handshake era
for the stdio process or the HTTP session.  That is how the gateway reaches it
today: it sends `initialize` to every backend (the equivalent of `protocol: legacy`).

Usage:
  python tests/conformance/server_modern.py                 # stdio
  python tests/conformance/server_modern.py --http PORT     # Streamable HTTP at http://127.0.0.1:PORT/mcp

  --http PORT   serve Streamable HTTP on 127.0.0.1 (0 = pick a free port) with the
                SDK's DNS-rebinding protection.  Once listening it prints exactly one
                line "LISTENING <port>" to stdout; it exits on SIGTERM/SIGINT and when
                its stdin reaches EOF.

Nothing else is ever written to stdout (logs go to stderr).

Tools (every one with a description):
  test_simple_text, test_image_content, test_audio_content, test_embedded_resource,
  test_multiple_content_types, test_error_handling     fixed content (isError for the last)
  test_tool_with_progress      progress 0, 50, 100 of 100 (when the call has a progressToken)
  test_logging_tool            three info log messages (sent only when the request asks for logs)
  test_missing_capability      needs the client's `sampling` capability (-32021 without it)
  test_streaming_elicitation   asks the user a question (an InputRequiredResult in 2026-07-28)
  test_trigger_tool_change, test_trigger_prompt_change   announce a changed tool or prompt list
  test_input_required_result_*  the suite's InputRequiredResult rounds, with its fixed
                               input keys (`user_name`, `capital_question`, ...); in the
                               handshake era the same questions are asked as requests
                               to the client during the call, and the same answer comes back.
Resources: test://static-text, test://static-binary (a PNG), test://watched-resource;
the template test://template/{id}/data.
Prompts: test_simple_prompt, test_prompt_with_arguments(arg1, arg2),
test_prompt_with_embedded_resource(resourceUri), test_prompt_with_image,
test_input_required_result_prompt (asks for a context first).
Completion answers every argument from a short fixed list.  The list methods carry
caching hints (`ttlMs`, `cacheScope`) for 2026-07-28 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Annotated, Any

# Everything but the LISTENING line goes to stderr, whatever a library prints.
_STDOUT = sys.stdout
sys.stdout = sys.stderr

import anyio  # noqa: E402
from mcp.server.caching import CacheHint  # noqa: E402
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp.server.mcpserver.prompts.base import Message, UserMessage  # noqa: E402
from mcp.server.mcpserver.resolve import Elicit, Resolve, Sample  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402
from mcp_types import (  # noqa: E402
    AudioContent,
    CallToolResult,
    ClientCapabilities,
    Completion,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    EmbeddedResource,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    ListRootsRequest,
    SamplingMessage,
    TextContent,
    TextResourceContents,
)
from mcp_types.methods import CacheableMethod  # noqa: E402
from pydantic import BaseModel  # noqa: E402

HOST = "127.0.0.1"
PATH = "/mcp"
MODERN = "2026-07-28"
HANDSHAKE_ERA = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
#: The name of the tool and of the prompt the trigger tools add and remove.
DYNAMIC = "test_dynamic"
INVALID_PARAMS = -32602

# A 1x1 red PNG and a tiny silent WAV (44-byte header, two samples).
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WAV = "UklGRigAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQQAAAAAAAAA"
STATIC_TEXT = "This is the content of the static text resource."
COMPLETIONS = ["paris", "park", "party", "test-value"]
#: Every list result may be cached for a minute, by anyone (the lists never depend on the caller).
LIST_METHODS: tuple[CacheableMethod, ...] = ("tools/list", "prompts/list", "resources/list", "resources/templates/list")
CACHE_HINTS = {method: CacheHint(ttl_ms=60_000, scope="public") for method in LIST_METHODS}

mcp: MCPServer = MCPServer("twisted-mcp-conformance-modern-server", version="1.0.0", cache_hints=CACHE_HINTS)


def text(value: str) -> TextContent:
    return TextContent(type="text", text=value)


def image() -> ImageContent:
    return ImageContent(type="image", data=PNG, mime_type="image/png")


def embedded(uri: str, mime_type: str, body: str) -> EmbeddedResource:
    return EmbeddedResource(type="resource", resource=TextResourceContents(uri=uri, mime_type=mime_type, text=body))


# --- fixed content -------------------------------------------------------------------------------


@mcp.tool(description="Returns simple text content")
def test_simple_text() -> CallToolResult:
    return CallToolResult(content=[text("This is a simple text response for testing.")])


@mcp.tool(description="Returns image content (a 1x1 PNG)")
def test_image_content() -> CallToolResult:
    return CallToolResult(content=[image()])


@mcp.tool(description="Returns audio content (a short WAV)")
def test_audio_content() -> CallToolResult:
    return CallToolResult(content=[AudioContent(type="audio", data=WAV, mime_type="audio/wav")])


@mcp.tool(description="Returns an embedded resource")
def test_embedded_resource() -> CallToolResult:
    return CallToolResult(content=[embedded("test://embedded-resource", "text/plain", "This is an embedded resource content.")])


@mcp.tool(description="Returns text, an image and an embedded resource")
def test_multiple_content_types() -> CallToolResult:
    body = json.dumps({"test": "data", "value": 123})
    return CallToolResult(
        content=[
            text("Multiple content types test:"),
            image(),
            embedded("test://mixed-content-resource", "application/json", body),
        ]
    )


@mcp.tool(description="Always fails with isError: true")
def test_error_handling() -> CallToolResult:
    return CallToolResult(content=[text("This tool intentionally returns an error for testing")], is_error=True)


@mcp.tool(description="Reports progress 0, 50 and 100 of 100")
async def test_tool_with_progress(ctx: Context) -> CallToolResult:
    for index, progress in enumerate([0, 50, 100]):
        if index:
            await anyio.sleep(0.05)
        await ctx.report_progress(progress, 100)  # a no-op when the call has no progressToken
    return CallToolResult(content=[text("Tool with progress executed successfully")])


@mcp.tool(description="Sends three info log messages while it runs (2026-07-28: only to requests that set a logLevel)")
async def test_logging_tool(ctx: Context) -> CallToolResult:
    for index, line in enumerate(["Tool execution started", "Tool processing data", "Tool execution completed"]):
        if index:
            await anyio.sleep(0.05)
        await ctx.log("info", line, logger_name="conformance")
    return CallToolResult(content=[text("Tool with logging executed successfully")])


# --- diagnostics of the stateless scenario -------------------------------------------------------


def ask_llm() -> Sample:
    return Sample([SamplingMessage(role="user", content=text("Say hello"))], max_tokens=20)


@mcp.tool(description="Needs the client's sampling capability: without it the call fails with -32021")
def test_missing_capability(answer: Annotated[CreateMessageResult, Resolve(ask_llm)]) -> CallToolResult:
    content = answer.content
    return CallToolResult(content=[text(f"LLM said: {content.text if isinstance(content, TextContent) else '?'}")])


class Confirmation(BaseModel):
    ok: bool


def ask_confirmation() -> Elicit[Confirmation]:
    return Elicit("Please confirm", Confirmation)


@mcp.tool(description="Asks the user to confirm (2026-07-28: an InputRequiredResult, never a request on the stream)")
def test_streaming_elicitation(confirmation: Annotated[Confirmation, Resolve(ask_confirmation)]) -> CallToolResult:
    return CallToolResult(content=[text(f"confirmed: {confirmation.ok}")])


@mcp.tool(description="Announces that the tool list changed")
async def test_trigger_tool_change(ctx: Context) -> CallToolResult:
    # The list really changes (a gateway re-lists on the notification and tells its
    # own clients only when something changed): a dynamic tool comes or goes.
    if any(tool.name == DYNAMIC for tool in mcp._tool_manager.list_tools()):
        mcp.remove_tool(DYNAMIC)
    else:
        mcp.add_tool(lambda: "dynamic", name=DYNAMIC, description="Comes and goes with test_trigger_tool_change")
    await ctx.notify_tools_changed()  # to 2026-07-28 listens
    if ctx.protocol_version in HANDSHAKE_ERA:  # and to a handshake-era connection (a gateway's)
        await ctx.session.send_tool_list_changed()
    return CallToolResult(content=[text("tool list change announced")])


@mcp.tool(description="Announces that the prompt list changed")
async def test_trigger_prompt_change(ctx: Context) -> CallToolResult:
    if any(prompt.name == DYNAMIC for prompt in mcp._prompt_manager.list_prompts()):
        mcp.remove_prompt(DYNAMIC)
    else:
        mcp.prompt(name=DYNAMIC, description="Comes and goes with test_trigger_prompt_change")(lambda: "dynamic")
    await ctx.notify_prompts_changed()
    if ctx.protocol_version in HANDSHAKE_ERA:
        await ctx.session.send_prompt_list_changed()
    return CallToolResult(content=[text("prompt list change announced")])


# --- InputRequiredResult rounds, with the suite's fixed input keys -------------------------------


def form(message: str, field: str, kind: str = "string") -> ElicitRequest:
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def sampling(prompt: str, max_tokens: int) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=text(prompt))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


USER_NAME = form("What is your name?", "name")
CAPITAL = sampling("What is the capital of France?", 100)
ROOTS = ListRootsRequest()


def modern(ctx: Context) -> bool:
    return (ctx.protocol_version or "") >= MODERN


def answers_of(ctx: Context) -> dict[str, dict[str, Any]]:
    """The client's answers of this round, as plain JSON (those that are not objects are dropped)."""
    answers: dict[str, dict[str, Any]] = {}
    for key, answer in (ctx.input_responses or {}).items():
        plain = answer.model_dump(by_alias=True, mode="json", exclude_none=True) if isinstance(answer, BaseModel) else answer
        if isinstance(plain, dict):
            answers[key] = plain
    return answers


async def ask_inline(ctx: Context, questions: dict[str, InputRequest]) -> dict[str, dict[str, Any]]:
    """The handshake era: each question is a request to the client during the call."""
    session = ctx.request_context.session
    related = ctx.request_context.request_id
    answers: dict[str, dict[str, Any]] = {}
    for key, question in questions.items():
        if isinstance(question, ElicitRequest):
            params = question.params
            assert isinstance(params, ElicitRequestFormParams)
            answer: BaseModel = await session.elicit_form(params.message, params.requested_schema, related_request_id=related)
        elif isinstance(question, CreateMessageRequest):
            answer = await session.create_message(
                question.params.messages, max_tokens=question.params.max_tokens, related_request_id=related
            )
        else:
            answer = await session.list_roots()
        answers[key] = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
    return answers


async def gather(
    ctx: Context, questions: dict[str, InputRequest], state: str | None = None
) -> dict[str, dict[str, Any]] | InputRequiredResult:
    """The answers to every question, or (2026-07-28) the InputRequiredResult asking for those missing.

    Answers under other keys are ignored; a question whose answer is missing or not an
    object is asked again.  `state` rides along as `requestState` (sealed by the SDK).
    """
    if not modern(ctx):
        return await ask_inline(ctx, questions)
    answers = answers_of(ctx)
    missing = {key: question for key, question in questions.items() if key not in answers}
    if missing:
        return InputRequiredResult(input_requests=missing, request_state=state)
    return {key: answers[key] for key in questions}


def elicited(answer: dict[str, Any], field: str) -> str:
    content = answer.get("content") if answer.get("action") == "accept" else None
    return str(content.get(field, "")) if isinstance(content, dict) else f"({answer.get('action', 'no answer')})"


def sampled(answer: dict[str, Any]) -> str:
    content = answer.get("content")
    return str(content.get("text", "")) if isinstance(content, dict) else ""


def root_uris(answer: dict[str, Any]) -> str:
    roots = answer.get("roots")
    return ", ".join(str(root.get("uri")) for root in roots if isinstance(root, dict)) if isinstance(roots, list) else ""


@mcp.tool(description="Asks the user's name (InputRequiredResult key user_name), then greets them")
async def test_input_required_result_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = await gather(ctx, {"user_name": USER_NAME})
    if isinstance(answers, InputRequiredResult):
        return answers
    return CallToolResult(content=[text(f"Hello, {elicited(answers['user_name'], 'name')}!")])


@mcp.tool(description="Asks the client's LLM the capital of France (key capital_question)")
async def test_input_required_result_sampling(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = await gather(ctx, {"capital_question": CAPITAL})
    if isinstance(answers, InputRequiredResult):
        return answers
    return CallToolResult(content=[text(f"The LLM answered: {sampled(answers['capital_question'])}")])


@mcp.tool(description="Asks the client for its roots (key client_roots)")
async def test_input_required_result_list_roots(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = await gather(ctx, {"client_roots": ROOTS})
    if isinstance(answers, InputRequiredResult):
        return answers
    return CallToolResult(content=[text(f"The client's roots: {root_uris(answers['client_roots'])}")])


REQUEST_STATE = "conformance:request-state:1"


@mcp.tool(description="Asks for a confirmation (key confirm) with a requestState it checks on the retry")
async def test_input_required_result_request_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = await gather(ctx, {"confirm": form("Please confirm", "ok", "boolean")}, state=REQUEST_STATE)
    if isinstance(answers, InputRequiredResult):
        return answers
    if modern(ctx) and ctx.request_state != REQUEST_STATE:
        raise MCPError(code=INVALID_PARAMS, message="requestState missing or not the one this tool sent")
    return CallToolResult(content=[text(f"state-ok: confirmed={elicited(answers['confirm'], 'ok')}")])


@mcp.tool(description="Asks three questions at once: a name, an LLM greeting and the roots")
async def test_input_required_result_multiple_inputs(ctx: Context) -> CallToolResult | InputRequiredResult:
    questions: dict[str, InputRequest] = {
        "user_name": USER_NAME,
        "greeting": sampling("Generate a greeting", 50),
        "client_roots": ROOTS,
    }
    answers = await gather(ctx, questions, state="conformance:multiple-inputs")
    if isinstance(answers, InputRequiredResult):
        return answers
    summary = (
        f"name={elicited(answers['user_name'], 'name')}; greeting={sampled(answers['greeting'])}; "
        f"roots={root_uris(answers['client_roots'])}"
    )
    return CallToolResult(content=[text(f"All inputs received: {summary}")])


STEP1 = form("Step 1: What is your name?", "name")
STEP2 = form("Step 2: What is your favorite color?", "color")


@mcp.tool(description="Two rounds: a name (key step1), then a colour (key step2); the name rides in requestState")
async def test_input_required_result_multi_round(ctx: Context) -> CallToolResult | InputRequiredResult:
    if not modern(ctx):
        inline = await ask_inline(ctx, {"step1": STEP1, "step2": STEP2})
        name, color = elicited(inline["step1"], "name"), elicited(inline["step2"], "color")
        return CallToolResult(content=[text(f"Hello {name}, your favourite colour is {color}")])
    state = ctx.request_state or ""
    if state.startswith("round-2:"):
        name = json.loads(state.removeprefix("round-2:"))
        answers = await gather(ctx, {"step2": STEP2}, state=state)
        if isinstance(answers, InputRequiredResult):
            return answers
        return CallToolResult(content=[text(f"Hello {name}, your favourite colour is {elicited(answers['step2'], 'color')}")])
    answers = await gather(ctx, {"step1": STEP1}, state="round-1")
    if isinstance(answers, InputRequiredResult):
        return answers
    next_state = "round-2:" + json.dumps(elicited(answers["step1"], "name"))
    return InputRequiredResult(input_requests={"step2": STEP2}, request_state=next_state)


@mcp.tool(description="Asks for a confirmation with a requestState; the SDK seals it, so a changed one is refused")
async def test_input_required_result_tampered_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    answers = await gather(ctx, {"confirm": form("Please confirm", "ok", "boolean")}, state="conformance:tamper-proof")
    if isinstance(answers, InputRequiredResult):
        return answers
    return CallToolResult(content=[text("state-ok")])


@mcp.tool(description="Asks only what the client declared it can answer: sampling, elicitation, roots")
async def test_input_required_result_capabilities(ctx: Context) -> CallToolResult | InputRequiredResult:
    declared = ctx.client_capabilities or ClientCapabilities()
    offered: dict[str, InputRequest] = {}
    if declared.sampling is not None:
        offered["capital_question"] = CAPITAL
    if declared.elicitation is not None:
        offered["user_name"] = USER_NAME
    if declared.roots is not None:
        offered["client_roots"] = ROOTS
    if not offered:
        return CallToolResult(content=[text("The client declared no capability to ask with; nothing asked")])
    answers = await gather(ctx, offered)
    if isinstance(answers, InputRequiredResult):
        return answers
    return CallToolResult(content=[text(f"Answered: {', '.join(sorted(answers))}")])


# --- resources -----------------------------------------------------------------------------------


@mcp.resource("test://static-text", name="static-text", description="A static text resource", mime_type="text/plain")
def static_text() -> str:
    return STATIC_TEXT


@mcp.resource("test://static-binary", name="static-binary", description="A static PNG image", mime_type="image/png")
def static_binary() -> bytes:
    import base64

    return base64.b64decode(PNG)


@mcp.resource(
    "test://watched-resource", name="watched-resource", description="A resource to subscribe to", mime_type="text/plain"
)
def watched() -> str:
    return "Watched resource content"


@mcp.resource(
    "test://template/{id}/data", name="template", description="A resource template with an id", mime_type="application/json"
)
def template(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


# --- prompts -------------------------------------------------------------------------------------


@mcp.prompt(description="A simple prompt without arguments")
def test_simple_prompt() -> list[Message]:
    return [UserMessage("This is a simple prompt for testing.")]


@mcp.prompt(description="A prompt with two required arguments")
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[Message]:
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@mcp.prompt(description="A prompt that embeds a resource")
def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:  # noqa: N803 (the suite's name)
    resource = embedded(resourceUri, "text/plain", "Embedded resource content for testing.")
    return [UserMessage(resource), UserMessage("Please process the embedded resource above.")]


@mcp.prompt(description="A prompt with an image")
def test_prompt_with_image() -> list[Message]:
    return [UserMessage(image()), UserMessage("Please analyze the image above.")]


USER_CONTEXT = form("What context should the prompt use?", "context")


@mcp.prompt(description="Asks for a context first (InputRequiredResult key user_context)")
async def test_input_required_result_prompt(ctx: Context) -> list[Message] | InputRequiredResult:
    answers = await gather(ctx, {"user_context": USER_CONTEXT})
    if isinstance(answers, InputRequiredResult):
        return answers
    return [UserMessage(f"Use this context: {elicited(answers['user_context'], 'context')}")]


@mcp.completion()
async def complete(ref: Any, argument: Any, context: Any) -> Completion:
    values = [value for value in COMPLETIONS if value.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


# --- transports ----------------------------------------------------------------------------------


def serve_http(port: int) -> None:
    app = mcp.streamable_http_app(streamable_http_path=PATH, host=HOST)
    from http_serving import serve_app  # beside this script (sys.path[0] when it runs)

    serve_app(app, HOST, port, _STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve Streamable HTTP on 127.0.0.1:PORT (0: any free port)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the SDK warns that logging and sampling are deprecated in 2026-07-28
    print(f"conformance server_modern.py: starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    if args.http is None:
        sys.stdout = _STDOUT  # the SDK takes fd 1 for the protocol
        anyio.run(mcp.run_stdio_async)
    else:
        serve_http(args.http)


if __name__ == "__main__":
    main()
