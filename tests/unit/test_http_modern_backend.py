"""
Tests for Streamable HTTP backends of the stateless era (2026-07-28):
the probe over HTTP, the headers of each request
(L{twisted_mcp.backends.http_modern}), tools with C{x-mcp-header}, and
cancellation by aborting the POST.  A fake treq client and a Clock: no
network.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import capturedLogs

from twisted_mcp.backends import envelope
from twisted_mcp.backends.base import State
from twisted_mcp.backends.http import HttpBackend
from twisted_mcp.backends.http_modern import InvalidAnnotation, header_annotations
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.http_headers import encode_value, header_value
from twisted_mcp.wire.jsonrpc import JsonRpcError, encode

from .http_fakes import FakeRequest, FakeResponse, broken
from .test_http_backend import INIT_RESULT, JSON, SSE, HttpTestCase

MODERN = "2026-07-28"
SERVER_INFO = "io.modelcontextprotocol/serverInfo"
DISCOVERED = {
    "supportedVersions": [MODERN],
    "capabilities": {"tools": {"listChanged": True}, "prompts": {}, "resources": {}},
    "resultType": "complete",
    "_meta": {SERVER_INFO: {"name": "dual-http", "version": "2.3"}},
}
REGION = {
    "name": "execute_sql",
    "inputSchema": {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "limit": {"type": "integer", "x-mcp-header": "Limit"},
            "dry": {"type": "boolean", "x-mcp-header": "Dry"},
            "where": {"type": "object", "properties": {"zone": {"type": "string", "x-mcp-header": "Zone"}}},
            "query": {"type": "string"},
        },
    },
}
PLAIN = {"name": "get_time", "inputSchema": {"type": "object"}}
IN_ITEMS = {
    "name": "bad_items",
    "inputSchema": {"type": "object", "properties": {"l": {"type": "array", "items": {"type": "string", "x-mcp-header": "L"}}}},
}
ON_NUMBER = {"name": "bad_number", "inputSchema": {"type": "object", "properties": {"n": {"type": "number", "x-mcp-header": "N"}}}}
TWICE = {
    "name": "bad_twice",
    "inputSchema": {
        "type": "object",
        "properties": {"a": {"type": "string", "x-mcp-header": "Same"}, "b": {"type": "string", "x-mcp-header": "same"}},
    },
}
NOT_A_TOKEN = {"name": "bad_token", "inputSchema": {"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "a b"}}}}


def b64(text: str) -> str:
    return "=?base64?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def rpc_error(request: FakeRequest, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode({"jsonrpc": "2.0", "id": request.rpc_id, "error": error})


class ModernTestCase(HttpTestCase):
    def make(self, max_message: int = 1 << 20, **overrides: Any) -> HttpBackend:
        overrides.setdefault("protocol", "auto")
        return super().make(max_message, **overrides)

    def modern_up(self, tools: tuple[Any, ...] = (PLAIN, REGION), **overrides: Any) -> HttpBackend:
        """A backend that answered the probe as a 2026-07-28 server, listed."""
        backend = self.make(**overrides)
        backend.startService()
        self.answer(self.pending("server/discover"), DISCOVERED, {"mcp-session-id": "must-not-be-kept"})
        self.answer(self.pending("tools/list"), {"tools": list(tools)})
        self.answer(self.pending("prompts/list"), {"prompts": []})
        self.answer(self.pending("resources/list"), {"resources": []})
        self.answer(self.pending("resources/templates/list"), {"resourceTemplates": []})
        self.assertEqual(backend.state, State.UP)
        return backend

    def call(self, backend: HttpBackend, method: str, params: dict[str, Any], **kwargs: Any) -> Any:
        return backend.call(method, envelope.stamp(params, MODERN, {}, None), **kwargs)

    def assertModernHeaders(self, request: FakeRequest, method: str, name: str | None = None) -> None:
        self.assertEqual(request.header("mcp-protocol-version"), MODERN)
        self.assertEqual(request.header("mcp-method"), method)
        self.assertEqual(request.header("mcp-name"), name)
        self.assertEqual(request.header("mcp-session-id"), None)
        self.assertEqual(request.header("accept"), "application/json, text/event-stream")
        self.assertEqual(request.header("content-type"), "application/json")
        self.assertEqual(request.header("authorization"), "Bearer s3cret")
        self.assertIs(request.allow_redirects, False)

    def assertNeverHandshakeEra(self) -> None:
        """No GET, no DELETE, no initialize, no notification, no session id: ever."""
        self.assertEqual([r for r in self.http.requests if r.method != "POST"], [])
        for request in self.http.requests:
            self.assertNotIn(request.rpc_method, ("initialize", "notifications/initialized", "notifications/cancelled"))
            self.assertIn("id", request.message)
            self.assertEqual(request.header("mcp-session-id"), None)


class ProbeTests(ModernTestCase):
    def test_modernAnswer(self) -> None:
        """auto: a POST server/discover with the modern headers; a DiscoverResult makes the backend modern."""
        backend = self.make()
        backend.startService()
        probe = self.pending("server/discover")
        self.assertModernHeaders(probe, "server/discover")
        self.assertEqual(probe.message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"], MODERN)
        self.answer(probe, DISCOVERED, {"mcp-session-id": "must-not-be-kept"})
        listing = self.pending("tools/list")
        self.assertModernHeaders(listing, "tools/list")
        self.answer(listing, {"tools": [PLAIN]})
        for method, key in (("prompts/list", "prompts"), ("resources/list", "resources"), ("resources/templates/list", "resourceTemplates")):
            self.answer(self.pending(method), {key: []})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual((backend.era, backend.probe, backend.protocol_version), ("modern", "discover", MODERN))
        self.assertEqual(backend.server_info, {"name": "dual-http", "version": "2.3"})
        self.assertEqual([t["name"] for t in backend.tools], ["get_time"])
        self.assertNeverHandshakeEra()
        self.stop(backend)
        self.assertNeverHandshakeEra()

    def fall_back(self, backend: HttpBackend) -> None:
        """The handshake era, after the probe: initialize, the GET stream, the listing."""
        init = self.pending("initialize")
        self.assertEqual(init.header("mcp-method"), None)
        self.answer(init, INIT_RESULT, {"mcp-session-id": "sess-1"})
        self.accept(self.pending("notifications/initialized"))
        self.pending(method="GET").respond(405, body=b"")
        self.answer(self.pending("tools/list"), {"tools": [PLAIN]})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual(backend.era, "legacy")
        self.assertEqual(self.pending_all("server/discover"), [])

    def test_methodNotFoundFallsBack(self) -> None:
        backend = self.make()
        backend.startService()
        probe = self.pending("server/discover")
        probe.respond(404, JSON, rpc_error(probe, -32601, "Method not found"))
        self.fall_back(backend)
        self.assertEqual(backend.probe, "fallback: server/discover answered -32601 Method not found")
        self.stop(backend)

    def test_notFoundFallsBack(self) -> None:
        """A 404 without a JSON-RPC error (a server without the modern endpoint) falls back."""
        backend = self.make()
        backend.startService()
        self.pending("server/discover").respond(404, {"content-type": "text/html"}, b"<h1>Not Found</h1>")
        self.fall_back(backend)
        self.assertIn("HTTP 404: <h1>Not Found</h1>", backend.probe)
        self.assertTrue(backend.probe.startswith("fallback: server/discover answered"))
        self.stop(backend)

    def test_noSessionIdFallsBack(self) -> None:
        """A handshake-era SDK server's 400 "No valid session ID" (an error without our id) falls back."""
        backend = self.make()
        backend.startService()
        self.pending("server/discover").respond(
            400, JSON, encode({"jsonrpc": "2.0", "id": "server-error", "error": {"code": -32600, "message": "Bad Request: No valid session ID provided"}})
        )
        self.fall_back(backend)
        self.assertIn("HTTP 400", backend.probe)
        self.stop(backend)

    def test_serverErrorIsNoVerdict(self) -> None:
        """A 5xx or an auth refusal is not an answer about the era: down, no initialize, the status in the reason."""
        backend = self.make()
        backend.startService()
        self.pending("server/discover").respond(401, {"content-type": "text/plain"}, b"unauthorized")
        self.assertEqual(backend.state, State.DOWN)
        self.assertEqual(self.sent("initialize"), [])
        self.assertIn("server/discover: backend 'remote' answered HTTP 401: unauthorized", backend.last_error)
        self.assertNotIn("s3cret", backend.last_error)
        self.stop(backend)

    def test_unreachableIsTheReason(self) -> None:
        backend = self.make()
        backend.startService()
        self.pending("server/discover").fail(ConnectionRefusedError("Connection refused"))
        self.assertEqual(backend.state, State.DOWN)
        self.assertTrue(backend.last_error.startswith("cannot connect to "), backend.last_error)
        self.stop(backend)

    def test_modernPinnedRefused(self) -> None:
        """protocol: modern: no fallback; the refusal is the reason it is down."""
        backend = self.make(protocol="modern")
        backend.startService()
        probe = self.pending("server/discover")
        probe.respond(404, JSON, rpc_error(probe, -32601, "Method not found"))
        self.assertEqual(backend.state, State.DOWN)
        self.assertEqual(backend.last_error, "server/discover was refused: -32601 Method not found")
        self.assertEqual(self.sent("initialize"), [])
        self.stop(backend)

    def test_modernPinned(self) -> None:
        backend = self.modern_up(protocol="modern")
        self.assertEqual((backend.era, backend.probe), ("modern", "pinned"))
        self.stop(backend)

    def test_legacyPinnedSkipsTheProbe(self) -> None:
        backend = self.make(protocol="legacy")
        backend.startService()
        self.assertEqual(self.pending_all("server/discover"), [])
        self.fall_back(backend)
        self.assertEqual(backend.probe, "pinned")
        self.stop(backend)


