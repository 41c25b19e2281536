"""
Tests for L{twisted_mcp.wire.jsonrpc}: decoding and encoding at the edge, and
L{JsonRpcPeer}.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.wire.jsonrpc import (
    INTERNAL_ERROR,
    PARSE_ERROR,
    JsonRpcError,
    JsonRpcPeer,
    MessageError,
    PeerGone,
    RequestTimeout,
    decode,
    encode,
    error_response,
    id_key,
    valid_id,
)


class DecodeTests(SynchronousTestCase):
    def test_decodesOneValue(self) -> None:
        self.assertEqual(
            decode(b'{"jsonrpc":"2.0","id":1.0,"method":"x","params":{"a":[1,"\\u00e9"]}}'),
            {"jsonrpc": "2.0", "id": 1.0, "method": "x", "params": {"a": [1, "\u00e9"]}},
        )
        self.assertIs(type(decode(b'{"id":1.0}')["id"]), float)

    def assertParseError(self, data: bytes) -> MessageError:
        try:
            decode(data)
        except MessageError as e:
            self.assertEqual(e.code, PARSE_ERROR)
            self.assertIsNone(e.id)
            self.assertTrue(e.message.startswith("Parse error"), e.message)
            return e
        self.fail(f"decode({data[:40]!r}) did not raise MessageError")

    def test_rejectsNanAndInfinity(self) -> None:
        for data in [b"NaN", b"Infinity", b"-Infinity", b'{"a":NaN}', b"[1,Infinity]"]:
            self.assertParseError(data)

    def test_rejectsInvalidUtf8(self) -> None:
        for data in [b'"\xff"', b'{"a":"\xc3("}', b'"\xed\xa0\x80"', b"\x80"]:
            self.assertParseError(data)

    def test_rejectsHugeInts(self) -> None:
        self.assertParseError(b"9" * 5000)
        self.assertParseError(b'{"id":' + b"9" * 5000 + b"}")

    def test_rejectsDeepNesting(self) -> None:
        e = self.assertParseError(b"[" * 100000)
        self.assertIn("deep", e.message)
        self.assertParseError(b'{"a":' * 100000)

    def test_rejectsBadSyntax(self) -> None:
        for data in [b"", b"{", b"{'a':1}", b"1 2", b'{"a":1,}', b"nul"]:
            self.assertParseError(data)

    def test_rejectsOverflowingFloats(self) -> None:
        self.assertParseError(b"1e400")


class EncodeTests(SynchronousTestCase):
    def test_utf8Line(self) -> None:
        """One line of UTF-8 (a newline inside a string is escaped)."""
        message = {"jsonrpc": "2.0", "id": 1, "result": {"text": "\u00e9\u2603\U0001d11e\nline"}}
        data = encode(message)
        self.assertTrue(data.endswith(b"\n"))
        self.assertEqual(data.count(b"\n"), 1)
        self.assertIn("\u2603".encode(), data)
        self.assertEqual(json.loads(data.decode("utf-8")), message)

    def test_bigIntegersExact(self) -> None:
        """Beyond orjson's 64 bits, the standard library writes them exactly."""
        self.assertEqual(encode({"n": 2**70}), b'{"n":1180591620717411303424}\n')

    def test_compact(self) -> None:
        self.assertEqual(encode({"a": [1, 2]}), b'{"a":[1,2]}\n')

    def test_loneSurrogateSurvives(self) -> None:
        value = decode(b'"\\ud800"')
        self.assertEqual(value, "\ud800")
        self.assertEqual(encode(value), b'"\\ud800"\n')
        self.assertEqual(decode(encode({"s": value})[:-1]), {"s": "\ud800"})

    def test_floatIdKeepsItsType(self) -> None:
        self.assertEqual(encode({"id": 1.0}), b'{"id":1.0}\n')
        self.assertEqual(encode({"id": "1"}), b'{"id":"1"}\n')

    def test_neverEmitsNan(self) -> None:
        """No peer can send a non-finite number (decode refuses them); one
        made by the gateway's own code is written as null, never as NaN."""
        self.assertEqual(encode({"a": float("nan"), "b": float("inf")}), b'{"a":null,"b":null}\n')


class IdTests(SynchronousTestCase):
    def test_validId(self) -> None:
        for good in [0, 1, -5, 1.5, "", "abc"]:
            self.assertTrue(valid_id(good), good)
        for bad in [True, False, None, [1], {"a": 1}]:
            self.assertFalse(valid_id(bad), bad)

    def test_idKeyTellsTypesApart(self) -> None:
        keys = {id_key(1), id_key(1.0), id_key("1")}
        self.assertEqual(len(keys), 3)

    def test_errorResponse(self) -> None:
        self.assertEqual(
            error_response(3, -1, "m"), {"jsonrpc": "2.0", "id": 3, "error": {"code": -1, "message": "m"}}
        )
        self.assertEqual(error_response(None, -1, "m", {"x": 1})["error"]["data"], {"x": 1})


