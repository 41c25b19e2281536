"""
Behind a reverse proxy: who the client really is, and which URL it used.

A proxy in front of the Streamable HTTP front connects from its own
address, speaks plain HTTP even when its clients use HTTPS, and may send
its own upstream name as C{Host}.  It reports what it saw in headers:
C{X-Forwarded-For}, C{X-Forwarded-Proto} and C{X-Forwarded-Host} (the
de facto convention: nginx, HAProxy, most load balancers), or RFC 7239's
C{Forwarded: for=...;proto=...;host=...}.  Anyone can send those headers,
so they are believed only on a connection from an address of
C{http.trustedProxies}, and only the convention named by
C{http.forwardedHeaders} (C{x-forwarded}, the default, or C{forwarded}):
a proxy that sets one convention usually passes the other through from
its client untouched, where it could be forged.  With no trusted proxy
configured (the default) they are ignored.

The client is found as proxies agree it should be: walk the addresses
right to left (the rightmost was written by the proxy that connected to
us), skipping those of trusted proxies; the first address that is not one
is the client.  Each proxy appends what it saw, so the scheme and host
believed are those the client itself used: the entry of the same position
when the proxies appended one per hop, else the last one (what the nearest
trusted proxy set).

What it changes (and what it does not):

  - the address the request's peer is described with in the log and in
    errors (C{tcp client 203.0.113.7 via proxy 127.0.0.1:41234}); identity
    never comes from an address, so a forwarded address grants nothing;
  - the public URL of the protected resource metadata (RFC 9728) and of the
    C{WWW-Authenticate} challenge, when C{http.resource} is not set;
  - the DNS-rebinding check of a loopback listener: it judges the host the
    client asked the proxy for (see L{host_allowed});
  - not the connection caps (C{gateway.maxClientsPerPeer}): they count
    connections, and the connections are the proxy's.

A malformed value is ignored (with what could be read before it) and
logged once per header and proxy, not once per request.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Callable, Union

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger

from twisted_mcp.frontends.http_config import HttpSettings
from twisted_mcp.policy.peers import Peer

log = Logger()

IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: A host, with its port if any: a name, an IPv4 address or a bracketed IPv6 one (no path, no user).
HOST_RE = re.compile(r"^(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PAIR = re.compile(rf"\s*({_TOKEN})=({_TOKEN}|{_QUOTED})\s*")
_OBFUSCATED = re.compile(r"^_[A-Za-z0-9._-]+$")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: At most this many distinct problems are remembered (and logged).
_MAX_LOGGED = 1000


class Malformed(ValueError):
    """A forwarded header that cannot be read; its message says what and why (for the log)."""


@attrs.frozen
class Forwarded:
    """
    What a trusted proxy reported about the request it passed on.

    @ivar client: the client's address (C{203.0.113.7}, C{[2001:db8::1]:4711},
        or an RFC 7239 identifier such as C{unknown}); None when the proxy
        did not say.
    @ivar proto: C{http} or C{https}, the scheme the client used; None when not said.
    @ivar host: the C{host[:port]} the client asked for; None when not said.
    @ivar host_from: the header that named C{host}, for the operator.
    """

    client: str | None = None
    proto: str | None = None
    host: str | None = None
    host_from: str = ""


# -- reading the headers (pure) ---------------------------------------------


def parse_ip(text: str) -> IP:
    """An address as proxies write it: C{1.2.3.4}, C{1.2.3.4:80}, C{2001:db8::1}, C{[2001:db8::1]:80}; L{Malformed} else."""
    node = text.strip()
    if node.startswith("["):
        inside, close, rest = node[1:].partition("]")
        if not close or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            raise Malformed(f"not an IP address: {node[:60]!r}")
        node = inside
    elif node.count(":") == 1:
        node, _, port = node.partition(":")
        if not port.isdigit():
            raise Malformed(f"not an IP address: {text.strip()[:60]!r}")
    try:
        return unmapped(ipaddress.ip_address(node))
    except ValueError:
        raise Malformed(f"not an IP address: {text.strip()[:60]!r}") from None


def unmapped(ip: IP) -> IP:
    """An IPv4 address written as IPv6 (C{::ffff:10.0.0.1}, on a dual-stack listener) as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def header_list(values: list[bytes] | None) -> list[str]:
    """The comma-separated items of a header, over all its lines (empty items dropped)."""
    items: list[str] = []
    for value in values or ():
        items += [item.strip() for item in value.decode("latin-1").split(",") if item.strip()]
    return items


