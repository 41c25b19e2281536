"""
A policy's call to a shared stdio backend is answered directly (no
Deferred) when it is sent at once, and through the direct call's Deferred
when it is sent after a wait for a concurrency slot (L{Call.dispatch}).
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred

from twisted_mcp.backends.direct import DirectCall
from twisted_mcp.frontends.stream import deliver
from twisted_mcp.mcp import errors

from .test_direct_calls import DirectCallTestCase
from .test_policy import one_slot_policy
from .test_stdio_backend import exited


class PolicyDirectTests(DirectCallTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.through()
        self.audit = one_slot_policy(self.gateway, self.clock, "time", 5)

    def call(self, rid: int) -> None:
        deliver(self.session, b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"time__get_time"}}' % rid)

    def test_sentAtOnceAndAfterAWait(self) -> None:
        self.call(1)
        self.call(2)  # waits for the only slot
        (first,) = self.pending()
        self.assertIs(type(first), DirectCall)
        self.reply(self.spawn, "tools/call", {"content": [{"type": "text", "text": "one"}]})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "one"}]}}])
        # The second, sent from the slot's Deferred once the first was
        # answered, is a direct call too, waited for through its Deferred.
        (second,) = self.pending()
        self.assertIs(type(second), DirectCall)
        self.reply(self.spawn, "tools/call", {"content": [{"type": "text", "text": "two"}]})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "two"}]}}])
        self.assertEqual([r["outcome"] for r in self.audit.records], ["ok", "ok"])
        self.assertEqual(self.session.in_flight, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waitedCallFailsAndIsAudited(self) -> None:
        self.call(1)
        self.call(2)
        self.reply(self.spawn, "tools/call", {"content": []})
        self.take()
        self.reply(self.spawn, "tools/call", error={"code": -32000, "message": "the tool's own complaint"})
        (answer,) = self.take()
        self.assertEqual(answer, {"jsonrpc": "2.0", "id": 2, "error": {"code": -32000, "message": "the tool's own complaint"}})
        self.assertEqual([r["outcome"] for r in self.audit.records], ["ok", "error"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waitedCallCancelledByTheClient(self) -> None:
        self.call(1)
        self.call(2)
        self.reply(self.spawn, "tools/call", {"content": []})
        self.take()
        rid = self.spawn.transport.messages()[-1]["id"]
        deliver(self.session, b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}')
        self.assertEqual(
            self.spawn.transport.messages()[-1],
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid, "reason": "cancelled"}},
        )
        self.assertEqual(self.pending(), [])
        self.assertEqual(self.take(), [])
        self.assertEqual(self.session.in_flight, {})

    def test_waitedCallTimesOut(self) -> None:
        self.call(1)
        self.call(2)
        self.reply(self.spawn, "tools/call", {"content": []})
        self.take()
        self.clock.advance(5.0)  # the backend's callTimeout
        (answer,) = self.take()
        self.assertEqual(answer["id"], 2)
        self.assertEqual(answer["error"]["code"], errors.BACKEND_TIMEOUT)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_progressIsNotDirect(self) -> None:
        deliver(
            self.session,
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"time__get_time","_meta":{"progressToken":"t"}}}',
        )
        (first,) = self.pending()
        self.assertIsInstance(first, Deferred)
        self.reply(self.spawn, "tools/call", {"content": []})
        self.assertEqual(self.take()[0]["id"], 1)

    def test_aQueuedCallWhenTheChildExitsIsToldItWentAway(self) -> None:
        """A call let go by a freed slot while the child's exit fails the calls in flight finds the backend gone, and says so."""
        self.call(1)
        self.call(2)
        self.spawn.protocol.processExited(exited(3))
        answers = {m["id"]: m for m in self.take()}
        self.assertEqual(answers[1]["error"]["code"], errors.BACKEND_LOST)
        self.assertEqual(answers[2]["error"]["code"], errors.BACKEND_UNAVAILABLE)
        self.assertEqual(answers[2]["error"]["message"], "backend 'time' went away (its connection was lost)")
        self.assertNotIn("is up", json.dumps(answers))
