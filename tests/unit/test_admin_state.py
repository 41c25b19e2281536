"""
Tests for the admin endpoint with a shared state (C{state:}): C{/readyz},
C{/status} (JSON and HTML) and C{/metrics} reporting it, and C{POST /kill}
and C{/pins/approve} writing their flags (C{"shared": true}), or saying
they apply on this replica only while the store is down (C{"shared":
false} and why).  Fake stores (L{tests.unit.test_state_sync}), a real
gateway, policy and admin resource over L{StringTransport}.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import fail
from twisted.internet.task import Clock

from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.state.base import Refused

from .test_admin import World, parse_response, world  # noqa: F401  (the fixture)
from .test_state_sync import PASSWORD, PROBLEM, FakeState, FlagPolicy, shared_world


@attrs.frozen
class Settings:
    """What the service reads of C{config.state} (the state-redis side's StateSettings)."""

    redis: str = f"redis://:{PASSWORD}@10.0.0.5:6379/0"

    def describe_url(self) -> str:
        return "redis://10.0.0.5:6379/0"


class WithState:
    """The service's config with a C{state:} section (Config gets the field on the state-redis side)."""

    def __init__(self, config: Any) -> None:
        self._config = config
        self.state = Settings()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)


@pytest.fixture
def shared() -> tuple[World, FakeState, Any]:
    world, state, sync = shared_world()
    world.service.config = WithState(world.service.config)  # type: ignore[assignment]
    return world, state, sync


def metric(world: World, name: str) -> list[tuple[dict[str, str], float]]:
    text = world.get(b"/metrics").body.decode()
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