class HeaderTests(ModernTestCase):
    def test_eachMethodsHeaders(self) -> None:
        backend = self.modern_up()
        cases = [
            ("tools/call", {"name": "get_time", "arguments": {}}, "get_time"),
            ("prompts/get", {"name": "greet"}, "greet"),
            ("resources/read", {"uri": "file:///projects/app/config.json"}, "file:///projects/app/config.json"),
            ("resources/list", {}, None),
            ("completion/complete", {"ref": {"type": "ref/prompt", "name": "greet"}}, None),
        ]
        for method, params, name in cases:
            d = self.call(backend, method, params)
            request = self.pending(method)
            self.assertModernHeaders(request, method, name)
            self.answer(request, {})
            self.successResultOf(d)
        self.assertNeverHandshakeEra()
        self.stop(backend)

    def test_namesThatAreNotPlainAscii(self) -> None:
        """Non-ASCII, surrounding spaces, a newline, and a sentinel look-alike travel base64-encoded."""
        backend = self.modern_up()
        for name in ("wetter_für_köln", " padded ", "line1\nline2", "=?base64?literal?="):
            d = self.call(backend, "prompts/get", {"name": name})
            request = self.pending("prompts/get")
            self.assertEqual(request.header("mcp-name"), b64(name))
            self.assertEqual(header_value(request.header("mcp-name").encode("ascii")), name)
            self.answer(request, {"messages": []})
            self.successResultOf(d)
        self.stop(backend)

    def test_paramHeaders(self) -> None:
        """Each annotated argument given is mirrored (strings as they are, integers, booleans, nested); absent or null ones are not."""
        backend = self.modern_up()
        arguments = {"region": "us-west1", "limit": 42, "dry": False, "where": {"zone": "Zürich"}, "query": "SELECT 1"}
        d = self.call(backend, "tools/call", {"name": "execute_sql", "arguments": arguments})
        request = self.pending("tools/call")
        self.assertModernHeaders(request, "tools/call", "execute_sql")
        self.assertEqual(request.header("mcp-param-region"), "us-west1")
        self.assertEqual(request.header("mcp-param-limit"), "42")
        self.assertEqual(request.header("mcp-param-dry"), "false")
        self.assertEqual(request.header("mcp-param-zone"), b64("Zürich"))
        self.assertEqual(request.message["params"]["arguments"], arguments)
        self.answer(request, {"content": []})
        self.successResultOf(d)
        d = self.call(backend, "tools/call", {"name": "execute_sql", "arguments": {"region": None, "query": "x"}})
        request = self.pending("tools/call")
        for name in ("region", "limit", "dry", "zone"):
            self.assertEqual(request.header(f"mcp-param-{name}"), None)
        self.answer(request, {"content": []})
        self.successResultOf(d)
        self.stop(backend)

    def test_anArgumentThatCannotTravelInItsHeaderIsInvalidParams(self) -> None:
        """
        Not sent without its header (the server would refuse the call with
        -32020, blaming the gateway's hop): -32602 naming the argument.
        """
        backend = self.modern_up()
        for arguments, where in (
            ({"region": ["a"]}, "region"),
            ({"limit": 2**53}, "limit"),
            ({"limit": 1.5}, "limit"),
            ({"where": {"zone": {"x": 1}}}, "where.zone"),
        ):
            with self.assertRaises(JsonRpcError) as caught:
                self.call(backend, "tools/call", {"name": "execute_sql", "arguments": arguments})
            self.assertEqual(caught.exception.code, -32602)
            self.assertEqual(caught.exception.data, {"argument": where})
        self.assertEqual(self.pending_all("tools/call"), [])
        d = self.call(backend, "tools/call", {"name": "execute_sql", "arguments": {"limit": 2.0, "dry": True}})
        request = self.pending("tools/call")
        self.assertEqual((request.header("mcp-param-limit"), request.header("mcp-param-dry")), ("2", "true"))
        self.answer(request, {"content": []})
        self.successResultOf(d)
        self.stop(backend)

    def test_invalidAnnotationsDropTheTool(self) -> None:
        with capturedLogs() as events:
            backend = self.modern_up(tools=(PLAIN, IN_ITEMS, ON_NUMBER, TWICE, NOT_A_TOKEN, REGION))
        self.assertEqual([t["name"] for t in backend.tools], ["get_time", "execute_sql"])
        dropped = {e["tool"]: e["why"] for e in events if "is not offered" in e.get("log_format", "")}
        self.assertEqual(set(dropped), {"bad_items", "bad_number", "bad_twice", "bad_token"})
        self.assertIn("not reachable through properties alone", dropped["bad_items"])
        self.assertIn("'number'", dropped["bad_number"])
        self.assertIn("repeats", dropped["bad_twice"])
        self.assertIn("not an HTTP field name", dropped["bad_token"])
        self.stop(backend)

    def test_annotationRules(self) -> None:
        self.assertEqual(header_annotations({"type": "object"}), [])
        found = dict(header_annotations(REGION["inputSchema"]))
        self.assertEqual(found[("region",)], b"mcp-param-Region")
        self.assertEqual(found[("where", "zone")], b"mcp-param-Zone")
        for schema in (
            {"x-mcp-header": "Root", "type": "string"},
            {"type": "object", "properties": {"a": {"oneOf": [{"type": "string", "x-mcp-header": "A"}]}}},
            {"type": "object", "$defs": {"A": {"type": "string", "x-mcp-header": "A"}}},
            {"type": "object", "properties": {"a": {"x-mcp-header": "A"}}},
            {"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": ""}}},
        ):
            self.assertRaises(InvalidAnnotation, header_annotations, schema)
        # Data keywords are not schemas: an "x-mcp-header" key in a default is no annotation.
        self.assertEqual(header_annotations({"type": "object", "default": {"x-mcp-header": 1}}), [])


