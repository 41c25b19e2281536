"""
Tests for L{twisted_mcp.dispatch.gateway}: the MCP server side of a client
connection, over fake backends.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import State
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends import stream as stream_module
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.versions import HANDSHAKE_VERSIONS, LATEST_HANDSHAKE
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.wire.jsonrpc import JsonRpcError, MessageError

from .fakes import FakeBackend

ECHO = {"name": "echo", "description": "echoes", "inputSchema": {"type": "object"}}


class SessionTestCase(SynchronousTestCase):
    ready = True

    def setUp(self) -> None:
        self.clock = Clock()
        self.alpha = FakeBackend("alpha", [ECHO, "add"])
        self.beta = FakeBackend("beta", ["get.time"])
        self.gateway = Gateway([self.alpha, self.beta], "__", self.clock, 5.0)
        if self.ready:
            self.alpha._first_discovery_done()
            self.beta._first_discovery_done()
        self.gateway.start()
        self.out: list[bytes] = []
        self.session = ClientSession(self.gateway, line_caller(self.out.append, "test"))

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def send(self, message: Any) -> None:
        deliver(self.session, json.dumps(message).encode())

    def request(self, id: Any, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def take(self) -> list[Any]:
        """The messages sent to the client since the last take()."""
        for line in self.out:
            self.assertTrue(line.endswith(b"\n"))
            self.assertEqual(line.count(b"\n"), 1)
        messages = [json.loads(line) for line in self.out]
        del self.out[:]
        return messages

    def initialize(self, version: Any = LATEST_HANDSHAKE) -> dict[str, Any]:
        self.request(0, "initialize", {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "c"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        (answer,) = self.take()
        return answer

    def assertError(self, message: Any, id: Any, code: int, *words: str) -> dict[str, Any]:
        self.assertEqual(set(message), {"jsonrpc", "id", "error"})
        self.assertEqual(message["jsonrpc"], "2.0")
        self.assertIs(type(message["id"]), type(id))
        self.assertEqual(message["id"], id)
        self.assertEqual(message["error"]["code"], code, message)
        for w in words:
            self.assertIn(w, message["error"]["message"])
        return message["error"]


class DecodedMessageTests(SessionTestCase):
    """The session takes decoded messages: no bytes, no line framing."""

    def test_answersADecodedRequest(self) -> None:
        self.session.message_received({"jsonrpc": "2.0", "id": 7, "method": "ping"})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 7, "result": {}}])

    def test_reportsWhatCouldNotBeDecoded(self) -> None:
        self.session.undecodable(MessageError(-32700, "Parse error: something"))
        self.assertError(self.take()[0], None, -32700, "Parse error: something")


class MalformedInputTests(SessionTestCase):
    def test_badJson(self) -> None:
        deliver(self.session, b'{"jsonrpc": "2.0", "id": 1, "method": ')
        (answer,) = self.take()
        self.assertError(answer, None, -32700, "Parse error")

    def test_badUtf8(self) -> None:
        deliver(self.session, b'{"jsonrpc":"2.0","id":1,"method":"\xff"}')
        self.assertError(self.take()[0], None, -32700)

    def test_hugeAndDeep(self) -> None:
        deliver(self.session, b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ping"}')
        deliver(self.session, b"[" * 100000)
        deliver(self.session, b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":NaN}}')
        for answer in self.take():
            self.assertError(answer, None, -32700)

    def test_batch(self) -> None:
        self.send([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "ping"}])
        (answer,) = self.take()
        self.assertError(answer, None, -32600, "batch")

    def test_nonObject(self) -> None:
        for value in [5, "ping", None, True]:
            self.send(value)
            (answer,) = self.take()
            self.assertError(answer, None, -32600, "object")

    def test_badIds(self) -> None:
        for bad in [True, False, None, [1], {"a": 1}]:
            self.request(bad, "ping")
            (answer,) = self.take()
            self.assertError(answer, None, -32600, "id")

    def test_badJsonrpcVersion(self) -> None:
        self.send({"jsonrpc": "1.0", "id": 3, "method": "ping"})
        self.send({"id": 4, "method": "ping"})
        a, b = self.take()
        self.assertError(a, 3, -32600, "jsonrpc")
        self.assertError(b, 4, -32600)

    def test_methodNotString(self) -> None:
        self.send({"jsonrpc": "2.0", "id": 3, "method": 5})
        self.assertError(self.take()[0], 3, -32600, "method")

    def test_paramsNotObject(self) -> None:
        self.request(3, "ping", [1, 2])
        self.assertError(self.take()[0], 3, -32602)

    def test_responsesFromClientIgnored(self) -> None:
        self.send({"jsonrpc": "2.0", "id": 1, "result": {}})
        self.send({"jsonrpc": "2.0", "id": 2, "error": {"code": 1, "message": "x"}})
        self.assertEqual(self.take(), [])

    def test_infiniteIdDoesNotBreakTheSession(self) -> None:
        try:
            deliver(self.session, b'{"jsonrpc":"2.0","id":1e400,"method":"ping"}')
        except ValueError:
            self.fail("ValueError escaped deliver")
        (answer,) = self.take()
        self.assertEqual(answer["error"]["code"], -32700)


class HandshakeTests(SessionTestCase):
    def test_unknownMethod(self) -> None:
        self.initialize()
        self.request(7, "tasks/list")
        self.assertError(self.take()[0], 7, -32601, "tasks/list")

    def test_unknownMethodBeforeInitialize(self) -> None:
        self.request(7, "tasks/get")
        self.assertError(self.take()[0], 7, -32601)

    def test_serverDiscoverWithoutTheEnvelopeSaysWhatIsMissing(self) -> None:
        self.request("d", "server/discover")
        self.assertError(self.take()[0], "d", -32602, "io.modelcontextprotocol/protocolVersion", "initialize")
        self.initialize()
        self.request("e", "server/discover")
        self.assertError(self.take()[0], "e", -32602)

    def test_requestsBeforeInitialize(self) -> None:
        self.request(1, "tools/list")
        self.request(2, "tools/call", {"name": "alpha__echo", "arguments": {}})
        a, b = self.take()
        self.assertError(a, 1, errors.NOT_INITIALIZED, "before initialize")
        self.assertError(b, 2, errors.NOT_INITIALIZED, "before initialize")
        self.assertEqual(self.alpha.calls, [])

    def test_pingBeforeInitialize(self) -> None:
        self.request(1, "ping")
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 1, "result": {}}])

    def test_initialize(self) -> None:
        answer = self.initialize("2025-06-18")
        self.assertEqual(answer["id"], 0)
        result = answer["result"]
        self.assertEqual(result["protocolVersion"], "2025-06-18")
        self.assertEqual(result["capabilities"], {"tools": {"listChanged": True}})
        self.assertEqual(result["serverInfo"]["name"], "twisted-mcp")
        self.assertTrue(self.session.initialized)
        self.assertEqual(self.session.client_info, {"name": "c"})

    def test_negotiation(self) -> None:
        expected = {v: v for v in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]}
        expected.update({"2099-01-01": "2025-11-25", "": "2025-11-25", None: "2025-11-25", 5: "2025-11-25"})
        self.assertEqual(set(HANDSHAKE_VERSIONS), {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})
        for asked, answered in expected.items():
            self.session = ClientSession(self.gateway, line_caller(self.out.append, "stdio"))
            self.assertEqual(self.initialize(asked)["result"]["protocolVersion"], answered, asked)

    def test_initializeWithoutParams(self) -> None:
        self.request(1, "initialize")
        (answer,) = self.take()
        self.assertEqual(answer["result"]["protocolVersion"], LATEST_HANDSHAKE)

    def test_secondInitialize(self) -> None:
        self.initialize()
        self.request(9, "initialize", {"protocolVersion": "2024-11-05"})
        self.assertError(self.take()[0], 9, -32600, "already")
        self.assertEqual(self.session.protocol_version, LATEST_HANDSHAKE)

    def test_idsKeepTypeAndValue(self) -> None:
        ids = [1, 1.0, "1", 0, -7, 2.5, "", "a\u00e9", 10**20]
        for rid in ids:
            self.request(rid, "ping")
        answers = self.take()
        self.assertEqual(len(answers), len(ids))
        for rid, answer in zip(ids, answers, strict=False):
            self.assertIs(type(answer["id"]), type(rid))
            self.assertEqual(answer["id"], rid)
        self.request(1.0, "ping")
        self.assertIn(b'"id":1.0', self.out[0])

    def test_notificationsNeverAnswered(self) -> None:
        self.initialize()
        for message in [
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
            {"jsonrpc": "2.0", "method": "no/such/notification", "params": {"x": 1}},
            {"jsonrpc": "2.0", "method": "notifications/cancelled"},
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": "junk"},
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}},
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 404}},
            {"jsonrpc": "2.0", "method": 5},
            {"method": "notifications/initialized"},
            {"jsonrpc": "2.0"},
            {},
        ]:
            self.send(message)
        self.assertEqual(self.take(), [])

    def test_notificationBeforeInitializeNotAnswered(self) -> None:
        self.send({"jsonrpc": "2.0", "method": "tools/list"})
        self.assertEqual(self.take(), [])


class InitializedTestCase(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.initialize()

    def call(self, id: Any, name: str, arguments: Any = None, **extra: Any) -> None:
        params: dict[str, Any] = {"name": name, **extra}
        if arguments is not None:
            params["arguments"] = arguments
        self.request(id, "tools/call", params)


class ToolsTests(InitializedTestCase):
    def test_toolsList(self) -> None:
        self.request(1, "tools/list")
        (answer,) = self.take()
        self.assertEqual(answer["id"], 1)
        tools = answer["result"]["tools"]
        self.assertEqual([t["name"] for t in tools], ["alpha__add", "alpha__echo", "beta__get_time"])
        self.assertEqual(tools[1], dict(ECHO, name="alpha__echo"))

    def test_toolsListCursor(self) -> None:
        self.request(1, "tools/list", {"cursor": "abc"})
        self.assertError(self.take()[0], 1, -32602, "cursor")

    def test_unknownTool(self) -> None:
        self.call(1, "gamma__nope", {})
        self.call(2, "get.time", {})
        a, b = self.take()
        self.assertError(a, 1, -32602, "gamma__nope")
        self.assertEqual(a["error"]["data"], {"tool": "gamma__nope"})
        self.assertError(b, 2, -32602)
        self.assertEqual(self.alpha.calls + self.beta.calls, [])

    def test_badCallParams(self) -> None:
        self.request(1, "tools/call", {"arguments": {}})
        self.call(2, "alpha__echo", [1, 2])
        a, b = self.take()
        self.assertError(a, 1, -32602, "name")
        self.assertError(b, 2, -32602, "arguments")
        self.assertEqual(self.alpha.calls, [])

    def test_routesCall(self) -> None:
        decoded: list[Any] = []
        real_decode = stream_module.decode

        def recording_decode(line: bytes) -> Any:
            decoded.append(real_decode(line))
            return decoded[-1]

        self.patch(stream_module, "decode", recording_decode)
        self.call("c-1", "beta__get_time", {"tz": "UTC"}, extra={"keep": True})
        self.assertEqual(self.alpha.calls, [])
        (call,) = self.beta.calls
        self.assertEqual(call.method, "tools/call")
        self.assertEqual(call.params, {"name": "get.time", "arguments": {"tz": "UTC"}, "extra": {"keep": True}})
        self.assertIsNone(call.on_progress)
        client_params = decoded[-1]["params"]
        self.assertIsNot(call.params, client_params)
        self.assertEqual(client_params["name"], "beta__get_time")
        self.assertEqual(self.take(), [])
        call.deferred.callback({"content": [{"type": "text", "text": "noon"}]})
        self.assertEqual(
            self.take(),
            [{"jsonrpc": "2.0", "id": "c-1", "result": {"content": [{"type": "text", "text": "noon"}]}}],
        )
        self.assertEqual(self.session.in_flight, {})

    def test_answersKeepIdTypes(self) -> None:
        for rid in [1, 1.0, "1"]:
            self.call(rid, "alpha__echo", {"rid": repr(rid)})
        self.assertEqual(self.take(), [])
        self.assertEqual(len(self.alpha.calls), 3)
        for call in reversed(self.alpha.calls):
            call.deferred.callback({"echo": call.params["arguments"]["rid"]})
        answers = self.take()
        self.assertEqual([(type(a["id"]), a["id"]) for a in answers], [(str, "1"), (float, 1.0), (int, 1)])
        for a in answers:
            self.assertEqual(a["result"], {"echo": repr(a["id"])})

    def test_backendErrorPassedThrough(self) -> None:
        self.call(5, "alpha__add", {})
        self.alpha.calls[0].deferred.errback(
            errors.backend_error(errors.BACKEND_TIMEOUT, "alpha", "too slow", timeout=3.0)
        )
        self.assertEqual(
            self.take(),
            [
                {
                    "jsonrpc": "2.0",
                    "id": 5,
                    "error": {
                        "code": errors.BACKEND_TIMEOUT,
                        "message": "too slow",
                        "data": {"timeout": 3.0, "backend": "alpha"},
                    },
                }
            ],
        )

    def test_backendToolError(self) -> None:
        self.call(5, "alpha__add", {})
        self.alpha.calls[0].deferred.errback(JsonRpcError(-32602, "bad args", {"field": "a"}))
        error = self.assertError(self.take()[0], 5, -32602)
        self.assertEqual(error, {"code": -32602, "message": "bad args", "data": {"field": "a"}})

    def assertOneUnencodableAnswer(self, data: Any) -> None:
        """A backend's error whose C{data} cannot be encoded is still
        answered, once, with its own id (trial fails the test on an
        unhandled error in a Deferred)."""
        self.call(5, "alpha__add", {})
        self.alpha.calls[0].deferred.errback(JsonRpcError(-32602, "bad args", data))
        (answer,) = self.take()
        self.assertError(answer, 5, -32603, "the answer could not be encoded")
        self.assertEqual(self.session.in_flight, {})

    def test_backendErrorTooDeepToEncode(self) -> None:
        data: Any = "bottom"
        for _ in range(5000):
            data = [data]
        self.assertOneUnencodableAnswer(data)

    def test_backendErrorNotFinite(self) -> None:
        """A non-finite number cannot come from a peer (decoding refuses
        NaN and Infinity), only from the gateway's own code: it is written
        as null (orjson's way), and the answer is still one valid message."""
        self.call(5, "alpha__add", {})
        self.alpha.calls[0].deferred.errback(JsonRpcError(-32602, "bad args", {"value": float("nan")}))
        (answer,) = self.take()
        self.assertEqual(answer["error"], {"code": -32602, "message": "bad args", "data": {"value": None}})
        self.assertEqual(self.session.in_flight, {})

    def test_backendUnavailable(self) -> None:
        self.alpha.state = State.DOWN
        self.alpha.last_error = "the process exited with code 1"
        self.call(5, "alpha__add", {})
        error = self.assertError(self.take()[0], 5, errors.BACKEND_UNAVAILABLE, "exited")
        self.assertEqual(error["data"], {"backend": "alpha", "state": "down"})

    def test_unexpectedFailure(self) -> None:
        self.call(5, "alpha__add", {})
        self.alpha.calls[0].deferred.errback(ZeroDivisionError("oops"))
        self.assertError(self.take()[0], 5, -32603, "oops")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_clientCancel(self) -> None:
        self.call(5, "alpha__add", {})
        self.call(6, "alpha__add", {})
        first, second = self.alpha.calls
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5, "reason": "x"}})
        self.assertTrue(first.cancelled)
        self.assertFalse(second.cancelled)
        self.assertEqual(self.take(), [])
        self.assertEqual(list(self.session.in_flight), [(int, 6)])
        second.deferred.callback({})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 6, "result": {}}])

    def test_cancelMatchesIdType(self) -> None:
        self.call(5, "alpha__add", {})
        for other in [5.0, "5"]:
            self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": other}})
        self.assertFalse(self.alpha.calls[0].cancelled)
        self.alpha.calls[0].deferred.callback({})
        self.assertEqual(self.take()[0]["id"], 5)

    def test_duplicateInFlightId(self) -> None:
        self.call(5, "alpha__add", {})
        self.call(5, "alpha__echo", {})
        self.request(5, "ping")
        duplicate, ping = self.take()
        self.assertError(duplicate, 5, -32600, "already")
        self.assertEqual(ping, {"jsonrpc": "2.0", "id": 5, "result": {}})
        self.assertEqual(len(self.alpha.calls), 1)
        self.alpha.calls[0].deferred.callback({"n": 1})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 5, "result": {"n": 1}}])
        # Free again once answered.
        self.call(5, "alpha__echo", {})
        self.assertEqual(len(self.alpha.calls), 2)

    def test_progressForwarded(self) -> None:
        decoded: list[Any] = []
        real_decode = stream_module.decode
        self.patch(stream_module, "decode", lambda line: decoded.append(real_decode(line)) or decoded[-1])
        meta = {"progressToken": "tok-1", "other": 1}
        self.call(8, "alpha__echo", {}, _meta=meta)
        (call,) = self.alpha.calls
        self.assertIsNotNone(call.on_progress)
        self.assertEqual(call.params["_meta"], meta)
        # The backend replaces the token in its own copy of _meta.
        call.params["_meta"]["progressToken"] = 1
        self.assertEqual(decoded[-1]["params"]["_meta"], meta)
        assert call.on_progress is not None
        call.on_progress({"progressToken": 1, "progress": 0.5, "total": 1, "message": "half"})
        self.assertEqual(
            self.take(),
            [
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": "tok-1", "progress": 0.5, "total": 1, "message": "half"},
                }
            ],
        )
        call.deferred.callback({})
        self.assertEqual(self.take()[0]["id"], 8)

    def test_toolsChanged(self) -> None:
        self.beta.tools = [{"name": "get.time"}, {"name": "convert"}]
        self.beta._changed()
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}])
        self.request(1, "tools/list")
        names = [t["name"] for t in self.take()[0]["result"]["tools"]]
        self.assertIn("beta__convert", names)
        # A change that does not change the listing is not announced.
        self.beta.state = State.DOWN
        self.beta._changed()
        self.assertEqual(self.take(), [])

    def test_toolsChangedNotBeforeInitialize(self) -> None:
        other: list[bytes] = []
        ClientSession(self.gateway, line_caller(other.append, "stdio"))
        self.alpha.tools = []
        self.alpha._changed()
        self.assertEqual(other, [])
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}])


