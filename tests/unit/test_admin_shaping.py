"""
C{/status} shows what each backend's shaping did (design §2.5): tools listed
by the server, kept, filtered out (count and names), renamed (own name ->
shaped name), overridden (names and keys); a backend without shaping shows
what it showed before.
"""

from __future__ import annotations

import json
from http.server import ThreadingHTTPServer
from types import MappingProxyType

import pytest

from twisted_mcp.config.models import Shaping

from .test_admin import World


def shaped_world() -> World:
    world = World()
    world.alpha.shaping = MappingProxyType(
        {"tools": Shaping(deny=("add",), rename={"echo": "say"}, overrides={"echo": {"title": "Say", "annotations": {"readOnlyHint": True}}})}
    )
    world.alpha.priority = 3
    world.ready()
    return world


def test_status_shows_the_shaping() -> None:
    world = shaped_world()
    status = world.get(b"/status", headers={"Accept": "application/json"}).json()
    alpha, beta = status["backends"]
    assert alpha["tools"] == ["alpha__say"]
    assert alpha["priority"] == 3
    assert alpha["shaping"] == {
        "tools": {
            "listed": 2,
            "kept": 1,
            "filtered": {"count": 1, "names": ["add"]},
            "renamed": {"echo": "alpha__say"},
            "overridden": {"echo": ["annotations", "title"]},
        }
    }
    assert "shaping" not in beta and "priority" not in beta


def test_status_page_lists_the_shaping() -> None:
    world = shaped_world()
    page = world.get(b"/status").body.decode()
    assert "<h2>Shaping</h2>" in page
    assert "alpha tools: 1 of 2 kept; filtered out: add; renamed: echo -&gt; alpha__say; overridden: echo (annotations, title)" in page


def test_no_shaping_no_section() -> None:
    world = World()
    world.ready()
    assert "<h2>Shaping</h2>" not in world.get(b"/status").body.decode()


def test_twisted_mcp_status_summarises_the_shaping(capsys: pytest.CaptureFixture[str]) -> None:
    from .test_cli_admin import STATUS, FakeGateway, _serve, run

    fake = FakeGateway()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    fake.address = f"http://127.0.0.1:{server.server_address[1]}"
    status = json.loads(json.dumps(STATUS))
    status["backends"][0]["shaping"] = {"tools": {"listed": 26, "kept": 23}}
    fake.routes[("GET", "/status")] = (200, status)
    for _ in _serve(server):
        code, out, _ = run(capsys, "status", "--admin", fake.address)
    assert code == 0
    assert "  github  up  2 tool(s)  required; shaped: 23 of 26 tool(s) kept" in out.splitlines()


def test_a_rename_that_lost_a_collision_says_so() -> None:
    """echo renamed add, where the server has an add: echo is not served, and /status says why instead of null."""
    world = World()
    world.alpha.shaping = MappingProxyType({"tools": Shaping(rename={"echo": "add"})})
    world.ready()
    status = world.get(b"/status", headers={"Accept": "application/json"}).json()
    alpha = status["backends"][0]
    assert alpha["tools"] == ["alpha__add"]
    assert alpha["shaping"]["tools"]["renamed"] == {"echo": "add (not served: another definition has that name)"}
