"""
Multi-round-trip requests with a stateless-era (2026-07-28) backend, through
the real `twistd -n mcp-gateway` command (issue 12, step 7):
tests/servers/asks_modern.py, pinned `protocol: modern`, answers calls with
InputRequiredResults.  An official SDK client in `mode="legacy"` answers its
questions through its callbacks as real requests (the gateway's rounds); in
`mode="2026-07-28"` the SDK drives the InputRequiredResult rounds itself
with the same callbacks (the pass-through, the backend's requestState in
the gateway's seal).  On stdio and over HTTP.  Then what a hostile client
gets for an altered pass token and for another request's: -32602.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import MCPError
from mcp_types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent

from tests import mcpclient as mc

from .conftest import gateway_argv, gateway_env, server
from .surface_helpers import text_of
from .test_eras import MODERN, envelope
from .test_http_front import connect_http, start_http

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")


class Answers:
    """A client's callbacks: what it was asked, and its fixed answers."""

    def __init__(self) -> None:
        self.elicitations: list[Any] = []
        self.sampling = 0
        self.roots = 0

    async def elicit(self, context: Any, params: Any) -> ElicitResult:
        self.elicitations.append(params)
        if getattr(params, "mode", "form") == "url":
            return ElicitResult(action="accept")
        return ElicitResult(action="accept", content={"name": "Ada", "colour": "teal", "context": "tests"})

    async def sample(self, context: Any, params: Any) -> CreateMessageResult:
        self.sampling += 1
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="Paris"), model="m", stop_reason="endTurn")

    async def list_roots(self, context: Any) -> ListRootsResult:
        self.roots += 1
        return ListRootsResult(roots=[Root(uri="file:///work", name="work")])

    def callbacks(self, sampling: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"elicitation_callback": self.elicit, "list_roots_callback": self.list_roots}
        if sampling:
            out["sampling_callback"] = self.sample
        return out


EXPECTED = {
    "asks__elicit": "Hello, Ada!",
    "asks__login": "login: accept",
    "asks__sample": "The LLM answered: Paris",
    "asks__roots": "roots: file:///work",
    "asks__three": "name=Ada; llm=Paris; roots=file:///work",
    "asks__poll": "polled after 2 rounds",
}


async def answer_every_question(client: Any, answers: Answers) -> None:
    """Each tool's questions answered by the client's callbacks, and the prompt's; progress of the last round."""
    for tool, expected in EXPECTED.items():
        result = await client.call_tool(tool, {})
        assert not result.is_error, (tool, text_of(result))
        assert text_of(result) == expected, tool
    assert answers.sampling == 2 and answers.roots == 2
    (login,) = [e for e in answers.elicitations if getattr(e, "mode", "form") == "url"]
    assert str(login.url) == "https://example.com/login"
    progress = mc.ProgressRecorder()
    result = await client.call_tool("asks__two_rounds", {}, progress_callback=progress)
    assert text_of(result) == "Hello Ada, your favourite colour is teal"
    assert [p[0] for p in progress.events] == [1]
    prompt = await client.get_prompt("asks__with_context", {})
    assert prompt.messages[0].content.text == "Use this context: tests"


@pytest.fixture
def config(write_config):
    return write_config({"asks": server("asks_modern", protocol="modern")}, maxInputRounds=3)


def connect(config: str, tmp_path: Any, mode: str, **callbacks: Any):
    return mc.connect(
        gateway_argv(config), env=gateway_env(), cwd=str(tmp_path), errlog=str(tmp_path / "gateway.stderr"), mode=mode, read_timeout=60, **callbacks
    )


def test_a_handshake_era_client_answers_a_modern_backends_questions_in_rounds(config, tmp_path):
    async def scenario():
        answers = Answers()
        async with connect(config, tmp_path, "legacy", **answers.callbacks()) as client:
            assert client.protocol_version != MODERN
            await answer_every_question(client, answers)
            # The 2025-11-25 client was sent the elicitationId its version requires.
            (login,) = [e for e in answers.elicitations if getattr(e, "mode", "form") == "url"]
            assert login.elicitation_id
            # A backend that never stops asking: gateway.maxInputRounds (3) rounds, then an error.
            before = answers.roots
            with pytest.raises(MCPError) as asked_forever:
                await client.call_tool("asks__forever", {})
            assert asked_forever.value.error.code == -32603
            assert asked_forever.value.error.message == "backend 'asks' asked for input more than 3 times (gateway.maxInputRounds)"
            assert answers.roots - before == 3
        lacking = Answers()
        async with connect(config, tmp_path, "legacy", **lacking.callbacks(sampling=False)) as client:
            result = await client.call_tool("asks__sample", {})
            assert result.is_error and "asked for sampling/createMessage" in text_of(result)
            assert lacking.sampling == 0

    mc.run(scenario, timeout=120)
    assert "Traceback" not in (tmp_path / "gateway.stderr").read_text()


def test_a_stateless_era_client_answers_a_modern_backends_questions_through_the_gateway(config, tmp_path):
    async def scenario():
        answers = Answers()
        async with connect(config, tmp_path, MODERN, **answers.callbacks()) as client:
            assert client.protocol_version == MODERN
            await answer_every_question(client, answers)

    mc.run(scenario, timeout=120)
    assert "Traceback" not in (tmp_path / "gateway.stderr").read_text()


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_over_http_both_eras_answer_a_modern_backends_questions(daemon, tmp_path, mode):
    _, url = start_http(daemon, {"asks": server("asks_modern", protocol="modern")})

    async def scenario():
        answers = Answers()
        async with connect_http(url, mode=mode, read_timeout=60, **answers.callbacks()) as client:
            for tool in ("asks__three", "asks__elicit"):
                assert text_of(await client.call_tool(tool, {})) == EXPECTED[tool]

    mc.run(scenario, timeout=120)
    assert "Traceback" not in (tmp_path / "gw.log").read_text()


def test_an_altered_pass_token_or_another_requests_is_refused(write_config, raw_gateway):
    gw = raw_gateway(write_config({"asks": server("asks_modern", protocol="modern")}))
    meta = envelope(**{"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}, "roots": {}}})

    def call(tool: str, **more: Any) -> dict[str, Any]:
        return gw.request("tools/call", {"name": f"asks__{tool}", "arguments": {}, "_meta": meta, **more}, timeout=60)

    asked = call("elicit")["result"]
    assert asked["resultType"] == "input_required"
    assert list(asked["inputRequests"]) == ["user_name"]
    token = asked["requestState"]
    assert token.startswith("tmcp1.") and "elicit:1" not in token
    other = call("roots")["result"]["requestState"]
    answer = {"user_name": {"action": "accept", "content": {"name": "Eve"}}}
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    for refused, why in ((call("elicit", inputResponses=answer, requestState=flipped), "verification"),
                         (call("elicit", inputResponses=answer, requestState=other), "another request")):
        assert refused["error"]["code"] == -32602, refused
        assert why in refused["error"]["message"]
        assert token not in json.dumps(refused) and other not in json.dumps(refused)
    done = call("elicit", inputResponses=answer, requestState=token)["result"]
    assert done["resultType"] == "complete" and done["content"][0]["text"] == "Hello, Eve!"
    log = gw.stderr_text()
    assert "requestState was refused" in log
    assert token not in log and flipped not in log and "Eve" not in log
