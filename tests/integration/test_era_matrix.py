"""
The era matrix (issue 12): handshake-era and 2026-07-28 clients (the official
SDK client, `mode="legacy"` and `mode="2026-07-28"`) × the same server
(tests/servers/eras.py) as a handshake-era and as a 2026-07-28 backend, on
stdio and over HTTP × the gateway's stdio and HTTP fronts, through the real
`twistd mcp-gateway` command.  Every cell uses tools with progress, sampling,
elicitation and roots answered by the client's own callbacks (real requests
or InputRequiredResult rounds, whatever each hop speaks), a resource read and
its update notification (subscribe or listen), a prompt and its completion,
log messages, and a tool-list change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import anyio
import pytest
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types import (
    CreateMessageResult,
    ElicitResult,
    ListRootsResult,
    PromptReference,
    Root,
    TextContent,
    TextResourceContents,
)

from tests import mcpclient as mc

from .conftest import SERVERS, free_port, gateway_argv, gateway_env, server
from .test_http_front import connect_http, start_http, wait_listening

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

MODERN = "2026-07-28"
URI = "eras://counter"
ROOT = "file:///srv/matrix"


async def elicit(context: Any, params: Any) -> ElicitResult:
    return ElicitResult(action="accept", content={"name": "ada"})


async def sample(context: Any, params: Any) -> CreateMessageResult:
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="hi"), model="matrix")


async def roots(context: Any) -> ListRootsResult:
    return ListRootsResult(roots=[Root(uri=ROOT)])


class Logs:
    """A logging_callback keeping what each message said."""

    def __init__(self) -> None:
        self.said: list[str] = []

    async def __call__(self, params: Any) -> None:
        self.said.append(str(params.data))


@pytest.fixture
def http_eras():
    """tests/servers/eras.py serving Streamable HTTP on a free loopback port: its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(SERVERS, "eras.py"), "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()  # uvicorn waits for open streams (the gateway's listen) to close: not for long
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def backend(era: str, transport: str, http_url: str | None) -> dict[str, Any]:
    if transport == "stdio":
        return server("eras", protocol=era)
    return {"type": "http", "url": http_url, "protocol": era}


async def exercise(client: Any, client_era: str, logs: Logs, notes: mc.NotificationRecorder) -> None:
    """Everything one cell checks, on one connected client."""
    assert (client.protocol_version == MODERN) == (client_era == "modern")
    names = await mc.tool_names(client)
    assert {"eras__ask_name", "eras__count", "eras__toggle_tool"} <= set(names)
    assert "eras__dynamic" not in names

    result, progress = await mc.call_with_progress(client, "eras__count")
    assert mc.result_text(result) == "counted"
    await mc.wait_until(lambda: len(progress) >= 3)
    assert [step for step, _, _ in progress] == [1, 2, 3]

    # Each of the backend's questions, answered by this client's callbacks.
    assert await mc.call_text(client, "eras__ask_name") == "hello ada"
    assert await mc.call_text(client, "eras__ask_llm") == "llm said: hi"
    assert await mc.call_text(client, "eras__ask_roots") == f"roots: {ROOT}"

    prompt = await client.get_prompt("eras__greet", {"name": "Ada"})
    assert prompt.messages[0].content.text == "Say hello to Ada"
    completion = await client.complete(PromptReference(type="ref/prompt", name="eras__greet"), {"name": "name", "value": "a"})
    assert completion.completion.values == ["ada", "alan"]

    (contents,) = (await client.read_resource(URI)).contents
    assert isinstance(contents, TextResourceContents) and contents.text.startswith("counter ")

    if client_era == "legacy":
        await client.set_logging_level("info")
    assert await mc.call_text(client, "eras__chatty") == "chatted"
    await mc.wait_until(lambda: len([said for said in logs.said if "chatty says" in said]) >= 3)

    if client_era == "legacy":
        await client.subscribe_resource(URI)
        await mc.call_text(client, "eras__bump")
        await notes.wait_for("notifications/resources/updated", timeout=15)
        assert await mc.call_text(client, "eras__toggle_tool") == "added"
        await notes.wait_for("notifications/tools/list_changed", timeout=15)
    else:
        async with client.listen(tools_list_changed=True, resource_subscriptions=[URI]) as subscription:
            assert subscription.honored.resource_subscriptions == [URI]
            await mc.call_text(client, "eras__bump")
            with anyio.fail_after(15):
                assert await subscription.__anext__() == ResourceUpdated(uri=URI)
            assert await mc.call_text(client, "eras__toggle_tool") == "added"
            with anyio.fail_after(15):
                while (event := await subscription.__anext__()) != ToolsListChanged():
                    assert isinstance(event, ResourceUpdated)
    assert "eras__dynamic" in await mc.tool_names(client)


def callbacks(client_era: str, logs: Logs, notes: mc.NotificationRecorder) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "mode": "legacy" if client_era == "legacy" else MODERN,
        "elicitation_callback": elicit,
        "sampling_callback": sample,
        "list_roots_callback": roots,
        "logging_callback": logs,
        "message_handler": notes,
    }
    if client_era == "modern":
        extra["log_level"] = "info"  # on every request: the only way a 2026-07-28 client gets logs
    return extra


CELLS = [
    pytest.param(client_era, backend_era, transport, id=f"{client_era}-client-{backend_era}-{transport}-backend")
    for client_era in ("legacy", "modern")
    for backend_era in ("legacy", "modern")
    for transport in ("stdio", "http")
]


@pytest.mark.parametrize("client_era,backend_era,transport", CELLS)
def test_the_stdio_front(client_era, backend_era, transport, write_config, tmp_path, request):
    url = request.getfixturevalue("http_eras") if transport == "http" else None
    config = write_config({"eras": backend(backend_era, transport, url)})
    logs, notes = Logs(), mc.NotificationRecorder()

    async def scenario():
        async with mc.connect(
            gateway_argv(config),
            env=gateway_env(),
            cwd=str(tmp_path),
            errlog=str(tmp_path / "gateway.stderr"),
            read_timeout=60,
            **callbacks(client_era, logs, notes),
        ) as client:
            await exercise(client, client_era, logs, notes)

    mc.run(scenario, timeout=120)


@pytest.mark.parametrize("client_era,backend_era,transport", CELLS)
def test_the_http_front(client_era, backend_era, transport, daemon, tmp_path, request):
    url = request.getfixturevalue("http_eras") if transport == "http" else None
    _, front = start_http(daemon, {"eras": backend(backend_era, transport, url)})
    logs, notes = Logs(), mc.NotificationRecorder()

    async def scenario():
        async with connect_http(front, **callbacks(client_era, logs, notes)) as client:
            await exercise(client, client_era, logs, notes)

    mc.run(scenario, timeout=120)