#: The gateway's errors of reaching a backend that count against its breaker.
TRANSPORT_FAILURES = [
    errors.BACKEND_UNAVAILABLE,
    errors.BACKEND_TIMEOUT,
    errors.BACKEND_LOST,
    errors.BACKEND_RESPONSE_TOO_LARGE,
    errors.BACKEND_HTTP_ERROR,
]
#: Every gateway code, the transport failures last: five in a row open a
#: breaker.
ALL_CODES = sorted(errors.GATEWAY_CODES - set(TRANSPORT_FAILURES)) + TRANSPORT_FAILURES


class BackendCodesTests(InitializedTestCase):
    """
    Whether an error is the gateway's own is decided by who raised it, never
    by its code: a backend may answer with any integer, the gateway's codes
    included.  A policy is in force, so each call passes a circuit breaker
    (five failures open it).
    """

    def setUp(self) -> None:
        super().setUp()
        self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)

    def failAll(self, make: Any) -> tuple[list[Any], list[Any]]:
        """One call for each gateway code, failed by C{make(code)} at the
        backend: what the client got, and the log lines of failed requests."""
        with capturedLogs() as events:
            for rid, code in enumerate(ALL_CODES):
                self.call(rid, "alpha__add", {})
                self.assertEqual(len(self.alpha.calls), rid + 1)
                self.alpha.calls[-1].deferred.errback(make(code))
        answers = self.take()
        self.assertEqual([a["id"] for a in answers], list(range(len(ALL_CODES))))
        return answers, [e for e in events if "failed with" in e.get("log_format", "")]

    def test_backendsOwnErrorWithAGatewayCodeIsRelayedAsIs(self) -> None:
        """A backend's error that carries one of the gateway's codes reaches
        the client unchanged (no C{data.backend} added), is not logged as the
        gateway's refusal, is counted under C{code="other"} on /metrics, and
        does not count against the backend's circuit breaker (it answered)."""
        answers, logged = self.failAll(lambda code: JsonRpcError(code, f"the server's own {code}", {"mine": [code]}))
        self.assertEqual(
            [a["error"] for a in answers],
            [{"code": code, "message": f"the server's own {code}", "data": {"mine": [code]}} for code in ALL_CODES],
        )
        self.assertEqual(logged, [])
        self.assertEqual(self.gateway.requests[("tools/call", "error", "other")], len(ALL_CODES))
        self.assertEqual(self.gateway.policy.breaker("alpha").state, "closed")

    def test_gatewaysOwnErrorsAreLoggedAndCounted(self) -> None:
        """The same codes raised by the gateway itself are logged, counted
        each under its own code, and five transport failures in a row open
        the backend's breaker."""
        answers, logged = self.failAll(lambda code: errors.backend_error(code, "alpha", f"the gateway's {code}"))
        self.assertEqual([a["error"]["data"] for a in answers], [{"backend": "alpha"}] * len(ALL_CODES))
        self.assertEqual([e["code"] for e in logged], ALL_CODES)
        for code in ALL_CODES:
            self.assertEqual(self.gateway.requests[("tools/call", "error", str(code))], 1)
        self.assertEqual(self.gateway.policy.breaker("alpha").state, "open")


