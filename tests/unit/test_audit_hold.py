"""
Tests for C{audit.holdAnswers}: the answer of a call that reached a backend
goes to its client only once the call's audit record is committed
(L{twisted_mcp.policy.audit.log.AuditLog.hold}, and the session's held
answers in L{twisted_mcp.dispatch.session}); bounded by C{holdTimeout};
refusals are not held; nothing changes with the setting off.

The sink is a real JSON lines file; its writes run through a paused
L{SynchronousThreads} (each commit happens when the test pumps it) and time
through L{Clock}.
"""

from __future__ import annotations

import json
import os
from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession, _encoded_answer
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE
from twisted_mcp.policy.audit import AuditConfig, AuditLog, SynchronousThreads, parse_audit
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.wire.jsonrpc import JsonRpcError, encode

from .fakes import FakeBackend

ECHO = {"name": "echo", "inputSchema": {"type": "object"}}


def read_records(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


class HeldAnswersTestCase(SynchronousTestCase):
    hold = True

    def setUp(self) -> None:
        self.clock = Clock()
        self.threads = SynchronousThreads()
        self.path = os.path.abspath("audit.jsonl")
        self.config = AuditConfig(sink="file", path=self.path, holdAnswers=self.hold, holdTimeout=2.0)
        self.audit = AuditLog(self.config, self.clock, self.threads)
        self.successResultOf(self.audit.start())
        self.threads.paused = True
        self.backend = FakeBackend("alpha", [ECHO])
        self.gateway = Gateway([self.backend], "__", self.clock, 5.0)
        self.gateway.policy = Policy(PolicyConfig(), "__", self.clock, None, self.audit)
        self.backend._first_discovery_done()
        self.gateway.start()
        self.out: list[bytes] = []
        #: The records in the file at the moment each line reached the client.
        self.seen_at_send: list[list[str]] = []
        self.session = ClientSession(self.gateway, line_caller(self.sent, "test"))
        self.request(0, "initialize", {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "c"}})
        self.take()
        del self.seen_at_send[:]

    def tearDown(self) -> None:
        self.threads.paused = False
        self.threads.pump()
        self.successResultOf(self.audit.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def sent(self, line: bytes) -> None:
        self.out.append(line)
        self.seen_at_send.append([r["id"] for r in read_records(self.path)])

    def request(self, rid: Any, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        deliver(self.session, json.dumps(message).encode())

    def call(self, rid: Any, name: str = "alpha__echo") -> None:
        self.request(rid, "tools/call", {"name": name, "arguments": {"n": rid}})

    def take(self) -> list[dict[str, Any]]:
        messages = [json.loads(line) for line in self.out]
        del self.out[:]
        return messages

    def commit(self) -> None:
        """The worker thread writes what it was given (and what that leads to)."""
        self.threads.pump()


class HoldTests(HeldAnswersTestCase):
    def test_aResultWaitsForItsRecord(self) -> None:
        self.call(1)
        self.backend.calls[0].deferred.callback({"content": [{"type": "text", "text": "é" * 10}]})
        self.assertEqual(self.take(), [])  # written only once the record is
        self.assertEqual(read_records(self.path), [])
        self.assertEqual(self.session.in_flight.keys(), {(int, 1)})  # still in flight: its id is not free
        self.commit()
        [line] = self.out
        [answer] = self.take()
        self.assertEqual(answer, {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "é" * 10}]}})
        [record] = read_records(self.path)
        self.assertEqual(self.seen_at_send, [[record["id"]]])  # in the trail when the client got it
        self.assertEqual((record["outcome"], record["result_bytes"]), ("ok", len(line)))
        self.assertEqual(self.session.in_flight, {})
        self.assertEqual(self.audit._watch, {})

    def test_anErrorWaitsForItsRecord(self) -> None:
        self.call(1)
        self.backend.calls[0].deferred.errback(JsonRpcError(-32000, "backend says no"))
        self.assertEqual(self.take(), [])
        self.commit()
        [answer] = self.take()
        self.assertEqual(answer["error"], {"code": -32000, "message": "backend says no"})
        [record] = read_records(self.path)
        self.assertEqual((record["outcome"], record["error_code"]), ("error", -32000))
        self.assertEqual(len(self.seen_at_send[0]), 1)

    def test_aRefusalIsNotHeld(self) -> None:
        """A refusal carries no result: it goes at once, its record written later (it may even be dropped)."""
        self.call(1, "alpha__nope")
        [answer] = self.take()
        self.assertEqual(answer["error"]["code"], -32602)
        self.assertEqual(self.seen_at_send, [[]])
        self.clock.advance(AuditLog.BATCH_DELAY)  # its record waits for its batch, as without holdAnswers
        self.commit()
        [record] = read_records(self.path)
        self.assertEqual(record["decision"], "deny")

    def test_aCancelledCallIsNotAnswered(self) -> None:
        self.call(1)
        deliver(
            self.session, json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}).encode()
        )
        self.assertEqual(self.session.in_flight, {})
        self.clock.advance(AuditLog.BATCH_DELAY)
        self.commit()
        self.assertEqual(self.take(), [])
        self.assertEqual(read_records(self.path)[0]["outcome"], "cancelled")

    def test_anIdIsNotTakenAgainWhileItsAnswerIsHeld(self) -> None:
        self.call(1)
        self.backend.calls[0].deferred.callback({"content": []})
        self.call(1)
        [refused] = self.take()
        self.assertEqual(refused["error"]["code"], -32600)
        self.assertIn("already used by a request in flight", refused["error"]["message"])
        self.commit()
        [answer] = self.take()
        self.assertEqual(answer["result"], {"content": []})

    def test_answersGoInTheOrderOfTheirRecords(self) -> None:
        for rid in (1, 2, 3):
            self.call(rid)
        second, first, third = self.backend.calls[1], self.backend.calls[0], self.backend.calls[2]
        second.deferred.callback({"content": [], "n": 2})
        first.deferred.callback({"content": [], "n": 1})
        self.assertEqual(self.take(), [])
        self.commit()  # one batch: both records
        self.assertEqual([a["id"] for a in self.take()], [2, 1])
        third.deferred.errback(JsonRpcError(-32000, "no"))
        self.commit()
        self.assertEqual([a["id"] for a in self.take()], [3])
        self.assertEqual(len(read_records(self.path)), 3)

    def test_aHeldWriteStartsAtOnce(self) -> None:
        """Someone waits: the record is handed to the writer without the batching delay."""
        self.call(1)
        self.backend.calls[0].deferred.callback({"content": []})
        self.assertEqual(len(self.threads.pending), 1)  # not waiting for BATCH_DELAY
        self.commit()
        self.assertEqual(len(self.take()), 1)

    def test_drainWaitsForHeldAnswers(self) -> None:
        self.call(1)
        self.backend.calls[0].deferred.callback({"content": []})
        drained = self.session.drain(5.0, self.clock)
        self.assertNoResult(drained)
        self.commit()
        self.successResultOf(drained)
        self.assertEqual([a["id"] for a in self.take()], [1])

    def test_aClientThatLeftLeaksNothing(self) -> None:
        """Its answer is written to a closed connection (a no-op), nothing stays referenced."""
        self.call(1)
        self.backend.calls[0].deferred.callback({"content": []})
        closed = []
        self.session.caller.send = lambda message, related=None, progress_of=None: closed.append(message) or 0
        drained = self.session.drain(0.5, self.clock)
        self.clock.advance(0.5)  # the grace period ends before the trail commits
        self.successResultOf(drained)
        self.clock.advance(2.0)  # the hold ends too
        self.assertEqual([m["id"] for m in closed], [1])
        self.assertEqual((self.session.in_flight, self.session._deferreds), ({}, {}))
        self.assertEqual(self.audit._watch, {})
        self.assertEqual(self.audit._confirmed, [])


