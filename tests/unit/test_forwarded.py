"""
Tests for forwarded headers behind a reverse proxy
(L{twisted_mcp.frontends.forwarded}): which connections are believed
(C{http.trustedProxies}), the right-to-left walk of C{X-Forwarded-For}, the
scheme and host the client used, RFC 7239 C{Forwarded}, malformed values
(ignored, logged once), the configuration's checks; then through a real
L{McpSite} on a L{StringTransport}: the peer named in the log, the RFC 9728
resource URL and challenge, and the DNS-rebinding check of a loopback listener.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twisted_mcp.config import GatewaySettings
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.frontends.forwarded import Forwarded, Malformed, ProxyTrust, host_allowed, parse_forwarded, parse_ip, walk
from twisted_mcp.frontends.http import http_site
from twisted_mcp.frontends.http_config import HttpSettings, parse_http
from twisted_mcp.policy.peers import Peer
from twisted_mcp.policy.principal import Principal

from .fakes import FakeBackend
from .test_http_front import INIT, JSON_AND_SSE, Response

PROXY = "10.0.0.2"


def request(peer: str = PROXY, **headers: str | list[str]) -> DummyRequest:
    """A request from C{peer} (IPv4 or IPv6) with C{headers} (underscores for dashes; a list for repeated lines)."""
    address: Any = IPv6Address("TCP", peer, 40000) if ":" in peer else IPv4Address("TCP", peer, 40000)
    r = DummyRequest([b"mcp"])
    r.client = address
    for name, value in headers.items():
        r.requestHeaders.setRawHeaders(name.replace("_", "-"), value if isinstance(value, list) else [value])
    return r


def trust(*networks: str, convention: str = "x-forwarded") -> ProxyTrust:
    return ProxyTrust(tuple(str(ipaddress.ip_network(n)) for n in networks), convention)


class ReadingTests(SynchronousTestCase):
    """The pure readers."""

    def test_addressesAsProxiesWriteThem(self) -> None:
        for text, expected in [
            ("203.0.113.7", "203.0.113.7"),
            (" 203.0.113.7:4711 ", "203.0.113.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("::ffff:10.0.0.2", "10.0.0.2"),  # what a dual-stack listener sees
        ]:
            self.assertEqual(str(parse_ip(text)), expected, text)
        for bad in ["evil.example", "", "1.2.3.4:http", "[2001:db8::1", "[2001:db8::1]x", "300.1.1.1"]:
            self.assertRaises(Malformed, parse_ip, bad)

    def test_forwardedElementsAndParameters(self) -> None:
        """RFC 7239: elements over commas and header lines, pairs over semicolons, quoted values, names case-insensitive."""
        values = [b'for=192.0.2.60;proto=https;host="mcp.example.com", For="[2001:db8::17]:4711"', b"for=10.0.0.1;by=10.0.0.2"]
        self.assertEqual(
            parse_forwarded(values),
            [{"for": "192.0.2.60", "proto": "https", "host": "mcp.example.com"}, {"for": "[2001:db8::17]:4711"}, {"for": "10.0.0.1", "by": "10.0.0.2"}],
        )
        for bad in [b"for", b"for=a b", b"for=1.2.3.4;for=5.6.7.8", b'for="unterminated', b"for=1.2.3.4 host=x"]:
            self.assertRaises(Malformed, parse_forwarded, [bad])

    def test_walkSkipsTrustedProxiesRightToLeft(self) -> None:
        trusted = trust("10.0.0.0/8").trusts

        def parse(node: str) -> Any:
            return parse_ip(node), node

        # The leftmost is whatever the client sent (forgeable); the first untrusted from the right is the client.
        self.assertEqual(walk(["198.51.100.9", "203.0.113.7", "10.0.0.5"], parse, trusted), (1, "203.0.113.7", None))
        self.assertEqual(walk(["10.0.0.7", "10.0.0.5"], parse, trusted), (0, "10.0.0.7", None))  # all proxies: the leftmost
        self.assertEqual(walk([], parse, trusted), (0, "", None))
        index, client, problem = walk(["203.0.113.7", "junk", "10.0.0.5"], parse, trusted)
        self.assertEqual((index, client), (2, "10.0.0.5"))  # stopped at the junk: the last address walked
        self.assertIn("junk", problem or "")
        self.assertEqual(walk(["junk"], parse, trusted)[:2], (1, ""))  # the proxy's own client is unknown

    def test_forwardedHostOnALoopbackListener(self) -> None:
        self.assertTrue(host_allowed("localhost", ()))
        self.assertTrue(host_allowed("127.0.0.1:8443", ()))
        self.assertTrue(host_allowed("[::1]:443", ()))
        self.assertFalse(host_allowed("evil.example", ()))  # what DNS rebinding through the proxy would send
        self.assertFalse(host_allowed("localhost.evil.example", ()))
        self.assertTrue(host_allowed("mcp.example.com", ("mcp.example.com",)))
        self.assertFalse(host_allowed("mcp.example.com:8443", ("mcp.example.com",)))


class TrustTests(SynchronousTestCase):
    """L{ProxyTrust.view}: what is believed, from whom."""

    def test_headersFromAnUntrustedAddressAreIgnored(self) -> None:
        headers = {"x_forwarded_for": "203.0.113.7", "x_forwarded_proto": "https", "x_forwarded_host": "mcp.example.com"}
        self.assertIsNone(trust("10.0.0.1").view(request("10.0.0.2", **headers)))
        self.assertIsNone(trust().view(request(**headers)))  # none trusted: the default
        self.assertIsNotNone(trust("10.0.0.2").view(request(**headers)))
        # A Unix-socket client has no address to trust.
        r = DummyRequest([b"mcp"])
        r.requestHeaders.setRawHeaders("x-forwarded-for", ["203.0.113.7"])
        self.assertIsNone(trust("10.0.0.0/8").view(r))

    def test_clientSchemeAndHostFromXForwarded(self) -> None:
        seen = trust("10.0.0.0/8").view(
            request(x_forwarded_for="203.0.113.7", x_forwarded_proto="HTTPS", x_forwarded_host="MCP.example.com:8443")
        )
        self.assertEqual(seen, Forwarded(client="203.0.113.7", proto="https", host="mcp.example.com:8443", host_from="X-Forwarded-Host"))

    def test_aForgedLeftmostEntryIsNotTheClient(self) -> None:
        """A client's own X-Forwarded-For and -Host, appended to by two trusted proxies: the values the proxies saw win."""
        seen = trust("10.0.0.0/8").view(
            request(
                x_forwarded_for=["127.0.0.1", "203.0.113.7, 10.0.0.9"],
                x_forwarded_proto="http, https, http",
                x_forwarded_host="localhost, mcp.example.com, gw.internal",
            )
        )
        assert seen is not None
        self.assertEqual(seen.client, "203.0.113.7")
        # One value per hop: those written by the edge proxy, which talked to the client.
        self.assertEqual((seen.proto, seen.host), ("https", "mcp.example.com"))

    def test_valuesNotOnePerHopAreTheNearestProxys(self) -> None:
        """A proxy that sets (not appends) -Proto/-Host while appending -For: its value (the last) is believed."""
        seen = trust("10.0.0.0/8").view(request(x_forwarded_for="198.51.100.1, 203.0.113.7", x_forwarded_proto="gopher, https"))
        assert seen is not None
        self.assertEqual((seen.client, seen.proto, seen.host), ("203.0.113.7", "https", None))

    def test_ipv6AndMappedAddresses(self) -> None:
        t = trust("fd00::/8", "127.0.0.1")
        seen = t.view(request("fd00::5", x_forwarded_for="2001:db8::1"))
        self.assertEqual(seen and seen.client, "2001:db8::1")
        seen = t.view(request("::ffff:127.0.0.1", x_forwarded_for="[2001:db8::1]:4711"))
        self.assertEqual(seen and seen.client, "[2001:db8::1]:4711")
        self.assertIsNone(t.view(request("fe80::1", x_forwarded_for="2001:db8::1")))

    def test_rfc7239Forwarded(self) -> None:
        t = trust("10.0.0.0/8", convention="forwarded")
        seen = t.view(
            request(forwarded='for=127.0.0.1;host=localhost, for="[2001:db8::17]:4711";proto=https;host=mcp.example.com, for=10.0.0.9;proto=http')
        )
        self.assertEqual(seen, Forwarded(client="[2001:db8::17]:4711", proto="https", host="mcp.example.com", host_from="Forwarded host="))
        hidden = t.view(request(forwarded="for=_edge7;proto=https"))
        self.assertEqual(hidden and (hidden.client, hidden.proto), ("_edge7", "https"))
        unknown = t.view(request(forwarded="for=unknown"))
        self.assertEqual(unknown and unknown.client, "unknown")

    def test_onlyTheConfiguredConventionIsRead(self) -> None:
        """A proxy that sets one convention passes the other through from its client: that one is never read."""
        both = {"forwarded": "for=198.51.100.66;host=evil.example", "x_forwarded_for": "203.0.113.7", "x_forwarded_host": "mcp.example.com"}
        seen = trust("10.0.0.0/8").view(request(**both))
        self.assertEqual(seen and (seen.client, seen.host), ("203.0.113.7", "mcp.example.com"))
        seen = trust("10.0.0.0/8", convention="forwarded").view(request(**both))
        self.assertEqual(seen and (seen.client, seen.host), ("198.51.100.66", "evil.example"))

    def test_malformedValuesAreIgnoredAndLoggedOnce(self) -> None:
        t = trust("10.0.0.0/8")
        with capturedLogs() as events:
            for _ in range(50):
                seen = t.view(request(x_forwarded_for="203.0.113.7, not-an-ip", x_forwarded_proto="ftp", x_forwarded_host="a/b@c"))
        self.assertEqual(seen, Forwarded(client=None, proto=None, host=None, host_from="X-Forwarded-Host"))
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len(lines), 3, lines)  # one per header, not one per request
        self.assertTrue(any("X-Forwarded-For" in line and "not-an-ip" in line and "10.0.0.2" in line for line in lines), lines)
        with capturedLogs() as events:
            t.view(request(forwarded="for=1.2.3.4;oops"))  # another convention's header: not read, not logged
            trust("10.0.0.0/8", convention="forwarded").view(request(forwarded="for=1.2.3.4;oops"))
        self.assertEqual(len(events), 1)
        self.assertIn("Forwarded", formatEvent(events[0]))

    def test_thePeerIsDescribedByTheClientAndItsProxy(self) -> None:
        connection = Peer(transport="tcp", listener="http:tcp:8080", address="10.0.0.2:40000")
        peer = trust("10.0.0.0/8").peer(connection, request(x_forwarded_for="203.0.113.7"))
        self.assertEqual(peer.describe(), "tcp client 203.0.113.7 via proxy 10.0.0.2:40000")
        self.assertEqual((peer.transport, peer.listener), ("tcp", "http:tcp:8080"))  # identity keys unchanged
        self.assertIs(trust("10.0.0.0/8").peer(connection, request()), connection)  # a proxy that names no one
        self.assertIs(trust("10.9.0.0/16").peer(connection, request(x_forwarded_for="203.0.113.7")), connection)


