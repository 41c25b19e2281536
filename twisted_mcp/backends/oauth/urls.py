"""
The URL rules of OAuth discovery: where metadata is looked for (RFC 9728
§3.1, RFC 8414 §3.1 and §5, OpenID Connect Discovery §4), which endpoints
may be used (https, or http to this machine: OAuth 2.1 §1.5, RFC 8252
§7.3), origins, and whether a protected resource's C{resource} covers the
backend's URL (design §3 step 2).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult

from twisted_mcp.urls import split_url

__all__ = [
    "authorization_server_metadata_urls",
    "is_https_or_loopback",
    "is_loopback_host",
    "origin",
    "protected_resource_metadata_urls",
    "resource_covers",
    "same_origin",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PRM_SUFFIX = "/.well-known/oauth-protected-resource"
_OAUTH_SUFFIX = "/.well-known/oauth-authorization-server"
_OIDC_SUFFIX = "/.well-known/openid-configuration"


def is_loopback_host(host: str) -> bool:
    """
    Whether C{host} names this machine: C{localhost}, an address of
    127.0.0.0/8, or C{::1} (with or without brackets).
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_https_or_loopback(url: str) -> bool:
    """
    Whether C{url} is https, or http to a loopback host (L{is_loopback_host}),
    written in printable ASCII (it may end up in a C{Location} header or a
    request line: no spaces, no control characters, nothing to encode).
    """
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        return False
    parts = split_url(url)
    if parts is None or not parts.hostname:
        return False
    scheme = parts.scheme.lower()
    return scheme == "https" or (scheme == "http" and is_loopback_host(parts.hostname))


def _origin_of(parts: SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def same_origin(a: str, b: str) -> bool:
    """
    Whether C{a} and C{b} have the same scheme, host and port (C{:443} on
    https and C{:80} on http are the same as no port); an unreadable URL
    has no origin in common with anything.
    """
    parts_a, parts_b = split_url(a), split_url(b)
    if parts_a is None or parts_b is None or not parts_a.hostname or not parts_b.hostname:
        return False
    return _origin_of(parts_a) == _origin_of(parts_b)


def origin(url: str) -> str:
    """
    C{url}'s origin as C{scheme://host[:port]}: lower case, no user
    information, the scheme's default port left out.

    @raise ValueError: C{url} cannot be read or has no host.
    """
    parts = split_url(url)
    if parts is None or not parts.hostname:
        raise ValueError("not an absolute URL with a host")
    scheme, host, port = _origin_of(parts)
    if ":" in host:
        host = f"[{host}]"
    shown_port = "" if port is None or port == _DEFAULT_PORTS.get(scheme) else f":{port}"
    return f"{scheme}://{host}{shown_port}"


def resource_covers(resource: str, backend_url: str) -> bool:
    """
    Whether the protected resource C{resource} covers C{backend_url}: the
    same origin, and a path that is the backend's or a parent of it,
    segment by segment (C{/mcp} covers C{/mcp} and C{/mcp/x}, not
    C{/mcpx}; a trailing slash makes no difference).  A resource with a
    fragment covers nothing (RFC 8707 §2); one with a query only the same
    path with the same query.
    """
    parts, backend = split_url(resource), split_url(backend_url)
    if parts is None or backend is None or not same_origin(resource, backend_url) or parts.fragment:
        return False
    resource_path, backend_path = parts.path.rstrip("/"), backend.path.rstrip("/")
    if parts.query:
        return parts.query == backend.query and resource_path == backend_path
    return backend_path == resource_path or backend_path.startswith(resource_path + "/")


def _origin_and_path(url: str) -> tuple[str, str, str]:
    parts = split_url(url)
    if parts is None or not parts.hostname:
        raise ValueError("not an absolute URL with a host")
    return origin(url), parts.path.rstrip("/"), parts.query


def protected_resource_metadata_urls(backend_url: str) -> list[str]:
    """
    Where the protected resource metadata of C{backend_url} is looked for
    when its challenge names none (RFC 9728 §3.1): the well-known URL with
    the backend's path (and query) first, when it has one, then the
    origin's (a terminating slash is removed first).

    @raise ValueError: C{backend_url} cannot be read or has no host.
    """
    base, path, query = _origin_and_path(backend_url)
    urls = []
    if path or query:
        urls.append(base + _PRM_SUFFIX + path + (f"?{query}" if query else ""))
    urls.append(base + _PRM_SUFFIX)
    return urls


def authorization_server_metadata_urls(issuer: str) -> list[str]:
    """
    Where the metadata of the authorization server C{issuer} is looked
    for, in the order the MCP authorization spec requires: with a path,
    RFC 8414's, OpenID Connect's with the path inserted, OpenID Connect's
    with it appended; without one, RFC 8414's then OpenID Connect's.  A
    terminating slash is removed first.

    @raise ValueError: C{issuer} cannot be read or has no host.
    """
    base, path, _ = _origin_and_path(issuer)
    if not path:
        return [base + _OAUTH_SUFFIX, base + _OIDC_SUFFIX]
    return [base + _OAUTH_SUFFIX + path, base + _OIDC_SUFFIX + path, base + path + _OIDC_SUFFIX]
