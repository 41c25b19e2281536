"""
A stateless-era (2026-07-28) stdio backend's changes reach clients of both
eras through the real `twistd -n mcp-gateway` command (issue 12, step 8).
Such a backend sends nothing unsolicited: the gateway keeps one
`subscriptions/listen` open on it.  tests/servers/dual_era.py, pinned
`protocol: modern`, announces its changes on listen streams only (toward a
modern connection); an SDK `mode="legacy"` client gets them as
`notifications/*` and `resources/subscribe` to it succeeds; an SDK
`mode="2026-07-28"` client gets them on its own listen.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest
from mcp import MCPError
from mcp.client.subscriptions import PromptsListChanged, ResourceUpdated, ToolsListChanged

from tests import mcpclient as mc

from .conftest import free_port, gateway_argv, gateway_env, server
from .surface_helpers import all_resources
from .test_modern_backends import MODERN, admin_get

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")


@pytest.fixture
def config(write_config):
    return write_config({"dual": server("dual_era", protocol="modern")}, restartDelay=0.2)


def connect(config: str, tmp_path: Any, mode: str, admin: int | None = None, **kwargs: Any) -> Any:
    argv = gateway_argv(config) + ([] if admin is None else ["--admin", f"tcp:{admin}:interface=127.0.0.1"])
    return mc.connect(argv, env=gateway_env(), cwd=str(tmp_path), errlog=str(tmp_path / "gateway.stderr"), mode=mode, read_timeout=60, **kwargs)


async def watched_uri(client: Any) -> str:
    (uri,) = [str(r.uri) for r in await all_resources(client) if str(r.uri).endswith("counter")]
    return uri


async def next_event(subscription: Any, timeout: float = 10) -> Any:
    with anyio.fail_after(timeout):
        return await subscription.__anext__()


def test_a_handshake_era_client_gets_a_modern_backends_changes(config, tmp_path):
    """tools/list_changed after the trigger tool; resources/subscribe
    succeeds and resources/updated follows the update tool; /status says the
    backend's listen is open."""
    admin = free_port()
    notes = mc.NotificationRecorder()

    async def scenario():
        async with connect(config, tmp_path, "legacy", admin, message_handler=notes) as client:
            assert client.protocol_version != MODERN
            assert "dual__dynamic" not in await mc.tool_names(client)
            assert await mc.call_text(client, "dual__change_tools") == "tools changed"
            await notes.wait_for("notifications/tools/list_changed", timeout=5)
            assert "dual__dynamic" in await mc.tool_names(client)

            uri = await watched_uri(client)
            await client.subscribe_resource(uri)
            assert await mc.call_text(client, "dual__touch") == "touched 1"
            await notes.wait_for("notifications/resources/updated", timeout=5)
            (updated,) = [n for n in notes.notifications if n.method == "notifications/resources/updated"]
            assert str(updated.params.uri) == uri
            assert not (updated.params.meta or {}), "the backend's subscription id is not passed on"

            status = json.loads(admin_get(admin, "/status?format=json"))
            (dual,) = status["backends"]
            assert dual["era"] == "modern" and dual["listen"] == "open"

            await client.unsubscribe_resource(uri)
            assert await mc.call_text(client, "dual__touch") == "touched 2"
            assert await mc.call_text(client, "dual__change_prompts") == "prompts changed"
            await notes.wait_for("notifications/prompts/list_changed", timeout=5)
            assert notes.count("notifications/resources/updated") == 1, "unsubscribed: no update"

    mc.run(scenario, timeout=90)


def test_a_stateless_era_client_gets_a_modern_backends_changes_on_its_listen(config, tmp_path):
    """The client's listen is acknowledged with the URI, and carries the
    tool and prompt list changes and the resource update, each well within
    the conformance suite's 1.5 s."""

    async def scenario():
        async with connect(config, tmp_path, MODERN) as client:
            assert client.protocol_version == MODERN
            assert "dual__dynamic" not in await mc.tool_names(client)  # (waits for the first discovery)
            uri = await watched_uri(client)
            async with client.listen(tools_list_changed=True, prompts_list_changed=True, resource_subscriptions=[uri]) as events:
                assert events.honored.resource_subscriptions == [uri]
                for tool, expected in (
                    ("dual__change_tools", ToolsListChanged()),
                    ("dual__touch", ResourceUpdated(uri=uri)),
                    ("dual__change_prompts", PromptsListChanged()),
                ):
                    started = time.monotonic()
                    await client.call_tool(tool, {})
                    assert await next_event(events) == expected
                    assert time.monotonic() - started < 1.5, tool
            assert "dual__dynamic" in await mc.tool_names(client)

    mc.run(scenario, timeout=90)


def test_after_a_restart_the_new_process_is_listened_to_with_the_subscriptions(config, tmp_path):
    """The backend crashes: the next process gets a listen that carries the
    client's subscription, and its changes reach the client as before."""
    notes = mc.NotificationRecorder()

    async def scenario():
        async with connect(config, tmp_path, "legacy", message_handler=notes) as client:
            uri = await watched_uri(client)
            await client.subscribe_resource(uri)
            with pytest.raises(MCPError):
                await client.call_tool("dual__crash", {})

            with anyio.fail_after(20):
                while not notes.count("notifications/resources/updated"):
                    try:
                        await client.call_tool("dual__touch", {})
                    except MCPError:
                        pass  # still restarting
                    await anyio.sleep(0.2)
            assert await mc.call_text(client, "dual__change_tools") == "tools changed"
            await notes.wait_for("notifications/tools/list_changed", timeout=5)
            assert "dual__dynamic" in await mc.tool_names(client)

    mc.run(scenario, timeout=90)
    log = (tmp_path / "gateway.stderr").read_text()
    assert "backend dual: subscribed again to watch://counter" in log
