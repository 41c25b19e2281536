"""
A reload that changes only a backend's priority or shaping (design §2.4,
"Reload"): applied in place, the backend keeps running, the catalog is
rebuilt and sessions are told of the listings that changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .test_reload import LIST_CHANGED, World, server


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch)


def config(**alpha: Any) -> dict[str, Any]:
    return {"mcpServers": {"alpha": server("alpha", **alpha), "beta": server("beta")}}


def definitions(world: World) -> dict[str, Any]:
    return {name: e.definition for name, e in world.svc.gateway.catalog.entries.items()}


def test_shaping_applies_without_a_restart(world: World) -> None:
    world.service(config())
    world.ready({"alpha": ["echo", "delete_all"], "beta": ["time"]})
    alpha = world.backends["alpha"]
    session = world.session("s1")
    assert world.listing("s1", session) == ["alpha__delete_all", "alpha__echo", "beta__time"]

    applied, changes, _ = world.reload(config(priority=5, tools={"deny": ["delete_*"], "rename": {"echo": "say"}}))
    assert applied and changes == ["backend alpha: shaping or priority applied (not restarted)"]
    assert world.backends["alpha"] is alpha, "the same backend, still running"
    assert world.stopped == []
    assert alpha.priority == 5
    assert world.take("s1") == [LIST_CHANGED]
    assert world.listing("s1", session) == ["alpha__say", "beta__time"]
    assert world.svc.gateway.catalog.entries["alpha__say"].original == "echo"


def test_an_override_alone_tells_the_sessions(world: World) -> None:
    """Names unchanged, a description changed: clients re-list all the same."""
    world.service(config())
    world.ready({"alpha": ["echo"], "beta": ["time"]})
    world.session("s1")
    applied, changes, _ = world.reload(config(tools={"overrides": {"echo": {"description": "Says it back"}}}))
    assert applied
    assert world.take("s1") == [LIST_CHANGED]
    assert definitions(world)["alpha__echo"]["description"] == "Says it back"
    applied, changes, _ = world.reload(config(tools={"overrides": {"echo": {"description": "Says it back"}}}))
    assert applied and changes == []
    assert world.take("s1") == []


def test_other_changes_still_restart(world: World) -> None:
    world.service(config())
    world.ready({"alpha": ["echo"], "beta": ["time"]})
    alpha = world.backends["alpha"]
    applied, changes, _ = world.reload(config(callTimeout=5, tools={"deny": ["echo"]}))
    assert applied and changes == ["backend alpha: restarted (its configuration changed)"]
    assert world.stopped == [alpha]
    assert world.backends["alpha"].shaping["tools"].deny == ("echo",)
    assert "alpha__echo" not in world.svc.gateway.catalog.entries
