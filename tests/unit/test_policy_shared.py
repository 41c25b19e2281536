"""
The policy through the state seam: rate limits and concurrency slots shared
by replicas (two L{Policy} objects over one fake store), what happens while
the store cannot be reached (refuse, or local), breakers published and
applied without an echo, and the shared flags (kill switch, approvals,
quarantine, revocations, and refusing while they cannot be read).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.mcp import errors
from twisted_mcp.policy.identity import Principal
from twisted_mcp.policy.limits import Slots
from twisted_mcp.policy.pinning import digest, read_lock, write_lock
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import parse_policy
from twisted_mcp.policy.shared_limits import LeaseSlots
from twisted_mcp.state.base import SharedState
from twisted_mcp.wire.jsonrpc import JsonRpcError

from .fake_state import BreakerHub, FakeFlags, FakeLeases, FakeRates, FakeState
from .fakes import begin_tool
from .test_policy import Recorder, _catalog, dispatched_call

ALLOW = {"dev": {"allow": ["*"]}}
P = Principal(name="p", roles=("dev",), source="config")


class Replicas(SynchronousTestCase):
    """Policies that stand for replicas: one clock, one catalog each, one audit each."""

    def setUp(self) -> None:
        self.clock = Clock()

    def replica(
        self, policy_yaml: dict[str, Any], state: SharedState | None, principal: Principal = P
    ) -> tuple[Policy, Catalog, Recorder]:
        problems: list[str] = []
        rules = parse_policy({"roles": ALLOW, **policy_yaml}, None, problems, {"a", "b"})
        self.assertEqual(problems, [])
        audit = Recorder()
        policy = Policy(rules, "__", self.clock, lambda peer: principal, audit, state=state)
        catalog = _catalog(("a", ["read", "write"]), ("b", ["x"]))
        policy.catalog_changed(catalog.entries)
        return policy, catalog, audit

    def call(self, policy: Policy, catalog: Catalog, name: str) -> Deferred[Any]:
        return dispatched_call(policy, catalog, name)

    def refused(self, d: Deferred[Any]) -> JsonRpcError:
        """The refusal C{d} failed with (after L{Policy.begin}: a step taken when the call is dispatched)."""
        return self.failureResultOf(d, JsonRpcError).value  # type: ignore[return-value]

    def refusal(self, policy: Policy, catalog: Catalog, name: str) -> JsonRpcError:
        """The refusal of a call of C{name}, when it is made or when it is dispatched."""
        try:
            d = self.call(policy, catalog, name)
        except JsonRpcError as e:
            return e
        return self.refused(d)

    def calls(self, catalog: Catalog, name: str) -> list[Deferred[Any]]:
        return catalog.entries[name].backend.calls  # type: ignore[attr-defined,no-any-return]

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])


LIMITED = {"limits": {"principal": {"rate": 0.5, "burst": 2}}}


class DefaultStateTests(Replicas):
    def test_noStateIsTodaysPath(self) -> None:
        """Without shared state (None, or a L{SharedState} whose stores are
        all None) a call holds no shared buckets and dispatches at once."""
        for state in (None, SharedState()):
            policy, catalog, _ = self.replica({**LIMITED, "concurrency": {"backends": {"a": {"max": 1}}}}, state)
            call = begin_tool(policy, "s", {"name": "a__read", "arguments": {}}, catalog)
            self.assertIsNone(call.specs)
            self.assertEqual([type(s) for s in call.slots], [Slots])
            backend = catalog.entries["a__read"].backend
            call.dispatch(lambda: backend.call("tools/call", {}))  # noqa: B023 (called at once)
            self.assertEqual(len(self.calls(catalog, "a__read")), 1)  # no Deferred in between
            self.assertEqual(len(policy._principal_buckets), 1)
            self.assertIsInstance(policy.state, SharedState)


class SharedRateTests(Replicas):
    def two(self, **options: Any) -> tuple[FakeRates, list[tuple[Policy, Catalog, Recorder]]]:
        rates = FakeRates(self.clock)
        policy = options.pop("policy", LIMITED)
        replicas = [self.replica(policy, FakeState(f"r{i}", rates=rates, **options)) for i in (1, 2)]
        return rates, replicas

    def test_limitHoldsAcrossReplicas(self) -> None:
        """A principal's burst of 2 spent on two replicas: the third call,
        on either, is refused with RATE_LIMITED (audited once, as today's)."""
        rates, [(a, ca, _), (b, cb, audit_b)] = self.two()
        self.assertNoResult(self.call(a, ca, "a__read"))  # waits for the backend
        self.assertNoResult(self.call(b, cb, "a__read"))
        d = self.call(b, cb, "b__x")
        e = self.refused(d)
        self.assertEqual((e.code, e.data), (errors.RATE_LIMITED, {"retryAfter": 2.0, "limit": "principal"}))
        self.assertEqual(e.message, "rate limit (principal) reached; retry in 2.000 s")
        self.assertEqual(self.calls(cb, "b__x"), [])
        denied = [r for r in audit_b.records if r["decision"] == "deny"]
        self.assertEqual(len(denied), 1)
        self.assertEqual(
            (denied[0]["principal"], denied[0]["tool"], denied[0]["error_code"], denied[0]["reason"]),
            ("p", "b__x", errors.RATE_LIMITED, e.message),
        )
        self.assertEqual([r["id"] for r in audit_b.records].count(denied[0]["id"]), 1)
        self.assertEqual(len(rates.takes), 3)  # one take per call, every bucket at once
        self.assertEqual(a._principal_buckets, {})  # the in-process buckets are not used
        self.clock.advance(2)
        self.assertNoResult(self.call(a, ca, "a__read"))

    def test_bucketsNamedAlikeOnEveryReplica(self) -> None:
        rates, [(a, ca, _), (b, cb, _)] = self.two(
            policy={
                "limits": {
                    "principal": {"rate": 1, "burst": 5},
                    "tools": [{"tool": "a__*", "rate": 1, "burst": 5}],
                    "backends": {"a": {"rate": 1, "burst": 5}},
                }
            }
        )
        self.call(a, ca, "a__read")
        self.call(b, cb, "a__read")
        self.assertEqual(rates.takes[0], rates.takes[1])
        self.assertEqual(
            [(s.key, s.kind) for s in rates.takes[0]],
            [("p\x00p", "principal"), ("t\x00p\x000\x00a__read", "tool"), ("b\x00a", "backend")],
        )

    def test_tokensGivenBackOnALaterBusy(self) -> None:
        """A call that took its token and is then refused BUSY gives it back (once)."""
        rates, [(a, ca, audit), _] = self.two(policy={**LIMITED, "concurrency": {"backends": {"a": {"max": 1, "queue": 0}}}})
        first = self.call(a, ca, "a__read")
        e = self.refusal(a, ca, "a__read")
        self.assertEqual(e.code, errors.BUSY)
        self.assertEqual(len(rates.given_back), 1)
        self.assertEqual([r["error_code"] for r in audit.records if r["decision"] == "deny"], [errors.BUSY])
        self.calls(ca, "a__read")[0].callback({"content": []})
        self.successResultOf(first)
        # One token spent (the first call), one given back: one more call fits the burst of 2.
        second = self.call(a, ca, "a__read")
        self.calls(ca, "a__read")[1].callback({"content": []})
        self.successResultOf(second)
        self.assertEqual(self.refusal(a, ca, "b__x").code, errors.RATE_LIMITED)

    def test_aSlowStoreHoldsTheCall(self) -> None:
        rates, [(a, ca, _), _] = self.two()
        rates.hold = True
        d = self.call(a, ca, "a__read")
        self.assertNoResult(d)
        self.assertEqual(self.calls(ca, "a__read"), [])  # nothing sent before the tokens are taken
        rates.flush()
        self.assertEqual(len(self.calls(ca, "a__read")), 1)

    def test_cancelledWhileTakingGivesTheTokensBack(self) -> None:
        rates, [(a, ca, audit), _] = self.two()
        rates.hold = True
        d = self.call(a, ca, "a__read")
        d.cancel()
        self.failureResultOf(d)
        rates.flush()
        self.assertEqual(len(rates.given_back), 1)
        self.assertEqual(self.calls(ca, "a__read"), [])
        self.assertEqual(audit.records[-1]["outcome"], "cancelled")

    def test_unavailableRefuses(self) -> None:
        rates, [(a, ca, audit), _] = self.two(on_unavailable={"limits": "refuse"})
        rates.unavailable = "Redis at 127.0.0.1:6379 unreachable: connection refused"
        e = self.refusal(a, ca, "a__read")
        self.assertEqual(e.code, errors.STATE_UNAVAILABLE)
        self.assertIn("rate limits cannot be checked across replicas", e.message)
        self.assertIn("connection refused", e.message)
        self.assertIn("onUnavailable.limits", e.message)
        self.assertEqual(self.calls(ca, "a__read"), [])
        denied = [r for r in audit.records if r["decision"] == "deny"]
        self.assertEqual([(r["error_code"], r["principal"]) for r in denied], [(errors.STATE_UNAVAILABLE, "p")])

    def test_unavailableLocal(self) -> None:
        """C{onUnavailable.limits: local}: this process's own buckets, the very ones used without shared state."""
        rates, [(a, ca, _), _] = self.two(on_unavailable={"limits": "local"})
        rates.unavailable = "Redis down"
        self.call(a, ca, "a__read")
        self.call(a, ca, "a__read")
        self.assertEqual(set(a._principal_buckets), {"p"})
        e = self.refusal(a, ca, "a__read")
        self.assertEqual((e.code, e.data["limit"]), (errors.RATE_LIMITED, "principal"))
        rates.unavailable = None
        self.call(a, ca, "a__read")  # back to the shared buckets
        self.assertEqual(len(self.calls(ca, "a__read")), 3)


CONCURRENT = {"concurrency": {"backends": {"a": {"max": 1, "queue": 1, "queueTimeout": 5}}}}


class LeaseTests(Replicas):
    def two(
        self, policy: dict[str, Any] = CONCURRENT, **options: Any
    ) -> tuple[FakeLeases, list[tuple[Policy, Catalog, Recorder]]]:
        leases = FakeLeases()
        return leases, [self.replica(policy, FakeState(f"r{i}", leases=leases, **options)) for i in (1, 2)]

    def test_limitHoldsAcrossReplicas(self) -> None:
        leases, [(a, ca, _), (b, cb, _)] = self.two()
        first = self.call(a, ca, "a__read")
        self.assertEqual(len(self.calls(ca, "a__read")), 1)
        waiting = self.call(b, cb, "a__read")
        self.assertEqual(self.calls(cb, "a__read"), [])  # replica 1 holds the only slot
        self.assertIsInstance(begin_tool(b, "s", {"name": "a__read"}, cb).slots[0], LeaseSlots)
        self.calls(ca, "a__read")[0].callback({"content": []})
        self.successResultOf(first)
        self.assertEqual(self.calls(cb, "a__read"), [])
        self.clock.advance(LeaseSlots.RETRY)  # replica 2 tries again on its timer
        self.assertEqual(len(self.calls(cb, "a__read")), 1)
        self.calls(cb, "a__read")[0].callback({"content": []})
        self.successResultOf(waiting)
        self.assertEqual(leases.held["b\x00a"], set())
        # Each release gave back exactly the lease its call held.
        self.assertEqual(leases.released, [("b\x00a", "lease-1"), ("b\x00a", "lease-2")])

    def test_backendAndToolLeasesBothHeldAndGivenBack(self) -> None:
        policy = {"concurrency": {"backends": {"a": {"max": 2}}, "tools": [{"tool": "a__write", "max": 1, "queue": 0}]}}
        leases, [(a, ca, _), (b, cb, _)] = self.two(policy)
        first = self.call(a, ca, "a__write")
        self.assertEqual(leases.held, {"b\x00a": {"lease-1"}, "t\x000\x00a__write": {"lease-2"}})
        self.assertEqual(self.refusal(b, cb, "a__write").code, errors.BUSY)  # the tool's one slot is held on replica 1
        self.assertEqual(leases.held["b\x00a"], {"lease-1"})  # the refused call gave its backend lease back
        self.calls(ca, "a__write")[0].callback({"content": []})
        self.successResultOf(first)
        self.assertEqual(leases.held, {"b\x00a": set(), "t\x000\x00a__write": set()})

    def test_aLocalReleaseWakesTheNextAtOnce(self) -> None:
        _, [(a, ca, _), _] = self.two()
        first = self.call(a, ca, "a__read")
        second = self.call(a, ca, "a__read")
        self.assertEqual(len(self.calls(ca, "a__read")), 1)
        self.calls(ca, "a__read")[0].callback({"content": []})
        self.successResultOf(first)
        self.assertEqual(len(self.calls(ca, "a__read")), 2)  # no timer needed
        self.calls(ca, "a__read")[1].callback({"content": []})
        self.successResultOf(second)

    def test_queueFullThenTimeoutAreBusy(self) -> None:
        _, [(a, ca, audit_a), (b, cb, audit_b)] = self.two()
        self.call(a, ca, "a__read")
        waiting = self.call(b, cb, "a__read")
        e = self.refusal(b, cb, "a__read")  # the queue of 1 on replica 2 is full
        self.assertEqual((e.code, e.data), (errors.BUSY, {"backend": "a"}))
        self.assertTrue(e.message.startswith("busy: 1 call(s) running across the replicas and 1 waiting on this one"))
        self.clock.advance(5)
        e = self.refused(waiting)
        self.assertEqual(e.code, errors.BUSY)
        self.assertIn("no slot became free within 5 s", e.message)
        self.assertEqual([r["error_code"] for r in audit_b.records if r["decision"] == "deny"], [errors.BUSY, errors.BUSY])
        self.calls(ca, "a__read")[0].callback({"content": []})

    def test_queueOfNoneIsBusyAtOnce(self) -> None:
        _, [(a, ca, _), (b, cb, _)] = self.two({"concurrency": {"backends": {"a": {"max": 1, "queue": 0}}}})
        self.call(a, ca, "a__read")
        self.assertEqual(self.refusal(b, cb, "a__read").code, errors.BUSY)
        self.calls(ca, "a__read")[0].callback({"content": []})

    def test_cancelledWaiterLeavesTheQueue(self) -> None:
        leases, [(a, ca, _), (b, cb, _)] = self.two()
        self.call(a, ca, "a__read")
        waiting = self.call(b, cb, "a__read")
        waiting.cancel()
        self.failureResultOf(waiting)
        self.calls(ca, "a__read")[0].callback({"content": []})
        self.assertEqual(leases.held["b\x00a"], set())

    def test_aLeaseGrantedAfterTheCallWasCancelledIsGivenBack(self) -> None:
        leases, [(a, ca, _), _] = self.two()
        leases.hold = True
        d = self.call(a, ca, "a__read")
        d.cancel()
        self.failureResultOf(d)
        leases.flush()
        self.assertEqual(leases.held["b\x00a"], set())
        self.assertEqual(leases.released, [("b\x00a", "lease-1")])
        self.assertEqual(self.calls(ca, "a__read"), [])

    def test_unavailableRefuses(self) -> None:
        leases, [(a, ca, audit), _] = self.two()
        leases.unavailable = "Redis down"
        e = self.refusal(a, ca, "a__read")
        self.assertEqual(e.code, errors.STATE_UNAVAILABLE)
        self.assertIn("concurrency limits cannot be checked across replicas; Redis down", e.message)
        self.assertEqual(len([r for r in audit.records if r["decision"] == "deny"]), 1)

    def test_unavailableRefusesTheQueuedToo(self) -> None:
        leases, [(a, ca, _), (b, cb, _)] = self.two()
        self.call(a, ca, "a__read")
        waiting = self.call(b, cb, "a__read")
        leases.unavailable = "Redis down"
        self.clock.advance(LeaseSlots.RETRY)
        self.assertEqual(self.refused(waiting).code, errors.STATE_UNAVAILABLE)
        self.calls(ca, "a__read")[0].callback({"content": []})

    def test_unavailableLocal(self) -> None:
        """C{onUnavailable.limits: local}: this process's own slots, and their queue."""
        leases, [(a, ca, _), _] = self.two(on_unavailable={"limits": "local"})
        leases.unavailable = "Redis down"
        first = self.call(a, ca, "a__read")
        second = self.call(a, ca, "a__read")
        self.assertEqual(len(self.calls(ca, "a__read")), 1)
        self.assertEqual(a._backend_slots["a"].held, 1)
        self.assertEqual(self.refusal(a, ca, "a__read").code, errors.BUSY)
        self.calls(ca, "a__read")[0].callback({"content": []})
        self.successResultOf(first)
        self.calls(ca, "a__read")[1].callback({"content": []})
        self.successResultOf(second)
        self.assertEqual(a._backend_slots["a"].held, 0)
        self.assertEqual(leases.released, [])

    def test_reloadKeepsTheLeases(self) -> None:
        leases, [(a, ca, _), _] = self.two()
        first = self.call(a, ca, "a__read")
        problems: list[str] = []
        new = Policy(
            parse_policy({"roles": ALLOW, **CONCURRENT}, None, problems, {"a", "b"}), "__", self.clock, lambda peer: P, Recorder()
        )
        new.inherit(a)
        new.catalog_changed(ca.entries)
        self.assertIs(new.state, a.state)  # not given: the old one's
        second = self.call(new, ca, "a__read")
        self.calls(ca, "a__read")[0].callback({"content": []})
        self.successResultOf(first)
        self.assertEqual(len(self.calls(ca, "a__read")), 2)  # the same queue: woken at once
        self.calls(ca, "a__read")[1].callback({"content": []})
        self.successResultOf(second)


class BreakerTests(Replicas):
    def test_openAndCloseReachTheOtherReplicaWithoutEcho(self) -> None:
        hub = BreakerHub()
        rules = {"breaker": {"failures": 1, "openSeconds": 10}}
        a, ca, _ = self.replica(rules, FakeState("r1", breakers=hub.store("r1")))
        b, cb, _ = self.replica(rules, FakeState("r2", breakers=hub.store("r2")))
        hub.watchers += [("r1", a.apply_breaker), ("r2", b.apply_breaker)]
        self.clock.advance(100)
        d = self.call(a, ca, "a__read")
        self.calls(ca, "a__read")[0].errback(errors.backend_error(errors.BACKEND_TIMEOUT, "a", "timed out"))
        self.failureResultOf(d)
        self.assertEqual(hub.published, [("r1", "a", "open", 110.0)])
        # Replica 2 refuses at once, and says nothing back.
        self.clock.advance(4)
        e = self.refusal(b, cb, "a__read")
        self.assertEqual((e.code, e.data["retryAfter"]), (errors.CIRCUIT_OPEN, 6.0))
        self.assertEqual(self.calls(cb, "a__read"), [])
        self.assertEqual(len(hub.published), 1)
        # Replica 1's probe closes it: replica 2 closes too.
        self.clock.advance(6)
        probe = self.call(a, ca, "a__read")
        self.calls(ca, "a__read")[-1].callback({"content": []})
        self.successResultOf(probe)
        self.assertEqual(hub.published[1:], [("r1", "a", "half-open", 0.0), ("r1", "a", "closed", 0.0)])
        self.assertEqual(b.breaker("a").state, "closed")
        self.call(b, cb, "a__read")
        self.assertEqual(len(self.calls(cb, "a__read")), 1)
        self.assertEqual(len(hub.published), 3)

    def test_localBreakersPublishNothing(self) -> None:
        a, ca, _ = self.replica({"breaker": {"failures": 1, "openSeconds": 10}}, FakeState("r1", rates=FakeRates(self.clock)))
        d = self.call(a, ca, "a__read")
        self.calls(ca, "a__read")[0].errback(errors.backend_error(errors.BACKEND_TIMEOUT, "a", "timed out"))
        self.failureResultOf(d)
        self.assertIsNone(a.breaker("a").on_change)

    def test_staleOpenIgnored(self) -> None:
        a, _, _ = self.replica({}, None)
        self.clock.advance(50)
        a.apply_breaker("a", "open", 40.0)
        a.apply_breaker("b", "closed", 0.0)
        self.assertEqual(a.breaker("a").state, "closed")
        self.assertNotIn("b", a.breakers)


class FlagTests(Replicas):
    def test_killSwitchFromTheFlags(self) -> None:
        policy, catalog, _ = self.replica({}, FakeState(flags=FakeFlags()))
        epoch = policy.epoch
        self.assertTrue(policy.apply_flags({"kill:tool": {"a__write": "1"}, "kill:backend": {}}))
        self.assertEqual(self.refusal(policy, catalog, "a__write").code, errors.TOOL_DISABLED)
        self.assertNotEqual(policy.epoch, epoch)
        epoch = policy.epoch
        # The same flags again: nothing changed, the epoch (and cached decisions) stay.
        self.assertFalse(policy.apply_flags({"kill:tool": {"a__write": "1"}, "kill:backend": {}}))
        self.assertEqual(policy.epoch, epoch)
        # Kinds absent change nothing; an unknown kind is ignored.
        self.assertFalse(policy.apply_flags({"revoked": {}, "kill:everything": {"x": "1"}, "elsewhere": {"y": "z"}}))
        self.assertEqual(policy.kills["tool"], {"a__write"})
        self.assertEqual(policy.epoch, epoch)
        # Released on another replica: allowed again.
        self.assertTrue(policy.apply_flags({"kill:tool": {}}))
        self.assertNotEqual(policy.epoch, epoch)
        self.call(policy, catalog, "a__write")
        self.assertEqual(len(self.calls(catalog, "a__write")), 1)

    def test_aKillMakesAnIdlePolicyActive(self) -> None:
        policy = Policy(parse_policy({}, None, [], set()), "__", self.clock)
        self.assertFalse(policy.active)
        policy.apply_flags({"kill:principal": {"local": "1"}})
        self.assertTrue(policy.active)

    def test_approvalLiftsTheQuarantineAndIsWritten(self) -> None:
        lock = self.mktemp()
        catalog = _catalog(("a", ["read", "write"]), ("b", ["x"]))
        pinned = [
            (n, e.backend.name, e.tool, {**e.definition, "name": e.tool}) for n, e in catalog.entries.items() if n != "b__x"
        ]
        write_lock(lock, pinned)
        flags = FakeFlags()
        rules = parse_policy({"roles": ALLOW, "pinning": {"mode": "enforce", "lockFile": lock}}, None, [], {"a", "b"})
        policy = Policy(rules, "__", self.clock, lambda peer: P, Recorder(), state=FakeState(flags=flags))
        policy.catalog_changed(catalog.entries)
        self.assertEqual(self.refusal(policy, catalog, "b__x").code, errors.TOOL_QUARANTINED)
        # Published for the other replicas.
        self.assertEqual([(k, n) for k, n, _ in flags.sets], [("quarantine", "b__x")])
        entry = catalog.entries["b__x"]
        pin = {"backend": "b", "tool": "x", "digest": digest({**entry.definition, "name": "x"})}
        epoch = policy.epoch
        self.assertTrue(policy.apply_flags({"approval": {"b__x": json.dumps(pin)}, "quarantine": {}}))
        self.assertNotEqual(policy.epoch, epoch)
        self.call(policy, catalog, "b__x")
        self.assertEqual(len(self.calls(catalog, "b__x")), 1)
        self.assertEqual(read_lock(lock)["b__x"], pin)
        self.assertIn("a__read", read_lock(lock))  # what was pinned stays
        self.assertFalse(policy.apply_flags({"approval": {"b__x": json.dumps(pin)}, "quarantine": {}}))
        # Its own find gone, the replica took back what it published.
        self.assertEqual(flags.sets[-1], ("quarantine", "b__x", None))

    def test_approvalThroughAStoreThatAnswersAtOnce(self) -> None:
        """The approval's review takes back this replica's published
        quarantine; a store that tells watchers at once calls apply_flags
        from within: the newer flags win."""
        lock = self.mktemp()
        catalog = _catalog(("a", ["read", "write"]), ("b", ["x"]))
        write_lock(
            lock,
            [(n, e.backend.name, e.tool, {**e.definition, "name": e.tool}) for n, e in catalog.entries.items() if n != "b__x"],
        )
        flags = FakeFlags()
        rules = parse_policy({"roles": ALLOW, "pinning": {"mode": "enforce", "lockFile": lock}}, None, [], {"a", "b"})
        policy = Policy(rules, "__", self.clock, lambda peer: P, Recorder(), state=FakeState(flags=flags))
        policy.catalog_changed(catalog.entries)
        flags.watch(policy.apply_flags)
        self.assertEqual(flags.flags["quarantine"], {"b__x": "new tool, not in the lock file"})
        pin = {"backend": "b", "tool": "x", "digest": digest({**catalog.entries["b__x"].definition, "name": "x"})}
        flags.set("approval", "b__x", json.dumps(pin))
        self.assertEqual(flags.flags["quarantine"], {})
        self.assertEqual(policy.pins.quarantined, {})
        self.call(policy, catalog, "b__x")
        self.assertEqual(len(self.calls(catalog, "b__x")), 1)

    def test_anOlderApprovalDoesNotUndoANewerPin(self) -> None:
        """
        An approval flag of a definition the tool no longer has (approved on
        another replica before `twisted-mcp pin` pinned the new one here) is
        not written back over the lock entry, and quarantines nothing.
        """
        lock = self.mktemp()
        catalog = _catalog(("a", ["read", "write"]), ("b", ["x"]))
        write_lock(lock, [(n, e.backend.name, e.tool, {**e.definition, "name": e.tool}) for n, e in catalog.entries.items()])
        current = read_lock(lock)["b__x"]
        flags = FakeFlags()
        rules = parse_policy({"roles": ALLOW, "pinning": {"mode": "enforce", "lockFile": lock}}, None, [], {"a", "b"})
        policy = Policy(rules, "__", self.clock, lambda peer: P, Recorder(), state=FakeState(flags=flags))
        policy.catalog_changed(catalog.entries)
        self.assertEqual(policy.pins.quarantined, {})
        old = {"backend": "b", "tool": "x", "digest": "sha256:" + "0" * 64}
        epoch = policy.epoch
        self.assertFalse(policy.apply_flags({"approval": {"b__x": json.dumps(old)}, "quarantine": {}}))
        self.assertEqual(policy.epoch, epoch)
        self.assertEqual(read_lock(lock)["b__x"], current)
        self.assertEqual(policy.pins.pinned["b__x"], current)
        self.assertEqual(policy.pins.quarantined, {})
        self.assertEqual(flags.sets, [])  # nothing quarantined, nothing published
        # A reload's policy (inherit) does not take it either.
        again = Policy(rules, "__", self.clock, lambda peer: P, Recorder(), state=FakeState(flags=flags))
        again.inherit(policy)
        again.catalog_changed(catalog.entries)
        self.assertEqual(again.pins.pinned["b__x"], current)
        self.assertEqual(again.pins.quarantined, {})
        self.call(again, catalog, "b__x")
        self.assertEqual(len(self.calls(catalog, "b__x")), 1)

    def test_anApprovalOfADefinitionNotServedYetWaitsForIt(self) -> None:
        """An approval of a tool this replica's catalog does not hold yet is taken when the catalog brings it."""
        lock = self.mktemp()
        full = _catalog(("a", ["read", "write"]), ("b", ["x"]))
        write_lock(lock, [(n, e.backend.name, e.tool, {**e.definition, "name": e.tool}) for n, e in full.entries.items() if n != "b__x"])
        rules = parse_policy({"roles": ALLOW, "pinning": {"mode": "enforce", "lockFile": lock}}, None, [], {"a", "b"})
        policy = Policy(rules, "__", self.clock, lambda peer: P, Recorder(), state=FakeState(flags=FakeFlags()))
        policy.catalog_changed(_catalog(("a", ["read", "write"])).entries)
        pin = {"backend": "b", "tool": "x", "digest": digest({**full.entries["b__x"].definition, "name": "x"})}
        self.assertFalse(policy.apply_flags({"approval": {"b__x": json.dumps(pin)}}))
        self.assertNotIn("b__x", read_lock(lock))
        policy.catalog_changed(full.entries)  # backend b came up
        self.assertEqual(policy.pins.quarantined, {})
        self.assertEqual(read_lock(lock)["b__x"], pin)
        self.call(policy, full, "b__x")
        self.assertEqual(len(self.calls(full, "b__x")), 1)

    def test_malformedApprovalIgnored(self) -> None:
        policy, catalog, _ = self.replica({}, FakeState(flags=FakeFlags()))
        epoch = policy.epoch
        for bad in ("{not json", '"a string"', '{"digest": 7}', "[]"):
            self.assertFalse(policy.apply_flags({"approval": {"a__read": bad}}))
        self.assertEqual(policy.epoch, epoch)
        self.assertNotIn("a__read", policy.pins.pinned)

    def test_quarantineFromAnotherReplica(self) -> None:
        policy, catalog, _ = self.replica({"pinning": {"mode": "enforce"}}, FakeState(flags=FakeFlags()))
        # No lock file: this replica quarantines everything itself; approve a__read locally in memory.
        entry = catalog.entries["a__read"]
        pin = {"backend": "a", "tool": "read", "digest": digest({**entry.definition, "name": "read"})}
        self.assertTrue(policy.apply_flags({"approval": {"a__read": json.dumps(pin)}}))
        self.call(policy, catalog, "a__read")
        self.assertTrue(policy.apply_flags({"quarantine": {"a__read": "server changed (seen on replica r2)"}}))
        e = self.refusal(policy, catalog, "a__read")
        self.assertEqual(e.code, errors.TOOL_QUARANTINED)
        self.assertIn("seen on replica r2", e.message)
        self.assertTrue(policy.apply_flags({"quarantine": {}}))
        self.call(policy, catalog, "a__read")
        self.assertEqual(len(self.calls(catalog, "a__read")), 2)
        self.assertIn("b__x", policy.pins.quarantined)  # its own find stays

    def test_revokedTokens(self) -> None:
        policy, _, _ = self.replica({}, FakeState(flags=FakeFlags()))
        held = policy.revoked
        epoch = policy.epoch
        self.assertTrue(policy.apply_flags({"revoked": {"sha256:ab": "1700000000", "jti-1": "1700000001"}}))
        self.assertIs(policy.revoked, held)
        self.assertEqual(held, {"sha256:ab", "jti-1"})
        self.assertNotEqual(policy.epoch, epoch)
        self.assertFalse(policy.apply_flags({"revoked": {"sha256:ab": "1700000000"}}))

    def test_flagsReachEveryReplicaThroughTheStore(self) -> None:
        flags = FakeFlags()
        (a, ca, _), (b, cb, _) = [self.replica({}, FakeState(f"r{i}", flags=flags)) for i in (1, 2)]
        flags.watch(a.apply_flags)
        flags.watch(b.apply_flags)
        flags.set("kill:backend", "a", "admin")
        self.assertEqual(self.refusal(b, cb, "a__read").code, errors.BACKEND_DISABLED)
        self.assertEqual(self.refusal(a, ca, "a__read").code, errors.BACKEND_DISABLED)
        flags.set("kill:backend", "a", None)
        self.call(b, cb, "a__read")
        self.assertEqual(len(self.calls(cb, "a__read")), 1)


class FlagsProblemTests(Replicas):
    PROBLEM = "the shared state (Redis) cannot be reached: the kill switch cannot be read (Redis at 127.0.0.1:6379 unreachable)"

    def test_refusedAndAuditedWhileSet(self) -> None:
        policy, catalog, audit = self.replica({}, FakeState(flags=FakeFlags()))
        policy.flags_problem = self.PROBLEM
        e = self.assertRaises(JsonRpcError, self.call, policy, catalog, "a__read")
        self.assertEqual((e.code, e.message), (errors.STATE_UNAVAILABLE, self.PROBLEM))
        record = audit.records[-1]
        self.assertEqual(
            (record["decision"], record["principal"], record["tool"], record["error_code"], record["reason"]),
            ("deny", "p", "a__read", errors.STATE_UNAVAILABLE, self.PROBLEM),
        )
        self.assertEqual(policy.reverse_refusal(P, "a", "sampling/createMessage"), self.PROBLEM)
        policy.flags_problem = None
        self.call(policy, catalog, "a__read")
        self.assertEqual(len(self.calls(catalog, "a__read")), 1)
        self.assertIsNone(policy.reverse_refusal(P, "a", "sampling/createMessage"))

    def test_anIdlePolicyRefusesToo(self) -> None:
        """A gateway without policy rules skips the pipeline; a problem with the flags must not."""
        policy = Policy(parse_policy({}, None, [], set()), "__", self.clock, state=FakeState(flags=FakeFlags()))
        self.assertFalse(policy.active)
        policy.flags_problem = self.PROBLEM
        self.assertTrue(policy.active)

    def test_keptAcrossAReload(self) -> None:
        policy, catalog, _ = self.replica({}, FakeState(flags=FakeFlags()))
        policy.flags_problem = self.PROBLEM
        policy.apply_flags({"revoked": {"jti-1": "1"}, "kill:tool": {"a__write": "1"}})
        new = Policy(parse_policy({"roles": ALLOW}, None, [], {"a", "b"}), "__", self.clock, lambda peer: P, Recorder())
        new.inherit(policy)
        self.assertEqual((new.flags_problem, new.revoked), (self.PROBLEM, {"jti-1"}))
        self.assertIs(new.revoked, policy.revoked)
        self.assertEqual(new.kills["tool"], {"a__write"})


class ThroughTheGatewayTests(SynchronousTestCase):
    """A refusal made when the call is dispatched reaches the client as an answer, audited once."""

    def replica(self, clock: Clock, rates: FakeRates, name: str) -> tuple[list[bytes], Any, Recorder, Any]:
        from twisted_mcp.dispatch.gateway import Gateway
        from twisted_mcp.dispatch.session import ClientSession
        from twisted_mcp.frontends.stream import deliver, line_caller

        from .test_policy import FakeBackend

        rules = parse_policy({"roles": ALLOW, **LIMITED}, None, [], {"a"})
        backend = FakeBackend("a", ["read"])
        gateway = Gateway([backend], "__", clock, 5.0)
        audit = Recorder()
        gateway.policy = Policy(rules, "__", clock, lambda peer: P, audit, state=FakeState(name, rates=rates))
        backend._first_discovery_done()
        gateway.start()
        out: list[bytes] = []
        session = ClientSession(gateway, line_caller(out.append, name, None))

        def send(message: dict[str, Any]) -> None:
            deliver(session, json.dumps(message).encode())

        send(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c"}},
            }
        )
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        del out[:]
        return out, send, audit, (session, backend)

    def test_sharedRateLimitRefusalAnswered(self) -> None:
        clock = Clock()
        rates = FakeRates(clock)
        out1, send1, _, (_, backend1) = self.replica(clock, rates, "r1")
        out2, send2, audit2, (session2, backend2) = self.replica(clock, rates, "r2")
        call = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "a__read", "arguments": {}}}
        send1({**call, "id": 1})
        send2({**call, "id": 2})
        rates.hold = True
        send2({**call, "id": 3})
        self.assertEqual(out2, [])  # the answer waits for the shared store
        rates.flush()
        (answer,) = [json.loads(line) for line in out2]
        self.assertEqual(answer["id"], 3)
        self.assertEqual(answer["error"]["code"], errors.RATE_LIMITED)
        self.assertEqual(answer["error"]["data"], {"retryAfter": 2.0, "limit": "principal"})
        self.assertEqual(len(backend2.calls), 1)
        self.assertEqual(len(session2.in_flight), 1)  # the refused call is no longer in flight: only id 2
        denied = [r for r in audit2.records if r["decision"] == "deny"]
        self.assertEqual([(r["error_code"], r["principal"], r["tool"]) for r in denied], [(errors.RATE_LIMITED, "p", "a__read")])
        self.assertEqual(len([r for r in audit2.records if r["method"] == "tools/call"]), 1)
        for backend in (backend1, backend2):
            backend.calls[0].callback({"content": []})
        self.assertEqual([json.loads(line)["id"] for line in out1], [1])
        self.assertEqual(len(session2.in_flight), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
