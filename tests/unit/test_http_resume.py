"""
Tests for the resumption of a Streamable HTTP backend's event streams
(L{twisted_mcp.backends.http}): a call's stream that ends or breaks before
its response is continued with a GET and C{Last-Event-ID} after the
server's C{retry} delay, as the conformance scenario C{sse-retry} expects;
only a stream that cannot be resumed fails its call.  The session's own
stream (GET) is resumed the same way.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import capturedLogs

from twisted_mcp.backends.base import State
from twisted_mcp.backends.http import MAX_RESUME_ATTEMPTS, MAX_RETRY, HttpBackend
from twisted_mcp.mcp import errors
from twisted_mcp.wire.jsonrpc import JsonRpcError

from .http_fakes import FakeRequest, FakeResponse, broken
from .test_http_backend import SSE, HttpTestCase, result

PRIMING = b"id: e1\nretry: 500\ndata: \n\n"


def progress(request: FakeRequest, n: int, event_id: str) -> bytes:
    return (
        f"id: {event_id}\nevent: message\n"
        f'data: {{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{request.rpc_id},"progress":{n}}}}}\n\n'
    ).encode()


class CallStreamTests(HttpTestCase):
    def call(self, backend: HttpBackend, **kwargs: Any) -> tuple[Any, FakeRequest, FakeResponse]:
        params: dict[str, Any] = {"name": "get_time"}
        if "on_progress" in kwargs:
            params["_meta"] = {"progressToken": "client-token"}
        d = backend.call("tools/call", params, **kwargs)
        request = self.pending("tools/call")
        return d, request, request.respond(200, SSE)

    def test_gracefulCloseResumedAfterRetry(self) -> None:
        """The scenario of the conformance suite: a priming event (an id and
        C{retry: 500}), the stream closed gracefully; the answer comes on the
        GET that resumes it, sent 500 ms later with the last event id."""
        backend, _ = self.started()
        d, call, response = self.call(backend)
        response.push(PRIMING)
        response.end()
        self.assertNoResult(d)
        self.clock.advance(0.499)
        self.assertEqual(self.gets()[1:], [])
        self.clock.advance(0.001)
        get = self.pending(method="GET")
        self.assertEqual(get.header("last-event-id"), "e1")
        self.assertEqual(get.header("accept"), "text/event-stream")
        self.assertCommonHeaders(get)
        resumed = get.respond(200, SSE)
        resumed.push(b"id: e2\nretry: 500\ndata: \n\n")
        resumed.push_event(result(call, {"content": []}))
        self.assertEqual(self.successResultOf(d), {"content": []})
        # The server may keep the GET open: it is closed once the call is answered.
        self.assertEqual(resumed.stopped, 1)
        self.end_aborted()
        self.assertEqual(backend.run.exchanges, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_cutMidAnswerResumedWithDefaultDelay(self) -> None:
        """A connection dropped in the middle of an event: the event cut off
        does not count, progress reaches the call on both connections, and
        without a C{retry} the default delay (1 s) applies."""
        backend, _ = self.started()
        seen: list[Any] = []
        d, call, response = self.call(backend, on_progress=seen.append)
        response.push(progress(call, 1, "p1"))
        response.push(b"id: p2\ndata: {\"jsonrpc\":")
        response.end(broken())
        self.assertEqual(len(seen), 1)
        self.clock.advance(0.999)
        self.assertEqual(self.gets()[1:], [])
        self.clock.advance(0.001)
        get = self.pending(method="GET")
        self.assertEqual(get.header("last-event-id"), "p1")
        resumed = get.respond(200, SSE)
        resumed.push(progress(call, 2, "p2"))
        self.assertEqual(len(seen), 2)
        resumed.push_event(result(call, {"content": [{"type": "text", "text": "12:00"}]}))
        resumed.end()
        self.assertEqual(self.successResultOf(d), {"content": [{"type": "text", "text": "12:00"}]})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_noEventIdCannotBeResumed(self) -> None:
        backend, _ = self.started()
        d, call, response = self.call(backend)
        response.push(b"data: \n\n")
        response.end(broken())
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_LOST)
        self.assertIn("broke before the response", e.message)
        self.assertIn("cannot be resumed: the server gave its events no id", e.message)
        self.clock.advance(60)
        self.assertEqual(len(self.gets()), 1)  # only the session's stream
        self.stop(backend)

    def test_resumeRefused(self) -> None:
        backend, _ = self.started()
        d, call, response = self.call(backend)
        response.push(PRIMING)
        response.end()
        self.clock.advance(0.5)
        self.pending(method="GET").respond(405, {"allow": "POST"}, b"no GET here")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_LOST)
        self.assertEqual(
            e.message,
            "backend 'remote': the server ended its answer without a response, and the server refused to resume it "
            "(GET with Last-Event-ID answered HTTP 405: no GET here)",
        )
        self.assertEqual(e.data, {"backend": "remote", "status": 405})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_attemptsThatBringNothingNewAreBounded(self) -> None:
        backend, _ = self.started()
        d, call, response = self.call(backend)
        response.push(PRIMING)
        response.end()
        for _ in range(MAX_RESUME_ATTEMPTS):
            self.clock.advance(0.5)
            self.pending(method="GET").respond(200, SSE, b": nothing\n\n")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_LOST)
        self.assertIn(f"{MAX_RESUME_ATTEMPTS} attempts in a row to resume it (GET with Last-Event-ID 'e1') brought nothing new", e.message)
        self.assertEqual(len(self.gets()), 1 + MAX_RESUME_ATTEMPTS)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_progressStartsANewSeriesOfAttempts(self) -> None:
        """A resumption that brings new events is progress: a server that
        answers in several short polls is followed to the end."""
        backend, _ = self.started()
        d, call, response = self.call(backend, on_progress=lambda p: None)
        response.push(PRIMING)
        response.end()
        for n in range(MAX_RESUME_ATTEMPTS + 2):
            self.clock.advance(0.5)
            get = self.pending(method="GET")
            self.assertEqual(get.header("last-event-id"), "e1" if n == 0 else f"p{n - 1}")
            get.respond(200, SSE, progress(call, n, f"p{n}"))
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.pending(method="GET").respond(200, SSE, b"id: last\nevent: message\ndata: " + result_bytes(call) + b"\n\n")
        self.assertEqual(self.successResultOf(d), {"content": []})
        self.stop(backend)

    def test_connectionRefusedIsAnAttempt(self) -> None:
        backend, _ = self.started()
        d, call, response = self.call(backend)
        response.push(b"id: e1\ndata: \n\n")  # no retry: 1 s, then 2 s
        response.end(broken())
        self.clock.advance(1)
        self.pending(method="GET").fail(ConnectionRefusedError())
        self.clock.advance(1.999)
        self.assertEqual(self.pending_all(method="GET"), [])
        self.clock.advance(0.001)
        self.pending(method="GET").respond(200, SSE).push_event(result(call, {"content": []}))
        self.assertEqual(self.successResultOf(d), {"content": []})
        self.end_aborted()
        self.stop(backend)

    def test_retryIsBounded(self) -> None:
        backend, _ = self.started()
        d, call, response = self.call(backend, timeout=3600)
        response.push(b"id: e1\nretry: 86400000\ndata: \n\n")
        response.end()
        self.clock.advance(MAX_RETRY - 0.001)
        self.assertEqual(self.pending_all(method="GET"), [])
        self.clock.advance(0.001)
        self.pending(method="GET").respond(200, SSE).push_event(result(call, {"content": []}))
        self.successResultOf(d)
        self.end_aborted()
        self.stop(backend)

    def test_callTimeoutDuringTheWait(self) -> None:
        """The call's time runs out while it waits to resume: it fails as a
        timeout, and no GET is sent afterwards."""
        backend, _ = self.started()
        d, call, response = self.call(backend, timeout=2)
        response.push(b"id: e1\nretry: 5000\ndata: \n\n")
        response.end()
        self.clock.advance(2)
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_TIMEOUT)
        self.accept(self.pending("notifications/cancelled"))
        self.clock.advance(10)
        self.assertEqual(len(self.gets()), 1)
        self.assertEqual(backend.run.exchanges, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_cancelDuringTheResumedStream(self) -> None:
        backend, _ = self.started()
        d, call, response = self.call(backend)
        response.push(PRIMING)
        response.end()
        self.clock.advance(0.5)
        resumed = self.pending(method="GET").respond(200, SSE)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(resumed.stopped, 1)
        self.accept(self.pending("notifications/cancelled"))
        self.end_aborted()
        self.assertEqual(backend.run.exchanges, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_cancelBeforeTheResumingGetIsAnswered(self) -> None:
        backend, _ = self.started()
        d, call, response = self.call(backend)
        response.push(PRIMING)
        response.end()
        self.clock.advance(0.5)
        get = self.pending(method="GET")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(get.cancelled)
        self.accept(self.pending("notifications/cancelled"))
        self.stop(backend)

    def test_otherCallsUnaffected(self) -> None:
        """While one call's stream is being resumed, others go on; an answer
        is never given to the wrong call."""
        backend, _ = self.started()
        d1, c1, r1 = self.call(backend)
        d2 = backend.call("tools/call", {"name": "get_time"})
        c2 = self.pending("tools/call")
        r1.push(PRIMING)
        r1.end()
        c2.respond(200, SSE).push_event(result(c2, {"content": ["two"]}))
        self.assertEqual(self.successResultOf(d2), {"content": ["two"]})
        self.clock.advance(0.5)
        self.pending(method="GET").respond(200, SSE).push_event(result(c1, {"content": ["one"]}))
        self.assertEqual(self.successResultOf(d1), {"content": ["one"]})
        self.end_aborted()
        self.stop(backend)


def result_bytes(request: FakeRequest) -> bytes:
    import json

    return json.dumps(result(request, {"content": []})).encode()


class SessionStreamTests(HttpTestCase):
    def test_sessionStreamResumedFromItsLastEvent(self) -> None:
        backend, stream = self.started(stream=True)
        stream.push(b"id: s1\nretry: 250\ndata: \n\n")
        self.clock.advance(5)
        stream.end()
        self.clock.advance(0.249)
        self.assertEqual(self.pending_all(method="GET"), [])
        self.clock.advance(0.001)
        get = self.pending(method="GET")
        self.assertEqual(get.header("last-event-id"), "s1")
        self.assertCommonHeaders(get)
        # A list_changed on the resumed stream is acted on, as on the first.
        resumed = get.respond(200, SSE)
        resumed.push(b'id: s2\ndata: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n\n')
        self.answer(self.pending("tools/list"), {"tools": []})
        self.clock.advance(5)
        resumed.end(broken())
        self.clock.advance(0.25)
        self.assertEqual(self.pending(method="GET").header("last-event-id"), "s2")
        self.pending(method="GET").respond(405, body=b"")
        self.stop(backend)

    def test_withoutIdsReconnectsAsBefore(self) -> None:
        backend, stream = self.started(stream=True)
        stream.end()
        self.clock.advance(1)
        get = self.pending(method="GET")
        self.assertIsNone(get.header("last-event-id"))
        get.respond(405, body=b"")
        self.stop(backend)

    def test_refusedResumptionOpensANewStream(self) -> None:
        backend, stream = self.started(stream=True)
        stream.push(b"id: s1\ndata: \n\n")
        stream.end()
        self.clock.advance(1)
        with capturedLogs() as logged:
            self.pending(method="GET").respond(400, body=b"unknown event id")
        fresh = self.pending(method="GET")
        self.assertIsNone(fresh.header("last-event-id"))
        self.assertIn(
            "backend remote: the server refused to resume its event stream from event 's1' (HTTP 400: unknown event id); "
            "opening a new one (messages sent meanwhile may be lost)",
            [e["log_format"].format(**e) for e in logged],
        )
        fresh.respond(200, SSE)
        self.stop(backend)

    def test_streamEndingAtOnceIsNotPolledFasterThanTheBackoff(self) -> None:
        """C{retry: 0} and a stream that ends at once: reopened after 1 s,
        then 2 s, not in a tight loop."""
        backend, stream = self.started(stream=True)
        stream.push(b"id: s1\nretry: 0\ndata: \n\n")
        stream.end()
        for wait in (1.0, 2.0, 4.0):
            self.clock.advance(wait - 0.001)
            self.assertEqual(self.pending_all(method="GET"), [])
            self.clock.advance(0.001)
            self.pending(method="GET").respond(200, SSE, b"id: sx\nretry: 0\ndata: \n\n")
        self.clock.advance(8)
        self.pending(method="GET").respond(405, body=b"")
        self.stop(backend)

    def test_closeDuringTheWaitLeavesNoTimer(self) -> None:
        backend, stream = self.started(stream=True)
        stream.push(b"id: s1\nretry: 20000\ndata: \n\n")
        stream.end()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.stop(backend)  # asserts that no delayed call is left
        self.assertEqual(len(self.gets()), 1)
