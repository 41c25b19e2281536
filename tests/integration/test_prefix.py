"""
The per-backend C{prefix} setting through the real gateway command: one
stdio backend served unprefixed (as the conformance suite needs, which calls
fixed tool names), an HTTP backend under a prefix of its own, and the
default for the rest; a configuration in which two backends would share a
prefix is refused by C{check-config} and by the gateway at start.
"""

from __future__ import annotations

import subprocess

import pytest

from tests import mcpclient as mc

from .conftest import bin_path, everything, gateway_argv, gateway_env, time_server
from .surface_helpers import all_prompts, connect_gateway
from .test_http import http_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")


def test_an_unprefixed_backend_beside_prefixed_ones(http_server, write_config, tmp_path):  # noqa: F811
    remote = http_server("http_sdk")
    config = write_config(
        {
            "everything": everything(prefix=""),
            "remote": {"type": "http", "url": f"{remote.url}/mcp", "prefix": "far_"},
            "time": time_server(),
        }
    )

    async def scenario():
        async with connect_gateway(config, tmp_path) as client:
            names = set(await mc.tool_names(client))
            assert {"echo", "get-sum", "far_echo", "far_add", "time__get_current_time"} <= names
            assert not any(n.startswith(("everything__", "remote__")) for n in names), names
            # Each name reaches its own backend: everything's echo answers "Echo: ...".
            assert await mc.call_text(client, "echo", {"message": "hi"}) == "Echo: hi"
            assert await mc.call_text(client, "far_echo", {"text": "hi"}) == "hi"
            assert await mc.call_text(client, "far_add", {"a": 2, "b": 3}) == "5"
            prompts = {p.name for p in await all_prompts(client)}
            assert "simple-prompt" in prompts, prompts
            result = await client.get_prompt("simple-prompt")
            assert result.messages

    mc.run(scenario, timeout=120)


def test_two_backends_sharing_a_prefix_are_refused(write_config, tmp_path):
    config = write_config({"a": time_server(prefix=""), "b": time_server(prefix="")})
    checked = subprocess.run(
        [bin_path("twisted-mcp"), "check-config", config], capture_output=True, text=True, timeout=60, env=gateway_env()
    )
    assert checked.returncode != 0
    assert "mcpServers.b.prefix" in checked.stdout + checked.stderr
    assert "'a' and 'b' would both name their tools and prompts with no prefix" in checked.stdout + checked.stderr
    started = subprocess.run(gateway_argv(config), capture_output=True, text=True, timeout=60, env=gateway_env(), stdin=subprocess.DEVNULL)
    assert started.returncode != 0
    assert started.stdout == ""
    assert "mcpServers.b.prefix" in started.stderr
