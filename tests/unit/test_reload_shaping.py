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


def test_a_restarted_and_reshaped_server_tells_the_sessions(world: World) -> None:
    """A restart that changes a description (names unchanged) sends list_changed: the views compare definitions."""
    world.service(config())
    world.ready({"alpha": ["echo"], "beta": ["time"]})
    world.session("s1")
    applied, changes, _ = world.reload(config(callTimeout=5, tools={"overrides": {"echo": {"description": "Says it back"}}}))
    assert applied and changes == ["backend alpha: restarted (its configuration changed)"]
    assert definitions(world)["alpha__echo"]["description"] == "Says it back"
    assert world.take("s1") == [LIST_CHANGED]


def test_one_server_restarted_while_another_is_reshaped(world: World) -> None:
    """alpha restarted, beta's description overridden: the session is told once beta's definition changed."""
    world.service(config())
    world.ready({"alpha": ["echo"], "beta": ["time"]})
    world.session("s1")
    reshaped = {
        "mcpServers": {
            "alpha": server("alpha", callTimeout=5),
            "beta": server("beta", tools={"overrides": {"time": {"description": "The time"}}}),
        }
    }
    applied, changes, _ = world.reload(reshaped)
    assert applied
    assert definitions(world)["beta__time"]["description"] == "The time"
    assert world.take("s1") == [LIST_CHANGED]


def test_the_new_policy_reviews_the_reshaped_catalog(world: World) -> None:
    """The reshaped tools are reviewed (pins, logs) by the policy being installed, not by the one it replaces."""
    world.service(config())
    world.ready({"alpha": ["echo"], "beta": ["time"]})
    old = world.svc.gateway.policy
    reviewed: list[list[str]] = []
    old.catalog_changed = lambda entries: reviewed.append(sorted(entries))  # type: ignore[method-assign]
    applied, _, _ = world.reload(config(tools={"rename": {"echo": "say"}}))
    assert applied
    assert world.svc.gateway.policy is not old
    assert reviewed == []
    assert "alpha__say" in world.svc.gateway.policy._tools


def test_a_reload_ends_the_subscriptions_its_filter_removes(world: World) -> None:
    """The reload asks the subscriptions to end those the new resources filter no longer lets through."""
    world.service(config())
    world.ready({"alpha": ["echo"], "beta": ["time"]})
    asked: list[Any] = []
    world.svc.gateway.subscriptions.drop_unreachable = asked.append  # type: ignore[method-assign]
    applied, _, _ = world.reload(config(resources={"deny": ["repo://private/*"]}))
    assert applied
    (reachable,) = asked
    alpha = world.backends["alpha"]
    assert not reachable(alpha, "repo://private/keys")
    assert reachable(world.backends["beta"], "repo://private/keys")