class TimeoutTests(HeldAnswersTestCase):
    def test_afterHoldTimeoutTheAnswerGoesAnyway(self) -> None:
        with capturedLogs() as events:
            self.call(1)
            self.call(2)
            self.backend.calls[0].deferred.callback({"content": []})
            self.clock.advance(1.0)
            self.backend.calls[1].deferred.callback({"content": []})
            self.clock.advance(1.0)
            self.assertEqual([a["id"] for a in self.take()], [1])
            self.assertEqual(self.audit.hold_timeouts, 1)
            self.clock.advance(1.0)
            self.assertEqual([a["id"] for a in self.take()], [2])
            self.assertEqual(self.audit.hold_timeouts, 2)
            self.commit()  # r1's batch; r2, queued while it was being written, waits for the next
            self.clock.advance(AuditLog.BATCH_DELAY)
            self.commit()
        lines = [formatEvent(e) for e in events]
        warned = [line for line in lines if "before its audit record was committed" in line]
        self.assertEqual(len(warned), 1)  # one per episode, not one per answer
        self.assertIn("within 2 s (audit.holdTimeout)", warned[0])
        self.assertIn(f"file {self.path}", warned[0])
        back = [line for line in lines if "confirms records again" in line]
        self.assertEqual(
            back,
            [
                f"the audit sink file {self.path} confirms records again; 2 answer(s) were sent before their record was committed meanwhile"
            ],
        )
        self.assertEqual(len(read_records(self.path)), 2)  # written late, still written
        self.assertEqual(self.audit._watch, {})
        # A new episode warns again.
        with capturedLogs() as events:
            self.call(3)
            self.backend.calls[2].deferred.callback({"content": []})
            self.clock.advance(2.0)
        self.assertEqual(sum("before its audit record was committed" in formatEvent(e) for e in events), 1)
        self.assertEqual(self.audit.hold_timeouts, 3)

    def test_aStoppedTrailReleasesHeldAnswers(self) -> None:
        self.call(1)
        self.backend.calls[0].deferred.callback({"content": []})
        self.audit.STOP_TIMEOUT = 1.0
        stopped = self.audit.stop()
        self.clock.advance(1.0)  # the sink never answers
        self.assertEqual([a["id"] for a in self.take()], [1])
        self.assertEqual(self.audit.hold_timeouts, 1)
        self.threads.pump()
        self.clock.advance(1.0)
        self.successResultOf(stopped)


