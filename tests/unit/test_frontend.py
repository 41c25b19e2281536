"""
Tests for L{twisted_mcp.frontend.SessionProtocol} over a StringTransport.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp import errors
from twisted_mcp.frontend import SessionProtocol
from twisted_mcp.gateway import Gateway

from .fakes import FakeBackend

LIMIT = 256


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
            self.gateway, self.clock, LIMIT, 3.0, "test", lambda: self.closed.append(True)
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

        from twisted_mcp.frontend import SessionFactory, SocketFrontend

        clock = Clock()
        factory = SessionFactory(Gateway([], "__", clock, 1.0), clock, LIMIT, 5.0, "unix")
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
