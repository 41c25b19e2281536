"""
`subscriptions/listen` for stateless-era (2026-07-28) clients through the real
`twistd mcp-gateway` command, with the official SDK client's `Client.listen`,
on stdio and over HTTP, fed by handshake-era backends: a tool list that
changes (tests/servers/crashy.py restarted with another CRASHY_TOOLS_FILE)
and a subscribable resource (tests/servers/surface.py, whose `touch` tool
sends `notifications/resources/updated`).  Leaving the listen unsubscribes
at the backend; the gateway stopping ends the listen gracefully.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import anyio
import pytest
from mcp import MCPError
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged

from tests import mcpclient as mc

from .conftest import server
from .surface_helpers import read_events
from .test_eras import MODERN, connect

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

URI = "memo://shared/notes"


def servers(tmp_path) -> dict:
    tools_file = tmp_path / "tools.txt"
    tools_file.write_text("first_extra\n")
    return {
        "crashy": server("crashy", env={"CRASHY_TOOLS_FILE": str(tools_file)}),
        "notes": server("surface", env={"SURFACE_LABEL": "notes", "SURFACE_EVENT_LOG": str(tmp_path / "notes.events")}),
    }


async def next_event(subscription, timeout: float = 20):
    with anyio.fail_after(timeout):
        return await subscription.__anext__()


async def listen_scenario(client, tmp_path) -> None:
    """Resource updates and a tool-list change arrive on one listen; leaving it unsubscribes."""
    events = tmp_path / "notes.events"
    assert client.protocol_version == MODERN
    caps = client.server_capabilities
    if caps is not None:  # probed with server/discover: what the gateway offers
        assert caps.tools.list_changed is True and caps.resources.subscribe is True
    assert "crashy__first_extra" in await mc.tool_names(client)
    async with client.listen(tools_list_changed=True, resource_subscriptions=[URI, "memo://nowhere"]) as subscription:
        assert subscription.honored.tools_list_changed is True
        assert subscription.honored.resource_subscriptions == [URI]  # a URI no server offers is not honoured
        assert subscription.honored.prompts_list_changed is None  # not asked for
        assert f"subscribe {URI}" in read_events(events)
        assert await mc.call_text(client, "notes__touch") == "notified"
        assert await next_event(subscription) == ResourceUpdated(uri=URI)
        (tmp_path / "tools.txt").write_text("second_extra\n")
        with pytest.raises(MCPError):
            await client.call_tool("crashy__crash", {})
        while (event := await next_event(subscription)) != ToolsListChanged():
            assert isinstance(event, ResourceUpdated)  # the restart may re-subscribe, nothing else
        assert "crashy__second_extra" in await mc.tool_names(client)
    # Leaving the listen cancels it: the gateway drops the backend subscription.
    await mc.wait_until(lambda: f"unsubscribe {URI}" in read_events(events), 10)
    assert await mc.call_text(client, "notes__touch") == "not subscribed"


def test_a_stdio_client_listens_for_list_changes_and_resource_updates(write_config, tmp_path):
    config = write_config(servers(tmp_path), restartDelay=0.2)

    async def scenario():
        async with connect(config, tmp_path, mode="auto") as client:
            await listen_scenario(client, tmp_path)

    mc.run(scenario, timeout=90)


def test_an_http_client_listens_and_closing_the_stream_unsubscribes(daemon, tmp_path):
    from .test_http_front import connect_http, start_http

    _, url = start_http(daemon, servers(tmp_path), restartDelay=0.2)

    async def scenario():
        async with connect_http(url, mode="auto") as client:
            await listen_scenario(client, tmp_path)

    mc.run(scenario, timeout=90)


def test_the_gateway_stopping_ends_an_http_listen_gracefully(daemon, tmp_path):
    """SIGTERM: the listen gets its SubscriptionsListenResult (the SDK ends the
    loop; an abrupt close would raise SubscriptionLost) before the gateway exits."""
    from .test_http_front import connect_http, start_http

    pid, url = start_http(daemon, servers(tmp_path))
    ended = []

    async def scenario():
        async with connect_http(url, mode=MODERN) as client:
            async with client.listen(tools_list_changed=True) as subscription:
                os.kill(pid, signal.SIGTERM)
                with anyio.fail_after(20):
                    async for event in subscription:
                        raise AssertionError(f"unexpected {event}")
                ended.append("graceful")

    mc.run(scenario, timeout=60)
    assert ended == ["graceful"]


def test_a_stdio_listen_is_acknowledged_then_answered_when_stdin_closes(write_config, tmp_path):
    """Raw NDJSON: the acknowledgment is the first message; closing stdin ends the
    session, and the listen gets the spec's result before the gateway exits."""
    from .conftest import gateway_argv, gateway_env
    from .test_eras import envelope

    config = write_config({"notes": servers(tmp_path)["notes"]})
    listen = {
        "jsonrpc": "2.0",
        "id": "L",
        "method": "subscriptions/listen",
        "params": {"notifications": {"toolsListChanged": True, "promptsListChanged": True, "resourceSubscriptions": [URI]}, "_meta": envelope()},
    }
    proc = subprocess.Popen(gateway_argv(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=gateway_env(), cwd=str(tmp_path))
    try:
        proc.stdin.write((json.dumps(listen) + "\n").encode())
        proc.stdin.flush()
        ack = json.loads(proc.stdout.readline())  # waits for the first discovery, then the subscription
        proc.stdin.close()
        (result,) = [json.loads(line) for line in proc.stdout.read().splitlines()]
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if not proc.stdin.closed:
            proc.stdin.close()
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"] == {
        "notifications": {"promptsListChanged": True, "toolsListChanged": True, "resourceSubscriptions": [URI]},
        "_meta": {"io.modelcontextprotocol/subscriptionId": "L"},
    }
    assert result["id"] == "L" and result["result"]["resultType"] == "complete"
    assert result["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L"
    assert read_events(tmp_path / "notes.events")[-2:] == [f"subscribe {URI}", f"unsubscribe {URI}"]


def test_two_socket_clients_listening_to_one_uri_share_one_backend_subscription(daemon, tmp_path):
    from .conftest import bin_path, gateway_env, wait_for_path

    events = tmp_path / "notes.events"
    sock = str(tmp_path / "gw.sock")
    daemon({"notes": servers(tmp_path)["notes"]}, f"unix:{sock}")
    wait_for_path(sock)

    def connect_socket(name: str):
        argv = [bin_path("twisted-mcp"), "connect", f"unix:path={sock}"]
        return mc.connect(argv, env=gateway_env(), cwd=str(tmp_path), errlog=str(tmp_path / f"{name}.stderr"), mode=MODERN, read_timeout=60)

    def subscribes() -> list[str]:
        return [e for e in read_events(events) if e.endswith(f"subscribe {URI}")]

    async def scenario():
        async with connect_socket("a") as a, connect_socket("b") as b:
            async with a.listen(resource_subscriptions=[URI]) as first:
                async with b.listen(resource_subscriptions=[URI]) as second:
                    assert subscribes() == [f"subscribe {URI}"]  # one upstream subscription for both
                    assert await mc.call_text(a, "notes__touch") == "notified"
                    assert await next_event(first) == ResourceUpdated(uri=URI)
                    assert await next_event(second) == ResourceUpdated(uri=URI)
                await anyio.sleep(0.5)
                assert subscribes() == [f"subscribe {URI}"]  # the first still listens
                assert await mc.call_text(b, "notes__touch") == "notified"
                assert await next_event(first) == ResourceUpdated(uri=URI)
            await mc.wait_until(lambda: subscribes() == [f"subscribe {URI}", f"unsubscribe {URI}"], 10)

    mc.run(scenario, timeout=90)
