"""
What C{/status} and C{twisted-mcp status} show of the surface (design of
issue 14, section 2.5): the client budget table as applied, and what each
profile selects.
"""

from __future__ import annotations

import json

import pytest

from twisted_mcp.config.loader import build
from twisted_mcp.config.models import Profile
from twisted_mcp.config.surface import SurfaceSettings

from .fakes import FakeBackend
from .test_admin import World
from .test_cli_admin import FakeGateway, _no_token, gateway, run  # noqa: F401 (fixtures)


def _surface(**sections: object) -> SurfaceSettings:
    surface: SurfaceSettings = build({"mcpServers": {"a": {"command": "x"}}, **sections}, "inline", {}).surface
    return surface


def _world() -> World:
    world = World()
    world.gateway.backends["gamma"] = FakeBackend("gamma", ["x"], prompts=["p", "q"], resources=["memo://a", "memo://b"], resource_templates=["memo://t/{x}"])
    world.gateway._watch(world.gateway.backends["gamma"])
    world.ready()
    world.gateway.profiles = {
        "dev": Profile(name="dev", tools=("alpha__*",), prompts=("gamma__p",), resources=("memo://*",)),
        "ops": Profile(name="ops", tools=("beta__*",)),
    }
    world.gateway.surface = _surface(clients={"default": {"maxNameLength": 48}, "match": [{"name": "my-agent", "maxTools": 30, "search": "always"}]})
    return world


def test_status_shows_the_budget_table_and_what_each_profile_selects() -> None:
    status = _world().admin.status()
    selected = {p["name"]: p["selected"] for p in status["profiles"]}
    assert selected == {
        "dev": {"tools": 2, "prompts": 1, "resources": 2, "resourceTemplates": 1},
        "ops": {"tools": 1, "prompts": 0, "resources": 0, "resourceTemplates": 0},
    }
    budgets = status["clientBudgets"]
    assert (budgets["useClientInfo"], budgets["serverKeyLength"]) == (True, 16)
    assert budgets["rows"][0] == {"name": "my-agent", "table": "config", "maxTools": 30, "search": "always", "source": "clients.match[0]"}
    cursor = budgets["rows"][1]
    assert (cursor["name"], cursor["table"], cursor["client"], cursor["maxTools"], cursor["countsServerKey"]) == ("cursor*", "built-in", "Cursor", 40, True)
    assert "Cursor forum" in cursor["source"] and "user reports" in cursor["verified"]
    assert {r["table"] for r in budgets["rows"][1:]} == {"built-in"}
    assert budgets["default"] == {"name": "*", "table": "config", "maxNameLength": 48, "source": "clients.default"}
    json.dumps(status)  # served as JSON as it is


def test_status_without_the_new_sections_is_as_it_was() -> None:
    world = World()
    world.ready()
    assert "clientBudgets" not in world.admin.status()
    assert "profiles" not in world.admin.status()


def test_twisted_mcp_status_shows_them_briefly(capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:  # noqa: F811
    status = json.loads(json.dumps(_world().admin.status()))
    gateway.routes[("GET", "/status")] = (200, status)
    code, out, _ = run(capsys, "status", "--admin", gateway.address)
    assert code == 0
    lines = out.splitlines()
    assert "Profiles (2):" in lines
    assert "  dev: 2 tool(s), 1 prompt(s), 2 resource(s), 1 template(s); served at -" in lines
    assert "Client budgets (matched on clientInfo.name; server key length 16):" in lines
    assert "  my-agent (clients.match[0]): maxTools 30, search always" in lines
    assert "  cursor* (built-in, Cursor): maxTools 40, maxNameLength 60, nameOverhead 1, + server key" in lines
    assert "  default (clients.default): maxNameLength 48" in lines
