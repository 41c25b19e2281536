"""
Stateless-era (MCP 2026-07-28) clients of the core, beside handshake-era
ones: how a request's era is told, the checks a 2026-07-28 request passes
and their order (-32602, -32022, -32601), C{server/discover}, results as
that era shapes them, the envelope kept from handshake-era backends, the
connection's era once chosen, and log messages only for requests that ask.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import line_caller
from twisted_mcp.mcp.meta import Envelope, claims_modern, read_envelope, without_reserved
from twisted_mcp.mcp.results import to_modern
from twisted_mcp.mcp.versions import SUPPORTED_VERSIONS
from twisted_mcp.wire.jsonrpc import JsonRpcError

from .fakes import FakeBackend
from .test_gateway import SessionTestCase

MODERN = "2026-07-28"


def envelope(**more: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "modern-client", "version": "1"},
    }
    meta.update(more)
    return {k: v for k, v in meta.items() if v is not None}


class EnvelopeTests(SynchronousTestCase):
    def test_theProtocolVersionKeyMakesARequestModern(self) -> None:
        self.assertTrue(claims_modern({"_meta": envelope()}))
        self.assertTrue(claims_modern({"_meta": {"io.modelcontextprotocol/protocolVersion": 7}}))
        for legacy in ({}, {"_meta": {"progressToken": 1}}, {"_meta": "x"}, None, []):
            self.assertFalse(claims_modern(legacy), legacy)

    def test_aWellFormedEnvelopeIsRead(self) -> None:
        got = read_envelope({"_meta": envelope(**{"io.modelcontextprotocol/logLevel": "debug"})})
        self.assertEqual(got, Envelope(MODERN, {}, {"name": "modern-client", "version": "1"}, "debug"))

    def test_malformedEnvelopesAreInvalidParamsNamingTheKey(self) -> None:
        cases = {
            "protocolVersion": {"io.modelcontextprotocol/protocolVersion": 20260728},
            "clientCapabilities": {"io.modelcontextprotocol/clientCapabilities": None},
            "clientInfo": {"io.modelcontextprotocol/clientInfo": "me"},
            "logLevel": {"io.modelcontextprotocol/logLevel": "loud"},
        }
        for key, change in cases.items():
            with self.assertRaises(JsonRpcError) as caught:
                read_envelope({"_meta": envelope(**change) | change})
            self.assertEqual(caught.exception.code, -32602, key)
            self.assertIn(key, caught.exception.message)

    def test_anUnknownVersionIsUnsupportedWithTheListOfBothEras(self) -> None:
        with self.assertRaises(JsonRpcError) as caught:
            read_envelope({"_meta": envelope(**{"io.modelcontextprotocol/protocolVersion": "v999.0.0"})})
        self.assertEqual(caught.exception.code, -32022)
        self.assertEqual(caught.exception.data, {"supported": list(SUPPORTED_VERSIONS), "requested": "v999.0.0"})

    def test_aMalformedEnvelopeIsReportedBeforeAnUnknownVersion(self) -> None:
        with self.assertRaises(JsonRpcError) as caught:
            read_envelope({"_meta": {"io.modelcontextprotocol/protocolVersion": "v999.0.0"}})
        self.assertEqual(caught.exception.code, -32602)

    def test_reservedKeysAreTakenOutForHandshakeEraBackends(self) -> None:
        self.assertEqual(without_reserved(envelope(progressToken=3, traceparent="00-ab")), {"progressToken": 3, "traceparent": "00-ab"})
        self.assertIsNone(without_reserved(envelope()))

    def test_everyReservedKeyIsTakenOutNotOnlyTheEnvelopes(self) -> None:
        """
        The envelope alone leaves nothing, and so does a C{_meta} with a
        reserved key the gateway does not know; what is not reserved is
        kept, in a new dict (the client's is never handed on).
        """
        self.assertIsNone(without_reserved({}))
        self.assertIsNone(without_reserved(envelope(**{"io.modelcontextprotocol/logLevel": "debug"})))
        self.assertIsNone(without_reserved(envelope(**{"io.modelcontextprotocol/future": 1})))
        self.assertIsNone(without_reserved({"io.modelcontextprotocol/future": 1}))
        meta = envelope(**{"io.modelcontextprotocol/future": 1, "progressToken": "p"})
        kept = without_reserved(meta)
        self.assertEqual(kept, {"progressToken": "p"})
        self.assertIsNot(kept, meta)
        self.assertEqual(without_reserved({"progressToken": 0}), {"progressToken": 0})
        every = envelope(**{"io.modelcontextprotocol/logLevel": "info", "progressToken": 0})
        self.assertEqual(without_reserved(every), {"progressToken": 0})

    def test_theClientInfoKeptIsItsNameAndVersionCut(self) -> None:
        """Of C{clientInfo}, only the name and the version are kept, each cut to 256 characters."""
        info = {"name": "n" * 300, "version": "v" * 300, "title": "Big client", "icons": []}
        got = read_envelope({"_meta": envelope(**{"io.modelcontextprotocol/clientInfo": info})})
        self.assertEqual(got.client_info, {"name": "n" * 256, "version": "v" * 256})
        self.assertEqual(read_envelope({"_meta": envelope(**{"io.modelcontextprotocol/clientInfo": None})}).client_info, {})

    def test_theCapabilitiesAreTheClientsExactly(self) -> None:
        """The capabilities read are what the client sent, C{true} not turned into C{1}."""
        capabilities = {"sampling": {}, "experimental": {"x": True, "y": 1}}
        got = read_envelope({"_meta": envelope(**{"io.modelcontextprotocol/clientCapabilities": capabilities})})
        self.assertIs(got.capabilities, capabilities)
        self.assertIs(got.capabilities["experimental"]["x"], True)

    def test_modernResultsSayTheyAreCompleteAndHowToCacheThem(self) -> None:
        original = {"tools": [], "_meta": {"x": 1}}
        shaped = to_modern("tools/list", original, private=True)
        self.assertEqual(shaped["resultType"], "complete")
        self.assertEqual((shaped["ttlMs"], shaped["cacheScope"]), (0, "private"))
        self.assertEqual(shaped["_meta"]["x"], 1)
        self.assertEqual(shaped["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "twisted-mcp")
        self.assertEqual(original, {"tools": [], "_meta": {"x": 1}})  # the catalog's own object is untouched
        asking = to_modern("resources/read", {"resultType": "input_required", "inputRequests": {}}, private=True)
        self.assertNotIn("ttlMs", asking)  # caching hints only on complete results
        self.assertNotIn("cacheScope", asking)
        call = to_modern("tools/call", {"content": []})
        self.assertNotIn("ttlMs", call)
        self.assertEqual(call["resultType"], "complete")


class ModernClientTests(SessionTestCase):
    def modern(self, id: Any, method: str, params: dict[str, Any] | None = None, **meta: Any) -> None:
        out = dict(params or {})
        out["_meta"] = {**envelope(**meta), **out.get("_meta", {})}
        self.request(id, method, out)

    def test_discoverNamesBothErasAndWhatIsOffered(self) -> None:
        self.modern(1, "server/discover")
        (answer,) = self.take()
        result = answer["result"]
        self.assertEqual(result["supportedVersions"], list(SUPPORTED_VERSIONS))
        self.assertEqual(result["capabilities"], {"tools": {"listChanged": True}})  # delivered on subscriptions/listen
        self.assertEqual((result["resultType"], result["ttlMs"], result["cacheScope"]), ("complete", 0, "public"))
        self.assertEqual(result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "twisted-mcp")
        # Discover does not choose the connection's era: initialize still works.
        self.assertEqual(self.initialize()["result"]["protocolVersion"], "2025-11-25")

    def undiscovered(self, backend: FakeBackend) -> tuple[ClientSession, list[bytes]]:
        """A session of a gateway whose one backend has not finished its first discovery, and what it was sent."""
        gateway = Gateway([backend], "__", self.clock, 30.0)
        gateway.start()
        out: list[bytes] = []
        return ClientSession(gateway, line_caller(out.append, "early")), out

    def test_discoverWaitsBoundedlyForTheFirstDiscovery(self) -> None:
        session, out = self.undiscovered(FakeBackend("slow", ["t"]))
        session.message_received({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": envelope()}})
        self.assertEqual(out, [])
        self.clock.advance(5)
        self.assertEqual(len(out), 1)
        self.clock.advance(30)  # the gateway's own discovery bound

    def test_aFamilyIsJudgedOnceEveryServerWasDiscovered(self) -> None:
        """
        A resources/list sent before the servers' first discovery waits for
        it: answered then if a server offers resources, -32601 if none does
        (not -32601 at once because nothing was discovered yet).
        """
        for offered, expected in (({"resources": {}}, "result"), ({"tools": {}}, "error")):
            late = FakeBackend("late", ["t"], resources=["file:///a"])
            late.capabilities = offered
            session, out = self.undiscovered(late)
            session.message_received({"jsonrpc": "2.0", "id": 1, "method": "resources/list", "params": {"_meta": envelope()}})
            self.assertEqual(out, [])
            late._first_discovery_done()
            (line,) = out
            self.assertIn(expected, json.loads(line), offered)
            if expected == "error":
                self.assertEqual(json.loads(line)["error"]["code"], -32601)

    def test_aModernCallReachesTheBackendWithoutTheEnvelope(self) -> None:
        self.modern(1, "tools/call", {"name": "alpha__add", "arguments": {"a": 1}, "_meta": {"progressToken": "p"}})
        (call,) = self.alpha.calls
        self.assertEqual(call.params, {"name": "add", "arguments": {"a": 1}, "_meta": {"progressToken": "p"}})
        call.on_progress({"progress": 1})
        call.deferred.callback({"content": [{"type": "text", "text": "2"}]})
        progress, answer = self.take()
        self.assertEqual(progress["params"], {"progress": 1, "progressToken": "p"})
        self.assertEqual(answer["result"]["resultType"], "complete")
        self.assertEqual(answer["result"]["content"], [{"type": "text", "text": "2"}])
        self.assertNotIn("ttlMs", answer["result"])

    def test_aModernListIsShapedForItsEra(self) -> None:
        self.modern(1, "tools/list")
        (answer,) = self.take()
        result = answer["result"]
        self.assertEqual([t["name"] for t in result["tools"]], ["alpha__add", "alpha__echo", "beta__get_time"])
        self.assertEqual((result["resultType"], result["cacheScope"]), ("complete", "public"))

    def test_theLadderOrder(self) -> None:
        """-32602 (envelope) before -32022 (version) before -32601 (method), every error with the request's id."""
        self.request(1, "tools/list", {"_meta": {"io.modelcontextprotocol/protocolVersion": "v999"}})
        self.modern(2, "tools/list", **{"io.modelcontextprotocol/protocolVersion": "v999"})
        self.modern(3, "initialize")
        self.modern(4, "ping")
        self.modern(5, "logging/setLevel", {"level": "debug"})
        self.modern(6, "resources/subscribe", {"uri": "x://y"})
        self.modern(7, "prompts/list")  # no backend offers prompts
        a, b, c, d, e, f, g = self.take()
        self.assertError(a, 1, -32602, "clientCapabilities")
        self.assertError(b, 2, -32022, "v999")
        for message, rid in ((c, 3), (d, 4), (e, 5), (f, 6)):
            self.assertError(message, rid, -32601)
        self.assertError(g, 7, -32601, "prompts")

    def test_aConnectionThatSentInitializeRefusesModernRequests(self) -> None:
        self.initialize()
        self.modern(1, "tools/list")
        self.assertError(self.take()[0], 1, -32600, "initialize")
        self.modern(2, "server/discover")  # read-only: still answered
        self.assertIn("supportedVersions", self.take()[0]["result"])

    def test_aModernConnectionRefusesInitializeNamingWhatItSpeaks(self) -> None:
        self.modern(1, "tools/list")
        self.take()
        self.request(2, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
        error = self.assertError(self.take()[0], 2, -32022)
        self.assertEqual(error["data"], {"supported": [MODERN], "requested": "2025-11-25"})
        self.request(3, "tools/list")
        self.assertError(self.take()[0], 3, -32602, "io.modelcontextprotocol/protocolVersion")

    def test_modernSessionsGetNoUnsolicitedNotifications(self) -> None:
        self.modern(1, "tools/list")
        self.take()
        self.session.list_changed("tools")
        self.assertEqual(self.take(), [])

    def test_serverRequestsDuringAModernCallAreJudgedByTheRequestsOwnCapabilities(self) -> None:
        # The connection's Caller declared nothing; the request's envelope did.
        self.modern(1, "tools/call", {"name": "alpha__add", "arguments": {}}, **{"io.modelcontextprotocol/clientCapabilities": {"sampling": {}}})
        self.take()
        self.assertIsNotNone(self.session.caller.can_answer("sampling/createMessage", {}))
        d = self.gateway.reverse.server_request(self.alpha, "sampling/createMessage", {"messages": []}, None)
        self.clock.advance(0.01)
        (held,) = self.take()
        self.assertEqual(held["result"]["resultType"], "input_required")
        d.addErrback(lambda f: None)
        self.alpha.calls[0].deferred.callback({"content": []})
        self.clock.advance(300)
        self.assertEqual(len(self.gateway.reverse.held), 0)

    def test_logMessagesOnlyForRequestsThatAskForThem(self) -> None:
        self.alpha.capabilities = {"tools": {}, "logging": {}}
        self.modern(1, "tools/call", {"name": "alpha__add", "arguments": {}}, **{"io.modelcontextprotocol/logLevel": "warning"})
        self.modern(2, "tools/call", {"name": "alpha__echo", "arguments": {}})
        asked, quiet = [c for c in self.alpha.calls if c.method == "tools/call"]
        logs = self.gateway.logs
        logs.deliver(self.alpha, {"level": "error", "data": "for 1"}, asked.context)
        logs.deliver(self.alpha, {"level": "info", "data": "too low for 1"}, asked.context)
        logs.deliver(self.alpha, {"level": "error", "data": "for 2"}, quiet.context)
        logs.deliver(self.alpha, {"level": "error", "data": "tied to no call"}, None)
        (message,) = [m for m in self.take() if m.get("method") == "notifications/message"]
        self.assertEqual(message["params"]["data"], "for 1")
        # The backend was asked for warnings and above on the client's behalf.
        self.assertIn({"level": "warning"}, [c.params for c in self.alpha.calls if c.method == "logging/setLevel"])
        asked.deferred.callback({"content": []})
        quiet.deferred.callback({"content": []})
        self.take()
