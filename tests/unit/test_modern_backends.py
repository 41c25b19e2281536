"""
Backends of the stateless era (MCP 2026-07-28) over stdio, with a fake
spawner and a Clock: the probe's verdict for each kind of answer, the
envelope stamped toward a modern backend (and kept from a legacy one), and
results shaped for each client era.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.error import ProcessTerminated
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from twisted_mcp.backends.base import State
from twisted_mcp.backends.direct import DirectCall
from twisted_mcp.backends.envelope import bridged, own, stamp
from twisted_mcp.backends.probe import probe_timeout
from twisted_mcp.backends.stdio import StdioBackend
from twisted_mcp.config import ConfigError, StdioServer
from twisted_mcp.config.loader import build
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp.results import from_modern_backend, to_legacy, to_modern
from twisted_mcp.mcp.versions import CLIENT_INFO, LATEST_HANDSHAKE
from twisted_mcp.wire.jsonrpc import JsonRpcError, encode

from .fakes import Spawn
from .test_policy import one_slot_policy
from .test_stdio_backend import TOOLS_1, BackendTestCase

MODERN = "2026-07-28"
V = "io.modelcontextprotocol/protocolVersion"
CAPS = "io.modelcontextprotocol/clientCapabilities"
INFO = "io.modelcontextprotocol/clientInfo"
LEVEL = "io.modelcontextprotocol/logLevel"
SERVER_INFO = "io.modelcontextprotocol/serverInfo"

DISCOVERED = {
    "supportedVersions": [MODERN],
    "capabilities": {"tools": {"listChanged": True}, "logging": {}},
    "instructions": "Use me.",
    "resultType": "complete",
    "ttlMs": 0,
    "cacheScope": "private",
    "_meta": {SERVER_INFO: {"name": "dual", "version": "2.3"}},
}
INITIALIZED = {
    "protocolVersion": "2025-06-18",
    "capabilities": {"tools": {}},
    "serverInfo": {"name": "old", "version": "1.0"},
}


def modern_envelope(capabilities: Any = None, level: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {V: MODERN, CAPS: capabilities if capabilities is not None else {}, INFO: {"name": "c", "version": "1"}}
    if level is not None:
        meta[LEVEL] = level
    return meta


class ProbeTestCase(BackendTestCase):
    def make(self, **overrides: Any) -> StdioBackend:
        settings: dict[str, Any] = dict(
            name="dual",
            command="dual-server",
            discoveryTimeout=20.0,
            callTimeout=5.0,
            restartDelay=1.0,
            livenessTimeout=0.0,
            protocol="auto",
        )
        settings.update(overrides)
        backend = StdioBackend(StdioServer(**settings), self.spawner, self.clock, ("PATH",), 1 << 20, {"PATH": "/bin"})
        return backend

    def methods(self, spawn: Spawn) -> list[str]:
        return [m.get("method", "<answer>") for m in spawn.transport.messages()]

    def stop(self, backend: StdioBackend) -> None:
        d = backend.stopService()
        child = backend.child
        if child is not None and not child._gone:
            child.processExited(Failure(ProcessTerminated(exitCode=0)))
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def modern_up(self, **overrides: Any) -> tuple[StdioBackend, Spawn]:
        backend = self.make(**overrides)
        backend.startService()
        spawn = self.last
        self.reply(spawn, "server/discover", DISCOVERED)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1, "resultType": "complete", "ttlMs": 0, "cacheScope": "public"})
        self.assertEqual(backend.state, State.UP)
        return backend, spawn


class ProbeTests(ProbeTestCase):
    def test_discoverResultMakesItModern(self) -> None:
        """A DiscoverResult naming 2026-07-28: modern, its capabilities,
        instructions and server info adopted; no initialize, no initialized;
        the probe and the gateway's own listings carry the envelope with no
        capability and no log level."""
        with capturedLogs() as logged:
            backend, spawn = self.modern_up()
        # Then its listen stream (tests/unit/test_backend_listen.py).
        self.assertEqual(self.methods(spawn), ["server/discover", "tools/list", "subscriptions/listen"])
        probe, listing, _ = spawn.transport.messages()
        expected_meta = {V: MODERN, INFO: CLIENT_INFO, CAPS: {}}
        self.assertEqual(probe["params"], {"_meta": expected_meta})
        self.assertEqual(listing["params"], {"_meta": expected_meta})
        self.assertEqual((backend.era, backend.probe, backend.protocol_version), ("modern", "discover", MODERN))
        self.assertEqual(backend.capabilities, DISCOVERED["capabilities"])
        self.assertEqual((backend.instructions, backend.server_info), ("Use me.", {"name": "dual", "version": "2.3"}))
        self.assertEqual(backend.tools, TOOLS_1)
        self.assertTrue(any("(protocol 2026-07-28, modern, discover)" in e["log_format"].format(**e) for e in logged))
        self.stop(backend)

    def test_methodNotFoundFallsBackOnTheSameConnection(self) -> None:
        """-32601 (server-everything's answer): initialize on the same process; legacy, with the reason."""
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.reply(spawn, "server/discover", error={"code": -32601, "message": "Method not found"})
        self.reply(spawn, "initialize", INITIALIZED)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(len(self.spawner.spawned), 1)
        self.assertEqual(self.methods(spawn), ["server/discover", "initialize", "notifications/initialized", "tools/list"])
        self.assertEqual(backend.era, "legacy")
        self.assertEqual(backend.probe, "fallback: server/discover answered -32601 Method not found")
        self.assertNotIn("_meta", spawn.transport.messages()[-1].get("params") or {})
        self.stop(backend)

    def test_silenceFallsBackAfterTheProbeTimeout(self) -> None:
        """No answer within min(5 s, discoveryTimeout / 2): initialize, not before."""
        self.assertEqual((probe_timeout(20.0), probe_timeout(4.0)), (5.0, 2.0))
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.clock.advance(4.9)
        self.assertEqual(self.methods(spawn), ["server/discover"])
        self.clock.advance(0.1)
        # The probe is cancelled (it may still be on its way), then the fallback.
        self.assertEqual(self.methods(spawn), ["server/discover", "notifications/cancelled", "initialize"])
        self.reply(spawn, "initialize", INITIALIZED)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(backend.state, State.UP)
        self.assertEqual((backend.era, backend.probe), ("legacy", "fallback: no answer to server/discover within 5 s"))
        self.stop(backend)

    def test_unsupportedVersionNamingOursIsRetriedOnce(self) -> None:
        """-32022 naming a modern version the gateway speaks: one more discover at it; modern."""
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.reply(spawn, "server/discover", error={"code": -32022, "message": "no", "data": {"supported": ["2099-01-01", MODERN]}})
        self.assertEqual(self.methods(spawn), ["server/discover", "server/discover"])
        self.reply(spawn, "server/discover", DISCOVERED)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(backend.era, "modern")
        self.stop(backend)

    def test_unsupportedVersionTwiceFallsBack(self) -> None:
        backend = self.make()
        backend.startService()
        spawn = self.last
        refusal = {"code": -32022, "message": "no", "data": {"supported": [MODERN]}}
        self.reply(spawn, "server/discover", error=refusal)
        self.reply(spawn, "server/discover", error=refusal)
        self.assertEqual(self.methods(spawn), ["server/discover", "server/discover", "initialize"])
        self.reply(spawn, "initialize", INITIALIZED)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(backend.era, "legacy")
        self.stop(backend)

    def test_initializeRefusedAsUnsupportedVersionAdoptsModern(self) -> None:
        """A probe answered late pins an SDK server modern: its -32022 to initialize makes it modern (one more discover)."""
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.clock.advance(5)
        self.reply(spawn, "initialize", error={"code": -32022, "message": "Unsupported", "data": {"supported": [MODERN], "requested": LATEST_HANDSHAKE}})
        self.assertEqual(self.methods(spawn), ["server/discover", "notifications/cancelled", "initialize", "server/discover"])
        self.reply(spawn, "server/discover", DISCOVERED)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual((backend.era, backend.state), ("modern", State.UP))
        self.assertIn("-32022", backend.probe)
        self.stop(backend)

    def test_resultWithoutOurVersionFallsBack(self) -> None:
        backend = self.make()
        backend.startService()
        spawn = self.last
        self.reply(spawn, "server/discover", {"supportedVersions": ["2099-01-01"]})
        self.assertEqual(self.methods(spawn)[-1], "initialize")
        self.reply(spawn, "initialize", INITIALIZED)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertIn("without a version the gateway speaks", backend.probe)
        self.stop(backend)

    def test_exitDuringProbeMeansInitializeFirstNextTime(self) -> None:
        """A server that dies of the probe: the next process is sent initialize first, and the log says to pin legacy."""
        backend = self.make()
        backend.startService()
        first = self.last
        with capturedLogs() as logged:
            first.protocol.processExited(Failure(ProcessTerminated(exitCode=1)))
        self.assertTrue(any("protocol: legacy" in e["log_format"].format(**e) for e in logged))
        self.clock.advance(1.0)
        second = self.last
        self.assertIsNot(first, second)
        self.assertEqual(self.methods(second), ["initialize"])
        self.reply(second, "initialize", INITIALIZED)
        self.reply(second, "tools/list", {"tools": TOOLS_1})
        self.assertEqual(backend.era, "legacy")
        self.assertIn("initialize first", backend.probe)
        self.stop(backend)

    def test_pinnedLegacyIsNotProbed(self) -> None:
        backend = self.make(protocol="legacy")
        backend.startService()
        spawn = self.last
        self.assertEqual(self.methods(spawn), ["initialize"])
        self.reply(spawn, "initialize", INITIALIZED)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        self.assertEqual((backend.era, backend.probe), ("legacy", "pinned"))
        self.stop(backend)

    def test_pinnedModernDoesNotFallBack(self) -> None:
        """protocol: modern and -32601: discovery fails with the answer in the reason; no initialize."""
        backend = self.make(protocol="modern")
        backend.startService()
        spawn = self.last
        with capturedLogs():
            self.reply(spawn, "server/discover", error={"code": -32601, "message": "Method not found"})
        self.assertEqual(self.methods(spawn), ["server/discover"])
        self.assertEqual(backend.state, State.DOWN)
        self.assertIn("server/discover was refused: -32601 Method not found", backend.last_error or "")
        self.stop(backend)

    def test_pinnedModern(self) -> None:
        backend, spawn = self.modern_up(protocol="modern")
        self.assertEqual((backend.era, backend.probe), ("modern", "pinned"))
        self.stop(backend)

    def test_livenessOfAModernBackendIsDiscoverNotPing(self) -> None:
        backend, spawn = self.modern_up(livenessTimeout=8.0)
        self.clock.advance(4.0)
        last = spawn.transport.messages()[-1]
        self.assertEqual((last["method"], last["params"]["_meta"][V]), ("server/discover", MODERN))
        self.assertNotIn("ping", self.methods(spawn))
        self.reply(spawn, "server/discover", DISCOVERED)
        self.stop(backend)


class ThroughGatewayTests(ProbeTestCase):
    """A client session of either era in front of a modern stdio backend."""

    def setUp(self) -> None:
        super().setUp()
        self.backend, self.spawn = self.modern_up()
        self.gateway = Gateway([self.backend], "__", self.clock, 1.0)
        self.gateway.start()
        self.out: list[bytes] = []
        self.session = ClientSession(self.gateway, line_caller(self.out.append, "stdio"))

    def tearDown(self) -> None:
        self.stop(self.backend)

    def take(self) -> list[Any]:
        messages = [json.loads(line) for line in self.out]
        del self.out[:]
        return messages

    def legacy_client(self, capabilities: dict[str, Any]) -> None:
        deliver(self.session, encode({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LATEST_HANDSHAKE, "capabilities": capabilities, "clientInfo": {"name": "c", "version": "1"}}}))
        del self.out[:]

    def call(self, rid: Any, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"name": "dual__get_time", "arguments": {}}
        if meta is not None:
            params["_meta"] = meta
        deliver(self.session, encode({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}))
        sent: dict[str, Any] = self.spawn.transport.messages()[-1]
        return sent

    def test_legacyClientCapabilitiesAndLevelAreStamped(self) -> None:
        """A handshake-era client: what its initialize declared (bridged
        only), the level it set; the result loses the 2026 fields."""
        self.legacy_client({"sampling": {}, "roots": {"listChanged": True}, "experimental": {"x": {}}})
        deliver(self.session, b'{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"debug"}}')
        self.take()
        self.assertNotIn("logging/setLevel", self.methods(self.spawn))
        sent = self.call(2, {"progressToken": "p"})
        meta = sent["params"]["_meta"]
        self.assertEqual(meta[CAPS], {"sampling": {}, "roots": {"listChanged": True}})
        self.assertEqual((meta[V], meta[INFO], meta[LEVEL]), (MODERN, CLIENT_INFO, "debug"))
        self.assertIs(type(meta["progressToken"]), int)
        self.reply(self.spawn, "tools/call", {
            "content": [], "resultType": "complete", "_meta": {SERVER_INFO: {"name": "dual"}, "other": 1}})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 2, "result": {"content": [], "_meta": {"other": 1}}}])

    def test_legacyClientWithoutLevelSendsNone(self) -> None:
        self.legacy_client({})
        meta = self.call(1)["params"]["_meta"]
        self.assertEqual(meta[CAPS], {})
        self.assertNotIn(LEVEL, meta)
        self.reply(self.spawn, "tools/call", {"content": []})

    def test_modernClientCapabilitiesPassedExactly(self) -> None:
        """A stateless-era client's own capabilities and level, never widened; its result keeps resultType."""
        caps = {"elicitation": {"form": {}}, "extensions": {"io.x/y": {}}}
        sent = self.call("m1", modern_envelope(caps, "warning"))
        meta = sent["params"]["_meta"]
        self.assertEqual((meta[CAPS], meta[LEVEL], meta[INFO]), ({"elicitation": {"form": {}}}, "warning", CLIENT_INFO))
        self.reply(self.spawn, "tools/call", {"content": [], "resultType": "complete"})
        (answer,) = self.take()
        self.assertEqual(answer["result"]["resultType"], "complete")
        self.assertEqual(answer["result"]["_meta"][SERVER_INFO]["name"], "twisted-mcp")

    def test_theCommonCallIsADirectCall(self) -> None:
        """
        A call from either era's client to a shared modern backend is
        pending in the backend's peer as a DirectCall (no Deferred), its
        answer shaped for that client, its latency counted.
        """
        for rid, meta in (("m1", modern_envelope()), (2, None)):
            if meta is None:
                self.session = ClientSession(self.gateway, line_caller(self.out.append, "stdio"))
                self.legacy_client({})
            sent = self.call(rid, meta)
            protocol: Any = self.spawn.protocol
            pending, _ = protocol.session.peer._pending[sent["id"]]
            self.assertIs(type(pending), DirectCall)
            self.reply(self.spawn, "tools/call", {"content": [], "resultType": "complete"})
            (answer,) = self.take()
            self.assertEqual(answer["id"], rid)
            if meta is None:
                self.assertEqual(answer["result"], {"content": []})
            else:
                self.assertEqual(answer["result"]["resultType"], "complete")
            self.assertEqual((self.session.in_flight, self.session._deferreds), ({}, {}))
        self.assertEqual(self.backend.latency.count, 2)

    def ask_roots(self, rid: int, wait: bool = False) -> dict[str, Any]:
        """A handshake-era client's call, sent at once or after waiting for
        the gateway to be ready, answered by the backend with a question:
        the roots/list the client is asked."""
        self.legacy_client({"roots": {}})
        if wait:
            self.gateway.ready = False
        deliver(self.session, encode({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "dual__get_time", "arguments": {}}}))
        if wait:
            self.gateway._discovery_finished()
        self.reply(self.spawn, "tools/call", {"resultType": "input_required", "inputRequests": {"r": {"method": "roots/list"}}, "requestState": "s"})
        (question,) = self.take()
        self.assertEqual(question["method"], "roots/list")
        return dict(question)

    def test_aHandshakeEraClientIsAskedInRounds(self) -> None:
        """
        A modern backend's question to a handshake-era client is asked in
        rounds, whether the call was sent at once (answered directly) or
        after a wait (a Deferred waits for the direct call): the backend is
        sent the answers, and the client gets the complete result.
        """
        for rid, wait in ((7, False), (8, True)):
            question = self.ask_roots(rid, wait)
            deliver(self.session, encode({"jsonrpc": "2.0", "id": question["id"], "result": {"roots": []}}))
            retry = self.spawn.transport.messages()[-1]
            self.assertEqual(retry["params"]["inputResponses"], {"r": {"roots": []}})
            self.assertEqual(retry["params"]["requestState"], "s")
            self.reply(self.spawn, "tools/call", {"content": [], "resultType": "complete"})
            self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": rid, "result": {"content": []}}])
            self.assertEqual((self.session.in_flight, self.session._deferreds), ({}, {}))

    def test_aPolicysCallInRoundsHoldsItsSlotUntilTheyEnd(self) -> None:
        """
        With a policy, a call that waited for a concurrency slot and is then
        asked in rounds keeps its slot, and is audited once its complete
        result is sent.
        """
        audit = one_slot_policy(self.gateway, self.clock, "dual", 50)
        self.legacy_client({"roots": {}})
        for rid in (1, 2, 3):
            deliver(self.session, encode({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "dual__get_time", "arguments": {}}}))
        self.reply(self.spawn, "tools/call", {"content": [], "resultType": "complete"})
        self.assertEqual([m["id"] for m in self.take()], [1])
        self.reply(self.spawn, "tools/call", {"resultType": "input_required", "inputRequests": {"r": {"method": "roots/list"}}, "requestState": "s"})
        (question,) = self.take()
        self.assertEqual([(r["method"], r["outcome"]) for r in audit.records], [("tools/call", "ok")])
        calls = [m for m in self.spawn.transport.messages() if m.get("method") == "tools/call"]
        self.assertEqual(len(calls), 2, "call 3 waits for the slot call 2 holds while its client is asked")
        deliver(self.session, encode({"jsonrpc": "2.0", "id": question["id"], "result": {"roots": []}}))
        self.reply(self.spawn, "tools/call", {"content": [], "resultType": "complete"})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 2, "result": {"content": []}}])
        self.assertEqual([(r["method"], r["outcome"]) for r in audit.records], [("tools/call", "ok"), ("roots/list", "ok"), ("tools/call", "ok")])
        self.reply(self.spawn, "tools/call", {"content": [], "resultType": "complete"})
        self.assertEqual([m["id"] for m in self.take()], [3])

    def test_cancellingACallInRoundsCancelsItsQuestion(self) -> None:
        """Cancelled while its client is asked (sent at once, or after a
        wait): the question is withdrawn, the backend is sent nothing more
        and the client gets no answer."""
        for rid, wait in ((7, False), (8, True)):
            question = self.ask_roots(rid, wait)
            sent = len(self.spawn.transport.messages())
            deliver(self.session, encode({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid}}))
            self.assertEqual(self.take(), [{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": question["id"], "reason": "the server cancelled it"}}])
            deliver(self.session, encode({"jsonrpc": "2.0", "id": question["id"], "result": {"roots": []}}))  # too late: dropped
            self.assertEqual(len(self.spawn.transport.messages()), sent)
            self.assertEqual(self.take(), [])
            self.assertEqual((self.session.in_flight, self.session._deferreds), ({}, {}))

    def test_aMalformedInputRequiredIsTheBackendsFault(self) -> None:
        """Toward either era's client (well-formed ones: test_rounds, test_mrtr_passthrough); a stateless-era one first."""
        for rid, meta in ((1, modern_envelope()), (2, None)):
            if meta is None:
                self.session = ClientSession(self.gateway, line_caller(self.out.append, "stdio"))
                self.legacy_client({"elicitation": {}})
            self.call(rid, meta)
            self.reply(self.spawn, "tools/call", {"resultType": "input_required", "inputRequests": {"k": {"method": "tools/list"}}})
            (answer,) = self.take()
            self.assertEqual(answer["error"]["code"], -32603)
            self.assertIn("malformed InputRequiredResult: inputRequests.k must be a sampling", answer["error"]["message"])

    def test_envelopeRefusalIsTheGatewaysFault(self) -> None:
        """-32022 or -32020 from a modern backend: -32603 naming it (an error in the log)."""
        self.legacy_client({})
        for rid, code in ((1, -32022), (2, -32020)):
            self.call(rid)
            with capturedLogs() as logged:
                self.reply(self.spawn, "tools/call", error={"code": code, "message": "refused", "data": {"supported": [MODERN]}})
            (answer,) = self.take()
            self.assertEqual(answer["error"]["code"], -32603)
            self.assertIn("backend 'dual' was refused: refused", answer["error"]["message"])
            self.assertTrue(any(e["log_level"].name == "error" for e in logged))

    def test_otherErrorsAreRelayed(self) -> None:
        self.legacy_client({})
        self.call(1)
        self.reply(self.spawn, "tools/call", error={"code": -32602, "message": "bad"})
        self.assertEqual(self.take()[0]["error"], {"code": -32602, "message": "bad"})


class LegacyBackendTests(ProbeTestCase):
    def test_aModernClientsEnvelopeIsStrippedTowardALegacyBackend(self) -> None:
        backend = self.make(protocol="legacy")
        backend.startService()
        spawn = self.last
        self.reply(spawn, "initialize", INITIALIZED)
        self.reply(spawn, "tools/list", {"tools": TOOLS_1})
        gateway = Gateway([backend], "__", self.clock, 1.0)
        gateway.start()
        out: list[bytes] = []
        session = ClientSession(gateway, line_caller(out.append, "stdio"))
        deliver(session, encode({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "dual__get_time", "_meta": {**modern_envelope({"sampling": {}}, "debug"), "progressToken": 3}}}))
        meta = spawn.transport.messages()[-1]["params"]["_meta"]
        self.assertEqual(list(meta), ["progressToken"])
        self.reply(spawn, "tools/call", {"content": []})
        self.stop(backend)


class EnvelopeTests(ProbeTestCase):
    def test_bridged(self) -> None:
        caps = {"sampling": {"tools": {}}, "elicitation": {"url": {}}, "roots": {}, "experimental": {}, "extensions": {}}
        self.assertEqual(bridged(caps), {"sampling": {"tools": {}}, "elicitation": {"url": {}}, "roots": {}})
        self.assertEqual(bridged("nonsense"), {})

    def test_stampReplacesReservedKeysAndKeepsTheRest(self) -> None:
        params = {"x": 1, "_meta": {V: "1999", CAPS: {"sampling": {}}, "progressToken": 5, "io.modelcontextprotocol/other": 1}}
        out = stamp(params, MODERN, {"roots": {}}, None)
        self.assertEqual(out, {"x": 1, "_meta": {"progressToken": 5, V: MODERN, INFO: CLIENT_INFO, CAPS: {"roots": {}}}})
        self.assertEqual(params["_meta"][V], "1999")  # a copy
        self.assertEqual(own(None, MODERN), {"_meta": {V: MODERN, INFO: CLIENT_INFO, CAPS: {}}})


class ResultShapingTests(ProbeTestCase):
    def test_toLegacy(self) -> None:
        result = {"contents": [], "resultType": "complete", "ttlMs": 5, "cacheScope": "public", "_meta": {SERVER_INFO: {}}}
        self.assertEqual(to_legacy(result), {"contents": []})
        self.assertEqual(to_legacy([1]), [1])

    def test_toModernKeepsABackendsHintsUnlessPrivate(self) -> None:
        result = {"contents": [], "resultType": "complete", "ttlMs": 5000, "cacheScope": "public"}
        kept = to_modern("resources/read", result)
        self.assertEqual((kept["ttlMs"], kept["cacheScope"]), (5000, "public"))
        forced = to_modern("resources/read", result, private=True)
        self.assertEqual((forced["ttlMs"], forced["cacheScope"]), (5000, "private"))

    def test_fromModernBackend(self) -> None:
        self.assertEqual(from_modern_backend({"content": []}, "b", "tools/call"), {"content": []})
        with self.assertRaises(JsonRpcError) as e:
            from_modern_backend({"resultType": "later"}, "b", "tools/call")
        self.assertIn("unknown resultType", e.exception.message)
        asking = {"resultType": "input_required", "requestState": "s"}
        self.assertIs(from_modern_backend(asking, "b", "prompts/get"), asking)
        for method, result, why in (
            ("tools/list", asking, "only tools/call, prompts/get and resources/read may ask"),
            ("tools/call", {"resultType": "input_required"}, "neither inputRequests nor requestState"),
            ("tools/call", {"resultType": "input_required", "inputRequests": {}}, "neither inputRequests nor requestState"),
            ("tools/call", {"resultType": "input_required", "requestState": 1}, "requestState must be a string"),
            ("tools/call", {"resultType": "input_required", "inputRequests": []}, "inputRequests must be an object"),
            ("tools/call", {"resultType": "input_required", "inputRequests": {"k": {"method": "roots/list", "params": 1}}}, "k.params must be"),
        ):
            with self.assertRaises(JsonRpcError) as e:
                from_modern_backend(result, "b", method)
            self.assertEqual(e.exception.code, -32603)
            self.assertIn(why, e.exception.message)


class ConfigTests(ProbeTestCase):
    def test_protocolDefaultsToAutoAndIsRead(self) -> None:
        config = build({"mcpServers": {"a": {"command": "x"}, "b": {"command": "y", "protocol": "legacy"},
                                       "c": {"command": "z", "protocol": "modern"}}}, "inline", {})
        self.assertEqual([s.protocol for s in config.servers], ["auto", "legacy", "modern"])

    def test_badProtocolIsAClearError(self) -> None:
        e = self.assertRaises(ConfigError, build, {"mcpServers": {"a": {"command": "x", "protocol": "2026"}}}, "inline", {})
        self.assertIn("mcpServers.a.protocol: must be auto, legacy or modern, got a string \"2026\"", "\n".join(e.problems))

    def test_modernHttpIsRead(self) -> None:
        config = build({"mcpServers": {"a": {"url": "http://h/mcp", "protocol": "modern"}}}, "inline", {})
        self.assertEqual([s.protocol for s in config.servers], ["modern"])

    def test_modernSseIsRefused(self) -> None:
        e = self.assertRaises(
            ConfigError, build, {"mcpServers": {"a": {"type": "sse", "url": "http://h/sse", "protocol": "modern"}}}, "inline", {}
        )
        self.assertIn("mcpServers.a.protocol: the HTTP+SSE transport (type: sse, 2024-11-05) is of the handshake era", "\n".join(e.problems))