class TestReadiness:
    def test_unreachable_with_refuse(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        assert world.get(b"/readyz").code == 200
        state.go_down()
        r = world.get(b"/readyz")
        assert r.code == 503
        assert r.body == f"not ready\nshared state (Redis) unreachable: {PROBLEM}\n".encode()
        state.come_back()
        assert (world.get(b"/readyz").code, world.get(b"/readyz").body) == (200, b"ready\n")

    def test_unreachable_with_every_kind_local_stays_ready(self) -> None:
        world, state, sync = shared_world({"limits": "local", "killSwitch": "local", "sessions": "local"})
        world.ready()
        state.go_down()
        assert world.get(b"/readyz").code == 200

    def test_one_refusing_kind_is_enough(self) -> None:
        world, state, sync = shared_world({"limits": "local", "killSwitch": "local", "sessions": "refuse"})
        world.ready()
        state.go_down()
        assert world.get(b"/readyz").code == 503

    def test_not_ready_before_the_flags_were_read(self) -> None:
        world = World(policy=FlagPolicy(PolicyConfig(), "__", Clock()))
        state = FakeState()
        world.gateway.state = state
        from twisted_mcp.ops.shared_state import SharedStateSync

        sync = SharedStateSync(state, lambda: world.gateway.policy, world.service.views, world.service.notify_views)
        world.service.state_sync = sync  # type: ignore[attr-defined]
        sync.start()
        world.ready()
        r = world.get(b"/readyz")
        assert r.code == 503 and b"have not been read yet" in r.body
        state.starting.callback(None)
        sync.started()
        assert world.get(b"/readyz").code == 200

    def test_in_process_state_changes_nothing(self, world: World) -> None:
        world.ready()
        assert world.get(b"/readyz").body == b"ready\n"


class TestMetrics:
    def test_available_and_outages(self, shared: Any) -> None:
        world, state, sync = shared
        assert metric(world, "twisted_mcp_state_available") == [({"store": "redis"}, 1.0)]
        assert metric(world, "twisted_mcp_state_outages_total") == [({}, 0.0)]
        state.go_down()
        assert metric(world, "twisted_mcp_state_available") == [({"store": "redis"}, 0.0)]
        assert metric(world, "twisted_mcp_state_outages_total") == [({}, 1.0)]
        state.come_back()
        state.go_down()
        state.come_back()
        assert metric(world, "twisted_mcp_state_available") == [({"store": "redis"}, 1.0)]
        assert metric(world, "twisted_mcp_state_outages_total") == [({}, 2.0)]
        assert PASSWORD not in world.get(b"/metrics").body.decode()

    def test_in_process(self, world: World) -> None:
        assert metric(world, "twisted_mcp_state_available") == [({"store": "local"}, 1.0)]


class TestStatus:
    def test_json(self, shared: Any) -> None:
        world, state, sync = shared
        assert world.get(b"/status?format=json").json()["state"] == {
            "kind": "redis",
            "replica": "replica-1",
            "url": "redis://10.0.0.5:6379/0",
            "available": True,
            "problem": None,
        }
        state.go_down()
        shown = world.get(b"/status?format=json")
        assert shown.json()["state"]["available"] is False
        assert shown.json()["state"]["problem"] == PROBLEM
        assert PASSWORD not in shown.body.decode()

    def test_html(self, shared: Any) -> None:
        world, state, sync = shared
        state.go_down()
        page = world.get(b"/status").body.decode()
        assert (
            "<p>Shared state: redis at redis://10.0.0.5:6379/0, this replica is replica-1; UNREACHABLE: "
            "Redis at 10.0.0.5:6379 unreachable: connection refused</p>"
        ) in page
        assert PASSWORD not in page

    def test_in_process_status_is_unchanged(self, world: World) -> None:
        assert "state" not in world.get(b"/status?format=json").json()
        assert "Shared state" not in world.get(b"/status").body.decode()


class TestSharedActions:
    def test_kill_is_written_and_shared(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo"})
        assert r.code == 200
        assert r.json() == {"principals": [], "backends": [], "tools": ["alpha__echo"], "shared": True}
        assert state.flags.data["kill:tool"] == {"alpha__echo": str(int(world.clock.seconds()))}
        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo", "disabled": False})
        assert r.json()["shared"] is True
        assert state.flags.data["kill:tool"] == {}

    def test_a_kill_name_longer_than_512_bytes_is_refused(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        r = world.post(b"/kill", {"kind": "principal", "name": "\u00e9" * 257})  # 514 bytes of UTF-8
        assert r.code == 400
        assert r.json() == {"error": "name: longer than 512 bytes (UTF-8); no tool, backend or principal has such a name"}
        assert world.gateway.policy.kills["principal"] == set()
        assert state.flags.sets == []
        assert world.post(b"/kill", {"kind": "principal", "name": "\u00e9" * 256}).json()["shared"] is True

    def test_a_kill_the_store_refuses_says_why_and_stops_nothing(self, shared: Any) -> None:
        """The store refuses the write for good: the answer says so (not "unreachable"), the kill holds here, and
        the next snapshots (another replica's kill) still apply."""
        world, state, sync = shared
        world.ready()
        real_set = state.flags.set
        state.flags.set = lambda kind, name, value: fail(Refused("Redis refused the flag change: ERR OOM"))  # type: ignore[method-assign]
        answer = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo"}).json()
        assert answer["shared"] is False and answer["refused"] is True
        assert answer["why"] == (
            "the shared state refused the change (Redis refused the flag change: ERR OOM): it applies on this replica only"
        )
        state.flags.set = real_set  # type: ignore[method-assign]
        assert sync.pending == []
        state.flags.data["kill:tool"]["beta__*"] = "1"
        state.flags.push()
        assert world.gateway.policy.kills["tool"] == {"alpha__echo", "beta__*"}

    def test_a_backend_is_written_under_the_name_it_matched(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        assert world.post(b"/kill", {"kind": "backend", "name": "ALPHA"}).json()["shared"] is True
        assert list(state.flags.data["kill:backend"]) == ["alpha"]

    def test_kill_with_the_store_down_applies_here_only(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        state.go_down()
        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo"})
        assert r.code == 200
        answer = r.json()
        assert answer["tools"] == ["alpha__echo"] and answer["shared"] is False
        assert answer["why"].startswith(f"the shared state (Redis) cannot be reached ({PROBLEM})")
        assert "applies on this replica now" in answer["why"]
        assert world.gateway.policy.kills["tool"] == {"alpha__echo"}
        assert state.flags.data["kill:tool"] == {}
        state.come_back()
        assert list(state.flags.data["kill:tool"]) == ["alpha__echo"]

    def test_the_answer_waits_for_the_write(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        state.flags.hold = True
        transport = world.start(
            b"POST", b"/kill", json.dumps({"kind": "tool", "name": "alpha__add"}).encode(), {"Content-Type": "application/json"}
        )
        assert transport.value() == b""
        assert world.gateway.policy.kills["tool"] == {"alpha__add"}  # applied here at once
        state.flags.release()
        r = parse_response(transport.value())
        assert r.json()["shared"] is True

    @pytest.fixture
    def pinned(self, shared: Any, tmp_path: Any) -> tuple[World, FakeState]:
        world, state, sync = shared
        rules = PolicyConfig(pinning="enforce", lock_file=str(tmp_path / "tools.lock.json"), active=True)
        world.gateway.policy = FlagPolicy(rules, "__", world.clock)
        world.ready()
        return world, state

    def test_approve_writes_approvals_and_clears_quarantine(self, pinned: tuple[World, FakeState]) -> None:
        world, state = pinned
        state.flags.data["quarantine"]["alpha__echo"] = "new tool"
        r = world.post(b"/pins/approve", {"tools": ["alpha__echo"]})
        assert r.code == 200
        assert r.json()["approved"] == ["alpha__echo"] and r.json()["shared"] is True
        entry = json.loads(state.flags.data["approval"]["alpha__echo"])
        assert entry == world.gateway.policy.pins.pinned["alpha__echo"]
        assert entry["backend"] == "alpha" and entry["digest"].startswith("sha256:")
        assert state.flags.data["quarantine"] == {}

    def test_approve_with_the_store_down(self, pinned: tuple[World, FakeState]) -> None:
        world, state = pinned
        state.go_down()
        r = world.post(b"/pins/approve", {"tools": ["alpha__echo"]})
        assert r.code == 200
        assert r.json()["shared"] is False and "cannot be reached" in r.json()["why"]
        assert "alpha__echo" not in world.gateway.policy.pins.quarantined
        assert state.flags.data["approval"] == {}

    def test_without_a_shared_state_the_answers_are_unchanged(self, world: World) -> None:
        world.ready()
        r = world.post(b"/kill", {"kind": "tool", "name": "alpha__echo"})
        assert r.json() == {"principals": [], "backends": [], "tools": ["alpha__echo"]}


def test_held_answers_past_their_bound_are_a_metric(shared: Any) -> None:
    """C{twisted_mcp_audit_hold_timeouts}: answers sent before their record was committed (only with holdAnswers)."""
    world, state, sync = shared

    class Audit:
        queue_depth = failures = dropped = waiting_calls = 0
        holds_answers = True
        hold_timeouts = 3
        refuses_calls = False
        behind = False

    world.gateway.policy.audit = Audit()
    assert metric(world, "twisted_mcp_audit_hold_timeouts_total") == [({}, 3.0)]
    Audit.holds_answers = False
    assert metric(world, "twisted_mcp_audit_hold_timeouts_total") == []


def test_calls_waiting_for_the_audit_trail_are_a_metric(shared: Any) -> None:
    """C{twisted_mcp_audit_waiting_calls}: calls held back while the audit trail catches up."""
    world, state, sync = shared

    class Audit:
        queue_depth = failures = dropped = hold_timeouts = 0
        holds_answers = refuses_calls = False
        behind = True
        waiting_calls = 7

    world.gateway.policy.audit = Audit()
    assert metric(world, "twisted_mcp_audit_waiting_calls") == [({}, 7.0)]
