"""
Tests for L{twisted_mcp.frontends.stream.SessionProtocol} over a StringTransport.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import GatewaySettings
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.frontends.stream import SessionFactory, SessionProtocol
from twisted_mcp.mcp import errors

from .fakes import FakeBackend

LIMIT = 256
SETTINGS = GatewaySettings(maxMessageBytes=LIMIT, shutdownGrace=3.0)


def line(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


class SessionProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = FakeBackend("alpha", ["echo"])
        self.backend._first_discovery_done()
        self.gateway = Gateway([self.backend], "__", self.clock, 5.0)
        self.gateway.start()
        self.closed: list[bool] = []
        self.protocol = SessionProtocol(
            self.gateway, self.clock, SETTINGS, "test", lambda: self.closed.append(True)
        )
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def take(self) -> list[Any]:
        data = self.transport.value()
        self.transport.clear()
        self.assertTrue(data == b"" or data.endswith(b"\n"))
        return [json.loads(x) for x in data.split(b"\n") if x]

    def test_requestAnswered(self) -> None:
        self.protocol.dataReceived(line({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 1, "result": {}}])

    def test_oversizedLine(self) -> None:
        """
        An oversized line is answered with an error naming the limit, and
        the next line is handled.
        """
        big = line({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * LIMIT}})
        self.protocol.dataReceived(big + line({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
        too_big, ping = self.take()
        self.assertIsNone(too_big["id"])
        self.assertEqual(too_big["error"]["code"], -32600)
        self.assertIn(str(LIMIT), too_big["error"]["message"])
        self.assertEqual(too_big["error"]["data"], {"limit": LIMIT})
        self.assertEqual(ping, {"jsonrpc": "2.0", "id": 2, "result": {}})
        self.assertFalse(self.transport.disconnecting)

    def test_oversizedLineInChunks(self) -> None:
        """
        An oversized line arriving in pieces is answered once, as soon as it
        passes the limit; its tail is not taken for a message.
        """
        for _ in range(10):
            self.protocol.dataReceived(b'{"jsonrpc":"2.0","id":1,"method":"ping","x":"' + b"y" * 100)
        (too_big,) = self.take()
        self.assertEqual(too_big["error"]["code"], -32600)
        self.protocol.dataReceived(b'"}\n' + line({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 2, "result": {}}])

    def test_inputClosedDrains(self) -> None:
        """
        When the client closes its input, calls in flight are still
        answered, and on_input_closed runs after the last one.
        """
        self.protocol.dataReceived(line({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}))
        self.protocol.dataReceived(
            line({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "alpha__echo"}})
        )
        self.take()
        self.protocol.readConnectionLost()
        self.assertEqual(self.closed, [])
        self.backend.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 1, "result": {"content": []}}])
        self.assertEqual(self.closed, [True])

    def test_inputClosedGraceBounded(self) -> None:
        self.protocol.dataReceived(line({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}))
        self.protocol.dataReceived(
            line({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "alpha__echo"}})
        )
        self.take()
        self.protocol.readConnectionLost()
        self.clock.advance(3.0)
        (answer,) = self.take()
        self.assertEqual(answer["error"]["code"], errors.GATEWAY_SHUTTING_DOWN)
        self.assertTrue(self.backend.calls[0].cancelled)
        self.assertEqual(self.closed, [True])


class SocketFrontendStopTests(SynchronousTestCase):
    def test_sessions_drain_together(self) -> None:
        """Stopping closes every session at once: n slow clients take one
        grace period, not n, and none takes new calls meanwhile."""
        from twisted.internet.defer import Deferred, succeed

        from twisted_mcp.frontends.admission import Admission
        from twisted_mcp.frontends.stream import SessionFactory, SocketFrontend

        clock = Clock()
        factory = SessionFactory(
            Gateway([], "__", clock, 1.0), clock, GatewaySettings(shutdownGrace=5.0), Admission(10, 10, 0, 100), "unix"
        )
        asked: list[float] = []
        pending: list[Deferred[None]] = []

        class Slow:
            def stop(self, grace: float) -> Deferred[None]:
                asked.append(grace)
                d: Deferred[None] = Deferred()
                pending.append(d)
                return d

        class Port:
            def stopListening(self) -> Any:
                return succeed(None)

        factory.connections.update({Slow(), Slow(), Slow()})
        frontend = SocketFrontend("unix:x", Port(), factory)
        frontend.startService()
        done = frontend.stopService()
        self.assertEqual(asked, [5.0, 5.0, 5.0])  # all asked before any finished
        self.assertNoResult(done)
        for d in pending:
            d.callback(None)
        self.successResultOf(done)


def call(rid: Any, token: Any = None) -> bytes:
    params: dict[str, Any] = {"name": "alpha__echo", "arguments": {}}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return line({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})


INITIALIZE = line({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}})


class ClientQueueTests(SynchronousTestCase):
    """What the gateway keeps queued toward a client, and for how many calls."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = FakeBackend("alpha", ["echo"])
        self.backend._first_discovery_done()
        self.gateway = Gateway([self.backend], "__", self.clock, 5.0)
        self.gateway.start()

    def connect(self, settings: GatewaySettings = SETTINGS) -> tuple[SessionProtocol, StringTransport]:
        protocol = SessionProtocol(self.gateway, self.clock, settings, "test")
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(INITIALIZE)
        transport.clear()
        return protocol, transport

    def messages(self, transport: StringTransport) -> list[Any]:
        data = transport.value()
        transport.clear()
        return [json.loads(x) for x in data.split(b"\n") if x]

    def test_progressCoalescedWhileTheClientDoesNotRead(self) -> None:
        """
        While the transport is paused (the client does not read), only the
        latest progress of each call is kept, and the log says so once; it
        is sent when the client reads again, and nothing else is lost.
        """
        protocol, transport = self.connect()
        self.assertIs(transport.producer, protocol)  # the transport tells it when to pause
        protocol.dataReceived(call(1, "a") + call(2, "b"))
        first, second = self.backend.calls
        with capturedLogs() as events:
            protocol.pauseProducing()
            for i in range(1000):
                first.on_progress({"progress": i})
            second.on_progress({"progress": 7})
            self.assertEqual(transport.value(), b"")
            protocol.resumeProducing()
        self.assertEqual(
            [m["params"] for m in self.messages(transport)],
            [{"progress": 999, "progressToken": "a"}, {"progress": 7, "progressToken": "b"}],
        )
        said = [formatEvent(e) for e in events]
        self.assertEqual(sum("keeping only the latest progress" in t for t in said), 1)
        self.assertIn("999 progress notification(s) were dropped", "\n".join(said))
        first.on_progress({"progress": 1000})  # reading again: sent at once
        self.assertEqual(len(self.messages(transport)), 1)

    def test_answerSupersedesHeldProgress(self) -> None:
        """A call answered while its progress is held: the answer goes out
        (answers are never held back), its stale progress never does."""
        protocol, transport = self.connect()
        protocol.dataReceived(call(1, "a"))
        (first,) = self.backend.calls
        protocol.pauseProducing()
        first.on_progress({"progress": 1})
        first.deferred.callback({"content": []})
        protocol.resumeProducing()
        self.assertEqual(self.messages(transport), [{"jsonrpc": "2.0", "id": 1, "result": {"content": []}}])

    def test_callsInFlightCapped(self) -> None:
        """Beyond maxCallsInFlight a request is refused with -31010 (logged
        once per episode); once answers come back, calls are taken again."""
        protocol, transport = self.connect(GatewaySettings(maxMessageBytes=LIMIT, maxCallsInFlight=2))
        with capturedLogs() as events:
            protocol.dataReceived(call(1) + call(2) + call(3) + call(4))
        refused = self.messages(transport)
        self.assertEqual([m["id"] for m in refused], [3, 4])
        for m in refused:
            self.assertEqual(m["error"]["code"], errors.TOO_MANY_CALLS)
            self.assertEqual(m["error"]["data"], {"limit": 2})
            self.assertIn("maxCallsInFlight", m["error"]["message"])
        self.assertEqual(len(self.backend.calls), 2)
        self.assertEqual(sum("maxCallsInFlight" in formatEvent(e) for e in events), 1)
        self.backend.calls[0].deferred.callback({"content": []})
        protocol.dataReceived(call(5))
        self.assertEqual(len(self.backend.calls), 3)