class DrainTests(InitializedTestCase):
    def test_drainNothingInFlight(self) -> None:
        d = self.session.drain(10, self.clock)
        self.successResultOf(d)
        self.assertNotIn(self.session, self.gateway.sessions)

    def test_drainWaitsForCalls(self) -> None:
        self.call(1, "alpha__add", {})
        self.call(2, "beta__get_time", {})
        d = self.session.drain(10, self.clock)
        self.assertNoResult(d)
        self.request(3, "ping")
        self.assertError(self.take()[0], 3, errors.GATEWAY_SHUTTING_DOWN)
        self.alpha.calls[0].deferred.callback({"a": 1})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 1, "result": {"a": 1}}])
        self.assertNoResult(d)
        self.beta.calls[0].deferred.callback({"b": 2})
        self.successResultOf(d)
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 2, "result": {"b": 2}}])
        self.assertFalse(self.beta.calls[0].cancelled)

    def test_drainCancelsAfterGrace(self) -> None:
        self.call(1, "alpha__add", {})
        self.call("two", "beta__get_time", {})
        d = self.session.drain(10, self.clock)
        self.alpha.calls[0].deferred.callback({})
        self.take()
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.assertFalse(self.beta.calls[0].cancelled)
        self.clock.advance(0.1)
        self.assertTrue(self.beta.calls[0].cancelled)
        self.successResultOf(d)
        (answer,) = self.take()
        self.assertError(answer, "two", errors.GATEWAY_SHUTTING_DOWN, "shutting down")
        self.assertEqual(self.session.in_flight, {})

    def test_noListChangedWhileClosing(self) -> None:
        self.session.drain(1, self.clock)
        self.alpha.tools = []
        self.alpha._changed()
        self.assertEqual(self.take(), [])