class CodecTests(ModernTestCase):
    def test_encodeThenDecode(self) -> None:
        for text, plain in (
            ("us-west1", True),
            ("a b", True),
            ("", True),
            ("Hello, 世界", False),
            (" padded ", False),
            ("line1\nline2", False),
            ("tab\there", False),
            ("=?base64?literal?=", False),
        ):
            encoded = encode_value(text)
            self.assertEqual(encoded == text.encode("ascii", "replace"), plain, text)
            self.assertEqual(header_value(encoded), text)
        self.assertEqual(encode_value("Hello, 世界"), b"=?base64?SGVsbG8sIOS4lueVjA==?=")


class CancelTests(ModernTestCase):
    def test_cancelAbortsThePost(self) -> None:
        """No notifications/cancelled over HTTP: the POST's stream is closed."""
        backend = self.modern_up()
        progress: list[Any] = []
        params = {"name": "get_time", "_meta": {"progressToken": 1}}
        d = self.call(backend, "tools/call", params, on_progress=progress.append)
        call = self.pending("tools/call")
        response = call.respond(200, SSE)
        response.push_event({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": call.rpc_id, "progress": 1}})
        self.assertEqual(len(progress), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(response.stopped, 1)
        response.end(broken())
        self.assertNotIn(call.rpc_id, backend.run.exchanges)  # (the backend's listen stays open)
        self.assertNeverHandshakeEra()
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_cancelBeforeHeaders(self) -> None:
        backend = self.modern_up()
        d = self.call(backend, "tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(call.cancelled)
        self.assertNeverHandshakeEra()
        self.stop(backend)

    def test_cancelReachesTheConnectionsRequest(self) -> None:
        """
        The agent's Deferred has fired (with the pooled connection) and waits
        on the connection's request, whose cancel aborts the connection: the
        abort must reach it, though the outer Deferred reads as called.
        """
        backend = self.modern_up()
        aborted: list[bool] = []
        inner: Deferred[Any] = Deferred(lambda d: aborted.append(True))
        record = self.http.request

        def chained(*args: Any, **kwargs: Any) -> Deferred[Any]:
            record(*args, **kwargs)
            return succeed(None).addCallback(lambda _: inner)

        self.http.request = chained  # type: ignore[method-assign]
        d = self.call(backend, "tools/call", {"name": "get_time"})
        self.pending("tools/call").deferred.callback(None)  # (the recorded one is not used)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(aborted, [True])
        self.assertNeverHandshakeEra()
        self.stop(backend)

    def test_timeoutAbortsThePost(self) -> None:
        backend = self.modern_up()
        d = self.call(backend, "tools/call", {"name": "get_time"}, timeout=2.0)
        response = self.pending("tools/call").respond(200, SSE)
        response.push(b": working\n\n")
        self.clock.advance(2.0)
        self.assertEqual(self.failureResultOf(d, JsonRpcError).value.code, errors.BACKEND_TIMEOUT)
        self.assertEqual(response.stopped, 1)
        response.end(broken())
        self.assertNeverHandshakeEra()
        self.stop(backend)


class AnswerTests(ModernTestCase):
    def test_errorInAnErrorStatus(self) -> None:
        """A modern server's JSON-RPC error in a 400 or 404 is its answer (not 'HTTP 400')."""
        backend = self.modern_up()
        d = self.call(backend, "tools/call", {"name": "get_time", "arguments": {"x": 1}})
        request = self.pending("tools/call")
        request.respond(400, JSON, rpc_error(request, -32602, "Invalid params: x"))
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((e.code, e.message), (-32602, "Invalid params: x"))
        d = self.call(backend, "tools/call", {"name": "get_time"})
        self.pending("tools/call").respond(502, {"content-type": "text/plain"}, b"bad gateway")
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual((e.code, e.data["status"]), (errors.BACKEND_HTTP_ERROR, 502))
        self.assertEqual(backend.state, State.UP)
        self.stop(backend)

    def test_streamEndedIsNotResumed(self) -> None:
        """A 2026-07-28 stream that ends before its response fails its call: no GET with Last-Event-ID."""
        backend = self.modern_up()
        d = self.call(backend, "tools/call", {"name": "get_time"})
        response: FakeResponse = self.pending("tools/call").respond(200, SSE)
        response.push(b"id: 7\ndata: \n\n")
        response.end(broken())
        e = self.failureResultOf(d, JsonRpcError).value
        self.assertEqual(e.code, errors.BACKEND_LOST)
        self.assertIn("a 2026-07-28 stream cannot be resumed", e.message)
        self.assertNeverHandshakeEra()
        self.stop(backend)

    def test_listChangedRelistsWithModernHeaders(self) -> None:
        """A list_changed carried by a call's stream re-lists (a POST like any other); nothing else is opened."""
        backend = self.modern_up()
        d = self.call(backend, "tools/call", {"name": "get_time"})
        call = self.pending("tools/call")
        response = call.respond(200, SSE)
        response.push_event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        response.push_event({"jsonrpc": "2.0", "id": call.rpc_id, "result": {"content": []}})
        response.end()
        self.successResultOf(d)
        listing = self.pending("tools/list")
        self.assertModernHeaders(listing, "tools/list")
        self.answer(listing, {"tools": [PLAIN]})
        self.assertEqual([t["name"] for t in backend.tools], ["get_time"])
        self.assertNeverHandshakeEra()
        self.stop(backend)


class ListenConnectionTests(ModernTestCase):
    def test_theListenIsNotCountedAgainstMaxRequests(self) -> None:
        """
        The server advertises tools listChanged: the gateway keeps its listen
        open (a connection of its own), and maxRequests still admits that many
        calls.
        """
        backend = self.modern_up(maxRequests=1)
        listen = self.pending("subscriptions/listen")
        self.assertModernHeaders(listen, "subscriptions/listen")
        first = self.call(backend, "tools/call", {"name": "get_time"})
        with self.assertRaises(JsonRpcError) as caught:
            self.call(backend, "tools/call", {"name": "get_time"})
        self.assertEqual(caught.exception.code, errors.BUSY)
        self.assertIn("1 requests in flight", caught.exception.message)
        self.answer(self.pending("tools/call"), {"content": []})
        self.assertEqual(self.successResultOf(first), {"content": []})
        self.stop(backend)
