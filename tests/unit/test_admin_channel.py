"""
Tests for L{twisted_mcp.ops.admin.AdminSite} and L{twisted_mcp.ops.admin.AdminChannel}:
requests refused from their head (before any body is read), the Host check
on loopback connections, and the admin endpoint's own connection cap and
idle timeout, over a L{StringTransport} and a L{Clock}.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import Config, GatewaySettings
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.ops.admin import AdminResource, AdminSite

LOCAL = IPv4Address("TCP", "127.0.0.1", 9100)


class AdminChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        settings = GatewaySettings(adminToken="t0ken", adminMaxConnections=2, adminTimeout=5.0, adminMaxBodyBytes=2048)
        gateway = Gateway([], "__", self.clock, 1.0)
        gateway.start()
        service = SimpleNamespace(
            gateway=gateway,
            config=Config(source="gw.yaml", gateway=settings, servers=()),
            settings=settings,
            clock=self.clock,
            started_at=0.0,
            stopping=False,
            reload=lambda load: (self.reloads.append(load), (True, [], ""))[1],
        )
        self.reloads: list[Any] = []
        self.site = AdminSite(AdminResource(service, lambda: succeed(service.reload(None))), self.clock)
        self.open: list[tuple[Any, StringTransport]] = []

    def tearDown(self) -> None:
        for channel, transport in self.open:
            if transport.connected:
                channel.connectionLost(None)
        self.site.stopFactory()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def connect(self, local: Any = LOCAL) -> tuple[Any, StringTransport]:
        transport = StringTransport(hostAddress=local, peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        channel = self.site.buildProtocol(transport.getPeer())
        channel.makeConnection(transport)
        self.open.append((channel, transport))
        return channel, transport

    def send(self, head: str, local: Any = LOCAL) -> tuple[Any, StringTransport]:
        """Send a request head on a new connection; the client hangs up after the answer."""
        channel, transport = self.connect(local)
        channel.dataReceived(head.replace("\n", "\r\n").encode() + b"\r\n")
        return channel, transport

    def hang_up(self, channel: Any, transport: StringTransport) -> None:
        transport.connected = False
        channel.connectionLost(None)

    def test_unauthorizedRefusedBeforeTheBody(self) -> None:
        """A POST without the token is answered 401 from its head alone; its
        body is never read, and nothing is done."""
        channel, transport = self.send(
            "POST /reload HTTP/1.1\nHost: 127.0.0.1:9100\nContent-Type: application/json\nContent-Length: 94371840\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 401 Unauthorized\r\n"))
        self.assertIn(b'WWW-Authenticate: Bearer realm="twisted-mcp"', transport.value())
        self.assertTrue(transport.disconnecting)
        channel.dataReceived(b"{}" * 1000)  # the body, arriving anyway, is ignored
        self.assertIsNone(channel.requests[-1].content)
        self.assertEqual(self.reloads, [])

    def test_bodyTooLarge(self) -> None:
        _, transport = self.send(
            "POST /reload HTTP/1.1\nHost: localhost:9100\nAuthorization: Bearer t0ken\nContent-Length: 2049\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertIn(b"adminMaxBodyBytes", transport.value())

    def test_chunkedBodyRefused(self) -> None:
        _, transport = self.send(
            "POST /reload HTTP/1.1\nHost: localhost:9100\nAuthorization: Bearer t0ken\nTransfer-Encoding: chunked\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 411 "))

    def test_bodyWithinTheBoundIsServed(self) -> None:
        channel, transport = self.send(
            "POST /reload HTTP/1.1\nHost: localhost:9100\nAuthorization: Bearer t0ken\n"
            "Content-Type: application/json\nContent-Length: 2\n"
        )
        channel.dataReceived(b"{}")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value()[:100])

    def test_hostChecked_onLoopback(self) -> None:
        """On a loopback connection, Host must name localhost, 127.0.0.1 or
        [::1] with the port (DNS rebinding sends the attacker's name)."""
        for host in ("attacker.example:9100", "localhost:9200", "localhost", "127.0.0.1.nip.io:9100"):
            channel, transport = self.send(f"GET /status HTTP/1.1\nHost: {host}\nAuthorization: Bearer t0ken\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 421 "), host)
            self.hang_up(channel, transport)
        for host in ("localhost:9100", "127.0.0.1:9100", "[::1]:9100", "LocalHost:9100"):
            channel, transport = self.send(f"GET /healthz HTTP/1.1\nHost: {host}\nAuthorization: Bearer t0ken\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), host)
            self.hang_up(channel, transport)
        v6 = IPv6Address("TCP", "::1", 9100)
        _, transport = self.send("GET /healthz HTTP/1.1\nHost: [::1]:9100\nAuthorization: Bearer t0ken\n", v6)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))

    def test_hostFree_offLoopback(self) -> None:
        """Elsewhere (a Unix socket, a public address) any Host is served."""
        for local in (UNIXAddress("/run/admin.sock"), IPv4Address("TCP", "192.0.2.7", 9100)):
            channel, transport = self.send("GET /healthz HTTP/1.1\nHost: gateway.example\nAuthorization: Bearer t0ken\n", local)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), local)
            self.hang_up(channel, transport)

    def test_connectionCapAndIdleTimeout(self) -> None:
        """Beyond adminMaxConnections a connection gets 503 and is closed;
        an idle one is closed after adminTimeout, freeing its place."""
        self.connect()
        self.connect()
        busy, transport = self.connect()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(transport.disconnecting)
        self.clock.advance(5.0)
        for channel, t in self.open[:2]:
            self.assertTrue(t.disconnecting)
            self.hang_up(channel, t)
        self.clock.advance(15.0)  # Twisted's abort bound, cancelled by the close
        _, transport = self.send("GET /healthz HTTP/1.1\nHost: localhost:9100\nAuthorization: Bearer t0ken\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))

    def test_trickledRequestCutOff(self) -> None:
        """A request whose bytes trickle in (each within the idle timeout)
        must still arrive whole within adminTimeout."""
        channel, transport = self.connect()
        for byte in b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 100:
            self.clock.advance(0.2)
            channel.dataReceived(bytes([byte]))
            if transport.disconnecting:
                break
        self.assertTrue(transport.disconnecting)  # after 5 s, not 20
        self.assertLess(self.clock.seconds(), 5.5)
        self.hang_up(channel, transport)
        self.clock.advance(15.0)

    def test_keptAliveConnectionGetsADeadlinePerRequest(self) -> None:
        channel, transport = self.connect()
        for _ in range(3):
            self.clock.advance(4.0)
            channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: localhost:9100\r\nAuthorization: Bearer t0ken\r\n\r\n")
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 3)
        self.assertFalse(transport.disconnecting)