class ConnectionLimitTests(SynchronousTestCase):
    """Socket clients: connection caps, the handshake, unfinished messages."""

    def setUp(self) -> None:
        from twisted_mcp.frontends.admission import Admission

        self.clock = Clock()
        self.open_descriptors = 10
        self.admission = Admission(3, 2, 8, 100, lambda: self.open_descriptors)
        settings = GatewaySettings(
            maxMessageBytes=1 << 20, maxHandshakeBytes=1024, handshakeTimeout=30.0, messageTimeout=60.0
        )
        gateway = Gateway([], "__", self.clock, 1.0)
        gateway.start()  # no backend: ready at once, so initialize is answered at once
        self.factory = SessionFactory(gateway, self.clock, settings, self.admission, "tcp")
        self.connected: list[tuple[SessionProtocol, StringTransport]] = []

    def tearDown(self) -> None:
        for protocol, transport in self.connected:
            if transport.connected:
                protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def connect(self, host: str = "10.0.0.1") -> tuple[SessionProtocol, StringTransport]:
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000 + len(self.connected)))
        protocol = self.factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        self.connected.append((protocol, transport))
        return protocol, transport

    def hang_up(self, protocol: SessionProtocol, transport: StringTransport) -> None:
        transport.connected = False
        protocol.connectionLost(None)

    def refusal(self, transport: StringTransport) -> dict[str, Any]:
        self.assertTrue(transport.disconnecting)
        (message,) = [json.loads(x) for x in transport.value().split(b"\n") if x]
        self.assertIsNone(message["id"])
        self.assertEqual(message["error"]["code"], errors.TOO_MANY_CONNECTIONS)
        return message["error"]  # type: ignore[no-any-return]

    def test_perPeerCap(self) -> None:
        """A peer (here an IP address) gets maxClientsPerPeer connections;
        others still get theirs, and a closed one frees its place."""
        first, first_transport = self.connect()
        self.connect()
        _, third = self.connect()
        error = self.refusal(third)
        self.assertEqual(error["data"], {"limit": "maxClientsPerPeer", "value": 2})
        self.assertIn("10.0.0.1", error["message"])
        _, other = self.connect("10.0.0.2")
        self.assertFalse(other.disconnecting)
        self.hang_up(first, first_transport)
        _, again = self.connect()
        self.assertFalse(again.disconnecting)

    def test_totalCap(self) -> None:
        for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            self.assertFalse(self.connect(host)[1].disconnecting)
        self.assertEqual(self.refusal(self.connect("10.0.0.4")[1])["data"], {"limit": "maxClients", "value": 3})

    def test_descriptorReserve(self) -> None:
        """No client connection is taken when fewer than descriptorReserve
        descriptors would be left for the backends."""
        self.open_descriptors = 93  # of 100: 7 left, 8 kept
        error = self.refusal(self.connect()[1])
        self.assertEqual(error["data"], {"limit": "descriptorReserve", "value": 8})
        self.assertEqual(self.admission.total, 0)

    def test_handshakeTimeout(self) -> None:
        """A client that sends no initialize within handshakeTimeout is told and disconnected."""
        _, transport = self.connect()
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)  # aborted
        (message,) = [json.loads(x) for x in transport.value().split(b"\n") if x]
        self.assertIn("handshakeTimeout", message["error"]["message"])

    def test_initializedClientMayIdle(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(INITIALIZE)
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)

    def test_messageTimeout(self) -> None:
        """A message begun must end within messageTimeout; a client that
        keeps finishing its messages is never cut off."""
        protocol, transport = self.connect()
        protocol.dataReceived(INITIALIZE + b'{"jsonrpc":"2.0",')
        self.clock.advance(50)
        protocol.dataReceived(b'"id":1,"method":"ping"}\n{"jsonrpc":')  # one ends, another begins
        self.clock.advance(50)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b'"2.0","id":2,"method":"ping"}\n')
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b'{"jsonrpc":"2.0",')
        self.clock.advance(60)
        self.assertTrue(transport.disconnected)
        self.assertIn(b"messageTimeout", transport.value())

    def test_smallMessagesBeforeInitialize(self) -> None:
        """Before initialize a message may be maxHandshakeBytes long; after
        it, maxMessageBytes (even when both arrive in one read)."""
        protocol, transport = self.connect()
        big = line({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 2000}})
        protocol.dataReceived(big)
        (error,) = [json.loads(x) for x in transport.value().split(b"\n") if x]
        self.assertEqual(error["error"]["data"], {"limit": 1024})
        self.assertIn("maxHandshakeBytes", error["error"]["message"])
        transport.clear()
        protocol.dataReceived(INITIALIZE + big)
        answers = [json.loads(x) for x in transport.value().split(b"\n") if x]
        self.assertEqual([a["id"] for a in answers], [0, 1])
        self.assertEqual(answers[1]["result"], {})
