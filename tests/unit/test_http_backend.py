"""
Tests for L{twisted_mcp.backends.http.HttpBackend} (Streamable HTTP and the
legacy HTTP+SSE transport) with a fake treq client and a Clock: no network.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from twisted_mcp.backends.base import State
from twisted_mcp.backends.http import Client, HttpBackend
from twisted_mcp.config import HttpServer
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE
from twisted_mcp.urls import shown_url
from twisted_mcp.wire.jsonrpc import JsonRpcError, encode

from .http_fakes import FakeHTTPClient, FakeRequest, FakeResponse, broken

URL = "http://mcp.example/mcp"
SSE_URL = "http://mcp.example/sse"
TOOLS_1 = [{"name": "get_time", "inputSchema": {"type": "object"}}]
TOOLS_2 = [{"name": "convert_time", "inputSchema": {"type": "object"}}]
# Not the version the gateway asks for: the header must carry the
# negotiated one.
NEGOTIATED = "2025-06-18"
INIT_RESULT = {
    "protocolVersion": NEGOTIATED,
    "capabilities": {"tools": {"listChanged": True}},
    "serverInfo": {"name": "remote-time", "version": "2.0"},
}
JSON = {"content-type": "application/json"}
SSE = {"content-type": "text/event-stream"}


def result(request: FakeRequest, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request.rpc_id, "result": value}


class HttpTestCase(SynchronousTestCase):
    transport = "streamable"
    url = URL

    def setUp(self) -> None:
        self.clock = Clock()
        self.http = FakeHTTPClient()
        self.states: list[State] = []

    def make(self, max_message: int = 1 << 20, **overrides: Any) -> HttpBackend:
        settings: dict[str, Any] = dict(
            name="remote",
            url=self.url,
            transport=self.transport,
            headers={"Authorization": "Bearer s3cret"},
            connectTimeout=5.0,
            discoveryTimeout=10.0,
            callTimeout=5.0,
            restartDelay=1.0,
            restartMaxDelay=8.0,
            stableAfter=30.0,
            # The handshake era's session, GET stream and resumption; the
            # stateless era is tested in test_http_modern_backend.
            protocol="legacy",
        )
        settings.update(overrides)
        backend = HttpBackend(HttpServer(**settings), self.clock, max_message)
        backend.http = self.http  # type: ignore[assignment]
        backend.add_listener(lambda b: self.states.append(b.state))
        return backend

    # -- finding and answering requests ----------------------------------

    def pending_all(self, rpc_method: str | None = None, method: str = "POST") -> list[FakeRequest]:
        return [
            r
            for r in self.http.unanswered()
            if r.method == method and (rpc_method is None or r.rpc_method == rpc_method)
        ]

    def pending(self, rpc_method: str | None = None, method: str = "POST") -> FakeRequest:
        found = self.pending_all(rpc_method, method)
        self.assertEqual(len(found), 1, f"expected one unanswered {method} {rpc_method or ''} in {self.http.requests}")
        return found[0]

    def sent(self, rpc_method: str) -> list[FakeRequest]:
        """Every request (answered or not) for C{rpc_method}."""
        return [r for r in self.http.requests if r.method == "POST" and r.rpc_method == rpc_method]

    def gets(self) -> list[FakeRequest]:
        return [r for r in self.http.requests if r.method == "GET"]

    def answer(self, request: FakeRequest, value: Any, headers: dict[str, str] | None = None) -> FakeResponse:
        """Answer a request with C{value} as its result, in a JSON body."""
        return request.respond(200, dict(JSON, **(headers or {})), encode(result(request, value)))

    def accept(self, request: FakeRequest) -> None:
        request.respond(202, body=b"")

    def bring_up(
        self, backend: HttpBackend, tools: list[Any] = TOOLS_1, session: str = "sess-1", stream: bool = False
    ) -> FakeRequest:
        """Handshake, the GET for the event stream (refused with 405, or
        answered with an open stream if C{stream}), then tools/list: the
        backend is up.  Returns the GET."""
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": session})
        self.accept(self.pending("notifications/initialized"))
        # The listings wait for the event stream's answer.
        self.assertEqual(self.pending_all("tools/list"), [])
        self.assertEqual(backend.state, State.STARTING)
        get = self.pending(method="GET")
        if stream:
            get.respond(200, SSE)
        else:
            get.respond(405, body=b"")
        self.answer(self.pending("tools/list"), {"tools": tools})
        self.assertEqual(backend.state, State.UP)
        return get

    def started(self, stream: bool = False, **overrides: Any) -> tuple[HttpBackend, FakeResponse]:
        """A backend that is up, and the answer to its GET: an open event
        stream if C{stream}, else a 405."""
        backend = self.make(**overrides)
        backend.startService()
        get = self.bring_up(backend, stream=stream)
        assert get.response is not None
        return backend, get.response

    def end_aborted(self) -> None:
        """The connections of aborted bodies close (later, in Twisted)."""
        for r in self.http.requests:
            if r.response is not None and r.response.stopped and not r.response.ended:
                r.response.end(broken())

    def stop(self, backend: HttpBackend) -> None:
        d = backend.stopService()
        for delete in self.pending_all(method="DELETE"):
            delete.respond(200, body=b"")
        self.end_aborted()
        self.successResultOf(d)
        self.assertEqual(backend.state, State.STOPPED)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.http.unanswered(), [])

    def restart_delay(self) -> float:
        (call,) = self.clock.getDelayedCalls()
        return call.getTime() - self.clock.seconds()

    def assertCommonHeaders(self, request: FakeRequest, session: str | None = "sess-1") -> None:
        self.assertEqual(request.header("authorization"), "Bearer s3cret")
        self.assertEqual(request.header("mcp-session-id"), session)
        self.assertEqual(request.header("mcp-protocol-version"), NEGOTIATED if session else None)
        self.assertIs(request.allow_redirects, False)
        self.assertIs(request.unbuffered, True)


class DiscoveryTests(HttpTestCase):
    def test_discovery(self) -> None:
        backend = self.make()
        backend.startService()
        discovered = backend.when_discovered()
        (init,) = self.http.requests
        self.assertEqual((init.method, init.url), ("POST", URL.encode()))
        self.assertEqual(init.rpc_method, "initialize")
        self.assertEqual(init.message["params"]["protocolVersion"], LATEST_HANDSHAKE)
        self.assertEqual(init.header("accept"), "application/json, text/event-stream")
        self.assertEqual(init.header("content-type"), "application/json")
        self.assertCommonHeaders(init, session=None)
        # The answer's body arrives in pieces; it is read to its end.
        response = init.respond(200, dict(JSON, **{"mcp-session-id": "sess-1"}))
        body = encode(result(init, INIT_RESULT))
        response.push(body[:25])
        response.push(body[25:])
        self.assertEqual(len(self.http.requests), 1)
        response.end()
        initialized = self.http.requests[1]
        self.assertEqual(initialized.message, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.assertEqual(initialized.header("content-type"), "application/json")
        self.assertCommonHeaders(initialized)
        self.accept(initialized)
        # Then the server's own stream is asked for, before any listing.
        get = self.http.requests[2]
        self.assertEqual((get.method, get.url, get.data), ("GET", URL.encode(), None))
        self.assertEqual(get.header("accept"), "text/event-stream")
        self.assertIsNone(get.header("content-type"))
        self.assertCommonHeaders(get)
        self.assertEqual(len(self.http.requests), 3)
        get.respond(200, SSE)
        listing = self.http.requests[3]
        self.assertEqual(listing.rpc_method, "tools/list")
        self.assertCommonHeaders(listing)
        self.assertEqual(backend.state, State.STARTING)
        self.assertNoResult(discovered)
        listing.respond(200, {"content-type": "application/json; charset=utf-8"}, encode(result(listing, {"tools": TOOLS_1})))
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(backend.tools, TOOLS_1)
        self.assertEqual(self.states, [State.STARTING, State.UP])
        self.successResultOf(discovered)
        self.assertIsNone(backend.last_error)
        self.assertEqual(backend.session.server_info["name"], "remote-time")
        self.assertEqual(backend.server_info["name"], "remote-time")
        self.assertEqual(backend.capabilities, INIT_RESULT["capabilities"])
        self.assertEqual(len(self.http.requests), 4)
        self.stop(backend)

    def test_sessionIdAndVersionOnEveryLaterRequest(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        self.assertEqual(call.header("accept"), "application/json, text/event-stream")
        self.assertEqual(call.header("content-type"), "application/json")
        self.assertCommonHeaders(call)
        self.answer(call, {"content": []})
        self.successResultOf(d)
        for request in self.http.requests[1:]:
            self.assertCommonHeaders(request)
        self.stop(backend)

    def test_noSessionId(self) -> None:
        """A stateless server (no Mcp-Session-Id) gets no session header."""
        backend = self.make()
        backend.startService()
        self.answer(self.pending("initialize"), INIT_RESULT)
        initialized = self.pending("notifications/initialized")
        self.assertIsNone(initialized.header("mcp-session-id"))
        self.assertEqual(initialized.header("mcp-protocol-version"), NEGOTIATED)
        self.accept(initialized)
        self.pending(method="GET").respond(405, body=b"")
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)
        self.assertEqual([r.method for r in self.http.requests if r.method == "DELETE"], [])

    def test_initializeRefusedWithHttpError(self) -> None:
        backend = self.make()
        backend.startService()
        self.pending("initialize").respond(401, {"content-type": "text/plain"}, b"bad token")
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("HTTP 401", backend.last_error or "")
        self.assertIn("bad token", backend.last_error or "")
        self.assertEqual(self.restart_delay(), 1.0)
        self.stop(backend)


class StreamedAnswerTests(HttpTestCase):
    def test_progressBeforeResult(self) -> None:
        backend, _ = self.started()
        progress: list[dict[str, Any]] = []
        d = backend.call("tools/call", {"name": "get_time", "_meta": {"progressToken": "client-tok"}}, progress.append)
        call = self.pending("tools/call")
        rid = call.rpc_id
        self.assertEqual(call.message["params"]["_meta"], {"progressToken": rid})
        response = call.respond(200, SSE)
        p1 = encode({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": rid, "progress": 1}}).strip()
        p2 = encode({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": rid, "progress": 2}}).strip()
        final = encode(result(call, {"content": [{"type": "text", "text": "12:00"}]})).strip()
        response.push(b"event: message\ndata: " + p1[:20])
        self.assertEqual(progress, [])
        response.push(p1[20:] + b"\n")
        self.assertEqual(progress, [])
        response.push(b"\n: keep-alive\n\ndata: " + p2 + b"\r\n\r")
        self.assertEqual([p["progress"] for p in progress], [1, 2])
        self.assertNoResult(d)
        response.push(b"\ndata: " + final[:30])
        self.assertNoResult(d)
        response.push(final[30:] + b"\n\n")
        self.assertEqual(self.successResultOf(d), {"content": [{"type": "text", "text": "12:00"}]})
        self.assertEqual(len(progress), 2)
        response.end()
        self.assertEqual(backend.run.exchanges, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_jsonAnswer(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        response = call.respond(200, JSON)
        body = encode(result(call, {"content": []}))
        response.push(body[:10])
        response.push(body[10:])
        self.assertNoResult(d)
        response.end()
        self.assertEqual(self.successResultOf(d), {"content": []})
        self.stop(backend)

    def test_backendError(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        error = {"jsonrpc": "2.0", "id": call.rpc_id, "error": {"code": -32602, "message": "bad tz"}}
        call.respond(200, JSON, encode(error))
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((e.code, e.message), (-32602, "bad tz"))
        self.stop(backend)

    def test_streamCutBeforeResponse(self) -> None:
        backend, _ = self.started()
        d1 = backend.call("tools/call", {"name": "get_time"})
        d2 = backend.call("tools/call", {"name": "get_time"})
        c1, c2 = self.pending_all("tools/call")
        r2 = c2.respond(200, SSE)
        r1 = c1.respond(200, SSE)
        r1.push(b'data: {"jsonrpc":"2.0","id":')
        r1.end(broken())
        e = self.failureResultOf(d1, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_LOST)
        self.assertEqual(e.data, {"backend": "remote"})
        self.assertIn("broke before the response", e.message)
        self.assertIn("connection reset by peer", e.message)
        # The other exchange is unaffected.
        self.assertNoResult(d2)
        r2.push_event(result(c2, {"content": []}))
        self.assertEqual(self.successResultOf(d2), {"content": []})
        r2.end()
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.sent("initialize")), 1)
        self.stop(backend)

    def test_streamEndsWithoutResponse(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(200, SSE, b"data: \n\n")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_LOST)
        self.assertIn("without a response", e.message)
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_unexpectedContentType(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(200, {"content-type": "text/html"}, b"<html>login</html>")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_HTTP_ERROR)
        self.assertIn("text/html", e.message)
        self.assertEqual(e.data, {"backend": "remote", "status": 200})
        self.stop(backend)


class RequestCapTests(HttpTestCase):
    def test_requestsInFlightCapped(self) -> None:
        """
        Each request in flight holds a connection to the server: beyond
        maxRequests a call is refused at once as busy (-31007), and the
        server is not marked down; an answer makes room again.
        """
        backend, _ = self.started(maxRequests=2)
        first = backend.call("tools/call", {"name": "get_time"})
        second = backend.call("tools/call", {"name": "get_time"})
        with self.assertRaises(JsonRpcError) as caught:
            backend.call("tools/call", {"name": "get_time"})
        e = caught.exception
        self.assertEqual((e.code, e.data), (errors.BUSY, {"backend": "remote", "limit": 2}))
        self.assertEqual(
            e.message, "backend 'remote' is busy: 2 requests in flight (maxRequests is 2); try again later"
        )
        self.assertEqual(len(self.pending_all("tools/call")), 2)
        self.assertEqual(backend.state, State.UP)
        call = self.pending_all("tools/call")[0]
        call.respond(200, JSON, encode(result(call, {"content": []})))
        self.assertEqual(self.successResultOf(first), {"content": []})
        third = backend.call("tools/call", {"name": "get_time"})
        for call in self.pending_all("tools/call"):
            call.respond(200, JSON, encode(result(call, {"content": []})))
        self.successResultOf(second)
        self.successResultOf(third)
        self.stop(backend)

    def test_defaultCap(self) -> None:
        self.assertEqual(HttpServer(name="remote", url=URL).maxRequests, 256)


class HttpErrorTests(HttpTestCase):
    def test_serverError(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        response = call.respond(500, {"content-type": "text/plain"})
        response.push(b"Internal Server Error: the database is down\n")
        response.push(b"x" * 5000)
        self.assertNoResult(d)
        response.end()
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_HTTP_ERROR)
        self.assertEqual(e.data, {"backend": "remote", "status": 500})
        self.assertIn("HTTP 500", e.message)
        self.assertIn("Internal Server Error: the database is down", e.message)
        self.assertLess(len(e.message), 500)
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_redirectNotFollowed(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        self.assertIs(call.allow_redirects, False)
        call.respond(307, {"location": "https://other.example/mcp?token=t0k"}, b"")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_HTTP_ERROR)
        self.assertEqual(e.data, {"backend": "remote", "status": 307})
        self.assertIn(shown_url("https://other.example/mcp?token=t0k"), e.message)
        self.assertNotIn("t0k", e.message)
        self.assertIn("not followed", e.message)
        self.assertEqual(len(self.sent("tools/call")), 1)
        self.assertEqual([r.url for r in self.http.requests], [URL.encode()] * len(self.http.requests))
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_acceptedWithoutAnswer(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        self.accept(self.pending("tools/call"))
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_HTTP_ERROR)
        self.assertEqual(e.data["status"], 202)
        self.stop(backend)

    def test_jsonBodyTooLarge(self) -> None:
        backend, _ = self.started(max_message=1000)
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        response = call.respond(200, JSON)
        response.push(b"{" + b" " * 599)
        self.assertEqual(response.stopped, 0)
        response.push(b" " * 600)
        self.assertEqual(response.stopped, 1)
        response.push(b" " * 600)  # already in flight; ignored
        self.assertEqual(response.stopped, 1)
        response.end(broken())
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_RESPONSE_TOO_LARGE)
        self.assertEqual(e.data, {"backend": "remote", "limit": 1000})
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_eventTooLarge(self) -> None:
        backend, _ = self.started(max_message=1000)
        d = backend.call("tools/call", {"name": "get_time"})
        response = self.pending("tools/call").respond(200, SSE)
        response.push(b"data: ")
        # The limit counts the event's data (the message), not its field name.
        for _ in range(10):
            response.push(b"x" * 100)
        self.assertEqual(response.stopped, 0)
        response.push(b"x")
        self.assertEqual(response.stopped, 1)
        response.end(broken())
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_RESPONSE_TOO_LARGE)
        self.assertEqual(e.data, {"backend": "remote", "limit": 1000})
        self.stop(backend)


class SessionExpiryTests(HttpTestCase):
    def test_reinitializeAndResend(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time", "arguments": {"tz": "UTC"}})
        call = self.pending("tools/call")
        call.respond(404, {"content-type": "text/plain"}, b"session not found")
        reinit = self.pending("initialize")
        self.assertIsNone(reinit.header("mcp-session-id"))
        self.assertIsNone(reinit.header("mcp-protocol-version"))
        self.assertEqual(reinit.header("authorization"), "Bearer s3cret")
        self.assertEqual(self.pending_all("tools/call"), [])
        self.assertNoResult(d)
        self.answer(reinit, INIT_RESULT, {"mcp-session-id": "sess-2"})
        initialized = self.pending("notifications/initialized")
        self.assertCommonHeaders(initialized, session="sess-2")
        self.accept(initialized)
        # The new session gets its own event stream, before the call is sent again.
        self.assertEqual(self.pending_all("tools/call"), [])
        get = self.pending(method="GET")
        self.assertCommonHeaders(get, session="sess-2")
        get.respond(405, body=b"")
        resent = self.pending("tools/call")
        self.assertEqual(resent.data, call.data)
        self.assertCommonHeaders(resent, session="sess-2")
        self.answer(resent, {"content": []})
        self.assertEqual(self.successResultOf(d), {"content": []})
        self.assertEqual(len(self.sent("initialize")), 2)
        self.assertEqual(backend.state, State.UP)
        # The new session was listed again.
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        # Up throughout; the listeners are told of the new session once.
        self.assertEqual(self.states, [State.STARTING, State.UP, State.UP])
        self.assertEqual(backend.handshakes, 2)
        self.stop(backend)
        (delete,) = [r for r in self.http.requests if r.method == "DELETE"]
        self.assertEqual(delete.header("mcp-session-id"), "sess-2")

    def test_twoCallsShareOneReinitialize(self) -> None:
        backend, _ = self.started()
        d1 = backend.call("tools/call", {"name": "get_time"})
        d2 = backend.call("tools/call", {"name": "convert_time"})
        c1, c2 = self.pending_all("tools/call")
        try:
            c1.respond(404, body=b"")
            c2.respond(404, body=b"")
            reinit = self.pending("initialize")
            self.assertEqual(len(self.sent("initialize")), 2)
            self.answer(reinit, INIT_RESULT, {"mcp-session-id": "sess-2"})
            self.accept(self.pending("notifications/initialized"))
            self.pending(method="GET").respond(405, body=b"")
            resent = self.pending_all("tools/call")
            self.assertEqual(sorted(r.data for r in resent), sorted([c1.data, c2.data]))
            for r in resent:
                self.assertEqual(r.header("mcp-session-id"), "sess-2")
                self.answer(r, {"name": r.message["params"]["name"]})
            self.assertEqual(self.successResultOf(d1), {"name": "get_time"})
            self.assertEqual(self.successResultOf(d2), {"name": "convert_time"})
            self.assertEqual(len(self.sent("initialize")), 2)
        finally:
            d1.addErrback(lambda f: None)
            d2.addErrback(lambda f: None)
            self.cleanup(backend)

    def test_secondNotFoundWhileFirstStillReading(self) -> None:
        """Two 404s whose bodies are still arriving when the other's ends
        do not make two re-initializes (the second waits for the first)."""
        backend, _ = self.started()
        d1 = backend.call("tools/call", {"name": "get_time"})
        d2 = backend.call("tools/call", {"name": "convert_time"})
        c1, c2 = self.pending_all("tools/call")
        r1 = c1.respond(404)
        r2 = c2.respond(404)
        r1.end()
        self.assertEqual(len(self.sent("initialize")), 2)
        # (r2 ends after the new session exists: see test_lateNotFoundForOldSession.)
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-2"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, body=b"")
        self.answer(self.pending("tools/call"), {})
        self.successResultOf(d1)
        self.assertNoResult(d2)
        d2.addErrback(lambda f: None)
        self.cleanup(backend)
        if not r2.ended:
            r2.end()

    def test_callDuringReinitializeWaits(self) -> None:
        backend, _ = self.started()
        d1 = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(404, body=b"")
        reinit = self.pending("initialize")
        d2 = backend.call("tools/call", {"name": "convert_time"})
        self.assertEqual(self.pending_all("tools/call"), [])
        self.answer(reinit, INIT_RESULT, {"mcp-session-id": "sess-2"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, body=b"")
        for r in self.pending_all("tools/call"):
            self.assertEqual(r.header("mcp-session-id"), "sess-2")
            self.answer(r, {})
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.stop(backend)

    def test_badRequestNamingTheSessionReinitializes(self) -> None:
        """Some servers answer 400 "no valid session" rather than 404."""
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        call.respond(400, {"content-type": "text/plain"}, b"Bad Request: No valid session ID provided")
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-2"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, body=b"")
        resent = self.pending("tools/call")
        self.assertEqual((resent.data, resent.header("mcp-session-id")), (call.data, "sess-2"))
        self.answer(resent, {"content": []})
        self.successResultOf(d)
        self.stop(backend)

    def test_otherBadRequestFails(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(400, {"content-type": "text/plain"}, b"invalid params")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((e.code, e.data), (errors.BACKEND_HTTP_ERROR, {"backend": "remote", "status": 400}))
        self.assertIn("invalid params", e.message)
        self.assertEqual(len(self.sent("initialize")), 1)
        self.stop(backend)

    def test_notFoundWithoutSessionFails(self) -> None:
        """Without a session there is nothing to renew: a 404 is an error."""
        backend = self.make()
        backend.startService()
        self.answer(self.pending("initialize"), INIT_RESULT)
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, body=b"")
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        d = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(404, body=b"no such tool endpoint")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((e.code, e.data["status"]), (errors.BACKEND_HTTP_ERROR, 404))
        self.assertEqual(len(self.sent("initialize")), 1)
        self.stop(backend)

    def test_secondNotFoundFails(self) -> None:
        """A request re-sent after re-initializing is not re-sent again."""
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(404, body=b"")
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-2"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, body=b"")
        self.pending("tools/call").respond(404, body=b"still not found")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((e.code, e.data["status"]), (errors.BACKEND_HTTP_ERROR, 404))
        self.assertEqual(len(self.sent("initialize")), 2)
        self.stop(backend)

    def test_lateNotFoundForOldSession(self) -> None:
        backend, _ = self.started()
        d1 = backend.call("tools/call", {"name": "get_time"})
        d2 = backend.call("tools/call", {"name": "convert_time"})
        c1, c2 = self.pending_all("tools/call")
        try:
            c1.respond(404, body=b"")
            self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-2"})
            self.accept(self.pending("notifications/initialized"))
            self.pending(method="GET").respond(405, body=b"")
            resent = self.sent("tools/call")[-1]
            self.assertEqual(resent.data, c1.data)
            self.answer(resent, {})
            self.successResultOf(d1)
            # c2 was sent with sess-1; its 404 arrives after the new session exists.
            c2.respond(404, body=b"")
            self.assertEqual(len(self.sent("initialize")), 2)
            resent = self.pending("tools/call")
            self.assertEqual(resent.data, c2.data)
            self.assertEqual(resent.header("mcp-session-id"), "sess-2")
            self.answer(resent, {})
            self.successResultOf(d2)
        finally:
            d1.addErrback(lambda f: None)
            d2.addErrback(lambda f: None)
            self.cleanup(backend)

    def test_cancelledDuringReinitializeNotResent(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        try:
            self.pending("tools/call").respond(404, body=b"")
            reinit = self.pending("initialize")
            d.cancel()
            self.failureResultOf(d, CancelledError)
            self.answer(reinit, INIT_RESULT, {"mcp-session-id": "sess-2"})
            self.accept(self.pending("notifications/initialized"))
            self.pending(method="GET").respond(405, body=b"")
            self.assertEqual(self.pending_all("tools/call"), [])
        finally:
            self.cleanup(backend)

    def cleanup(self, backend: HttpBackend) -> None:
        """Stop a backend whatever state a failed test left it in."""
        d = backend.stopService()
        for r in self.http.unanswered():
            r.respond(202 if r.method == "POST" else 405, body=b"")
        self.end_aborted()
        self.successResultOf(d)


class CancellationTests(HttpTestCase):
    def test_cancelStopsTheStream(self) -> None:
        backend, _ = self.started()
        progress: list[Any] = []
        d = backend.call("tools/call", {"name": "get_time", "_meta": {"progressToken": 1}}, progress.append)
        call = self.pending("tools/call")
        rid = call.rpc_id
        response = call.respond(200, SSE)
        response.push_event({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": rid, "progress": 1}})
        self.assertEqual(len(progress), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(response.stopped, 1)
        note = self.pending("notifications/cancelled")
        self.assertEqual(note.message["params"], {"requestId": rid, "reason": "cancelled"})
        self.assertCommonHeaders(note)
        self.accept(note)
        # What was in flight is dropped; then the connection closes.
        response.push_event({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": rid, "progress": 2}})
        response.end(broken())
        self.assertEqual(len(progress), 1)
        self.assertEqual(backend.run.exchanges, {})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_cancelBeforeHeaders(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(call.cancelled)
        note = self.pending("notifications/cancelled")
        self.assertEqual(note.message["params"], {"requestId": call.rpc_id, "reason": "cancelled"})
        self.accept(note)
        self.assertEqual(backend.run.exchanges, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_timeout(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"}, timeout=2.0)
        call = self.pending("tools/call")
        response = call.respond(200, SSE)
        response.push(b": working\n\n")
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.assertEqual(response.stopped, 0)
        self.clock.advance(0.1)
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_TIMEOUT)
        self.assertEqual(e.data, {"backend": "remote", "timeout": 2.0})
        self.assertEqual(response.stopped, 1)
        note = self.pending("notifications/cancelled")
        self.assertEqual(note.message["params"], {"requestId": call.rpc_id, "reason": "timed out"})
        self.accept(note)
        response.end(broken())
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_timeoutBeforeHeaders(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        self.clock.advance(5.0)
        self.assertEqual(self.failureResultOf(d, JsonRpcError).value.code, errors.BACKEND_TIMEOUT)
        self.assertTrue(call.cancelled)
        self.accept(self.pending("notifications/cancelled"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_timeoutStopsAnEndlessErrorBody(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"}, timeout=2.0)
        response = self.pending("tools/call").respond(503, {"content-type": "text/plain"})
        response.push(b"overloaded " * 100)
        self.clock.advance(2.0)
        self.assertEqual(self.failureResultOf(d, JsonRpcError).value.code, errors.BACKEND_TIMEOUT)
        self.accept(self.pending("notifications/cancelled"))
        try:
            self.assertGreaterEqual(response.stopped, 1)
        finally:
            if not response.ended:
                response.end(broken())
            self.stop(backend)


    def test_notificationNeverAnswered(self) -> None:
        """A notification's POST that is never answered is logged as a
        timeout, not as a failed connection."""
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"}, timeout=30.0)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        note = self.pending("notifications/cancelled")
        with capturedLogs() as events:
            self.clock.advance(5.0)
        self.assertTrue(note.cancelled)
        (warning,) = [e for e in events if e.get("backend") == "remote"]
        self.assertIn("within 5 s", warning["why"])
        self.assertNotIn("connection failed", warning["why"])
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

class ReachabilityTests(HttpTestCase):
    def test_refusedAtDiscovery(self) -> None:
        backend = self.make()
        backend.startService()
        discovered = backend.when_discovered()
        self.pending("initialize").fail(ConnectionRefusedError())
        self.successResultOf(discovered)
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn(f"cannot connect to {shown_url('http://mcp.example/mcp')}", backend.last_error or "")
        self.assertEqual(self.restart_delay(), 1.0)
        self.clock.advance(0.25)
        e = self.assertRaises(JsonRpcError, backend.call, "tools/call", {"name": "get_time"})
        self.assertEqual(e.code, errors.BACKEND_UNAVAILABLE)
        self.assertEqual(e.data, {"backend": "remote", "state": "down", "retryAfter": 0.75})
        self.assertIn("cannot connect", e.message)
        self.clock.advance(0.75)
        self.assertEqual(backend.state, State.STARTING)
        self.pending("initialize").fail(ConnectionRefusedError())
        self.assertEqual(self.restart_delay(), 2.0)
        self.clock.advance(2.0)
        init = self.pending("initialize")
        self.assertIsNone(init.header("mcp-session-id"))
        self.bring_up(backend)
        self.assertEqual(backend.restarts, 2)
        self.assertIsNone(backend.last_error)
        self.assertEqual(
            self.states,
            [State.STARTING, State.DOWN, State.STARTING, State.DOWN, State.STARTING, State.UP],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop(backend)

    def test_backoff(self) -> None:
        backend = self.make()
        backend.startService()
        delays = []
        for _ in range(6):
            self.pending("initialize").fail(ConnectionRefusedError())
            delays.append(self.restart_delay())
            self.clock.advance(delays[-1])
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
        self.pending("initialize").fail(ConnectionRefusedError())
        self.stop(backend)

    def test_refusedOnCallWhileUp(self) -> None:
        backend, _ = self.started()
        d = backend.call("tools/call", {"name": "get_time"})
        other = backend.call("tools/call", {"name": "convert_time"})
        c1, c2 = self.pending_all("tools/call")
        c1.fail(ConnectionRefusedError())
        for deferred in (d, other):
            e = self.failureResultOf(deferred, JsonRpcError).value
            self.assertEqual(e.code, errors.BACKEND_LOST)
            self.assertEqual(e.data, {"backend": "remote"})
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("cannot connect", backend.last_error or "")
        self.assertTrue(c2.cancelled)
        self.assertEqual(self.restart_delay(), 1.0)
        self.clock.advance(1.0)
        init = self.pending("initialize")
        self.assertIsNone(init.header("mcp-session-id"))
        self.bring_up(backend, session="sess-2")
        self.stop(backend)

    def test_discoveryTimeout(self) -> None:
        backend = self.make()
        backend.startService()
        init = self.pending("initialize")
        self.clock.advance(10.0)
        self.assertEqual(backend.state, State.DOWN)
        self.assertTrue(init.cancelled)
        self.assertIn("initialize", backend.last_error or "")
        self.assertEqual(self.restart_delay(), 1.0)
        self.stop(backend)


class EventStreamTests(HttpTestCase):
    def test_toolsListChanged(self) -> None:
        backend, stream = self.started(stream=True)
        changes: list[Any] = []
        backend.add_listener(lambda b: changes.append(list(b.tools)))
        stream.push(b": keep-alive\n\n")
        self.assertEqual(self.pending_all("tools/list"), [])
        stream.push_event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        listing = self.pending("tools/list")
        self.assertCommonHeaders(listing)
        self.answer(listing, {"tools": TOOLS_1 + TOOLS_2})
        self.assertEqual(backend.tools, TOOLS_1 + TOOLS_2)
        self.assertEqual(changes, [TOOLS_1 + TOOLS_2])
        # The same list again: listeners are not called.
        stream.push_event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, event="message")
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1 + TOOLS_2})
        self.assertEqual(len(changes), 1)
        self.assertEqual(len(self.sent("tools/list")), 3)
        self.stop(backend)
        self.assertEqual(stream.stopped, 1)

    def test_serverPingAnswered(self) -> None:
        backend, stream = self.started(stream=True)
        stream.push_event({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"})
        (pong,) = [r for r in self.pending_all() if r.message.get("id") == "srv-1"]
        self.assertEqual(pong.message, {"jsonrpc": "2.0", "id": "srv-1", "result": {}})
        self.assertCommonHeaders(pong)
        self.accept(pong)
        self.stop(backend)

    def test_methodNotAllowedAccepted(self) -> None:
        backend = self.make()
        backend.startService()
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-1"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, {"allow": "POST, DELETE"}, b"")
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertEqual(len(self.gets()), 1)
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_streamReconnects(self) -> None:
        backend, stream = self.started(stream=True)
        stream.end()
        self.clock.advance(0.99)
        self.assertEqual(len(self.gets()), 1)
        self.clock.advance(0.01)
        self.assertEqual(len(self.gets()), 2)
        # Ending again at once: the delay doubles.
        self.pending(method="GET").respond(200, SSE).end(broken())
        self.clock.advance(1.99)
        self.assertEqual(len(self.gets()), 2)
        self.clock.advance(0.01)
        get = self.pending(method="GET")
        self.assertCommonHeaders(get)
        get.respond(405, body=b"")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_getNotAnswered(self) -> None:
        """
        A GET that gets no headers within connectTimeout is not waited for:
        discovery goes on (an info line says so), and the GET is given up
        on, quietly, five seconds later.
        """
        backend = self.make()
        backend.startService()
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-1"})
        self.accept(self.pending("notifications/initialized"))
        get = self.pending(method="GET")
        with capturedLogs() as logged:
            self.clock.advance(4.99)
            self.assertEqual(self.pending_all("tools/list"), [])
            self.clock.advance(0.01)
        self.assertIn(
            "backend remote: its event stream did not answer within 5 s "
            "(connectTimeout, at most half the discovery time left); going on without it",
            [e["log_format"].format(**e) for e in logged][-1],
        )
        self.assertEqual(logged[-1]["log_level"].name, "info")
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.assertEqual(backend.state, State.UP)
        self.assertFalse(get.cancelled)
        self.clock.advance(5.0)
        self.assertTrue(get.cancelled)
        self.clock.advance(3600)
        self.assertEqual(len(self.gets()), 1)
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_oneStreamAfterReinitialize(self) -> None:
        backend, stream = self.started(stream=True)
        d = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(404, body=b"")
        self.assertEqual(stream.stopped, 1)
        stream.end(broken())
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-2"})
        self.accept(self.pending("notifications/initialized"))
        # The call is sent again once the new session's stream answered.
        self.assertEqual(self.pending_all("tools/call"), [])
        self.pending(method="GET").respond(200, SSE)
        self.answer(self.pending("tools/call"), {})
        self.successResultOf(d)
        # The new session is listed again.
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.clock.advance(60)
        try:
            self.assertEqual(len(self.gets()), 2)
        finally:
            for r in self.pending_all(method="GET"):
                r.respond(405, body=b"")
            self.stop(backend)


class StopTests(HttpTestCase):
    def test_stopService(self) -> None:
        backend, stream = self.started(stream=True)
        d_call = backend.call("tools/call", {"name": "get_time"})
        answer = self.pending("tools/call").respond(200, SSE)
        d = backend.stopService()
        self.assertEqual(stream.stopped, 1)
        self.assertEqual(answer.stopped, 1)
        e = self.failureResultOf(d_call, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_LOST)
        delete = self.pending(method="DELETE")
        self.assertEqual((delete.url, delete.data), (URL.encode(), None))
        self.assertCommonHeaders(delete)
        self.assertNoResult(d)
        delete.respond(200, body=b"")
        self.successResultOf(d)
        self.assertEqual(backend.state, State.STOPPED)
        stream.end(broken())
        answer.end(broken())
        self.clock.advance(3600)
        self.assertEqual(self.http.unanswered(), [])
        self.assertEqual(len(self.http.requests), 6)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deleteNotAnswered(self) -> None:
        backend, _ = self.started()
        d = backend.stopService()
        delete = self.pending(method="DELETE")
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertTrue(delete.cancelled)
        self.assertEqual(backend.state, State.STOPPED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWhileRestartPending(self) -> None:
        backend = self.make()
        backend.startService()
        self.pending("initialize").fail(ConnectionRefusedError())
        self.successResultOf(backend.stopService())
        self.clock.advance(100)
        self.assertEqual(len(self.http.requests), 1)
        self.assertEqual(backend.state, State.STOPPED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWhileDiscovering(self) -> None:
        backend = self.make()
        backend.startService()
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-1"})
        self.accept(self.pending("notifications/initialized"))
        with capturedLogs():
            d = backend.stopService()
        for delete in self.pending_all(method="DELETE"):
            delete.respond(200, body=b"")
        self.successResultOf(d)
        self.assertEqual(backend.state, State.STOPPED)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len([r for r in self.http.requests if r.method == "DELETE"]), 1)


class LegacyTests(HttpTestCase):
    transport = "sse"
    url = SSE_URL

    def connect(self, backend: HttpBackend, endpoint: str = "/messages?session_id=abc") -> FakeResponse:
        backend.startService()
        get = self.pending(method="GET")
        self.assertEqual((get.url, get.data), (SSE_URL.encode(), None))
        self.assertEqual(get.header("accept"), "text/event-stream")
        self.assertEqual(get.header("authorization"), "Bearer s3cret")
        stream = get.respond(200, SSE)
        stream.push(b": hello\n\nevent: endpoint\ndata: " + endpoint.encode() + b"\r\n\r\n")
        return stream

    def reply(self, stream: FakeResponse, rpc_method: str, value: Any) -> FakeRequest:
        request = self.pending(rpc_method)
        self.accept(request)
        stream.push_event(result(request, value), event="message")
        return request

    def legacy_up(self, **overrides: Any) -> tuple[HttpBackend, FakeResponse]:
        backend = self.make(**overrides)
        stream = self.connect(backend)
        self.reply(stream, "initialize", dict(INIT_RESULT, protocolVersion="2024-11-05"))
        self.accept(self.pending("notifications/initialized"))
        self.reply(stream, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(backend.state, State.UP)
        return backend, stream

    def stop_legacy(self, backend: HttpBackend, stream: FakeResponse) -> None:
        d = backend.stopService()
        self.assertEqual(stream.stopped, 1)
        stream.end(broken())
        self.successResultOf(d)
        self.assertEqual(backend.state, State.STOPPED)
        self.assertEqual([r for r in self.http.requests if r.method == "DELETE"], [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_discoveryAndCall(self) -> None:
        backend = self.make()
        stream = self.connect(backend)
        init = self.pending("initialize")
        self.assertEqual(init.url, b"http://mcp.example/messages?session_id=abc")
        self.assertEqual(init.header("content-type"), "application/json")
        self.assertEqual(init.header("authorization"), "Bearer s3cret")
        self.assertIs(init.allow_redirects, False)
        self.accept(init)
        self.assertEqual(backend.state, State.STARTING)
        # The answer comes on the stream, in pieces.
        event = b"event: message\ndata: " + encode(result(init, dict(INIT_RESULT, protocolVersion="2024-11-05"))).strip() + b"\n\n"
        stream.push(event[:40])
        self.assertEqual(self.pending_all("notifications/initialized"), [])
        stream.push(event[40:])
        self.accept(self.pending("notifications/initialized"))
        listing = self.reply(stream, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(listing.url, b"http://mcp.example/messages?session_id=abc")
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(backend.tools, TOOLS_1)
        self.assertEqual(len(self.gets()), 1)
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.reply(stream, "tools/call", {"content": []})
        self.assertEqual(call.url, b"http://mcp.example/messages?session_id=abc")
        self.assertEqual(self.successResultOf(d), {"content": []})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stop_legacy(backend, stream)

    def test_absoluteEndpointSameOrigin(self) -> None:
        backend = self.make()
        self.connect(backend, "http://mcp.example/rpc/messages")
        self.assertEqual(self.pending("initialize").url, b"http://mcp.example/rpc/messages")
        self.pending("initialize").fail(ConnectionRefusedError())
        self.stop(backend)

    def test_endpointThatIsNotAnAddress(self) -> None:
        """An endpoint a server names that cannot be read as an address is refused, never raised."""
        for endpoint in ("http://[::1/messages", "http://mcp.example:99999/m", "/m\u00e9ssages"):
            self.http.requests.clear()
            backend = self.make()
            discovered = backend.when_discovered()
            stream = self.connect(backend, endpoint)
            self.successResultOf(discovered)
            self.assertEqual(backend.state, State.DOWN, endpoint)
            self.assertIn("not a valid address", backend.last_error or "")
            self.assertEqual(self.pending_all(), [], endpoint)
            stream.end(broken())
            self.stop(backend)

    def test_endpointOnAnotherOrigin(self) -> None:
        for endpoint in ("http://evil.example/messages", "//evil.example/messages", "https://mcp.example/messages", "http://mcp.example:8080/m"):
            self.http.requests.clear()
            backend = self.make()
            discovered = backend.when_discovered()
            stream = self.connect(backend, endpoint)
            self.successResultOf(discovered)
            self.assertEqual(backend.state, State.DOWN, endpoint)
            self.assertIn("another origin", backend.last_error or "")
            self.assertEqual(self.pending_all(), [], endpoint)
            self.assertEqual(stream.stopped, 1)
            stream.end(broken())
            self.assertEqual(self.restart_delay(), 1.0)
            self.stop(backend)

    def test_notAnEventStream(self) -> None:
        backend = self.make()
        backend.startService()
        self.pending(method="GET").respond(404, {"content-type": "text/html"}, b"<h1>no</h1>")
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("not an event stream", backend.last_error or "")
        self.assertEqual(self.restart_delay(), 1.0)
        self.stop(backend)

    def test_refused(self) -> None:
        backend = self.make()
        backend.startService()
        self.pending(method="GET").fail(ConnectionRefusedError())
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("cannot connect", backend.last_error or "")
        self.assertEqual(self.restart_delay(), 1.0)
        self.clock.advance(1.0)
        self.assertEqual(len(self.gets()), 2)
        self.pending(method="GET").fail(ConnectionRefusedError())
        self.stop(backend)

    def test_streamEndsBeforeEndpoint(self) -> None:
        backend = self.make()
        backend.startService()
        self.pending(method="GET").respond(200, SSE, b": nothing to see\n\n")
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("before naming its endpoint", backend.last_error or "")
        self.stop(backend)

    def test_streamEndsWhileUp(self) -> None:
        backend, stream = self.legacy_up()
        d1 = backend.call("tools/call", {"name": "get_time"})
        d2 = backend.call("tools/call", {"name": "get_time"})
        for r in self.pending_all("tools/call"):
            self.accept(r)
        stream.end()
        for d in (d1, d2):
            e = self.failureResultOf(d, JsonRpcError).value
            self.assertEqual(e.code, errors.BACKEND_LOST)
            self.assertEqual(e.data, {"backend": "remote"})
        self.assertEqual(backend.state, State.DOWN)
        self.assertEqual(backend.last_error, "the event stream ended")
        self.assertEqual(self.restart_delay(), 1.0)
        self.clock.advance(1.0)
        self.assertEqual(len(self.gets()), 2)
        self.assertEqual(backend.state, State.STARTING)
        self.pending(method="GET").fail(ConnectionRefusedError())
        self.stop(backend)

    def test_postRefusedWithHttpError(self) -> None:
        backend, stream = self.legacy_up()
        d = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(400, {"content-type": "text/plain"}, b"unknown session")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_HTTP_ERROR)
        self.assertEqual(e.data, {"backend": "remote", "status": 400})
        self.assertIn("unknown session", e.message)
        self.assertEqual(backend.state, State.UP)
        self.stop_legacy(backend, stream)

    def test_cancel(self) -> None:
        backend, stream = self.legacy_up()
        d = backend.call("tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        self.accept(call)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        note = self.pending("notifications/cancelled")
        self.assertEqual(note.url, b"http://mcp.example/messages?session_id=abc")
        self.assertEqual(note.message["params"], {"requestId": call.rpc_id, "reason": "cancelled"})
        self.accept(note)
        # The stream is shared: it is not aborted, and the late answer is dropped.
        self.assertEqual(stream.stopped, 0)
        stream.push_event(result(call, {}))
        self.assertEqual(backend.state, State.UP)
        self.stop_legacy(backend, stream)


    def test_postNeverAnswered(self) -> None:
        """A POST the server never answers is a timeout (-31031), not a lost
        connection: Deferred.addTimeout raises defer.TimeoutError."""
        backend, stream = self.legacy_up()
        d = backend.call("tools/call", {"name": "get_time"}, timeout=30.0)
        call = self.pending("tools/call")
        self.clock.advance(5.0)
        self.assertTrue(call.cancelled)
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_TIMEOUT)
        self.assertEqual(e.data, {"backend": "remote", "timeout": 5.0})
        self.assertIn("within 5 s", e.message)
        self.assertEqual(backend.state, State.UP)
        self.stop_legacy(backend, stream)

class FastPathTests(SynchronousTestCase):
    def test_addressesRememberedAreBounded(self) -> None:
        """
        The fast path remembers the endpoint of each address it posts to; a
        legacy server names a new address (its session id in the query) for
        every session, so only a few addresses are remembered.
        """
        class Agent:
            def __init__(self) -> None:
                self.sent: list[bytes] = []

            def _getEndpoint(self, uri: Any) -> Any:
                return object()

            def _requestWithEndpoint(self, key: Any, endpoint: Any, method: bytes, uri: Any, headers: Any, body: Any, path: bytes) -> Any:
                self.sent.append(path)
                return None

        agent = Agent()
        client = Client(agent)  # type: ignore[arg-type]
        for i in range(100):
            client.request("POST", b"http://mcp.example/messages?sessionId=%d" % i, data=b"{}", headers=Headers(),
                           allow_redirects=False, unbuffered=True)
        self.assertEqual(agent.sent[-1], b"/messages?sessionId=99")
        self.assertEqual(len(agent.sent), 100)
        self.assertLessEqual(len(client._targets), 16)


class ConnectionSettingsTests(SynchronousTestCase):
    def test_connectTimeoutAndKeptAliveConnections(self) -> None:
        """connectTimeout bounds each TCP connection attempt; maxConnections
        is how many idle connections the backend's pool keeps alive."""
        reactor = MemoryReactorClock()
        config = HttpServer(name="remote", url="http://127.0.0.1:9/mcp", connectTimeout=7.0, maxConnections=3)
        backend = HttpBackend(config, reactor, 1 << 20)
        d = backend.http.request("POST", b"http://127.0.0.1:9/mcp", data=b"{}", headers=Headers(), allow_redirects=False, unbuffered=True)
        [(host, port, _, timeout, _)] = reactor.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 9, 7.0))
        self.assertEqual(backend.pool.maxPersistentPerHost, 3)
        d.cancel()
        self.failureResultOf(d, ConnectingCancelledError)
