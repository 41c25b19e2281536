"""
Resumed event streams of a Streamable HTTP backend, through the real
`twistd ... mcp-gateway` command and the official SDK client: a call whose
stream the server ends (or whose connection it cuts) before the result gets
its result from the GET that resumes the stream with Last-Event-ID, after
the server's `retry` delay; a stream that cannot be resumed fails its call
with a clear error; the session's own stream is resumed too, so a
notification the server sent while it was disconnected is not lost.

The backend is tests/servers/http_resumable.py (stdlib, hand-written: it
keeps every stream's events and replays them).
"""

from __future__ import annotations

import time

import anyio
import pytest
from mcp import MCPError

from tests import mcpclient as mc
from twisted_mcp.mcp import errors

from .surface_helpers import connect_gateway
from .test_http import http_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

RETRY = 0.3  # seconds: the server's `retry:` (--retry 300)


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def resumable(http_server, write_config):  # noqa: F811
    server = http_server("http_resumable", "--retry", str(int(RETRY * 1000)))
    config = write_config({"r": {"type": "http", "url": f"{server.url}/mcp", "callTimeout": 20}})
    return server, config


@pytest.mark.parametrize("tool", ["close_then_answer", "drop_then_answer"])
def test_a_call_stream_ended_before_its_result_is_resumed(resumable, tmp_path, tool):
    server, config = resumable

    async def scenario():
        async with connect_gateway(config, tmp_path) as client:
            result, progress = await mc.call_with_progress(client, f"r__{tool}", {"text": "one"})
            assert mc.result_text(result) == "resumed: one"
            assert [p[2] for p in progress] == ["before the cut"]

    mc.run(scenario, timeout=60)
    stats = server.admin("stats")
    (stream, closed_at), = stats["closed"].items()
    resumes = [g for g in stats["gets"] if (g["last_event_id"] or "").startswith(stream + "-")]
    # Resumed once, from the progress event (the last event received whole).
    assert [g["last_event_id"] for g in resumes] == [f"{stream}-2"]
    waited = resumes[0]["t"] - closed_at
    # Never before `retry` (a MUST); the upper bound leaves room for a loaded machine.
    assert RETRY - 0.05 <= waited <= RETRY + 1.0, waited
    # The server held the replayed stream open: the gateway closed it once answered.
    wait_until(lambda: server.admin("stats")["held"] == 0, what="the resumed stream to be closed")


def test_streams_that_cannot_be_resumed_fail_their_call_only(resumable, tmp_path):
    server, config = resumable

    async def scenario():
        async with connect_gateway(config, tmp_path) as client:
            with pytest.raises(MCPError) as e:
                await client.call_tool("r__no_ids", {"text": "x"})
            assert e.value.error.code == errors.BACKEND_LOST
            assert "the stream broke before the response" in e.value.error.message
            assert "cannot be resumed: the server gave its events no id" in e.value.error.message
            with pytest.raises(MCPError) as e:
                await client.call_tool("r__refuse_resume", {"text": "x"})
            assert e.value.error.code == errors.BACKEND_LOST
            assert "the server refused to resume it (GET with Last-Event-ID answered HTTP 400: this stream cannot be resumed)" in e.value.error.message
            # The backend is still up, for this call and the others.
            assert mc.result_text(await client.call_tool("r__echo", {"text": "still here"})) == "still here"

    mc.run(scenario, timeout=60)


def test_concurrent_resumed_calls_each_get_their_own_result(resumable, tmp_path):
    server, config = resumable
    texts = [f"call-{i}" for i in range(12)]

    async def scenario():
        results: dict[str, str] = {}
        async with connect_gateway(config, tmp_path) as client:

            async def one(i: int, text: str) -> None:
                tool = "close_then_answer" if i % 2 else "drop_then_answer"
                results[text] = mc.result_text(await client.call_tool(f"r__{tool}", {"text": text}))

            async with anyio.create_task_group() as tg:
                for i, text in enumerate(texts):
                    tg.start_soon(one, i, text)
        assert results == {t: f"resumed: {t}" for t in texts}

    mc.run(scenario, timeout=90)
    stats = server.admin("stats")
    assert len([g for g in stats["gets"] if (g["last_event_id"] or "").startswith("call")]) == len(texts)
    wait_until(lambda: server.admin("stats")["held"] == 0, what="the resumed streams to be closed")


def test_the_session_stream_is_resumed_and_nothing_sent_meanwhile_is_lost(resumable, tmp_path):
    server, config = resumable

    async def scenario():
        async with connect_gateway(config, tmp_path) as client:
            assert "r__echo" in await mc.tool_names(client)
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: server.admin("stats")["open_gets"] == 1))
            # The server ends the session's stream, then sends list_changed while
            # no stream is open: only a GET with Last-Event-ID gets it.
            server.admin("close_get")
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: server.admin("stats")["open_gets"] == 0))
            server.admin("add_tool?name=added_later")
            deadline = anyio.current_time() + 10
            while "r__added_later" not in await mc.tool_names(client):
                assert anyio.current_time() < deadline, "the tool added while the stream was down never appeared"
                await anyio.sleep(0.1)

    mc.run(scenario, timeout=60)
    gets = server.admin("stats")["gets"]
    resumed = [g for g in gets if (g["last_event_id"] or "").startswith("session")]
    assert len(resumed) == 1, gets