class PeerHarness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.sent: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.cancelled: list[tuple[int, str]] = []
        self.peer = JsonRpcPeer(
            self.sent.append,
            self.clock,
            on_request=self.requests.append,
            on_notification=self.notifications.append,
            on_cancel=lambda rid, why: self.cancelled.append((rid, why)),
        )


class PeerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = PeerHarness()
        self.peer = self.h.peer
        self.clock = self.h.clock

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_requestMessage(self) -> None:
        self.peer.request("tools/list", {"cursor": "c"}, None)
        self.peer.request("ping", None, None)
        self.assertEqual(
            self.h.sent,
            [
                {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": "c"}},
                {"jsonrpc": "2.0", "id": 2, "method": "ping"},
            ],
        )

    def test_idsMintedPerPeer(self) -> None:
        other = PeerHarness()
        self.peer.request("a", None, None)
        self.peer.request("b", None, None)
        other.peer.request("c", None, None)
        self.assertEqual([m["id"] for m in self.h.sent], [1, 2])
        self.assertEqual([m["id"] for m in other.sent], [1])

    def test_mintedBeforeSend(self) -> None:
        seen: list[tuple[int, int]] = []
        self.peer.request("a", None, None, minted=lambda rid: seen.append((rid, len(self.h.sent))))
        self.assertEqual(seen, [(1, 0)])

    def test_responseRouting(self) -> None:
        d1 = self.peer.request("a", None, 10)
        d2 = self.peer.request("b", None, 10)
        self.assertEqual(self.peer.pending_count, 2)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 2, "result": {"b": True}})
        self.assertEqual(self.successResultOf(d2), {"b": True})
        self.assertNoResult(d1)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 1, "result": [1]})
        self.assertEqual(self.successResultOf(d1), [1])
        self.assertEqual(self.peer.pending_count, 0)

    def test_errorResponse(self) -> None:
        d = self.peer.request("a", None, 10)
        self.peer.messageReceived(
            {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad", "data": {"x": 1}}}
        )
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((e.code, e.message, e.data), (-32602, "bad", {"x": 1}))
        self.assertEqual(e.to_dict(), {"code": -32602, "message": "bad", "data": {"x": 1}})

    def test_malformedErrorResponses(self) -> None:
        d1 = self.peer.request("a", None, None)
        d2 = self.peer.request("b", None, None)
        d3 = self.peer.request("c", None, None)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 1, "error": "oops"})
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 2, "error": {"code": "x", "message": "m"}})
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 3})
        for d in (d1, d2, d3):
            self.assertEqual(self.failureResultOf(d, JsonRpcError).value.code, INTERNAL_ERROR)

    def test_timeout(self) -> None:
        d = self.peer.request("slow", None, 5)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.assertEqual(self.h.cancelled, [])
        self.clock.advance(0.1)
        self.failureResultOf(d, RequestTimeout)
        self.assertEqual(self.h.cancelled, [(1, "timed out")])
        self.assertEqual(self.peer.pending_count, 0)
        # The late answer is dropped quietly.
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 1, "result": {}})

    def test_timeoutsEachAtItsOwnTime(self) -> None:
        """
        A shorter timeout after a longer one still fires on time, and the
        longer one fires later.
        """
        slow = self.peer.request("slow", None, 10)
        quick = self.peer.request("quick", None, 2)
        self.peer.request("forever", None, None)
        self.clock.advance(2)
        self.failureResultOf(quick, RequestTimeout)
        self.assertNoResult(slow)
        self.clock.advance(7.9)
        self.assertNoResult(slow)
        self.clock.advance(0.1)
        self.failureResultOf(slow, RequestTimeout)
        self.assertEqual(self.h.cancelled, [(2, "timed out"), (1, "timed out")])
        self.assertEqual(self.peer.pending_count, 1)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 3, "result": {}})

    def test_timeoutAfterEarlierAnswered(self) -> None:
        first = self.peer.request("a", None, 2)
        self.clock.advance(1)
        second = self.peer.request("b", None, 5)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 1, "result": {}})
        self.successResultOf(first)
        self.clock.advance(4.9)
        self.assertNoResult(second)
        self.clock.advance(0.1)
        self.failureResultOf(second, RequestTimeout)
        self.assertEqual(self.h.cancelled, [(2, "timed out")])

    def test_theTimerIsSetOnceTheRequestIsWritten(self) -> None:
        """
        A request's message is written before its timeout is set (the peer
        starts on it meanwhile), and the timeout still counts from when it
        was asked for.
        """
        timers_while_writing: list[int] = []
        send = self.peer._send

        def writing(message: dict[str, Any]) -> None:
            timers_while_writing.append(len(self.clock.getDelayedCalls()))
            send(message)

        self.peer._send = writing
        d = self.peer.request("slow", None, 5)
        self.assertEqual(timers_while_writing, [0])
        (timer,) = self.clock.getDelayedCalls()
        self.assertEqual(timer.getTime(), 5)
        self.clock.advance(5)
        self.failureResultOf(d, RequestTimeout)

    def test_anAnswerWhileTheRequestIsWrittenLeavesNoTimer(self) -> None:
        """A peer that answers as the request is written (a loopback) leaves no timer behind."""
        send = self.peer._send

        def answering(message: dict[str, Any]) -> None:
            send(message)
            self.peer.messageReceived({"jsonrpc": "2.0", "id": message["id"], "result": {"n": 1}})

        self.peer._send = answering
        d = self.peer.request("quick", None, 5)
        self.assertEqual(self.successResultOf(d), {"n": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_aPeerLostWhileTheRequestIsWrittenLeavesNoTimer(self) -> None:
        """A transport that finds its peer gone as it writes fails the request at once, and sets no timer."""
        send = self.peer._send

        def losing(message: dict[str, Any]) -> None:
            send(message)
            self.peer.connectionLost(ConnectionDone("gone"))

        self.peer._send = losing
        d = self.peer.request("quick", None, 5)
        self.failureResultOf(d, PeerGone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_requestFromTimeoutErrback(self) -> None:
        """
        A request made while a timeout is being delivered gets its own
        timeout.
        """
        later: list[Any] = []
        d = self.peer.request("a", None, 1)
        d.addErrback(lambda f: later.append(self.peer.request("retry", None, 3)))
        self.clock.advance(1)
        (retry,) = later
        self.clock.advance(2.9)
        self.assertNoResult(retry)
        self.clock.advance(0.1)
        self.failureResultOf(retry, RequestTimeout)

    def test_cancel(self) -> None:
        d = self.peer.request("slow", None, 5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.h.cancelled, [(1, "cancelled")])
        self.assertEqual(self.peer.pending_count, 0)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 1, "result": {}})
        self.clock.advance(10)
        self.assertEqual(self.h.cancelled, [(1, "cancelled")])

    def test_connectionLost(self) -> None:
        d1 = self.peer.request("a", None, 5)
        d2 = self.peer.request("b", None, None)
        self.peer.connectionLost(Exception("the process exited with code 1"))
        for d in (d1, d2):
            f = self.failureResultOf(d, PeerGone)
            self.assertIn("exited with code 1", str(f.value))
        self.assertEqual(self.peer.pending_count, 0)
        self.assertRaises(PeerGone, self.peer.request, "c", None, 5)
        self.assertEqual(len(self.h.sent), 2)
        self.assertEqual(self.h.cancelled, [])

    def test_fail(self) -> None:
        d = self.peer.request("a", None, 5)
        self.assertTrue(self.peer.fail(1, JsonRpcError(-1, "too big")))
        self.assertEqual(self.failureResultOf(d, JsonRpcError).value.message, "too big")
        self.assertFalse(self.peer.fail(1, JsonRpcError(-1, "again")))

    def test_requestsAndNotificationsFromPeer(self) -> None:
        self.peer.messageReceived({"jsonrpc": "2.0", "id": "s1", "method": "ping"})
        self.peer.messageReceived({"jsonrpc": "2.0", "method": "notifications/message"})
        self.assertEqual(self.h.requests, [{"jsonrpc": "2.0", "id": "s1", "method": "ping"}])
        self.assertEqual(self.h.notifications, [{"jsonrpc": "2.0", "method": "notifications/message"}])

    def test_notJsonRpc(self) -> None:
        for message in [[], "x", {"method": 5}, {"id": "1", "result": {}}, {"id": True, "result": {}}]:
            self.assertRaises(MessageError, self.peer.messageReceived, message)

    def test_unknownResponseIdDropped(self) -> None:
        d = self.peer.request("a", None, 5)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 99, "result": {}})
        self.assertNoResult(d)
        self.peer.messageReceived({"jsonrpc": "2.0", "id": 1, "result": {}})
        self.successResultOf(d)

    def test_respond(self) -> None:
        self.peer.respond(1.0, {})
        self.peer.respond_error("x", JsonRpcError(-32601, "nope"))
        self.peer.notify("n")
        self.assertEqual(
            self.h.sent,
            [
                {"jsonrpc": "2.0", "id": 1.0, "result": {}},
                {"jsonrpc": "2.0", "id": "x", "error": {"code": -32601, "message": "nope"}},
                {"jsonrpc": "2.0", "method": "n"},
            ],
        )

    def test_sendFailureLeavesNothingPending(self) -> None:
        def broken(message: dict[str, Any]) -> None:
            raise ValueError("Out of range float values are not JSON compliant")

        peer = JsonRpcPeer(broken, self.clock, print, print, lambda rid, why: None)
        try:
            peer.request("tools/call", {"x": float("inf")}, 5)
        except ValueError:
            pass
        try:
            self.assertEqual(peer.pending_count, 0)
            self.assertEqual(self.clock.getDelayedCalls(), [])
        finally:
            for call in self.clock.getDelayedCalls():
                call.cancel()
