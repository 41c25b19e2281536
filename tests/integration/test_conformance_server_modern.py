"""
The 2026-07-28 conformance scenario server (tests/conformance/server_modern.py) serves both eras alike.

`make conformance` puts it behind the gateway, which speaks the handshake era to its backends
(it sends `initialize`), and scores it alone with 2026-07-28 requests.  These tests drive it with
the official SDK client in each era, on stdio and over Streamable HTTP, and check that it accepts
the handshake and that its input-asking tools give the same answers whether the questions come as
requests during the call (handshake era) or as InputRequiredResult rounds (2026-07-28).
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from mcp_types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent

from tests import mcpclient as mc

SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conformance", "server_modern.py")
ERAS = {"legacy": "2025-11-25", "2026-07-28": "2026-07-28"}

#: Each input-asking tool and the text it answers with, given the callbacks below.
ANSWERS = {
    "test_input_required_result_elicitation": "Hello, Ada!",
    "test_input_required_result_sampling": "The LLM answered: Paris",
    "test_input_required_result_list_roots": "The client's roots: file:///work",
    "test_input_required_result_request_state": "state-ok: confirmed=True",
    "test_input_required_result_multiple_inputs": "All inputs received: name=Ada; greeting=Paris; roots=file:///work",
    "test_input_required_result_multi_round": "Hello Ada, your favourite colour is teal",
    "test_input_required_result_capabilities": "Answered: capital_question, client_roots, user_name",
    "test_missing_capability": "LLM said: Paris",
    "test_streaming_elicitation": "confirmed: True",
}


async def sampling(context: Any, params: Any) -> CreateMessageResult:
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="Paris"), model="test")


async def elicitation(context: Any, params: Any) -> ElicitResult:
    field, schema = next(iter(params.requested_schema["properties"].items()))
    value = {"boolean": True}.get(schema["type"], "teal" if field == "color" else "Ada")
    return ElicitResult(action="accept", content={field: value})


async def roots(context: Any) -> ListRootsResult:
    return ListRootsResult(roots=[Root(uri="file:///work", name="work")])


CALLBACKS: dict[str, Any] = {"sampling_callback": sampling, "elicitation_callback": elicitation, "list_roots_callback": roots}


async def answers(client: Any) -> dict[str, str]:
    found = {name: mc.result_text(await client.call_tool(name, {})) for name in ANSWERS}
    prompt = await client.get_prompt("test_input_required_result_prompt", {})
    found["test_input_required_result_prompt"] = prompt.messages[0].content.text
    return found


EXPECTED = {**ANSWERS, "test_input_required_result_prompt": "Use this context: Ada"}


@pytest.mark.parametrize("mode", sorted(ERAS))
def test_on_stdio_both_eras_get_the_same_answers(mode: str) -> None:
    async def scenario() -> tuple[str, dict[str, str]]:
        async with mc.connect([sys.executable, SERVER], mode=mode, read_timeout=30, **CALLBACKS) as client:
            return client.protocol_version, await answers(client)

    version, found = mc.run(scenario, timeout=60)
    assert version == ERAS[mode]
    assert found == EXPECTED


@contextmanager
def http_server() -> Iterator[str]:
    """server_modern.py over Streamable HTTP; yields its URL, and stops it (it exits when its stdin closes)."""
    command = [sys.executable, SERVER, "--http", "0"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        try:
            ready, _, _ = select.select([process.stdout], [], [], 30)
            line = process.stdout.readline() if ready else ""
            match = re.fullmatch(r"LISTENING (\d+)\n", line)
            assert match, f"the server said {line!r}"
            yield f"http://127.0.0.1:{match.group(1)}/mcp"
        finally:
            process.stdin.close()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def test_over_http_both_eras_get_the_same_answers() -> None:
    with http_server() as url:

        async def scenario() -> dict[str, tuple[str, dict[str, str]]]:
            seen = {}
            for mode in sorted(ERAS):
                async with mc.connect_http(url, mode=mode, **CALLBACKS) as client:
                    seen[mode] = (client.protocol_version, await answers(client))
            return seen

        seen = mc.run(scenario, timeout=60)
    assert {mode: version for mode, (version, _) in seen.items()} == ERAS
    assert all(found == EXPECTED for _, found in seen.values())
