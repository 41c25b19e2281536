"""
Tests for L{twisted_mcp.ops.shared_state}: the shared flags applied to the
policy in force (and the clients told), availability turned into the
policy's C{flags_problem}, writes of admin actions kept while the store is
down and written when it is back; and L{GatewayService} building, starting
and stopping the state.  The stores are small fakes with Deferreds the
tests control; the gateway, its sessions and the policy are real (the
policy's C{apply_flags} is a stand-in, the Policy side's job).
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs

from twisted_mcp.mcp import errors
from twisted_mcp.ops.shared_state import NOT_READ_YET, SharedStateSync, flags_problem_message
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.service import GatewayService, make_state
from twisted_mcp.state.base import FLAG_KINDS, Refused, SharedState, Unavailable

from .test_admin import LIST_CHANGED, World, config

PASSWORD = "hunter2-redis-password"
PROBLEM = "Redis at 10.0.0.5:6379 unreachable: connection refused"


class FakeFlags:
    """A L{FlagStore} in memory: C{hold} keeps writes pending until L{release}; down (the state's C{up}) fails them."""

    def __init__(self, state: "FakeState") -> None:
        self.state = state
        self.data: dict[str, dict[str, str]] = {kind: {} for kind in FLAG_KINDS}
        self.watchers: list[Any] = []
        self.sets: list[tuple[str, str, str | None]] = []
        self.reads = 0
        self.hold = False
        self.held: list[tuple[Deferred[None], Any]] = []

    def copy(self) -> dict[str, dict[str, str]]:
        return {kind: dict(names) for kind, names in self.data.items()}

    def set(self, kind: str, name: str, value: str | None) -> Deferred[None]:
        if not self.state.up:
            return fail(Unavailable(PROBLEM))
        self.sets.append((kind, name, value))

        def apply() -> None:
            if value is None:
                self.data[kind].pop(name, None)
            else:
                self.data[kind][name] = value

        if self.hold:
            d: Deferred[None] = Deferred()
            self.held.append((d, apply))
            return d
        apply()
        return succeed(None)

    def release(self) -> None:
        held, self.held = self.held, []
        for d, apply in held:
            apply()
            d.callback(None)

    def snapshot(self) -> Deferred[dict[str, dict[str, str]]]:
        self.reads += 1
        if not self.state.up:
            return fail(Unavailable(PROBLEM))
        return succeed(self.copy())

    def watch(self, callback: Any) -> None:
        self.watchers.append(callback)

    def push(self, snapshot: dict[str, dict[str, str]] | None = None) -> None:
        """What pub/sub or the periodic re-read delivers."""
        for callback in self.watchers:
            callback(self.copy() if snapshot is None else snapshot)


class FakeBreakers:
    def __init__(self) -> None:
        self.watchers: list[Any] = []

    def publish(self, backend: str, state: str, until: float) -> None:
        pass

    def watch(self, callback: Any) -> None:
        self.watchers.append(callback)


class FakeState(SharedState):
    """A Redis-like L{SharedState}: its flags and breakers in memory, taken down and back by the test."""

    kind = "redis"

    def __init__(self, on_unavailable: dict[str, str] | None = None) -> None:
        super().__init__("replica-1", on_unavailable)
        self.up = True
        self.flags = FakeFlags(self)
        self.breakers = FakeBreakers()
        self.calls: list[str] = []
        self.starting: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        self.calls.append("start")
        return self.starting

    def stop(self) -> Deferred[None]:
        self.calls.append("stop")
        return succeed(None)

    def describe(self) -> str:
        return "Redis at 10.0.0.5:6379 (namespace twisted-mcp)"

    def go_down(self) -> None:
        self.up = False
        self.set_available(False, PROBLEM)

    def come_back(self) -> None:
        self.up = True
        self.set_available(True)


KILL_KINDS = ("principal", "backend", "tool", "prompt", "resource")


class FlagPolicy(Policy):
    """A real policy whose C{apply_flags} applies the kill switch and revocations (a stand-in for the Policy side's)."""

    applied: list[dict[str, dict[str, str]]]
    flags_problem: str | None = None

    def apply_flags(self, snapshot: dict[str, dict[str, str]]) -> bool:
        self.__dict__.setdefault("applied", []).append(snapshot)
        changed = False
        for kind in KILL_KINDS:
            want = set(snapshot.get(f"kill:{kind}", {}))
            if want != self.kills[kind]:
                for name in want - self.kills[kind]:
                    self.set_kill(kind, name, True)
                for name in self.kills[kind] - want:
                    self.set_kill(kind, name, False)
                changed = True
        revoked = set(snapshot.get("revoked", {}))
        if revoked != getattr(self, "revoked", set()):
            self.revoked = revoked
            changed = True
        return changed

    def apply_breaker(self, backend: str, state: str, until: float) -> None:
        self.__dict__.setdefault("breakers_applied", []).append((backend, state, until))


def shared_world(on_unavailable: dict[str, str] | None = None) -> tuple[World, FakeState, SharedStateSync]:
    """A L{World} (real gateway, sessions, views) whose gateway has a L{FakeState} and whose service a sync."""
    world = World(policy=FlagPolicy(PolicyConfig(), "__", Clock()))
    state = FakeState(on_unavailable)
    world.gateway.state = state
    sync = SharedStateSync(state, lambda: world.gateway.policy, world.service.views, world.service.notify_views)
    world.service.state_sync = sync  # type: ignore[attr-defined]
    sync.start()
    state.starting.callback(None)
    sync.started()
    return world, state, sync


@pytest.fixture
def shared() -> tuple[World, FakeState, SharedStateSync]:
    return shared_world()


def messages(logs: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in logs]


class TestFlags:
    def test_a_kill_from_another_replica_is_applied_and_clients_told(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        s1 = world.session("s1")
        world.session("s2")
        state.flags.data["kill:tool"]["alpha__echo"] = "1700000000"
        with capturedLogs() as logs:
            state.flags.push()
        assert world.gateway.policy.kills["tool"] == {"alpha__echo"}
        assert world.take("s1") == [LIST_CHANGED]
        assert world.take("s2") == [LIST_CHANGED]
        assert any("shared state: flags applied (kill:tool 1)" in m and "2 client(s) told" in m for m in messages(logs))
        world.call(s1, 1, "alpha__echo")
        (answer,) = world.take("s1")
        assert answer["error"]["code"] == errors.TOOL_DISABLED
        assert world.alpha.calls == []

    def test_the_same_snapshot_again_costs_nothing(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        world.session("s1")
        state.flags.data["kill:tool"]["alpha__echo"] = "1"
        state.flags.push()
        world.take("s1")
        applied = len(world.gateway.policy.applied)
        state.flags.push()
        state.flags.push()
        assert len(world.gateway.policy.applied) == applied
        assert world.take("s1") == []

    def test_a_release_elsewhere_is_applied(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        world.session("s1")
        state.flags.data["kill:backend"]["beta"] = "1"
        state.flags.push()
        world.take("s1")
        del state.flags.data["kill:backend"]["beta"]
        state.flags.push()
        assert world.gateway.policy.kills["backend"] == set()
        assert world.take("s1") == [LIST_CHANGED]

    def test_a_change_no_client_sees_tells_none(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        world.session("s1")
        state.flags.data["revoked"]["sha256:ab"] = "1"
        state.flags.push()
        assert world.gateway.policy.revoked == {"sha256:ab"}
        assert world.take("s1") == []

    def test_the_first_snapshot_is_read_when_the_state_started(self) -> None:
        world = World(policy=FlagPolicy(PolicyConfig(), "__", Clock()))
        state = FakeState()
        state.flags.data["kill:principal"]["mallory"] = "1"
        sync = SharedStateSync(state, lambda: world.gateway.policy, world.service.views, world.service.notify_views)
        sync.start()
        assert not sync.synced
        state.starting.callback(None)
        sync.started()
        assert sync.synced
        assert world.gateway.policy.kills["principal"] == {"mallory"}

    def test_a_reload_s_policy_gets_the_flags_and_the_problem(self, shared: Any) -> None:
        world, state, sync = shared
        state.flags.data["kill:tool"]["beta__*"] = "1"
        state.flags.push()
        fresh = FlagPolicy(PolicyConfig(), "__", Clock())
        sync.policy_replaced(fresh)
        assert fresh.kills["tool"] == {"beta__*"}
        state.go_down()
        newer = FlagPolicy(PolicyConfig(), "__", Clock())
        sync.policy_replaced(newer)
        assert newer.flags_problem == flags_problem_message(PROBLEM)

    def test_a_broken_apply_is_logged_and_the_next_snapshot_applies(self, shared: Any) -> None:
        world, state, sync = shared
        policy = world.gateway.policy
        policy.apply_flags = lambda snapshot: 1 / 0  # type: ignore[method-assign]
        state.flags.data["kill:tool"]["x__y"] = "1"
        with capturedLogs() as logs:
            state.flags.push()
        assert any("applying the flags failed" in m for m in messages(logs))
        del policy.apply_flags
        state.flags.push()
        assert policy.kills["tool"] == {"x__y"}

    def test_breakers_of_other_replicas(self, shared: Any) -> None:
        world, state, sync = shared
        (watch,) = state.breakers.watchers
        watch("alpha", "open", 1234.5)
        assert world.gateway.policy.breakers_applied == [("alpha", "open", 1234.5)]


class TestAvailability:
    def test_lost_refuses_with_the_problem_and_says_so_once(self, shared: Any) -> None:
        world, state, sync = shared
        with capturedLogs() as logs:
            state.go_down()
            state.set_available(False, PROBLEM)  # again: no second line
        assert world.gateway.policy.flags_problem == flags_problem_message(PROBLEM)
        assert "cannot be reached" in world.gateway.policy.flags_problem
        lost = [m for m in messages(logs) if "unreachable" in m]
        assert len(lost) == 1
        assert lost[0].startswith("shared state (Redis) unreachable: Redis at 10.0.0.5:6379 unreachable")
        assert "killSwitch: refuse" in lost[0]
        assert [e["log_level"].name for e in logs] == ["warn"]
        assert state.outages == 1

    def test_local_keeps_serving(self) -> None:
        world, state, sync = shared_world({"killSwitch": "local"})
        state.go_down()
        assert world.gateway.policy.flags_problem is None

    def test_recovery_reads_at_once_and_clears_the_problem(self, shared: Any) -> None:
        world, state, sync = shared
        world.ready()
        world.session("s1")
        state.go_down()
        state.flags.data["kill:tool"]["alpha__add"] = "1"  # thrown elsewhere meanwhile
        reads = state.flags.reads
        with capturedLogs() as logs:
            state.come_back()
        assert state.flags.reads == reads + 1
        assert world.gateway.policy.flags_problem is None
        assert world.gateway.policy.kills["tool"] == {"alpha__add"}
        assert world.take("s1") == [LIST_CHANGED]
        back = [e for e in logs if "answers again" in messages([e])[0]]
        assert len(back) == 1 and back[0]["log_level"].name == "info"
        assert PASSWORD not in "".join(messages(logs))

    def test_writes_made_while_down_are_written_on_recovery(self, shared: Any) -> None:
        world, state, sync = shared
        state.go_down()
        outcome: list[Any] = []
        sync.write([("kill:tool", "alpha__echo", "1")]).addCallback(outcome.append)
        (shared_, why) = outcome[0]
        assert shared_ is False and "cannot be reached" in why and PROBLEM in why
        assert sync.pending == [("kill:tool", "alpha__echo", "1")]
        state.come_back()
        assert state.flags.data["kill:tool"] == {"alpha__echo": "1"}
        assert sync.pending == []
        assert world.gateway.policy.kills["tool"] == {"alpha__echo"}

    def test_a_snapshot_taken_before_this_replica_s_write_landed_is_not_applied(self, shared: Any) -> None:
        world, state, sync = shared
        world.gateway.policy.set_kill("tool", "alpha__echo", True)  # as POST /kill does first
        state.flags.hold = True
        outcome: list[Any] = []
        sync.write([("kill:tool", "alpha__echo", "1")]).addCallback(outcome.append)
        state.flags.push()  # read before the write landed: would release the kill
        assert world.gateway.policy.kills["tool"] == {"alpha__echo"}
        assert outcome == []
        state.flags.release()
        assert outcome == [(True, None)]
        assert world.gateway.policy.kills["tool"] == {"alpha__echo"}
        assert sync.snapshot is not None and sync.snapshot["kill:tool"] == {"alpha__echo": "1"}

    def test_a_write_that_can_never_succeed_is_dropped_and_snapshots_apply_again(self) -> None:
        """
        A flag the store refuses for good (a name over its bound, Redis
        refusing the command) is not queued again: queued, it would be
        replayed before every snapshot and no kill of another replica would
        ever arrive, nor would C{flags_problem} be lifted.  Logged once.
        """
        world, state, sync = shared_world()
        real_set = state.flags.set
        outcomes: list[Any] = []

        def refusing(kind: str, name: str, value: str | None) -> Deferred[None]:
            if len(name) > 512:
                return fail(ValueError("a flag's name must be 1 to 512 bytes of text"))
            if name == "refused":
                return fail(Refused("Redis refused the flag change: ERR wrong number of arguments"))
            return real_set(kind, name, value)

        state.flags.set = refusing  # type: ignore[method-assign]
        policy = world.gateway.policy
        with capturedLogs() as logs:
            for name in ("x" * 600, "refused"):
                policy.set_kill("tool", name, True)
                sync.write([("kill:tool", name, "1")]).addCallback(outcomes.append)
        assert [shared_ for shared_, _ in outcomes] == [False, False]
        assert "a flag's name must be 1 to 512 bytes" in outcomes[0][1] and "cannot be reached" not in outcomes[0][1]
        assert outcomes[0][1].startswith("the shared state refused the change")
        assert "ERR wrong number of arguments" in outcomes[1][1]
        assert sync.pending == []
        errors_logged = [m for m in messages(logs) if "cannot be written" in m]
        assert len(errors_logged) == 2 and "is not tried again" in errors_logged[1]
        # Another replica's kill arrives; this replica's refused kills stay applied here.
        state.flags.data["kill:tool"]["evil__tool"] = "1"
        state.flags.push()
        assert policy.kills["tool"] == {"x" * 600, "refused", "evil__tool"}
        # Released here: written (and no longer kept locally).
        policy.set_kill("tool", "refused", False)
        sync.write([("kill:tool", "refused", None)])
        state.flags.push()
        assert policy.kills["tool"] == {"x" * 600, "evil__tool"}

    def test_a_refused_write_does_not_keep_the_kill_switch_problem(self) -> None:
        world, state, sync = shared_world()
        state.go_down()
        sync.write([("kill:tool", "x" * 600, "1")])
        assert world.gateway.policy.flags_problem is not None
        real_set = state.flags.set
        state.flags.set = (  # type: ignore[method-assign]
            lambda kind, name, value: fail(ValueError("too long")) if len(name) > 512 else real_set(kind, name, value)
        )
        state.come_back()
        assert sync.pending == [] and sync.synced
        assert world.gateway.policy.flags_problem is None

    def test_a_transient_failure_is_still_written_later(self) -> None:
        world, state, sync = shared_world()
        real_set = state.flags.set

        def lost(kind: str, name: str, value: str | None) -> Deferred[None]:
            state.go_down()
            return fail(Unavailable(PROBLEM))

        state.flags.set = lost  # type: ignore[method-assign]
        outcome: list[Any] = []
        sync.write([("kill:tool", "alpha__echo", "1")]).addCallback(outcome.append)
        assert outcome[0][0] is False and PROBLEM in outcome[0][1] and "refused the change" not in outcome[0][1]
        assert sync.pending == [("kill:tool", "alpha__echo", "1")]
        state.flags.set = real_set  # type: ignore[method-assign]
        state.come_back()
        assert state.flags.data["kill:tool"] == {"alpha__echo": "1"}

    def test_a_reload_keeps_a_kill_not_written_yet(self, shared: Any) -> None:
        """
        A kill thrown here whose write is on its way (or waiting for the
        store) survives a reload: the new policy is not given the last
        snapshot (taken before it) as it is.
        """
        world, state, sync = shared
        old = world.gateway.policy
        old.set_kill("tool", "alpha__echo", True)
        state.flags.hold = True
        sync.write([("kill:tool", "alpha__echo", "1")])  # in flight
        fresh = FlagPolicy(PolicyConfig(), "__", Clock())
        fresh.inherit(old)
        world.gateway.policy = fresh
        sync.policy_replaced(fresh)
        assert fresh.kills["tool"] == {"alpha__echo"}
        state.flags.release()
        assert fresh.kills["tool"] == {"alpha__echo"}
        # Waiting for the store: the same.
        state.flags.hold = False
        state.go_down()
        fresh.set_kill("tool", "beta__echo", True)
        sync.write([("kill:tool", "beta__echo", "1")])
        newer = FlagPolicy(PolicyConfig(), "__", Clock())
        newer.inherit(fresh)
        world.gateway.policy = newer
        sync.policy_replaced(newer)
        assert newer.kills["tool"] == {"alpha__echo", "beta__echo"}
        state.come_back()
        assert newer.kills["tool"] == {"alpha__echo", "beta__echo"}
        assert set(state.flags.data["kill:tool"]) == {"alpha__echo", "beta__echo"}

    def test_nothing_is_served_before_the_flags_were_read(self) -> None:
        """With killSwitch refuse, requests are refused from the start until the first snapshot is applied."""
        world = World(policy=FlagPolicy(PolicyConfig(), "__", Clock()))
        state = FakeState()
        sync = SharedStateSync(state, lambda: world.gateway.policy, world.service.views, world.service.notify_views)
        sync.start()
        assert world.gateway.policy.flags_problem == NOT_READ_YET
        assert "has not been read yet" in NOT_READ_YET
        # A reload meanwhile: the new policy refuses too.
        fresh = FlagPolicy(PolicyConfig(), "__", Clock())
        world.gateway.policy = fresh
        sync.policy_replaced(fresh)
        assert fresh.flags_problem == NOT_READ_YET
        state.starting.callback(None)
        sync.started()
        assert fresh.flags_problem is None

    def test_before_the_flags_were_read_with_killswitch_local(self) -> None:
        world = World(policy=FlagPolicy(PolicyConfig(), "__", Clock()))
        state = FakeState({"limits": "refuse", "killSwitch": "local", "sessions": "local"})
        sync = SharedStateSync(state, lambda: world.gateway.policy, world.service.views, world.service.notify_views)
        sync.start()
        assert world.gateway.policy.flags_problem is None

    def test_a_store_down_at_start(self) -> None:
        world = World(policy=FlagPolicy(PolicyConfig(), "__", Clock()))
        state = FakeState()
        sync = SharedStateSync(state, lambda: world.gateway.policy, world.service.views, world.service.notify_views)
        sync.start()
        state.go_down()  # the state's start() found Redis unreachable
        state.starting.callback(None)
        sync.started()
        assert not sync.synced
        assert world.gateway.policy.flags_problem == flags_problem_message(PROBLEM)
        state.come_back()
        assert sync.synced and world.gateway.policy.flags_problem is None


class TestService:
    def test_without_state_the_in_process_state(self) -> None:
        empty = config(names=())
        state = make_state(empty, Clock())
        assert type(state) is SharedState and state.flags is None and state.rates is None
        service = GatewayService(empty, Clock(), MemoryReactor())
        assert service.gateway.state is service.state
        assert service.state.kind == "local"

    def test_the_state_starts_before_the_frontends_and_stops_after(self) -> None:
        clock = Clock()
        state = FakeState()
        service = GatewayService(config(names=()), clock, MemoryReactor(), state=state)
        assert service.gateway.state is state
        order: list[str] = []
        problems: list[str | None] = []

        class Front:
            running = False

            def startService(self) -> None:
                order.append(f"front started, state {state.calls}")
                problems.append(service.gateway.policy.flags_problem)

            def stopService(self) -> Deferred[None]:
                order.append(f"front stopped, state {state.calls}")
                return succeed(None)

        service.add_frontend(lambda gateway: Front())  # type: ignore[arg-type, return-value]
        service.startService()
        assert order == ["front started, state ['start']"]
        assert problems == [NOT_READ_YET]  # the front-ends serve nothing before the kill switch was read
        state.flags.data["kill:tool"]["alpha__echo"] = "1"
        state.starting.callback(None)
        assert service.state_sync.synced
        assert service.gateway.policy.flags_problem is None
        d = service.stopService()
        clock.advance(1)
        assert order[-1] == "front stopped, state ['start']"
        assert state.calls == ["start", "stop"]
        assert d.called

    def test_the_policy_and_a_reload_s_policy_get_the_state(self) -> None:
        state = FakeState()
        service = GatewayService(config(names=()), Clock(), MemoryReactor(), state=state)
        assert service.gateway.policy.state is state
        applied, changes, problems = service.reload(lambda: config(names=()))
        assert applied, problems
        assert service.gateway.policy.state is state


class MarkedFlags(FakeFlags):
    """A L{FakeFlags} with the store's marker (C{flags.marker}); L{wipe} empties it as a Redis restarted without data."""

    def __init__(self, state: "FakeState") -> None:
        super().__init__(state)
        self.held_marker: str | None = None

    def marker(self, candidate: str) -> Deferred[str]:
        if not self.state.up:
            return fail(Unavailable(PROBLEM))
        if self.held_marker is None:
            self.held_marker = candidate
        return succeed(self.held_marker)

    def wipe(self) -> None:
        self.data = {kind: {} for kind in FLAG_KINDS}
        self.held_marker = None


def marked_replicas() -> tuple[MarkedFlags, list[tuple[FlagPolicy, SharedStateSync]]]:
    """Two replicas (a policy and a sync each) over one L{MarkedFlags}."""
    first = FakeState()
    flags = first.flags = MarkedFlags(first)
    replicas = []
    for state in (first, FakeState()):
        state.flags = flags
        policy = FlagPolicy(PolicyConfig(), "__", Clock())
        sync = SharedStateSync(state, lambda policy=policy: policy, lambda: None, lambda before: 0)
        sync.start()
        state.starting.callback(None)
        sync.started()
        replicas.append((policy, sync))
    return flags, replicas


class TestEmptiedStore:
    def test_a_wiped_store_is_restored_from_what_the_replicas_knew(self) -> None:
        """
        Redis restarted without its data: the replicas do not follow the
        empty store (releasing every kill and revocation); each writes back
        what it knew (the union comes back), and says so once.
        """
        flags, [(a, sync_a), (b, sync_b)] = marked_replicas()
        a.set_kill("tool", "evil__tool", True)
        sync_a.write([("kill:tool", "evil__tool", "1")])
        b.revoked = {"jti-1"}
        sync_b.write([("revoked", "jti-1", "1900000000")])
        flags.push()
        assert a.kills["tool"] == b.kills["tool"] == {"evil__tool"}
        assert a.revoked == b.revoked == {"jti-1"}
        # Replica b missed the last change (a kill of a principal) before the wipe.
        flags.data["kill:principal"]["mallory"] = "1"
        for callback in flags.watchers[:1]:
            callback(flags.copy())
        assert a.kills["principal"] == {"mallory"} and b.kills["principal"] == set()
        flags.wipe()
        with capturedLogs() as logs:
            flags.push()
        assert flags.data["kill:tool"] == {"evil__tool": "1"}
        assert flags.data["kill:principal"] == {"mallory": "1"}
        assert flags.data["revoked"] == {"jti-1": "1900000000"}
        for policy in (a, b):
            assert policy.kills["tool"] == {"evil__tool"} and policy.revoked == {"jti-1"}
        assert b.kills["principal"] == {"mallory"}  # the union: what a knew reaches b
        warnings = [m for m in messages(logs) if "emptied" in m]
        assert warnings == [
            "the shared state was emptied (Redis restarted without its data?): restored 3 flags this replica knew",
            "the shared state was emptied (Redis restarted without its data?): restored 2 flags this replica knew",
        ]
        # Once restored: a release on one replica is followed by the other, as before.
        a.set_kill("tool", "evil__tool", False)
        sync_a.write([("kill:tool", "evil__tool", None)])
        flags.push()
        assert b.kills["tool"] == set()

    def test_a_fresh_store_at_start_is_not_a_wipe(self) -> None:
        with capturedLogs() as logs:
            flags, [(a, _), (b, _)] = marked_replicas()
            flags.push()
        assert flags.held_marker is not None
        assert [m for m in messages(logs) if "emptied" in m] == []


@pytest_twisted.ensureDeferred
async def test_a_real_redis_restarted_empty_is_restored() -> None:
    """A private redis-server (no persistence) killed and started again: both replicas' flags come back."""
    from .test_state_redis import Replicas, eventually, private_or_skip, raw

    with private_or_skip() as server:
        replicas = Replicas(server.url)
        try:
            pairs = []
            for name in ("a", "b"):
                state = await replicas.start(name, timeout=0.3, resyncInterval=0.1)
                policy = FlagPolicy(PolicyConfig(), "__", Clock())
                sync = SharedStateSync(state, lambda policy=policy: policy, lambda: None, lambda before: 0)
                sync.start()
                sync.started()
                pairs.append((policy, sync))
            (a, sync_a), (b, sync_b) = pairs
            a.set_kill("tool", "evil__tool", True)
            assert await sync_a.write([("kill:tool", "evil__tool", "1")]) == (True, None)
            assert await sync_b.write([("revoked", "jti-1", "1900000000")]) == (True, None)
            await eventually(lambda: b.kills["tool"] == {"evil__tool"} and a.revoked == {"jti-1"}, 2.0)
            with capturedLogs() as logs:
                server.stop()
                server.start()  # empty: --save "" --appendonly no
                kills, revoked = f"{replicas.namespace}:flags:kill:tool", f"{replicas.namespace}:flags:revoked"
                await eventually(lambda: raw(server.url, "HGETALL", kills) == [b"evil__tool", b"1"], 5.0)
                await eventually(lambda: raw(server.url, "HGETALL", revoked) == [b"jti-1", b"1900000000"], 2.0)
                # A replica that read the emptied store before the other re-seeded it reads again within resyncInterval.
                await eventually(lambda: all(p.kills["tool"] == {"evil__tool"} and p.revoked == {"jti-1"} for p in (a, b)), 2.0)
            for policy in (a, b):
                assert policy.kills["tool"] == {"evil__tool"} and policy.revoked == {"jti-1"}
            assert any("the shared state was emptied" in m for m in messages(logs))
        finally:
            await replicas.close(delete=False)


def test_what_the_real_store_refuses_is_not_retried() -> None:
    """The store's own refusals (Redis's error reply, the flag cap) are permanent; a lost Redis is not."""
    from twisted.python.failure import Failure

    from twisted_mcp.ops.shared_state import _permanent
    from twisted_mcp.state.base import FlagLimitReached

    assert _permanent(Failure(FlagLimitReached("the shared state already holds 100000 kill:tool flags", "kill:tool", 100000)))
    assert _permanent(Failure(ValueError("a flag name longer than 512 bytes")))
    assert not _permanent(Failure(Unavailable("Redis at 127.0.0.1:6379 unreachable: connection refused")))


class TestAuditOfReplicas:
    """With C{state:}, the audit trail says which replica wrote each record; held answers have their metric."""

    def test_records_name_the_replica_only_with_state(self, tmp_path: Any) -> None:
        import attrs

        from twisted_mcp.policy.audit.config import AuditConfig
        from twisted_mcp.state.config import StateSettings

        audited = attrs.evolve(config(names=()), audit=AuditConfig(sink="file", path=str(tmp_path / "audit.jsonl")))
        alone = GatewayService(audited, Clock(), MemoryReactor())
        assert alone.audit.replica is None
        shared = attrs.evolve(audited, state=StateSettings(redis="redis://127.0.0.1:6379/0", replica="replica-1"))
        replica = GatewayService(shared, Clock(), MemoryReactor(), state=FakeState())
        assert replica.audit.replica == "replica-1"