class ConfigTests(SynchronousTestCase):
    def parse(self, section: Any) -> tuple[HttpSettings, list[str]]:
        problems: list[str] = []
        return parse_http(section, "http", problems), problems

    def test_trustedProxiesAndConvention(self) -> None:
        settings, problems = self.parse({"trustedProxies": ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"], "forwardedHeaders": "Forwarded"})
        self.assertEqual(problems, [])
        self.assertEqual(settings.trustedProxies, ("127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"))
        self.assertEqual(settings.forwardedHeaders, "forwarded")
        self.assertEqual((HttpSettings().trustedProxies, HttpSettings().forwardedHeaders), ((), "x-forwarded"))

    def test_badEntriesAreNamedWithWhatWasExpected(self) -> None:
        _, problems = self.parse({"trustedProxies": ["proxy.internal", "10.0.0.1/8", "0.0.0.0/0", "::/0"], "forwardedHeaders": "x-real-ip"})
        self.assertEqual(len(problems), 5, problems)
        self.assertIn("http.trustedProxies[0]: expected an IP address or network", problems[0])
        self.assertIn("names are not resolved", problems[0])
        self.assertIn("http.trustedProxies[1]: 10.0.0.1/8 has bits set past its prefix length: did you mean 10.0.0.0/8?", problems[1])
        self.assertIn("http.trustedProxies[2]: 0.0.0.0/0 trusts every address", problems[2])
        self.assertIn("http.trustedProxies[3]: ::/0 trusts every address", problems[3])
        self.assertIn("http.forwardedHeaders: expected x-forwarded", problems[4])
        _, problems = self.parse({"trustedProxies": "127.0.0.1"})
        self.assertEqual(problems, ["http.trustedProxies: expected a list of strings, got a string \"127.0.0.1\""])


class SiteTests(SynchronousTestCase):
    """Through a real site: a loopback listener on 127.0.0.1:8080 with a proxy on 127.0.0.1."""

    def setUp(self) -> None:
        self.clock = Clock()
        backend = FakeBackend("alpha", ["echo"])
        backend._first_discovery_done()
        self.gateway = Gateway([backend], "__", self.clock, 5.0)
        self.gateway.start()

    def site(self, bearer: bool = False, **http: Any) -> Any:
        settings = HttpSettings(**http)
        verify = (lambda token: Principal(name="alice", roles=())) if bearer else None
        return http_site(self.gateway, self.clock, GatewaySettings(), settings, "http:tcp:8080:interface=127.0.0.1", None, verify)

    def exchange(self, site: Any, peer: str, method: str = "POST", path: str = "/mcp", body: Any = INIT, **headers: str) -> Response:
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=IPv4Address("TCP", peer, 40000))
        channel = site.buildProtocol(None)
        channel.makeConnection(transport)
        h = {"host": "127.0.0.1:8080", "content-type": "application/json", "accept": JSON_AND_SSE}
        h.update({k.replace("_", "-"): v for k, v in headers.items()})
        data = json.dumps(body).encode() if method == "POST" else b""
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in h.items()), f"content-length: {len(data)}"]
        channel.dataReceived("\r\n".join(lines).encode() + b"\r\n\r\n" + data)
        return Response(transport.value())

    def test_theSessionLogNamesTheClientBehindATrustedProxy(self) -> None:
        site = self.site(trustedProxies=("127.0.0.1/32",))
        with capturedLogs() as events:
            self.assertEqual(self.exchange(site, "127.0.0.1", x_forwarded_for="203.0.113.7").status, 200)
            self.assertEqual(self.exchange(site, "127.0.0.2", x_forwarded_for="198.51.100.66").status, 200)
        opened = [formatEvent(e) for e in events if "opened" in formatEvent(e)]
        self.assertEqual(len(opened), 2, opened)
        self.assertIn("(tcp client 203.0.113.7 via proxy 127.0.0.1:40000)", opened[0])
        self.assertIn("(tcp client 127.0.0.2:40000)", opened[1])  # not a trusted proxy: its header is ignored
        self.assertNotIn("198.51.100.66", "".join(opened))

    def test_theResourceUrlIsTheOneTheClientUsed(self) -> None:
        site = self.site(bearer=True, trustedProxies=("127.0.0.1/32",), allowedHosts=("mcp.example.com",))
        proxied = {"x_forwarded_proto": "https", "x_forwarded_host": "mcp.example.com", "x_forwarded_for": "203.0.113.7"}
        r = self.exchange(site, "127.0.0.1", "GET", "/.well-known/oauth-protected-resource/mcp", **proxied)
        self.assertEqual(r.json()["resource"], "https://mcp.example.com/mcp")
        r = self.exchange(site, "127.0.0.1", **proxied)
        self.assertEqual(r.status, 401)
        self.assertEqual(r.headers["www-authenticate"], 'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"')
        # From an address that is not a trusted proxy, the same headers change nothing.
        r = self.exchange(site, "127.0.0.2", "GET", "/.well-known/oauth-protected-resource/mcp", **proxied)
        self.assertEqual(r.json()["resource"], "http://127.0.0.1:8080/mcp")
        # http.resource, when set, wins over what any proxy says.
        fixed = self.site(bearer=True, trustedProxies=("127.0.0.1/32",), resource="https://gw.example.org/mcp")
        r = self.exchange(fixed, "127.0.0.1", "GET", "/.well-known/oauth-protected-resource/mcp", **proxied)
        self.assertEqual(r.json()["resource"], "https://gw.example.org/mcp")

    def test_theLoopbackHostCheckJudgesTheHostTheClientAskedFor(self) -> None:
        site = self.site(trustedProxies=("127.0.0.1/32",), allowedHosts=("mcp.example.com",))
        # The proxy's own upstream Host with the client's name forwarded: the client's name is judged.
        self.assertEqual(self.exchange(site, "127.0.0.1", x_forwarded_host="mcp.example.com").status, 200)
        with capturedLogs() as events:
            r = self.exchange(site, "127.0.0.1", x_forwarded_host="evil.example")  # DNS rebinding through the proxy
        self.assertEqual(r.status, 421)
        self.assertIn("evil.example (X-Forwarded-Host)", formatEvent(events[0]))
        self.assertEqual(self.exchange(site, "127.0.0.1", x_forwarded_host="localhost:8443").status, 200)
        # No forwarded host: the Host the proxy sent is judged as before.
        self.assertEqual(self.exchange(site, "127.0.0.1").status, 200)
        self.assertEqual(self.exchange(site, "127.0.0.1", host="evil.example").status, 421)
        # From anyone else, a forwarded host neither helps nor hurts.
        self.assertEqual(self.exchange(site, "127.0.0.2", host="evil.example", x_forwarded_host="localhost").status, 421)
        self.assertEqual(self.exchange(site, "127.0.0.2", x_forwarded_host="evil.example").status, 200)

    def test_connectionCapsCountTheProxysConnections(self) -> None:
        """gateway.maxClientsPerPeer keys on the connection (the proxy), whatever it forwards."""
        from twisted_mcp.frontends.admission import Admission

        settings = HttpSettings(trustedProxies=("127.0.0.1/32",))
        admission = Admission(10, 1, 0, 1 << 20, lambda: None)
        site = http_site(self.gateway, self.clock, GatewaySettings(), settings, "http:tcp:8080:interface=127.0.0.1", admission)
        first = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        site.buildProtocol(None).makeConnection(first)
        self.assertEqual(admission.by_peer, {"127.0.0.1": 1})
        second = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=IPv4Address("TCP", "127.0.0.1", 40001))
        with capturedLogs():
            site.buildProtocol(None).makeConnection(second)
        self.assertIn(b"503 Service Unavailable", second.value())
