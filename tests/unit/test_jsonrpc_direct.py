"""
Tests for L{twisted_mcp.wire.jsonrpc.JsonRpcPeer.send_request} and
L{JsonRpcPeer.cancel}: a request whose outcome goes to an object of the
caller's (an L{twisted_mcp.wire.jsonrpc.Answer}) instead of a Deferred.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.wire.jsonrpc import JsonRpcError, JsonRpcPeer, PeerGone, RequestTimeout

from .test_jsonrpc import PeerHarness


class RecordingAnswer:
    """An L{twisted_mcp.wire.jsonrpc.Answer} that records what it is told."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.errors: list[Any] = []

    def callback(self, result: Any) -> None:
        self.results.append(result)

    def errback(self, reason: Any) -> None:
        self.errors.append(reason)

    @property
    def told(self) -> int:
        return len(self.results) + len(self.errors)


class SendRequestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = PeerHarness()
        self.peer = self.h.peer
        self.clock = self.h.clock

    def test_resultToCallback(self) -> None:
        """The request is sent as L{JsonRpcPeer.request} sends it; its result
        goes to the answer's C{callback}, once, and only when it arrives."""
        answer = RecordingAnswer()
        rid = self.peer.send_request("tools/call", {"name": "t"}, 5, answer)
        self.assertEqual(self.h.sent, [{"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "t"}}])
        self.assertEqual(rid, 1)
        self.assertEqual(answer.told, 0)  # never answered from the call that sent it
        self.assertTrue(self.peer.is_pending(rid))
        self.peer.messageReceived({"jsonrpc": "2.0", "id": rid, "result": {"content": []}})
        self.assertEqual((answer.results, answer.errors), ([{"content": []}], []))
        self.assertEqual(self.peer.pending_count, 0)
        # A second answer with the same id is dropped.
        self.peer.messageReceived({"jsonrpc": "2.0", "id": rid, "result": {"again": True}})
        self.assertEqual(answer.told, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noParams(self) -> None:
        rid = self.peer.send_request("ping", None, None, RecordingAnswer())
        self.assertEqual(self.h.sent, [{"jsonrpc": "2.0", "id": rid, "method": "ping"}])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no timeout, no timer
        self.peer.messageReceived({"jsonrpc": "2.0", "id": rid, "result": {}})

    def test_errorToErrback(self) -> None:
        """The peer's error reaches C{errback} as a L{JsonRpcError} (an
        exception, not a Failure), code, message and data as sent."""
        answer = RecordingAnswer()
        rid = self.peer.send_request("tools/call", None, 5, answer)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "bad", "data": {"x": 1}}})
        self.assertEqual(answer.results, [])
        (e,) = answer.errors
        self.assertIsInstance(e, JsonRpcError)
        self.assertEqual((e.code, e.message, e.data), (-32602, "bad", {"x": 1}))
        self.assertEqual(self.h.cancelled, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout(self) -> None:
        """Past its timeout the request is forgotten, C{on_cancel} is told
        "timed out" and the answer's C{errback} gets L{RequestTimeout}."""
        answer = RecordingAnswer()
        rid = self.peer.send_request("slow", None, 5, answer)
        self.clock.advance(4.9)
        self.assertEqual((answer.told, self.h.cancelled), (0, []))
        self.clock.advance(0.1)
        self.assertEqual(answer.results, [])
        (e,) = answer.errors
        self.assertIsInstance(e, RequestTimeout)
        self.assertEqual(self.h.cancelled, [(rid, "timed out")])
        self.assertEqual(self.peer.pending_count, 0)
        # The late answer is dropped quietly.
        self.peer.messageReceived({"jsonrpc": "2.0", "id": rid, "result": {}})
        self.assertEqual(answer.told, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutsShareTheSweeperWithRequest(self) -> None:
        """A direct request's shorter timeout moves the one timer a
        Deferred request set: each times out at its own time."""
        d = self.peer.request("slow", None, 10)
        answer = RecordingAnswer()
        rid = self.peer.send_request("quick", None, 2, answer)
        self.clock.advance(2)
        self.assertEqual(len(answer.errors), 1)
        self.assertIsInstance(answer.errors[0], RequestTimeout)
        self.assertNoResult(d)
        self.clock.advance(8)
        self.failureResultOf(d, RequestTimeout)
        self.assertEqual(self.h.cancelled, [(rid, "timed out"), (1, "timed out")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectionLost(self) -> None:
        """Losing the connection fails the answer with L{PeerGone}; new
        requests are refused at once, nothing sent, no id taken."""
        answer = RecordingAnswer()
        self.peer.send_request("a", None, 5, answer)
        self.peer.connectionLost(Exception("the process exited with code 1"))
        (e,) = answer.errors
        self.assertIsInstance(e, PeerGone)
        self.assertIn("exited with code 1", str(e))
        self.assertEqual(self.peer.pending_count, 0)
        later = RecordingAnswer()
        self.assertRaises(PeerGone, self.peer.send_request, "b", None, 5, later)
        self.assertEqual((len(self.h.sent), later.told, self.h.cancelled), (1, 0, []))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        """L{JsonRpcPeer.cancel} forgets a pending request and tells
        C{on_cancel} "cancelled": True once, then False; the answer itself is
        not told (its canceller's job), nor told of a late answer."""
        answer = RecordingAnswer()
        rid = self.peer.send_request("slow", None, 5, answer)
        self.assertTrue(self.peer.cancel(rid))
        self.assertEqual(self.h.cancelled, [(rid, "cancelled")])
        self.assertEqual(self.peer.pending_count, 0)
        self.assertFalse(self.peer.cancel(rid))
        self.assertEqual(self.h.cancelled, [(rid, "cancelled")])
        self.peer.messageReceived({"jsonrpc": "2.0", "id": rid, "result": {}})
        self.clock.advance(10)
        self.assertEqual(answer.told, 0)
        self.assertEqual(self.h.cancelled, [(rid, "cancelled")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelUnknownOrAnswered(self) -> None:
        """Nothing to cancel: an id never sent, or one already answered."""
        self.assertFalse(self.peer.cancel(7))
        answer = RecordingAnswer()
        rid = self.peer.send_request("a", None, 5, answer)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": rid, "result": {}})
        self.assertFalse(self.peer.cancel(rid))
        self.assertEqual(self.h.cancelled, [])
        self.assertEqual(answer.results, [{}])

    def test_cancelStopsTheSweeper(self) -> None:
        """Cancelling the last request with a timeout cancels the timer;
        while another one waits, the timer stays."""
        first = self.peer.send_request("a", None, 5, RecordingAnswer())
        second = self.peer.send_request("b", None, 5, RecordingAnswer())
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertTrue(self.peer.cancel(first))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertTrue(self.peer.cancel(second))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answerStopsTheSweeper(self) -> None:
        rid = self.peer.send_request("a", None, 5, RecordingAnswer())
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": rid, "result": {}})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failOne(self) -> None:
        """L{JsonRpcPeer.fail} (an unreadable answer) reaches the answer's C{errback}."""
        answer = RecordingAnswer()
        rid = self.peer.send_request("a", None, 5, answer)
        self.assertTrue(self.peer.fail(rid, JsonRpcError(-1, "too big")))
        self.assertEqual([e.message for e in answer.errors], ["too big"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sendFailureLeavesNothingPending(self) -> None:
        """A send that raises: the error is raised to the caller, nothing is
        pending, no timer is left, the answer is not told."""

        def broken(message: dict[str, Any]) -> None:
            raise ValueError("Out of range float values are not JSON compliant")

        cancelled: list[tuple[int, str]] = []
        peer = JsonRpcPeer(broken, self.clock, print, print, lambda rid, why: cancelled.append((rid, why)))
        answer = RecordingAnswer()
        self.assertRaises(ValueError, peer.send_request, "tools/call", {"x": float("inf")}, 5, answer)
        self.assertEqual(peer.pending_count, 0)
        self.assertFalse(peer.is_pending(1))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual((answer.told, cancelled), (0, []))

    def test_idsSharedWithRequest(self) -> None:
        """send_request and request mint from one sequence: no id is used
        twice, and each answer goes where it belongs."""
        d1 = self.peer.request("a", None, 5)
        first = RecordingAnswer()
        r2 = self.peer.send_request("b", None, 5, first)
        d3 = self.peer.request("c", None, 5)
        second = RecordingAnswer()
        r4 = self.peer.send_request("d", None, 5, second)
        ids = [m["id"] for m in self.h.sent]
        self.assertEqual(ids, [1, 2, 3, 4])
        self.assertEqual((r2, r4), (2, 4))
        for rid in (4, 3, 2, 1):
            self.peer.messageReceived({"jsonrpc": "2.0", "id": rid, "result": {"id": rid}})
        self.assertEqual(self.successResultOf(d1), {"id": 1})
        self.assertEqual(first.results, [{"id": 2}])
        self.assertEqual(self.successResultOf(d3), {"id": 3})
        self.assertEqual(second.results, [{"id": 4}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_requestCancelGoesThroughCancel(self) -> None:
        """A Deferred request's cancel still tells C{on_cancel} once, and
        L{JsonRpcPeer.cancel} of its id after that is False."""
        d = self.peer.request("a", None, 5)
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(self.h.cancelled, [(1, "cancelled")])
        self.assertFalse(self.peer.cancel(1))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SweepTests(SynchronousTestCase):
    """The one timer per peer is always for the earliest deadline."""

    def test_aRequestSentByATimedOutOnesErrbackDoesNotDelayTheOthers(self) -> None:
        h = PeerHarness()
        peer, clock = h.peer, h.clock
        later = RecordingAnswer()

        class SendsOnTimeout(RecordingAnswer):
            def errback(self, reason: Any) -> None:
                super().errback(reason)
                # As a freed concurrency slot lets a queued call go.
                peer.send_request("tools/call", None, 5, later)

        first = SendsOnTimeout()
        peer.send_request("tools/call", None, 5, first)
        clock.advance(1)
        second = RecordingAnswer()
        peer.send_request("tools/call", None, 5, second)
        clock.advance(4)  # t=5: the first times out, its errback sends another (due at t=10)
        self.assertEqual(len(first.errors), 1)
        self.assertEqual(second.told, 0)
        clock.advance(1)  # t=6: the second's deadline
        self.assertEqual(len(second.errors), 1)
        self.assertIsInstance(second.errors[0], RequestTimeout)
        self.assertEqual(later.told, 0)
        clock.advance(4)  # t=10
        self.assertEqual(len(later.errors), 1)
        self.assertEqual(clock.getDelayedCalls(), [])
