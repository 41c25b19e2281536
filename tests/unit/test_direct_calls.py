"""
Tests for a shared stdio backend's common call answered without a Deferred
(L{twisted_mcp.backends.direct.DirectCall}, L{Backend.call_direct}): through
a client session in front of a real L{StdioBackend} with a fake child.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import capturedLogs

from twisted_mcp.backends.direct import DirectCall
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession, InFlight
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.wire.jsonrpc import JsonRpcError, encode, id_key

from .test_eras import envelope
from .test_stdio_backend import BackendTestCase

CALL = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"time__get_time","arguments":{}}}'
RESULT = {"content": [{"type": "text", "text": "12:00"}], "isError": False}


class WriteFailed(Exception):
    """The client's transport could not take a message."""


class DirectCallTestCase(BackendTestCase):
    """A gateway and one client session in front of a stdio backend (as
    L{tests.unit.test_stdio_backend.ThroughGatewayTests} sets them up)."""

    def setUp(self) -> None:
        super().setUp()
        self.out: list[bytes] = []
        #: Set: the client's next write raises (once).
        self.write_fails = False

    def through(self, up: bool = True, **overrides: Any) -> None:
        """The backend (up, or still discovering), the gateway and an initialized session."""
        if up:
            self.backend, self.spawn = self.started(**overrides)
        else:
            self.backend = self.make(**overrides)
            self.backend.startService()
            self.spawn = self.last
        self.gateway = Gateway([self.backend], "__", self.clock, 1.0)
        self.gateway.start()
        self.session = ClientSession(self.gateway, line_caller(self.write, "stdio"))
        deliver(self.session, b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}')
        del self.out[:]

    def tearDown(self) -> None:
        self.stop(self.backend)

    def write(self, data: bytes) -> None:
        if self.write_fails:
            self.write_fails = False
            raise WriteFailed("the client went away")
        self.out.append(data)

    def take(self) -> list[Any]:
        messages = [json.loads(line) for line in self.out]
        del self.out[:]
        return messages

    def to_backend(self) -> list[dict[str, Any]]:
        """What the child got, after initialize and the first tools/list."""
        return self.spawn.transport.messages()[3:]

    def pending(self) -> list[Any]:
        """What the backend's peer answers its pending requests into."""
        protocol: Any = self.spawn.protocol
        return [answer for answer, _ in protocol.session.peer._pending.values()]

    def request(self, rid: int) -> InFlight:
        return self.session.in_flight[id_key(rid)]

    def cancelled(self, rid: int, why: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid, "reason": why}}