class NotReadyTests(SessionTestCase):
    ready = False

    def tearDown(self) -> None:
        # Discovery may be left unfinished by a test: let the bound pass.
        self.clock.advance(5.0)
        super().tearDown()

    def initialize(self, version: Any = LATEST_HANDSHAKE) -> dict[str, Any]:
        """Before discovery finishes, initialize is taken but not answered yet."""
        self.request(0, "initialize", {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "c"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.assertEqual(SessionTestCase.take(self), [])
        self.assertTrue(self.session.initialized)
        return {}

    def take(self) -> list[Any]:
        """What the client got since the last take(), but initialize's answer."""
        return [m for m in SessionTestCase.take(self) if m.get("id") != 0]

    def test_initializeAnsweredOnceDiscoveryFinished(self) -> None:
        """The capabilities advertised are those of the backends discovered."""
        self.beta.capabilities = {"tools": {}, "prompts": {"listChanged": True}}
        self.initialize()
        self.alpha._first_discovery_done()
        self.assertEqual(SessionTestCase.take(self), [])
        self.beta._first_discovery_done()
        (answer,) = SessionTestCase.take(self)
        self.assertEqual(answer["id"], 0)
        self.assertEqual(answer["result"]["capabilities"], {"tools": {"listChanged": True}, "prompts": {"listChanged": True}})

    def test_toolsListWaitsForDiscovery(self) -> None:
        self.initialize()
        self.request(1, "tools/list")
        self.assertEqual(self.take(), [])
        self.alpha._first_discovery_done()
        self.assertEqual(self.take(), [])
        self.beta.tools = [{"name": "late"}]
        self.beta._first_discovery_done()
        (answer,) = self.take()
        self.assertEqual(answer["id"], 1)
        self.assertEqual(
            [t["name"] for t in answer["result"]["tools"]], ["alpha__add", "alpha__echo", "beta__late"]
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_toolsListWaitIsBounded(self) -> None:
        self.alpha._first_discovery_done()
        self.beta.state = State.STARTING
        self.initialize()
        self.request(1, "tools/list")
        self.clock.advance(4.9)
        self.assertEqual(self.take(), [])
        self.clock.advance(0.1)
        (answer,) = self.take()
        self.assertEqual(
            [t["name"] for t in answer["result"]["tools"]], ["alpha__add", "alpha__echo", "beta__get_time"]
        )

    def test_toolsCallWaitsForDiscovery(self) -> None:
        self.initialize()
        self.request(1, "tools/call", {"name": "alpha__echo", "arguments": {}})
        self.request(2, "tools/call", {"name": "nope", "arguments": {}})
        self.assertEqual(self.alpha.calls, [])
        self.alpha._first_discovery_done()
        self.beta._first_discovery_done()
        (unknown,) = self.take()
        self.assertError(unknown, 2, -32602, "nope")
        (call,) = self.alpha.calls
        self.assertEqual(call.params["name"], "echo")
        call.deferred.callback({"ok": True})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 1, "result": {"ok": True}}])

    def test_cancelWhileWaiting(self) -> None:
        self.initialize()
        self.request(1, "tools/list")
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
        self.alpha._first_discovery_done()
        self.beta._first_discovery_done()
        self.assertEqual(self.take(), [])
        self.assertEqual(self.session.in_flight, {})

    def test_noListChangedBeforeReady(self) -> None:
        self.initialize()
        self.alpha.tools = []
        self.alpha._changed()
        self.assertEqual(self.take(), [])


class GatewayTests(SynchronousTestCase):
    def test_readyOnce(self) -> None:
        clock = Clock()
        a = FakeBackend("a", ["t"])
        gw = Gateway([a], "__", clock, 3.0)
        gw.start()
        first = gw.when_ready()
        self.assertNoResult(first)
        clock.advance(3.0)
        self.successResultOf(first)
        self.successResultOf(gw.when_ready())
        self.assertEqual([t["name"] for t in gw.catalog.listing], ["a__t"])
        a._first_discovery_done()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noBackends(self) -> None:
        clock = Clock()
        gw = Gateway([], "__", clock, 3.0)
        gw.start()
        self.successResultOf(gw.when_ready())
        self.assertEqual(gw.catalog.listing, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_sessionsRegistered(self) -> None:
        gw = Gateway([], "__", Clock(), 1.0)
        s = ClientSession(gw, line_caller([].append, "stdio"))
        self.assertIn(s, gw.sessions)

