"""
A reload that replaces a per-session backend retires the sessions' running
instances of it: once stopped, the gateway keeps nothing of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_reload import World, server


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch)


def test_a_retired_instance_leaves_no_owner_entry(world: World) -> None:
    svc = world.service({"mcpServers": {"alpha": server("alpha", perSession=True)}})
    world.ready({"alpha": ["x"]})
    s = world.session("s1")
    template = svc.gateway.backends["alpha"]
    s.instances._instance(template)
    (instance,) = s.own.values()
    assert svc.gateway.instance_owners == {instance: s}
    world.reload({"mcpServers": {"alpha": server("alpha", perSession=True, callTimeout=5)}})
    world.clock.advance(0)
    assert instance in world.stopped
    assert s.own == {}
    assert instance not in svc.gateway.instance_owners
    assert instance not in svc.gateway._states
    assert instance.events is None