class CommonCallTests(DirectCallTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.through()

    def test_pendingAsDirectCall(self) -> None:
        """The common call is pending in the backend's peer as a DirectCall
        (no Deferred anywhere), is answered to the client with the client's
        own id, and its latency is counted."""
        deliver(self.session, CALL % 5)
        (answer,) = self.pending()
        self.assertIs(type(answer), DirectCall)
        self.assertIs(self.session._deferreds[id_key(5)], answer)
        sent = self.to_backend()[-1]
        self.assertEqual((sent["id"], sent["params"]), (answer.rid, {"name": "get_time", "arguments": {}}))
        self.assertEqual(self.session.backend_calls, {"time": 1})
        self.assertEqual(self.take(), [])
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 5, "result": RESULT}])
        self.assertEqual(self.backend.latency.count, 1)
        self.assertEqual((self.session.in_flight, self.session._deferreds, self.session.backend_calls), ({}, {}, {}))
        self.assertEqual(self.gateway.requests.get(("tools/call", "ok", "")), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_latencyCountsEveryOutcome(self) -> None:
        """Results, errors and timeouts of direct calls each count once in
        the backend's latency histogram."""
        deliver(self.session, CALL % 1)
        deliver(self.session, CALL % 2)
        deliver(self.session, CALL % 3)
        first, second, third = self.pending()
        self.spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "id": first.rid, "result": {}}))
        self.assertEqual(self.backend.latency.count, 1)
        self.spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "id": second.rid, "error": {"code": -1, "message": "no"}}))
        self.assertEqual(self.backend.latency.count, 2)
        self.clock.advance(5.0)
        self.assertEqual(self.backend.latency.count, 3)
        self.assertEqual(sum(self.backend.latency.counts), 3)
        self.assertEqual([a["id"] for a in self.take()], [1, 2, 3])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backendTimeout(self) -> None:
        """No answer within callTimeout: the client gets BACKEND_TIMEOUT (the
        transport error translated as Backend.call translates it) and the
        backend is told the request was cancelled ("timed out"); its late
        answer goes nowhere."""
        deliver(self.session, CALL % 5)
        (answer,) = self.pending()
        self.clock.advance(4.9)
        self.assertEqual(self.take(), [])
        self.clock.advance(0.1)
        self.assertEqual(
            self.take(),
            [
                {
                    "jsonrpc": "2.0",
                    "id": 5,
                    "error": {
                        "code": errors.BACKEND_TIMEOUT,
                        "message": "backend 'time' did not answer tools/call within 5 s; the call was cancelled",
                        "data": {"backend": "time", "timeout": 5.0},
                    },
                }
            ],
        )
        self.assertEqual(self.to_backend()[-1], self.cancelled(answer.rid, "timed out"))
        self.assertEqual(self.backend.latency.count, 1)
        self.assertEqual(self.session.in_flight, {})
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backendErrorRelayedUnchanged(self) -> None:
        """The backend's own error reaches the client as it sent it, a code
        of the gateway's included (no data added)."""
        deliver(self.session, CALL % 5)
        self.reply(self.spawn, "tools/call", error={"code": -32602, "message": "bad tz", "data": {"tz": "Mars"}})
        deliver(self.session, CALL % 6)
        self.reply(self.spawn, "tools/call", error={"code": errors.BACKEND_TIMEOUT, "message": "mine"})
        self.assertEqual(
            self.take(),
            [
                {"jsonrpc": "2.0", "id": 5, "error": {"code": -32602, "message": "bad tz", "data": {"tz": "Mars"}}},
                {"jsonrpc": "2.0", "id": 6, "error": {"code": errors.BACKEND_TIMEOUT, "message": "mine"}},
            ],
        )
        self.assertEqual(self.backend.latency.count, 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientCancelCountsAndFreesTheId(self) -> None:
        """A call the client cancelled: counted in the latency histogram,
        never answered, no longer in flight to the backend (its id free
        for the next request, answered normally)."""
        deliver(self.session, CALL % 5)
        deliver(self.session, b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}')
        self.assertEqual(self.backend.latency.count, 1)
        self.assertEqual((self.session.in_flight, self.session.backend_calls), ({}, {}))
        self.assertEqual(self.gateway.requests.get(("tools/call", "cancelled", "")), 1)
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [])
        deliver(self.session, CALL % 5)
        self.reply(self.spawn, "tools/call", {"content": []})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 5, "result": {"content": []}}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drainGraceExpiry(self) -> None:
        """A call still in flight when the drain's grace ends is answered
        with the shutting-down error, and the backend is told."""
        deliver(self.session, CALL % 5)
        (answer,) = self.pending()
        drained = self.session.drain(2.0, self.clock)
        self.assertNoResult(drained)
        self.clock.advance(1.9)
        self.assertEqual(self.take(), [])
        self.clock.advance(0.1)
        self.assertEqual(
            self.take(),
            [
                {
                    "jsonrpc": "2.0",
                    "id": 5,
                    "error": {
                        "code": errors.GATEWAY_SHUTTING_DOWN,
                        "message": "the gateway is shutting down; the call was cancelled",
                    },
                }
            ],
        )
        self.assertEqual(self.to_backend()[-1], self.cancelled(answer.rid, "cancelled"))
        self.successResultOf(drained)
        self.assertEqual(self.pending(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drainAnsweredInTime(self) -> None:
        """A call answered within the grace: answered, the drain done, its timer gone."""
        deliver(self.session, CALL % 5)
        drained = self.session.drain(2.0, self.clock)
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 5, "result": RESULT}])
        self.successResultOf(drained)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_receiverRaisingIsLoggedAndBackendKeepsWorking(self) -> None:
        """The session failing to take a result (its client's write raises)
        is logged with the backend, method and request; the backend goes on
        answering the next calls."""
        deliver(self.session, CALL % 5)
        (answer,) = self.pending()
        self.write_fails = True
        with capturedLogs() as events:
            self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(len(self.flushLoggedErrors(WriteFailed)), 1)
        (event,) = [e for e in events if "could not be handled" in e.get("log_format", "")]
        self.assertEqual((event["backend"], event["method"], event["rid"]), ("time", "tools/call", answer.rid))
        self.assertEqual(self.session.in_flight, {})
        deliver(self.session, CALL % 6)
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 6, "result": RESULT}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failedReceiverRaisingIsLogged(self) -> None:
        """As above for an error (a timeout): logged, and the backend answers the next call."""
        deliver(self.session, CALL % 5)
        (answer,) = self.pending()
        self.write_fails = True
        with capturedLogs() as events:
            self.clock.advance(5.0)
        self.assertEqual(len(self.flushLoggedErrors(WriteFailed)), 1)
        (event,) = [e for e in events if "could not be handled" in e.get("log_format", "")]
        self.assertEqual((event["backend"], event["rid"]), ("time", answer.rid))
        self.assertEqual(self.to_backend()[-1], self.cancelled(answer.rid, "timed out"))
        deliver(self.session, CALL % 6)
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 6, "result": RESULT}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def held(self, rid: int) -> tuple[InFlight, Deferred[Any], Deferred[Any]]:
        """The call C{rid} moved elsewhere as a held call is
        (L{twisted_mcp.dispatch.held_calls.HeldCalls.adopt}): the Deferred
        tracked() gives for it, and the waiter it is now answered from."""
        request = self.request(rid)
        backend_call = self.session.tracked(request)
        assert backend_call is not None
        self.assertIsInstance(backend_call, Deferred)
        self.assertIs(self.session.tracked(request), backend_call)  # made once
        waiter: Deferred[Any] = Deferred()
        self.session.retrack(request, waiter)
        return request, backend_call, waiter

    def test_trackedFiresAfterRetrack(self) -> None:
        """tracked() gives a Deferred for a direct call; once the request is
        answered from elsewhere (retrack), the backend's result fires that
        Deferred and nothing goes to the client until the new source fires."""
        deliver(self.session, CALL % 5)
        request, backend_call, waiter = self.held(5)
        self.assertNoResult(backend_call)
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.successResultOf(backend_call), RESULT)
        self.assertEqual(self.take(), [])
        self.assertIs(self.session.in_flight[id_key(5)], request)
        self.assertEqual(self.backend.latency.count, 1)
        waiter.callback({"content": [], "held": True})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 5, "result": {"content": [], "held": True}}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_trackedFailsTranslatedAfterRetrack(self) -> None:
        """The backend's timeout reaches tracked()'s Deferred translated
        (BACKEND_TIMEOUT), not the client."""
        deliver(self.session, CALL % 5)
        request, backend_call, waiter = self.held(5)
        self.clock.advance(5.0)
        e = self.failureResultOf(backend_call, JsonRpcError).value
        self.assertEqual((e.code, e.data), (errors.BACKEND_TIMEOUT, {"backend": "time", "timeout": 5.0}))
        self.assertEqual(self.take(), [])
        waiter.errback(e)
        self.assertEqual(self.take()[0]["error"]["code"], errors.BACKEND_TIMEOUT)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancellingTrackedTellsBackend(self) -> None:
        """Cancelling tracked()'s Deferred cancels the call: the backend is
        told, the Deferred fails with CancelledError, the client is not
        answered from it."""
        deliver(self.session, CALL % 5)
        (answer,) = self.pending()
        request, backend_call, waiter = self.held(5)
        backend_call.cancel()
        self.failureResultOf(backend_call, CancelledError)
        self.assertEqual(self.to_backend()[-1], self.cancelled(answer.rid, "cancelled"))
        self.assertEqual(self.pending(), [])
        self.assertEqual(self.take(), [])
        self.assertIs(self.session.in_flight[id_key(5)], request)
        self.reply(self.spawn, "tools/call", RESULT)  # late: dropped
        self.assertNoResult(waiter)
        waiter.callback({"content": []})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 5, "result": {"content": []}}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_busyRefusesDirectCalls(self) -> None:
        """maxQueuedBytes waiting for the child refuses the common call at
        once (nothing written to the child); below it, the call goes."""
        self.stop(self.backend)
        self.through(maxQueuedBytes=4096)
        queued = [4096]
        self.spawn.transport.queued = lambda: queued[0]  # type: ignore[attr-defined]
        before = len(self.spawn.transport.written)
        deliver(self.session, CALL % 5)
        (refused,) = self.take()
        self.assertEqual(refused["id"], 5)
        self.assertEqual(refused["error"]["code"], errors.BUSY)
        self.assertEqual(refused["error"]["data"], {"backend": "time", "limit": 4096})
        self.assertIn("'time' is busy", refused["error"]["message"])
        self.assertEqual(len(self.spawn.transport.written), before)
        self.assertEqual((self.session.in_flight, self.session.backend_calls, self.pending()), ({}, {}, []))
        queued[0] = 4095
        deliver(self.session, CALL % 6)
        (answer,) = self.pending()
        self.assertIs(type(answer), DirectCall)
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 6, "result": RESULT}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_progressTokenTakesTheDeferredPath(self) -> None:
        """A call with a progressToken is not a direct call."""
        deliver(
            self.session,
            b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"time__get_time","_meta":{"progressToken":"tok"}}}',
        )
        (answer,) = self.pending()
        self.assertIsInstance(answer, Deferred)
        self.assertIsInstance(self.session._deferreds[id_key(5)], Deferred)
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 5, "result": RESULT}])
        self.assertEqual(self.backend.latency.count, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_activePolicySentAtOnceIsDirect(self) -> None:
        """Under an active policy, a call sent at once (no wait for a slot) is a direct call too
        (test_direct_policy.py: one sent after a wait)."""
        self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        deliver(self.session, CALL % 5)
        (answer,) = self.pending()
        self.assertIs(type(answer), DirectCall)
        self.assertIs(self.session._deferreds[id_key(5)], answer)
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 5, "result": RESULT}])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class BeforeReadyTests(DirectCallTestCase):
    """A call that arrives before the first discovery finished waits for
    it, then goes as a direct call, answered through its Deferred."""

    def setUp(self) -> None:
        super().setUp()
        self.through(up=False)
        self.assertFalse(self.gateway.ready)

    def waiting_call(self, rid: int) -> DirectCall:
        deliver(self.session, CALL % rid)
        self.assertEqual(self.take(), [])
        self.assertIsInstance(self.session._deferreds[id_key(rid)], Deferred)
        self.bring_up(self.backend)
        self.assertTrue(self.gateway.ready)
        # initialize waited for the discovery too; the call is not answered yet.
        self.assertEqual([m["id"] for m in self.take()], [0])
        (answer,) = self.pending()
        self.assertIs(type(answer), DirectCall)
        return answer

    def test_answeredThroughTheDeferred(self) -> None:
        self.waiting_call(5)
        self.assertEqual(self.take(), [])
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 5, "result": RESULT}])
        self.assertEqual(self.backend.latency.count, 1)
        self.assertEqual((self.session.in_flight, self.session._deferreds), ({}, {}))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutThroughTheDeferred(self) -> None:
        answer = self.waiting_call(5)
        self.clock.advance(5.0)
        (error,) = self.take()
        self.assertEqual(error["id"], 5)
        self.assertEqual(error["error"]["code"], errors.BACKEND_TIMEOUT)
        self.assertEqual(error["error"]["data"], {"backend": "time", "timeout": 5.0})
        self.assertEqual(self.to_backend()[-1], self.cancelled(answer.rid, "timed out"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientCancelReachesBackend(self) -> None:
        answer = self.waiting_call(5)
        deliver(self.session, b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}')
        self.assertEqual(self.to_backend()[-1], self.cancelled(answer.rid, "cancelled"))
        self.assertEqual(self.pending(), [])
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [])
        self.assertEqual(self.session.in_flight, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HeldDirectCallTests(DirectCallTestCase):
    """A stateless-era client's call to the stdio backend goes as a direct
    call; when the child asks the client something during it, the call is
    held (L{twisted_mcp.dispatch.held_calls.HeldCalls.adopt}), and the
    backend's answer reaches the client's retry through tracked()'s Deferred."""

    def setUp(self) -> None:
        super().setUp()
        self.through()
        self.modern = ClientSession(self.gateway, line_caller(self.write, "modern"))

    def modern_call(self, rid: int, **more: Any) -> None:
        meta = envelope(**{"io.modelcontextprotocol/clientCapabilities": {"roots": {}}})
        params = {"name": "time__get_time", "arguments": {}, "_meta": meta, **more}
        self.modern.message_received({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})

    def test_heldCallAnsweredFromTheDirectCall(self) -> None:
        self.modern_call(1)
        (answer,) = self.pending()
        self.assertIs(type(answer), DirectCall)
        self.spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "id": "s1", "method": "roots/list"}))
        self.clock.advance(0.01)
        (asked,) = self.take()
        self.assertEqual((asked["id"], asked["result"]["resultType"]), (1, "input_required"))
        token = asked["result"]["requestState"]
        self.modern_call(2, inputResponses={"r1": {"roots": []}}, requestState=token)
        self.assertEqual(self.to_backend()[-1], {"jsonrpc": "2.0", "id": "s1", "result": {"roots": []}})
        self.assertEqual(self.take(), [])
        self.assertIs(self.pending()[0], answer)  # the same call, not sent again
        self.reply(self.spawn, "tools/call", RESULT)
        (final,) = self.take()
        self.assertEqual(final["id"], 2)
        self.assertEqual((final["result"]["resultType"], final["result"]["content"]), ("complete", RESULT["content"]))
        self.assertEqual(self.backend.latency.count, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancellingTheRetryCancelsTheDirectCall(self) -> None:
        """The client cancelling the held call's retry cancels the backend's
        call through tracked()'s Deferred: the child is told."""
        self.modern_call(1)
        (answer,) = self.pending()
        self.spawn.protocol.outReceived(encode({"jsonrpc": "2.0", "id": "s1", "method": "roots/list"}))
        self.clock.advance(0.01)
        token = self.take()[0]["result"]["requestState"]
        self.modern_call(2, inputResponses={"r1": {"roots": []}}, requestState=token)
        self.modern.message_received({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}})
        self.assertEqual(self.to_backend()[-1], self.cancelled(answer.rid, "cancelled"))
        self.assertEqual(self.pending(), [])
        self.reply(self.spawn, "tools/call", RESULT)
        self.assertEqual(self.take(), [])
        self.assertEqual((self.modern.in_flight, len(self.gateway.reverse.held)), ({}, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])
