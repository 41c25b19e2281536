"""
A call waits while the audit trail is behind (AuditLog.behind, AuditLog.room,
Call.dispatch): a sink that writes, but more slowly than calls come, slows
the calls down instead of filling the queue, which would refuse them all.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred

from tests.unit import test_audit
from tests.unit.fakes import begin_tool
from tests.unit.test_policy import _catalog
from twisted_mcp.mcp import errors
from twisted_mcp.policy.audit import AuditLog
from twisted_mcp.policy.identity import Principal
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import parse_policy
from twisted_mcp.wire.jsonrpc import JsonRpcError


@pytest.fixture(autouse=True)
def _write_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AuditLog, "BATCH_DELAY", 0)


def fields(n: int) -> dict[str, Any]:
    return {"id": f"req-{n}", "time": 1.0 + n, "method": "tools/call", "decision": "allow", "outcome": "ok"}


class AuditTestCase(test_audit.AuditTestCase):
    """test_audit's, with a log whose every batch waits for C{self.threads.pump()}."""

    def started(self, **kw: Any) -> AuditLog:  # type: ignore[override]
        log = super().started(self.config(sink="file", **kw))
        self.threads.paused = True
        return log

    def tearDown(self) -> None:
        self.threads.paused = False
        self.threads.pump()
        self.flushLoggedErrors()


class BehindTests(AuditTestCase):
    def test_behindFromHalfTheQueueUntilAQuarter(self) -> None:
        """Half of maxQueue queued, the log is behind; room() fires once a quarter or less is left."""
        log = self.started(maxQueue=8)
        for n in range(3):
            log.record(fields(n))
        self.assertFalse(log.behind)
        log.record(fields(3))
        self.assertTrue(log.behind)
        room = log.room()
        self.assertNoResult(room)
        self.threads.pump()
        self.assertEqual(log.queue_depth, 0)
        self.assertIs(self.successResultOf(room), True)
        self.assertFalse(log.behind)

    def test_aFailingSinkEndsTheWait(self) -> None:
        """A sink that fails is not behind, and whoever waited is let go at once: onFailure decides."""
        log = self.started(maxQueue=4)
        shutil.rmtree(self.directory)  # the next write finds the file gone, and cannot make it again
        for n in range(2):
            log.record(fields(n))
        self.assertTrue(log.behind)
        room = log.room()
        self.threads.pump()
        self.assertIs(self.successResultOf(room), True)
        self.assertFalse(log.healthy)
        self.assertFalse(log.behind)
        self.assertTrue(log.refuses_calls)  # onFailure: refuse (the default)

    def test_theWaitIsBounded(self) -> None:
        """A write that never ends: room() gives up after STALL_AFTER (False), when the log is unhealthy."""
        log = self.started(maxQueue=2)
        log.record(fields(0))
        self.assertTrue(log.behind)
        room = log.room()
        self.clock.advance(AuditLog.STALL_AFTER - 0.5)
        self.assertNoResult(room)
        self.clock.advance(1)
        self.assertIs(self.successResultOf(room), False)
        self.assertFalse(log.healthy)
        self.assertTrue(log.refuses_calls)

    def test_callsThatWaitGoInTheOrderTheyCame(self) -> None:
        """
        Once the trail holds calls back, a newer call waits behind the older
        ones even when the queue has fallen below half after a write.
        """
        log = self.started(maxQueue=8)
        for n in range(4):
            log.record(fields(n))
        first = log.room()
        self.threads.paused = True
        self.threads.pump()  # written; the queue is empty, `first` goes
        self.assertIs(self.successResultOf(first), True)
        # Four calls wait; a write lets go as many as stay under half of maxQueue.
        for n in range(4, 8):
            log.record(fields(n))
        waiting = [log.room() for _ in range(6)]
        log.record(fields(8))
        log.record(fields(9))
        self.assertEqual(log.waiting_calls, 6)
        self.threads.pump()  # everything written: room for 4 (half of 8) of the 6
        self.assertEqual([self.successResultOf(d) for d in waiting[:4]], [True] * 4)
        for d in waiting[4:]:
            self.assertNoResult(d)
        self.assertTrue(log.behind)  # the two left still hold new calls back
        later = log.room()
        self.assertNoResult(later)
        log.record(fields(10))  # a call that went ends
        self.threads.pump()
        self.assertEqual([self.successResultOf(d) for d in [*waiting[4:], later]], [True] * 3)
        self.assertFalse(log.behind)
        self.assertEqual(log.waiting_calls, 0)

    def test_aStallLetsTheWaitingCallsGoAsItIsDeclared(self) -> None:
        """
        A write that hangs: the calls waiting go when the stall is declared
        (STALL_AFTER after the write began), not a whole STALL_AFTER after each
        came; the stalled sink is not behind, so onFailure decides.
        """
        log = self.started(maxQueue=2, onFailure="allow")
        log.record(fields(0))  # its write hangs (the worker is paused)
        self.clock.advance(AuditLog.STALL_AFTER - 2)
        self.assertTrue(log.behind)
        room = log.room()
        self.clock.advance(1.99)
        self.assertNoResult(room)
        self.clock.advance(0.02)
        self.assertIs(self.successResultOf(room), False)
        self.assertFalse(log.healthy)
        self.assertFalse(log.behind)
        self.assertFalse(log.refuses_calls)  # onFailure: allow


