"""
Bearer tokens on the Streamable HTTP front (OAuth 2.0 protected resource:
RFC 6750 for the C{Authorization} header and the 401 challenge, RFC 9728
for the metadata document).

With C{http.bearer: required} (the default when C{identity.jwt} is set),
every request to the MCP endpoint carries C{Authorization: Bearer
<token>}; the token is verified by the C{identity.jwt} rules on every
request and its principal is who the request runs as.  Without a token,
or with one that is refused, the answer is 401 with a C{WWW-Authenticate}
challenge naming the metadata document, so a client can find where to get
a token.  With C{optional}, a request without a token runs as the
connection's identity (listener, peer or certificate rules); a bad token is
still refused.

The token itself is never kept, logged, audited, echoed in an error or
passed on: only the principal it names goes further.
"""

from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.web.http import Request

from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.frontends.forwarded import HOST_RE, forwarded
from twisted_mcp.frontends.http_config import HttpSettings
from twisted_mcp.mcp import errors
from twisted_mcp.policy.peers import Peer
from twisted_mcp.policy.principal import IdentityError, Principal
from twisted_mcp.policy.refusals import CoalescedRefusal
from twisted_mcp.wire.jsonrpc import encode_or_explain

log = Logger()

#: Where RFC 9728 puts the metadata, before the resource's own path.
WELL_KNOWN = "/.well-known/oauth-protected-resource"
_TOKEN68 = re.compile(rb"^[A-Za-z0-9\-._~+/]+=*$")
#: What RFC 6750 allows in a quoted error_description.
_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")

#: A refusal: the HTTP status, the C{WWW-Authenticate} value, the message of the JSON-RPC error.
Refusal = tuple[int, bytes, str]


class BearerCheck:
    """
    Verifies the bearer token of each request to the MCP endpoint.

    @param verify: the principal a token names (raising L{IdentityError});
        the C{identity.jwt} authenticator's C{verify_bearer}.
    @param gateway: whose policy audits refusals (read at each refusal: a
        reload replaces it).
    @param required: whether a request without a token is refused (else
        it runs as the connection's identity).
    """

    def __init__(self, verify: Callable[[str], Principal], gateway: Gateway, settings: HttpSettings, required: bool) -> None:
        self.verify = verify
        self.gateway = gateway
        self.settings = settings
        self.required = required

    def check(self, request: Request, peer: Peer, segment: str | None = None) -> Principal | Refusal | None:
        """
        The token's principal; None when there is no token and none is
        required; else the refusal (naming the metadata of the endpoint at
        C{<http.path>/<segment>} when C{segment}, a profile's, is given).
        """
        token = bearer_token(request.getHeader(b"authorization"))
        metadata = metadata_url(self.settings, request, segment)
        if token is None:
            if not self.required:
                return None
            message = "no bearer token: send Authorization: Bearer <token> with every request (see the resource metadata)"
            self._refused(request, peer, message)
            return 401, f'Bearer resource_metadata="{metadata}"'.encode("ascii", "replace"), f"Authentication failed: {message}"
        try:
            return self.verify(token)
        except IdentityError as e:
            message = e.message.replace(token, "<token>")
        self._refused(request, peer, message)
        description = _UNSAFE.sub("", message)[:200]
        header = f'Bearer error="invalid_token", error_description="{description}", resource_metadata="{metadata}"'
        return 401, header.encode("ascii", "replace"), f"Authentication failed: {message}"

    def _refused(self, request: Request, peer: Peer, message: str) -> None:
        """Audit the refusal as the policy audits identity failures (within the refusal budget), and log it."""
        policy = self.gateway.policy
        record = policy.new_record("-", f"http/{request.method.decode('ascii', 'replace')}")
        refusal = policy.deny(record, errors.AUTHENTICATION_FAILED, f"Authentication failed: {message}")
        if not isinstance(refusal, CoalescedRefusal):
            log.info("HTTP request from {peer} refused (401): {message}", peer=peer.describe(), message=message)


def bearer_token(header: bytes | None) -> str | None:
    """The token of an C{Authorization: Bearer <token>} header; None without one (or with another scheme)."""
    if header is None:
        return None
    scheme, _, rest = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = rest.strip()
    if not token or not _TOKEN68.match(token):
        return None
    return token.decode("ascii")


def resource_url(settings: HttpSettings, request: Request, segment: str | None = None) -> str:
    """
    The MCP endpoint's URL: C{http.resource}, or the request's scheme and
    C{Host} with C{http.path}; behind a trusted proxy (C{http.trustedProxies}),
    the scheme and host its client used, as the proxy reports them.  With
    C{segment} (a profile's name), the URL of the endpoint at
    C{<http.path>/<segment>}.
    """
    if segment is not None:
        return f"{resource_url(settings, request).rstrip('/')}/{segment}"
    if settings.resource is not None:
        return settings.resource
    via = forwarded(settings, request)
    scheme = "https" if request.isSecure() else "http"
    host = (request.getHeader(b"host") or b"").decode("latin-1").strip()
    if via is not None:
        scheme = via.proto or scheme
        host = via.host or host
    if not HOST_RE.match(host):
        local: Any = request.getHost()
        address = getattr(local, "host", "localhost")
        host = f"[{address}]:{local.port}" if ":" in address else f"{address}:{getattr(local, 'port', '')}".rstrip(":")
    return f"{scheme}://{host}{settings.path}"


def metadata_url(settings: HttpSettings, request: Request, segment: str | None = None) -> str:
    """Where the metadata of the resource is (RFC 9728 section 3: the well-known path before the resource's path)."""
    parts = urlsplit(resource_url(settings, request, segment))
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{parts.path.rstrip('/')}"


def metadata_paths(settings: HttpSettings) -> tuple[bytes, ...]:
    """The paths the metadata is served at: the bare well-known path, and with the endpoint's path after it."""
    paths = {WELL_KNOWN, WELL_KNOWN + settings.path}
    if settings.resource is not None:
        paths.add(WELL_KNOWN + urlsplit(settings.resource).path.rstrip("/"))
    return tuple(sorted(p.encode("utf-8") for p in paths))


def profile_metadata_segment(settings: HttpSettings, path: bytes) -> str | None:
    """
    The last segment of C{path} when it is where the metadata of an
    endpoint C{<http.path>/<segment>} would be (a profile's, design of issue
    14 section 2.3); None otherwise.  Whether a profile has that name is
    the caller's to check.
    """
    bases = {WELL_KNOWN + settings.path}
    if settings.resource is not None:
        bases.add(WELL_KNOWN + urlsplit(settings.resource).path.rstrip("/"))
    text = path.decode("utf-8", "replace")
    for base in bases:
        if text.startswith(base + "/"):
            return text[len(base) + 1 :]
    return None


def metadata_document(settings: HttpSettings, request: Request, segment: str | None = None) -> bytes:
    """The protected resource metadata (RFC 9728), as JSON (of the endpoint at C{<http.path>/<segment>} with C{segment})."""
    document: dict[str, Any] = {"resource": resource_url(settings, request, segment), "bearer_methods_supported": ["header"]}
    if settings.authorizationServers:
        document["authorization_servers"] = list(settings.authorizationServers)
    body, _ = encode_or_explain(document)
    return body or b"{}"


__all__ = ["WELL_KNOWN", "BearerCheck", "bearer_token", "metadata_document", "metadata_paths", "metadata_url", "profile_metadata_segment", "resource_url"]