def parse_forwarded(values: list[bytes] | None) -> list[dict[str, str]]:
    """
    The elements of RFC 7239 C{Forwarded} headers, in order, each a mapping
    of lower-cased parameter names to their (unquoted) values; L{Malformed}
    for text that does not follow the grammar.
    """
    text = ",".join(v.decode("latin-1") for v in values or ())
    elements: list[dict[str, str]] = []
    position = 0
    current: dict[str, str] = {}
    while position < len(text):
        match = _PAIR.match(text, position)
        if match is None:
            raise Malformed(f"cannot read {text[position:position + 60]!r} (expected name=value pairs)")
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if name in current:
            raise Malformed(f"{name}= given twice in one element")
        current[name] = value
        position = match.end()
        if position < len(text):
            separator = text[position]
            if separator not in ",;":
                raise Malformed(f"unexpected {text[position:position + 20]!r} after {name}=")
            position += 1
            if separator == ",":
                elements.append(current)
                current = {}
    if current:
        elements.append(current)
    return elements


def forwarded_node(value: str | None) -> tuple[IP | None, str]:
    """
    An RFC 7239 C{for=} node: its address (None for C{unknown} or an
    obfuscated C{_name}) and how to show it; L{Malformed} else.
    """
    if value is None or value.lower() == "unknown":
        return None, "unknown"
    if _OBFUSCATED.match(value.split(":")[0]):
        return None, value
    node = value if value.startswith("[") or value.count(":") <= 1 else f"[{value}]"  # tolerate a bare IPv6
    return parse_ip(node), shown(node)


def shown(node: str) -> str:
    """An address as written by a proxy, tidied for the log (brackets only around an IPv6 address with a port)."""
    node = node.strip()
    if node.startswith("[") and node.endswith("]"):
        return node[1:-1]
    return node


def walk(hops: list[str], parse: Callable[[str], tuple[IP | None, str]], trusted: Callable[[IP], bool]) -> tuple[int, str, str | None]:
    """
    The client among C{hops} (the addresses each proxy saw, the rightmost
    seen by the proxy that connected to us): right to left, the first that
    is not a trusted proxy.  Returns its index, how to show it, and the
    problem that stopped the walk early (then the last address walked is
    the client, or index C{len(hops)} when there was none: the proxy's own
    client is unknown).  When every hop is trusted, the leftmost is the client.
    """
    index, client = len(hops), ""
    for i in range(len(hops) - 1, -1, -1):
        try:
            ip, text = parse(hops[i])
        except Malformed as e:
            return index, client, str(e)
        index, client = i, text
        if ip is None or not trusted(ip):
            break
    return index, client, None


def _aligned(values: list[str], index: int, hops: int) -> str | None:
    """The entry written by the proxy of hop C{index} when there is one per hop; else the last (the nearest proxy's)."""
    if not values:
        return None
    if len(values) == hops and index < hops:
        return values[index]
    return values[-1]


def _proto(value: str | None) -> str | None:
    if value is None:
        return None
    proto = value.strip().lower()
    if proto not in ("http", "https"):
        raise Malformed(f"not http or https: {value[:40]!r}")
    return proto


def _host(value: str | None) -> str | None:
    if value is None:
        return None
    host = value.strip()
    if not HOST_RE.match(host):
        raise Malformed(f"not a host[:port]: {value[:60]!r}")
    return host.lower()


def read_x_forwarded(headers: Any, trusted: Callable[[IP], bool], problems: list[tuple[str, str]]) -> Forwarded:
    """What C{X-Forwarded-For}, C{-Proto} and C{-Host} say; each problem is appended as (header, what)."""
    hops = header_list(headers.getRawHeaders(b"x-forwarded-for"))
    index, client, problem = walk(hops, lambda node: (parse_ip(node), shown(node)), trusted)
    if problem is not None:
        problems.append(("X-Forwarded-For", problem))
    proto = host = None
    try:
        proto = _proto(_aligned(header_list(headers.getRawHeaders(b"x-forwarded-proto")), index, len(hops)))
    except Malformed as e:
        problems.append(("X-Forwarded-Proto", str(e)))
    try:
        host = _host(_aligned(header_list(headers.getRawHeaders(b"x-forwarded-host")), index, len(hops)))
    except Malformed as e:
        problems.append(("X-Forwarded-Host", str(e)))
    return Forwarded(client=client or None, proto=proto, host=host, host_from="X-Forwarded-Host")


