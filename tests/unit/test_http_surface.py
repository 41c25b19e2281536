"""
Tests for what an HTTP backend passes beyond tools, with a fake treq
client and a Clock: server requests and notifications tied to the call
whose POST stream carried them (C{related}), the standalone GET stream
connected before the backend is up, and the legacy SSE stream.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError

from twisted_mcp.backends.base import State
from twisted_mcp.backends.http import HttpBackend
from twisted_mcp.wire.jsonrpc import JsonRpcError

from .fakes import RecordingEvents
from .http_fakes import FakeResponse
from .test_http_backend import INIT_RESULT, SSE, TOOLS_1, TOOLS_2, HttpTestCase, LegacyTests, result

ELICIT = {"mode": "form", "message": "Your name?", "requestedSchema": {"type": "object", "properties": {}}}


class HttpSurfaceTestCase(HttpTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.events = RecordingEvents()

    def up(self, stream: bool = True) -> tuple[HttpBackend, FakeResponse]:
        backend = self.make()
        backend.events = self.events
        backend.startService()
        get = self.bring_up(backend, stream=stream)
        assert get.response is not None
        return backend, get.response

    def posted_answers(self) -> list[Any]:
        """The gateway's answers to the server's requests, as POSTed."""
        return [r.message for r in self.http.requests if r.method == "POST" and "method" not in r.message]

    def contexts(self, backend: HttpBackend) -> dict[Any, Any]:
        assert backend.run is not None
        return backend.run.session._contexts


class RelatedTests(HttpSurfaceTestCase):
    def test_requestOnTheCallsStreamIsRelated(self) -> None:
        backend, _ = self.up()
        d = backend.call("tools/call", {"name": "ask"}, context="ctx-A")
        call = self.pending("tools/call")
        answer = call.respond(200, SSE)
        answer.push_event({"jsonrpc": "2.0", "id": "srv-1", "method": "elicitation/create", "params": ELICIT})
        (request,) = self.events.requests
        self.assertEqual((request.backend, request.method, request.params, request.related), (backend, "elicitation/create", ELICIT, "ctx-A"))
        request.deferred.callback({"action": "accept", "content": {"name": "Ada"}})
        reply = self.pending_all()[-1]
        self.assertEqual(reply.message, {"jsonrpc": "2.0", "id": "srv-1", "result": {"action": "accept", "content": {"name": "Ada"}}})
        self.assertCommonHeaders(reply)
        self.accept(reply)
        answer.push_event(result(call, {"content": [{"type": "text", "text": "hi Ada"}]}))
        answer.end()
        self.assertEqual(self.successResultOf(d), {"content": [{"type": "text", "text": "hi Ada"}]})
        self.assertEqual(self.contexts(backend), {})
        self.stop(backend)

    def test_notificationsOnTheCallsStreamAreRelated(self) -> None:
        backend, _ = self.up()
        progress: list[Any] = []
        d = backend.call(
            "tools/call", {"name": "slow", "_meta": {"progressToken": "client-7"}}, on_progress=progress.append, context="ctx-B"
        )
        call = self.pending("tools/call")
        token = call.message["params"]["_meta"]["progressToken"]
        answer = call.respond(200, SSE)
        answer.push_event({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}})
        answer.push_event({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}})
        answer.push_event(result(call, {"content": []}))
        answer.end()
        self.successResultOf(d)
        self.assertEqual(self.events.notifications, [(backend, "notifications/message", {"level": "info", "data": "working"}, "ctx-B")])
        self.assertEqual(progress, [{"progressToken": token, "progress": 1}])
        self.stop(backend)

    def test_standaloneStreamIsUnrelated(self) -> None:
        backend, stream = self.up()
        d = backend.call("tools/call", {"name": "ask"}, context="ctx-A")
        stream.push_event({"jsonrpc": "2.0", "id": 5, "method": "roots/list"})
        stream.push_event({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "test://1"}})
        (request,) = self.events.requests
        self.assertIsNone(request.related)
        self.assertEqual(self.events.notifications, [(backend, "notifications/resources/updated", {"uri": "test://1"}, None)])
        request.deferred.errback(JsonRpcError(-32600, "no client can answer roots/list"))
        reply = self.pending_all()[-1]
        self.assertEqual(reply.message, {"jsonrpc": "2.0", "id": 5, "error": {"code": -32600, "message": "no client can answer roots/list"}})
        self.accept(reply)
        self.answer(self.pending("tools/call"), {"content": []})
        self.successResultOf(d)
        self.stop(backend)

    def test_twoCallsEachTheirOwn(self) -> None:
        backend, _ = self.up()
        d1 = backend.call("tools/call", {"name": "a"}, context="ctx-1")
        d2 = backend.call("tools/call", {"name": "b"}, context="ctx-2")
        c1, c2 = self.pending_all("tools/call")
        a1, a2 = c1.respond(200, SSE), c2.respond(200, SSE)
        a2.push_event({"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage", "params": {"maxTokens": 1, "messages": []}})
        a1.push_event({"jsonrpc": "2.0", "id": 2, "method": "sampling/createMessage", "params": {"maxTokens": 1, "messages": []}})
        self.assertEqual([(r.params["maxTokens"], r.related) for r in self.events.requests], [(1, "ctx-2"), (1, "ctx-1")])
        for a, c in ((a1, c1), (a2, c2)):
            a.push_event(result(c, {}))
            a.end()
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.stop(backend)

    def test_contextForgottenOnEveryEnd(self) -> None:
        """The context of a call is dropped when it ends: answered, failed,
        cancelled or timed out."""
        backend, _ = self.up()
        ok = backend.call("tools/call", {"name": "a"}, context="ctx-ok")
        self.answer(self.pending("tools/call"), {})
        self.successResultOf(ok)
        failed = backend.call("tools/call", {"name": "b"}, context="ctx-failed")
        self.pending("tools/call").respond(500, body=b"oops")
        self.failureResultOf(failed, JsonRpcError)
        cancelled = backend.call("tools/call", {"name": "c"}, context="ctx-cancelled")
        self.assertEqual(list(self.contexts(backend).values()), ["ctx-cancelled"])
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        late = backend.call("tools/call", {"name": "d"}, context="ctx-late", timeout=1.0)
        self.clock.advance(1.0)
        self.failureResultOf(late, JsonRpcError)
        self.assertEqual(self.contexts(backend), {})
        for note in self.pending_all("notifications/cancelled"):
            self.accept(note)
        self.stop(backend)

    def test_reinitializeCancelsHeldRequests(self) -> None:
        """When the server forgets the session, its requests in progress are
        cancelled (never answered into the new session)."""
        backend, stream = self.up()
        stream.push_event({"jsonrpc": "2.0", "id": 9, "method": "elicitation/create", "params": ELICIT})
        (request,) = self.events.requests
        d = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(404, body=b"")
        self.assertTrue(request.cancelled)
        self.end_aborted()
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-2"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, body=b"")
        self.answer(self.pending("tools/call"), {})
        self.successResultOf(d)
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.assertEqual(self.posted_answers(), [])
        self.stop(backend)

    def test_newSessionListedAgain(self) -> None:
        """A new session after the server forgot ours takes what its
        handshake says and lists everything it offers again."""
        backend, _ = self.up(stream=False)
        seen: list[Any] = []
        backend.add_listener(lambda b: seen.append((dict(b.capabilities), b.instructions, list(b.prompts))))
        d = backend.call("tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(404, body=b"")
        grown = dict(INIT_RESULT, capabilities={"tools": {}, "prompts": {}}, instructions="Now with prompts.")
        self.answer(self.pending("initialize"), grown, {"mcp-session-id": "sess-2"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, body=b"")
        self.answer(self.pending("tools/call"), {})
        self.successResultOf(d)
        self.assertEqual(seen, [({"tools": {}, "prompts": {}}, "Now with prompts.", [])])
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.answer(self.pending("prompts/list"), {"prompts": [{"name": "greet"}]})
        self.assertEqual(backend.prompts, [{"name": "greet"}])
        self.assertEqual(len(seen), 2)
        self.stop(backend)

    def test_stopCancelsHeldRequests(self) -> None:
        backend, stream = self.up()
        stream.push_event({"jsonrpc": "2.0", "id": 9, "method": "sampling/createMessage", "params": {}})
        self.stop(backend)
        self.assertTrue(self.events.requests[0].cancelled)
        self.assertEqual(self.posted_answers(), [])


class ReadinessTests(HttpSurfaceTestCase):
    def test_notUpBeforeTheStreamAnswers(self) -> None:
        backend = self.make()
        backend.events = self.events
        backend.startService()
        discovered = backend.when_discovered()
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-1"})
        self.accept(self.pending("notifications/initialized"))
        get = self.pending(method="GET")
        self.assertCommonHeaders(get)
        self.clock.advance(4.9)
        self.assertEqual(backend.state, State.STARTING)
        self.assertNoResult(discovered)
        self.assertEqual(self.sent("tools/list"), [])
        self.assertRaises(JsonRpcError, backend.call, "tools/call", {"name": "get_time"})
        get.respond(200, SSE)
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.assertEqual(backend.state, State.UP)
        self.successResultOf(discovered)
        self.stop(backend)

    def test_messageRightAfterInitializeDelivered(self) -> None:
        """What the server sends on its stream as soon as the session
        exists (an elicitation, a list_changed) reaches the gateway, and
        the change is listed."""
        backend = self.make()
        backend.events = self.events
        backend.startService()
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-1"})
        self.accept(self.pending("notifications/initialized"))
        stream = self.pending(method="GET").respond(200, SSE)
        stream.push_event({"jsonrpc": "2.0", "id": "hello", "method": "elicitation/create", "params": ELICIT})
        stream.push_event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        (request,) = self.events.requests
        self.assertEqual((request.method, request.related), ("elicitation/create", None))
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.assertEqual(backend.state, State.UP)
        # The change that came during discovery: listed once more.
        self.answer(self.pending("tools/list"), {"tools": TOOLS_2})
        self.assertEqual(backend.tools, TOOLS_2)
        request.deferred.callback({"action": "decline"})
        reply = self.pending_all()[-1]
        self.assertEqual(reply.message, {"jsonrpc": "2.0", "id": "hello", "result": {"action": "decline"}})
        self.accept(reply)
        self.stop(backend)

    def test_waitBoundedByTheDiscoveryTime(self) -> None:
        """A connectTimeout longer than discoveryTimeout does not make a
        silent GET fail discovery: the wait is at most half the time left."""
        backend = self.make(connectTimeout=60.0, discoveryTimeout=10.0)
        backend.startService()
        self.clock.advance(2.0)
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-1"})
        self.accept(self.pending("notifications/initialized"))
        self.clock.advance(3.99)
        self.assertEqual(self.sent("tools/list"), [])
        self.clock.advance(0.01)
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_refusedStreamIsFine(self) -> None:
        for code, headers in ((405, {}), (404, {"content-type": "text/plain"}), (200, {"content-type": "application/json"})):
            backend = self.make()
            backend.startService()
            self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-1"})
            self.accept(self.pending("notifications/initialized"))
            self.pending(method="GET").respond(code, headers, b"")
            self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
            self.assertEqual(backend.state, State.UP, code)
            self.stop(backend)

    def test_failedStreamIsFine(self) -> None:
        backend = self.make()
        backend.startService()
        self.answer(self.pending("initialize"), INIT_RESULT, {"mcp-session-id": "sess-1"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").fail(ConnectionResetError("reset"))
        self.answer(self.pending("tools/list"), {"tools": TOOLS_1})
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)


class LegacySurfaceTests(LegacyTests):
    def test_serverRequestsAndNotificationsReachEvents(self) -> None:
        events = RecordingEvents()
        backend = self.make()
        backend.events = events
        stream = self.connect(backend)
        self.reply(stream, "initialize", dict(INIT_RESULT, protocolVersion="2024-11-05"))
        self.accept(self.pending("notifications/initialized"))
        self.reply(stream, "tools/list", {"tools": TOOLS_1})
        d = backend.call("tools/call", {"name": "sample"}, context="ctx-legacy")
        call = self.pending("tools/call")
        self.accept(call)
        stream.push_event({"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage", "params": {"maxTokens": 5, "messages": []}}, event="message")
        stream.push_event({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}, event="message")
        (request,) = events.requests
        # One stream for everything: nothing ties a message to a call.
        self.assertEqual((request.method, request.related), ("sampling/createMessage", None))
        self.assertEqual(events.notifications, [(backend, "notifications/message", {"level": "info", "data": "x"}, None)])
        request.deferred.callback({"role": "assistant", "content": {"type": "text", "text": "ok"}, "model": "m"})
        reply = self.pending_all()[-1]
        self.assertEqual(reply.url, b"http://mcp.example/messages?session_id=abc")
        self.assertEqual(reply.message["id"], 3)
        self.accept(reply)
        stream.push_event(result(call, {}), event="message")
        self.successResultOf(d)
        self.stop_legacy(backend, stream)