class OffTests(HeldAnswersTestCase):
    hold = False

    def test_nothingIsHeld(self) -> None:
        self.call(1)
        self.backend.calls[0].deferred.callback({"content": []})
        [line] = self.out
        self.assertEqual([a["id"] for a in self.take()], [1])
        self.assertEqual(self.seen_at_send, [[]])  # before its record
        self.assertEqual(self.audit._watch, {})
        self.assertEqual(self.threads.pending, [])  # the record waits for its batch, as before
        self.clock.advance(AuditLog.BATCH_DELAY)
        self.commit()
        self.assertEqual(read_records(self.path)[0]["result_bytes"], len(line))


class EncodedAnswerTests(SynchronousTestCase):
    def test_encodedOnceWithItsSize(self) -> None:
        for rid, result in (
            (1, {"content": [{"type": "text", "text": "plain"}]}),
            ("a-\u00e9", {"content": [{"type": "text", "text": '\u2028 \U0001f600 "quoted"'}]}),
            (1.5, {"structuredContent": {"n": [1, 2.5, None, True]}}),
            (2, {"big": 2**70}),  # orjson refuses it: the standard library writes it
            (3, {"lone": "\ud800"}),
        ):
            message, size = _encoded_answer(rid, result)
            data = encode(message)
            self.assertEqual(json.loads(data), {"jsonrpc": "2.0", "id": rid, "result": json.loads(encode(result))})
            self.assertEqual(size, len(data), (rid, result))

    def test_hugeIdsFallBack(self) -> None:
        message, size = _encoded_answer(2**80, {"ok": 1})
        self.assertEqual(message, {"jsonrpc": "2.0", "id": 2**80, "result": {"ok": 1}})
        self.assertEqual(size, len(encode(message)))


class WrittenThroughTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.threads = SynchronousThreads()
        self.config = AuditConfig(sink="file", path=os.path.abspath("a.jsonl"), maxQueue=3)
        self.log = AuditLog(self.config, self.clock, self.threads)
        self.successResultOf(self.log.start())
        self.threads.paused = True

    def tearDown(self) -> None:
        self.threads.paused = False
        self.threads.pump()
        self.clock.advance(1)
        self.successResultOf(self.log.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def record(self, n: int, **extra: Any) -> None:
        self.log.record({"id": f"r{n}", "method": "tools/call", "decision": "allow", **extra})

    def test_nothingQueued(self) -> None:
        self.assertTrue(self.successResultOf(self.log.written_through()))

    def test_everythingBeforeIt(self) -> None:
        self.record(1)
        first = self.log.written_through()
        self.record(2)
        second = self.log.written_through()
        self.threads.pump()  # the first batch (r1) is written; r2 waits for the next
        self.assertTrue(self.successResultOf(first))
        self.assertTrue(self.successResultOf(second))  # r2 went in the batch that followed at once
        self.assertEqual(self.log.queue_depth, 0)

    def test_aDroppedRefusalHandsOnItsWaiters(self) -> None:
        """
        The queue is full: a refusal waited for is dropped; its waiters wait
        for the record queued before it (here, the one being written).
        """
        self.record(1)
        self.log.written_through()
        self.assertEqual(len(self.threads.pending), 1)  # r1 is being written
        self.log.record({"id": "deny-1", "method": "tools/call", "decision": "deny"})
        waiting = self.log.written_through()
        self.record(2)
        self.record(3)  # over maxQueue (3): deny-1 goes
        self.assertEqual(self.log.dropped, 1)
        self.assertNoResult(waiting)
        self.threads.pump()  # r1 is written: all that was queued before deny-1
        self.assertTrue(self.successResultOf(waiting))

    def test_stoppedFirst(self) -> None:
        self.record(1)
        waiting = self.log.written_through()
        self.log.STOP_TIMEOUT = 1.0
        stopped = self.log.stop()
        self.clock.advance(1.0)
        self.assertFalse(self.successResultOf(waiting))
        self.threads.pump()
        self.clock.advance(1.0)
        self.successResultOf(stopped)
        self.assertFalse(self.successResultOf(self.log.written_through()))
        self.threads.paused = False


class ReplicaTests(SynchronousTestCase):
    def test_recordsNameTheirReplica(self) -> None:
        clock, threads = Clock(), SynchronousThreads()
        config = AuditConfig(sink="file", path=os.path.abspath("r.jsonl"))
        log = AuditLog(config, clock, threads, replica="gw-1")
        self.successResultOf(log.start())
        AuditLog.BATCH_DELAY, saved = 0, AuditLog.BATCH_DELAY
        try:
            log.record({"id": "a", "method": "tools/call"})
            log.replica = "gw-2"
            log.record({"id": "b", "method": "tools/call"})
            log.replica = None
            log.record({"id": "c", "method": "tools/call"})
        finally:
            AuditLog.BATCH_DELAY = saved
        self.successResultOf(log.stop())
        records = read_records(config.path or "")
        self.assertEqual([r.get("replica") for r in records], ["gw-1", "gw-2", None])
        self.assertNotIn("replica", records[2])
        self.assertEqual(clock.getDelayedCalls(), [])


class ConfigTests(SynchronousTestCase):
    def parse(self, data: dict[str, Any]) -> tuple[AuditConfig | None, list[str]]:
        problems: list[str] = []
        return parse_audit(data, "audit", None, problems), problems

    def test_defaults(self) -> None:
        config, problems = self.parse({"sink": "file", "path": "/tmp/x.jsonl"})
        self.assertEqual(problems, [])
        assert config is not None
        self.assertEqual((config.holdAnswers, config.holdTimeout), (False, 10.0))

    def test_given(self) -> None:
        config, problems = self.parse({"sink": "file", "path": "/tmp/x.jsonl", "holdAnswers": True, "holdTimeout": 2})
        self.assertEqual(problems, [])
        assert config is not None
        self.assertEqual((config.holdAnswers, config.holdTimeout), (True, 2.0))
        self.assertEqual(attrs.evolve(config, holdTimeout=0.5).holdTimeout, 0.5)

    def test_bad(self) -> None:
        for data, problem in (
            ({"holdAnswers": "yes"}, 'audit.holdAnswers: expected true or false, got a string "yes"'),
            ({"holdTimeout": 0}, "audit.holdTimeout: expected a number from 0.001 to 3600, got 0"),
            ({"holdTimeout": "10s"}, 'audit.holdTimeout: expected a number of seconds, got a string "10s"'),
            ({"sink": "none", "holdAnswers": True}, 'audit.holdAnswers: not used with sink "none" (no record is ever committed)'),
        ):
            config, problems = self.parse({"sink": "file", "path": "/tmp/x.jsonl", **data} if "sink" not in data else data)
            self.assertIsNone(config)
            self.assertEqual(len(problems), 1, problems)
            self.assertTrue(problems[0].startswith(problem), problems)