class WaitingCallTests(AuditTestCase):
    """Through the policy: Call.dispatch waits for room before it sends."""

    def policy(self, **kw: Any) -> tuple[Policy, Any, AuditLog]:
        log = self.started(**kw)
        rules = parse_policy({"roles": {"dev": {"allow": ["*"]}}}, None, [], {"a"})
        principal = Principal(name="p", roles=("dev",), source="config")
        policy = Policy(rules, "__", self.clock, lambda peer: principal, log)
        catalog = _catalog(("a", ["read"]))
        policy.catalog_changed(catalog.entries)
        return policy, catalog, log

    def dispatch(self, policy: Policy, catalog: Any) -> tuple[Any, Any, list[Deferred[Any]]]:
        call = begin_tool(policy, "s1", {"name": "a__read", "arguments": {}}, catalog)
        sent: list[Deferred[Any]] = []

        def send() -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            sent.append(d)
            return d

        return call, call.dispatch(send), sent

    def test_aCallWaitsWhileTheTrailIsBehindThenGoes(self) -> None:
        policy, catalog, log = self.policy(maxQueue=8)
        for n in range(4):
            log.record(fields(n))
        self.assertTrue(log.behind)
        call, d, sent = self.dispatch(policy, catalog)
        self.assertEqual(sent, [])  # not sent while the trail is behind
        self.assertNoResult(d)
        self.threads.pump()
        self.assertEqual(len(sent), 1)  # sent once it caught up, not refused
        sent[0].callback({"content": []})
        self.assertEqual(self.successResultOf(d), {"content": []})
        call.succeeded({"content": []}, 10)
        self.threads.pump()
        self.assertEqual(log.queue_depth, 0)

    def test_aCallIsSentAtOnceWhenTheTrailKeepsUp(self) -> None:
        policy, catalog, log = self.policy(maxQueue=8)
        log.record(fields(0))
        self.assertFalse(log.behind)
        _, d, sent = self.dispatch(policy, catalog)
        self.assertEqual(len(sent), 1)
        self.assertIs(d, sent[0])  # no Deferred in between

    def test_aCallThatWaitedIsRefusedIfTheSinkFailed(self) -> None:
        """onFailure: refuse: the sink failed while the call waited, so it is refused (-31009), and audited once."""
        policy, catalog, log = self.policy(maxQueue=4)
        for n in range(2):
            log.record(fields(n))
        call, d, sent = self.dispatch(policy, catalog)
        self.assertNoResult(d)
        shutil.rmtree(self.directory)  # the next write fails
        self.threads.pump()
        failure = self.failureResultOf(d, JsonRpcError)
        self.assertEqual(failure.value.code, errors.AUDIT_UNAVAILABLE)
        self.assertEqual(sent, [])
        self.assertEqual(call.record["decision"], "deny")
        self.assertTrue(call.done)
        call.failed(failure.value)  # what the session does with the error: not audited again
        self.assertEqual([r["error_code"] for r in log._queue if r.get("decision") == "deny"], [errors.AUDIT_UNAVAILABLE])

    def test_withOnFailureAllowAStalledTrailLetsTheWaitingCallGo(self) -> None:
        policy, catalog, log = self.policy(maxQueue=2, onFailure="allow")
        log.record(fields(0))  # its write hangs
        _, d, sent = self.dispatch(policy, catalog)
        self.assertEqual(sent, [])
        self.clock.advance(AuditLog.STALL_AFTER - 0.01)
        self.assertEqual(sent, [])
        self.clock.advance(0.02)
        self.assertEqual(len(sent), 1)  # sent as the stall is declared, not refused

    def test_aWaitingCallTheClientCancelsIsNeverSent(self) -> None:
        policy, catalog, log = self.policy(maxQueue=8)
        for n in range(4):
            log.record(fields(n))
        _, d, sent = self.dispatch(policy, catalog)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.threads.pump()
        self.assertEqual(sent, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # the wait's bound went with it