def read_forwarded(headers: Any, trusted: Callable[[IP], bool], problems: list[tuple[str, str]]) -> Forwarded:
    """What RFC 7239 C{Forwarded} says (C{for}, C{proto}, C{host} of the client's element)."""
    try:
        elements = parse_forwarded(headers.getRawHeaders(b"forwarded"))
    except Malformed as e:
        problems.append(("Forwarded", str(e)))
        return Forwarded()
    if not elements:
        return Forwarded()
    hops = [element.get("for", "unknown") for element in elements]
    index, client, problem = walk(hops, forwarded_node, trusted)
    if problem is not None:
        problems.append(("Forwarded", f"for= {problem} (nor unknown or an _identifier)"))
    element = elements[min(index, len(elements) - 1)]
    proto = host = None
    try:
        proto = _proto(element.get("proto"))
    except Malformed as e:
        problems.append(("Forwarded", f"proto= {e}"))
    try:
        host = _host(element.get("host"))
    except Malformed as e:
        problems.append(("Forwarded", f"host= {e}"))
    return Forwarded(client=client or None, proto=proto, host=host, host_from="Forwarded host=")


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """
    Whether a loopback listener serves a request for which a trusted proxy
    reported the client asked for C{host}.

    That is the name in the client's address bar, so it is what DNS
    rebinding would forge (a page of evil.example resolving to the proxy's
    loopback address): judge it, not the proxy's upstream C{Host}.  The
    loopback names are fine on any port (the proxy's port is not ours to
    know, and a rebinding page cannot send them); any other name must be
    in C{http.allowedHosts}, exactly as the proxy reports it.
    """
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in _LOOPBACK_NAMES or host in allowed_hosts


# -- trusting a connection ---------------------------------------------------


class ProxyTrust:
    """
    Which connections may speak for their clients (C{http.trustedProxies})
    and what they said.  Keeps the problems already logged (at most
    L{_MAX_LOGGED}), so a proxy sending a malformed header on every request
    is logged once.
    """

    def __init__(self, networks: tuple[str, ...], convention: str = "x-forwarded") -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in networks)
        self.convention = convention
        self._logged: set[tuple[str, str, str]] = set()

    def trusts(self, ip: IP) -> bool:
        ip = unmapped(ip)
        return any(ip in network for network in self.networks)

    def proxy_of(self, address: Any) -> IP | None:
        """The address of a connection's other end (a Twisted address) when it is a trusted proxy."""
        if not self.networks or not isinstance(address, (IPv4Address, IPv6Address)):
            return None
        try:
            ip = unmapped(ipaddress.ip_address(address.host.split("%")[0]))
        except ValueError:
            return None
        return ip if self.trusts(ip) else None

    def view(self, request: Any) -> Forwarded | None:
        """What the request's trusted proxy reported; None when it came from anyone else (its headers ignored)."""
        proxy = self.proxy_of(request.getClientAddress())
        if proxy is None:
            return None
        problems: list[tuple[str, str]] = []
        reader = read_forwarded if self.convention == "forwarded" else read_x_forwarded
        seen = reader(request.requestHeaders, self.trusts, problems)
        for header, problem in problems:
            self._log_once(str(proxy), header, problem)
        return seen

    def peer(self, peer: Peer, request: Any) -> Peer:
        """C{peer} (the connection's), described by the client's address when a trusted proxy names it."""
        seen = self.view(request)
        if seen is None or seen.client is None:
            return peer
        return attrs.evolve(peer, address=f"{seen.client} via proxy {peer.address}")

    def _log_once(self, proxy: str, header: str, problem: str) -> None:
        key = (proxy, header, problem.split(":")[0])
        if key in self._logged or len(self._logged) >= _MAX_LOGGED:
            return
        self._logged.add(key)
        log.warn(
            "trusted proxy {proxy} sent a malformed {header} header ({problem}); ignored from there on "
            "(logged once per proxy, header and kind of problem)",
            proxy=proxy,
            header=header,
            problem=problem,
        )


@functools.lru_cache(maxsize=64)
def proxy_trust(settings: HttpSettings) -> ProxyTrust:
    """The L{ProxyTrust} of an C{http:} section (one per configuration: a reload makes a new one)."""
    return ProxyTrust(settings.trustedProxies, settings.forwardedHeaders)


def forwarded(settings: HttpSettings, request: Any) -> Forwarded | None:
    """What the request's trusted proxy reported, under C{settings}; None when it did not come from one."""
    if not settings.trustedProxies:
        return None
    return proxy_trust(settings).view(request)


def forwarded_peer(settings: HttpSettings, peer: Peer, request: Any) -> Peer:
    """The request's L{Peer}: the connection's, described by the client's address behind a trusted proxy."""
    if not settings.trustedProxies:
        return peer
    return proxy_trust(settings).peer(peer, request)


__all__ = ["HOST_RE", "Forwarded", "Malformed", "ProxyTrust", "forwarded", "forwarded_peer", "host_allowed", "parse_forwarded", "parse_ip", "proxy_trust"]
