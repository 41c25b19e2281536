"""
The C{http:} section: how the Streamable HTTP front (C{--listen http:...})
serves clients.  Every key is optional:

    http:
      path: /mcp                      # where the MCP endpoint is served
      sessionIdleTimeout: 1800        # seconds a session may go unused before it ends
      maxSessions: 10000              # HTTP sessions open at once, over every principal
      maxSessionsPerPrincipal: 100    # HTTP sessions one client identity may hold at once
      maxBodyBytes: 4194304           # the largest POST body read (413 beyond)
      maxStreamBufferBytes: 1048576   # bytes held for a stream whose client does not read (cut beyond)
      resumeWindow: 60                # seconds a stream whose client went away stays resumable (0: not resumable)
      replayBufferBytes: 262144       # the newest bytes of each stream kept for a client that resumes it
      keepAliveInterval: 25           # seconds between SSE comments on open streams (0: none)
      allowedOrigins: []              # browser origins allowed (scheme://host[:port]); none by default
      allowedHosts: []                # Host names a loopback listener answers to besides localhost, 127.0.0.1, [::1]
      bearer: required                # Authorization: Bearer tokens: required, optional or off
                                      # (default: required when identity.jwt is set, else off)
      resource: https://mcp.example.com/mcp   # this endpoint's public URL (RFC 9728 metadata); default: from the request
      authorizationServers: [https://idp.example.com/]   # issuers clients get tokens from (RFC 9728 metadata)
      trustedProxies: [127.0.0.1, 10.0.0.0/8]   # reverse proxies whose forwarded headers are believed; none by default
      forwardedHeaders: x-forwarded   # which they send: x-forwarded (X-Forwarded-For/-Proto/-Host) or forwarded (RFC 7239)
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from twisted_mcp.config._check import _Checker, _describe, _join


@attrs.frozen
class HttpSettings:
    """The C{http:} section, with its defaults."""

    path: str = "/mcp"
    sessionIdleTimeout: float = 1800.0
    maxSessions: int = 10000
    maxSessionsPerPrincipal: int = 100
    maxBodyBytes: int = 4 * 1024 * 1024
    maxStreamBufferBytes: int = 1024 * 1024
    resumeWindow: float = 60.0
    replayBufferBytes: int = 256 * 1024
    keepAliveInterval: float = 25.0
    allowedOrigins: tuple[str, ...] = ()
    allowedHosts: tuple[str, ...] = ()
    #: None: C{required} when C{identity.jwt} is set, else C{off}.
    bearer: str | None = None
    resource: str | None = None
    authorizationServers: tuple[str, ...] = ()
    #: Networks (C{10.0.0.0/8}, C{::1/128}) of the reverse proxies whose
    #: forwarded headers are believed (see L{twisted_mcp.frontends.forwarded}).
    trustedProxies: tuple[str, ...] = ()
    forwardedHeaders: str = "x-forwarded"

    @property
    def replay_limit(self) -> int:
        """The bytes kept per stream for a resume; 0 when streams are not resumable."""
        return self.replayBufferBytes if self.resumeWindow > 0 else 0

    def bearer_mode(self, jwt_configured: bool) -> str:
        """C{required}, C{optional} or C{off}: whether requests must, may or may not carry a bearer token."""
        if self.bearer is not None:
            return self.bearer
        return "required" if jwt_configured else "off"


BEARER_MODES = ("required", "optional", "off")
FORWARDED_CONVENTIONS = ("x-forwarded", "forwarded")

_KEYS: dict[str, tuple[str, Any]] = {
    "path": ("path", None),
    "sessionIdleTimeout": ("seconds", (1, 86400 * 7)),
    "maxSessions": ("int", (1, 1_000_000)),
    "maxSessionsPerPrincipal": ("int", (1, 1_000_000)),
    "maxBodyBytes": ("int", (1024, 1 << 30)),
    "maxStreamBufferBytes": ("int", (4096, 1 << 30)),
    "resumeWindow": ("seconds", (0, 3600)),
    "replayBufferBytes": ("int", (1024, 1 << 30)),
    "keepAliveInterval": ("seconds", (0, 3600)),
    "allowedOrigins": ("origins", None),
    "allowedHosts": ("hosts", None),
    "bearer": ("bearer", None),
    "resource": ("url", None),
    "authorizationServers": ("urls", None),
    "trustedProxies": ("networks", None),
    "forwardedHeaders": ("convention", None),
}


def parse_http(value: Any, path: str, problems: list[str]) -> HttpSettings:
    """
    Check the C{http:} section C{value} (at key path C{path}); each problem
    is appended to C{problems} and the defaults are used for what is wrong.
    """
    check = _Checker()
    found: dict[str, Any] = {}
    section = check.mapping(path, value if value is not None else {})
    if section is not None:
        check.unknown(path, section, _KEYS)
        for key, (kind, bounds) in _KEYS.items():
            if key not in section:
                continue
            where = _join(path, key)
            got: Any
            if kind == "int":
                got = check.integer(where, section[key], *bounds)
            elif kind == "seconds":
                got = check.number(where, section[key], *bounds)
            elif kind == "path":
                got = _endpoint_path(check, where, section[key])
            elif kind == "origins":
                got = _origins(check, where, section[key])
            elif kind == "bearer":
                got = _bearer(check, where, section[key])
            elif kind == "url":
                got = _url(check, where, section[key])
            elif kind == "urls":
                got = _urls(check, where, section[key])
            elif kind == "networks":
                got = _networks(check, where, section[key])
            elif kind == "convention":
                got = _convention(check, where, section[key])
            else:
                got = _hosts(check, where, section[key])
            if got is not None:
                found[key] = got
    problems.extend(check.problems)
    return HttpSettings(**found)


def _endpoint_path(check: _Checker, where: str, value: Any) -> str | None:
    text = check.string(where, value)
    if text is None:
        return None
    if not text.startswith("/") or text == "/" or text.endswith("/") or "//" in text or "?" in text or "#" in text:
        check.problem(where, f"expected a path such as /mcp (begins with /, no trailing /, no ? or #), got {_describe(text)}")
        return None
    return text


def _origins(check: _Checker, where: str, value: Any) -> tuple[str, ...] | None:
    items = check.string_list(where, value)
    if items is None:
        return None
    out = []
    for i, origin in enumerate(items):
        shaped = origin.rstrip("/").lower()
        scheme, sep, rest = shaped.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            check.problem(f"{where}[{i}]", f"expected an origin such as https://app.example.com or http://localhost:3000, got {_describe(origin)}")
            continue
        out.append(shaped)
    return tuple(out)


def _bearer(check: _Checker, where: str, value: Any) -> str | None:
    text = check.string(where, value)
    if text is None:
        return None
    if text not in BEARER_MODES:
        check.problem(where, f"expected one of {', '.join(BEARER_MODES)}, got {_describe(text)}")
        return None
    return text


def _url(check: _Checker, where: str, value: Any) -> str | None:
    text = check.string(where, value)
    if text is None:
        return None
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/") or "#" in text or "@" in rest.split("/")[0]:
        check.problem(where, f"expected an absolute http(s) URL without credentials, such as https://mcp.example.com/mcp, got {_describe(text)}")
        return None
    return text


def _urls(check: _Checker, where: str, value: Any) -> tuple[str, ...] | None:
    items = check.string_list(where, value)
    if items is None:
        return None
    out = [url for i, item in enumerate(items) if (url := _url(check, f"{where}[{i}]", item)) is not None]
    return tuple(out)


def _networks(check: _Checker, where: str, value: Any) -> tuple[str, ...] | None:
    items = check.string_list(where, value)
    if items is None:
        return None
    out = []
    for i, item in enumerate(items):
        text = item.strip()
        try:
            network = ipaddress.ip_network(text)
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                check.problem(
                    f"{where}[{i}]",
                    f"expected an IP address or network such as 127.0.0.1, 10.0.0.0/8 or fd00::/8 (names are not resolved), got {_describe(item)}",
                )
            else:
                check.problem(f"{where}[{i}]", f"{text} has bits set past its prefix length: did you mean {loose}?")
            continue
        if network.prefixlen == 0:
            check.problem(
                f"{where}[{i}]",
                f"{text} trusts every address, so anyone could forge X-Forwarded-For: list your proxies' addresses or networks",
            )
            continue
        out.append(str(network))
    return tuple(out)


def _convention(check: _Checker, where: str, value: Any) -> str | None:
    text = check.string(where, value)
    if text is None:
        return None
    if text.lower() not in FORWARDED_CONVENTIONS:
        check.problem(
            where,
            f"expected x-forwarded (X-Forwarded-For, -Proto, -Host) or forwarded (RFC 7239 Forwarded), got {_describe(text)}",
        )
        return None
    return text.lower()


def _hosts(check: _Checker, where: str, value: Any) -> tuple[str, ...] | None:
    items = check.string_list(where, value)
    if items is None:
        return None
    out = []
    for i, host in enumerate(items):
        if not host or any(c in host for c in "/ @?#"):
            check.problem(f"{where}[{i}]", f"expected a host name (with its port, if it is not 80), such as mcp.internal:8080, got {_describe(host)}")
            continue
        out.append(host.lower())
    return tuple(out)


__all__ = ["HttpSettings", "parse_http"]
