"""
Profiles through the real daemon (issue 14, design section 8.2): one HTTP
listener serving the default view at /mcp and the profiles dev and ops at
/mcp/dev and /mcp/ops, and a `--listen profile:ops:unix:...` socket; the
official `mcp` SDK client in both eras, raw HTTP where a test must send
what no SDK would (a session id on another path).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from typing import Any

import pytest

from tests import mcpclient as mc

from .conftest import bin_path, free_port, gateway_env, server
from .test_http_front import INIT, JSON_AND_SSE, start_http

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

MODERN = "2026-07-28"
PROFILES = {"profiles": {"dev": {"tools": ["echo__*"]}, "ops": {"tools": ["slow__*"]}}}
SERVERS = {"echo": server("echo_fast"), "slow": server("slow")}


def post(url: str, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One raw POST to C{path}: status, headers (lower-case), JSON body (None if empty)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"content-type": "application/json", "accept": JSON_AND_SSE, **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data) if data else None
    finally:
        conn.close()


def start(daemon, tmp_path, *more: str, **gateway: Any) -> tuple[int, str, str]:
    sock = str(tmp_path / "ops.sock")
    pid, url = start_http(daemon, SERVERS, f"profile:ops:unix:{sock}", *more, extra=PROFILES, **gateway)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        assert time.monotonic() < deadline, "the profile's socket never appeared"
        time.sleep(0.05)
    return pid, url, sock


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_each_profile_path_serves_the_sdk_client_in_both_eras(daemon, tmp_path, mode):
    _, url, _ = start(daemon, tmp_path)

    async def scenario():
        for path in ("/mcp/dev", "/mcp/ops", "/mcp"):
            async with mc.connect_http(f"{url}{path}", mode=mode) as client:
                assert client.protocol_version == (MODERN if mode == MODERN else "2025-11-25"), path
                assert await mc.tool_names(client), path

    mc.run(scenario, timeout=90)


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_each_profile_path_lists_its_own_catalog(daemon, tmp_path, mode):
    _, url, _ = start(daemon, tmp_path)

    async def scenario():
        async with mc.connect_http(f"{url}/mcp/dev", mode=mode) as dev:
            assert await mc.tool_names(dev) == ["echo__echo"]
            assert await mc.call_text(dev, "echo__echo", {"text": "dev"}) == "dev"
            with pytest.raises(Exception, match="slow__echo"):
                await mc.call_text(dev, "slow__echo", {"text": "not here"})
        async with mc.connect_http(f"{url}/mcp/ops", mode=mode) as ops:
            assert set(await mc.tool_names(ops)) == {"slow__sleep", "slow__echo", "slow__pid"}

    mc.run(scenario, timeout=90)


def test_a_session_belongs_to_its_path_and_unknown_profiles_are_404(daemon, tmp_path):
    _, url, _ = start(daemon, tmp_path)
    status, headers, answer = post(url, "/mcp/dev", INIT)
    assert status == 200, answer
    sid = headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    status, _, answer = post(url, "/mcp/ops", ping, {"mcp-session-id": sid})
    assert (status, answer["error"]["code"]) == (404, -32001)
    assert post(url, "/mcp", ping, {"mcp-session-id": sid})[0] == 404
    status, _, answer = post(url, "/mcp/dev", ping, {"mcp-session-id": sid})
    assert (status, answer["result"]) == (200, {})
    status, _, answer = post(url, "/mcp/nope", INIT)
    assert status == 404
    assert answer["error"]["message"] == (
        "Not Found: /mcp/nope is not an MCP endpoint of this gateway (no such profile is served here); the MCP endpoint is /mcp"
    )


def test_a_profile_socket_serves_the_sdk_client_and_status_names_it(daemon, tmp_path):
    port = free_port()
    pid, url, sock = start(daemon, tmp_path, admin=f"tcp:{port}:interface=127.0.0.1", adminToken="t0ken")

    async def scenario():
        async with mc.connect([bin_path("twisted-mcp"), "connect", f"unix:path={sock}"], env=gateway_env()) as client:
            assert await mc.call_text(client, "slow__echo", {"text": "ops socket"}) == "ops socket"

    mc.run(scenario, timeout=60)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/status?format=json", headers={"authorization": "Bearer t0ken"})
    status = json.loads(conn.getresponse().read())
    conn.close()
    http_listener = f"http:tcp:{url.rsplit(':', 1)[1]}:interface=127.0.0.1"
    none = {"prompts": 0, "resources": 0, "resourceTemplates": 0}
    assert status["profiles"] == [
        {"name": "dev", "listeners": [], "http": [{"listener": http_listener, "path": "/mcp/dev"}], "selected": {"tools": 1, **none}},
        {
            "name": "ops",
            "listeners": [f"profile:ops:unix:{sock}"],
            "http": [{"listener": http_listener, "path": "/mcp/ops"}],
            "selected": {"tools": 3, **none},
        },
    ]
    assert [r["name"] for r in status["clientBudgets"]["rows"]][:1] == ["cursor*"]


def test_a_profile_socket_lists_its_profile(daemon, tmp_path):
    _, _, sock = start(daemon, tmp_path)

    async def scenario():
        async with mc.connect([bin_path("twisted-mcp"), "connect", f"unix:path={sock}"], env=gateway_env()) as client:
            assert set(await mc.tool_names(client)) == {"slow__sleep", "slow__echo", "slow__pid"}

    mc.run(scenario, timeout=60)


def test_an_unknown_profile_on_listen_stops_start_up(write_config, tmp_path):
    config = write_config(SERVERS)
    with open(config) as f:
        data = json.load(f)
    data.update(PROFILES)
    with open(config, "w") as f:
        json.dump(data, f)
    sock = str(tmp_path / "x.sock")
    proc = subprocess.run(
        [bin_path("twistd"), "-n", "--pidfile=", "mcp-gateway", "--config", config, "--listen", f"profile:x:unix:{sock}"],
        env=gateway_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 78
    assert f'--listen profile:x:unix:{sock}: no profile "x" in the config (profiles: dev, ops)' in proc.stderr
    assert not os.path.exists(sock)


KINDS_PROFILES = {
    "profiles": {
        "dev": {"tools": ["*"], "prompts": ["surface__g*"], "resources": ["memo://shared/*", "memo://items/*"]},
        "ops": {"tools": ["echo__*"]},
    }
}


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_profiles_select_prompts_and_resources(daemon, tmp_path, mode):
    """dev lists and reads what it selects; ops (no prompts:, no resources:)
    lists none, and its reads and gets are answered as for unknown ones."""
    from .surface_helpers import all_prompts, all_resources, all_templates

    _, url = start_http(daemon, {"echo": server("echo_fast"), "surface": server("surface")}, extra=KINDS_PROFILES)

    async def scenario():
        async with mc.connect_http(f"{url}/mcp/dev", mode=mode) as dev:
            assert [p.name for p in await all_prompts(dev)] == ["surface__greet"]
            assert [str(r.uri) for r in await all_resources(dev)] == ["memo://shared/notes"]
            assert [t.uri_template for t in await all_templates(dev)] == ["memo://items/{item}"]
            read = await dev.read_resource("memo://shared/notes")
            assert read.contents[0].text == "surface notes"
            got = await dev.get_prompt("surface__greet", {"name": "dev"})
            assert got.messages[0].content.text == "Hello dev from surface"
            with pytest.raises(Exception, match="Unknown prompt: 'surface__quote'"):
                await dev.get_prompt("surface__quote")
        async with mc.connect_http(f"{url}/mcp/ops", mode=mode) as ops:
            assert await mc.tool_names(ops) == ["echo__echo"]
            if mode == MODERN:
                # Not offered on this view: the families' methods are not found, whatever exists.
                for call in (all_prompts(ops), ops.get_prompt("surface__greet", {"name": "ops"}), ops.read_resource("memo://shared/notes")):
                    with pytest.raises(Exception, match="Method not found"):
                        await call
            else:
                assert await all_prompts(ops) == []
                assert await all_resources(ops) == []
                with pytest.raises(Exception, match="Unknown prompt: 'surface__greet'"):
                    await ops.get_prompt("surface__greet", {"name": "ops"})
                with pytest.raises(Exception, match="no server lists the resource 'memo://shared/notes'"):
                    await ops.read_resource("memo://shared/notes")
                with pytest.raises(Exception, match="no server lists the resource 'memo://nothing'"):
                    await ops.read_resource("memo://nothing")
        async with mc.connect_http(f"{url}/mcp", mode=mode) as plain:
            assert [p.name for p in await all_prompts(plain)] == ["surface__greet", "surface__quote"]

    mc.run(scenario, timeout=90)
