"""
Which client identity the gateway uses toward an authorization server
(C{docs/design/oauth.md} §4.1), in the order the 2026-07-28 revision gives:
a pre-registered client from the configuration, then a client ID metadata
document (CIMD) when the AS supports them and the gateway has an https
public URL, then dynamic client registration (RFC 7591), else
C{no-client-identity}.

Dynamic registrations are kept in the L{ClientStore} per (issuer, digest of
the sorted redirect URIs) and reused until the AS rejects them.  A flow's
redirect URI is registered exactly, port included, so a loopback login on a
new port registers anew (RFC 8252 §7.3 lets an AS ignore the port; not all
do).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_mcp.backends.oauth.fetch import AuthHttp, origin_of
from twisted_mcp.backends.oauth.metadata import ServerMetadata
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable
from twisted_mcp.backends.oauth.store import ClientKey, ClientRecord, ClientStore, Conflict
from twisted_mcp.backends.oauth.tokens import parse_error
from twisted_mcp.backends.oauth.urls import is_loopback_host

if TYPE_CHECKING:
    from twisted_mcp.config.models import OAuthAuth, OAuthSettings

log = Logger()

#: The loopback redirect URIs a CIMD document lists, so the CLI flow works
#: with the same identity.
LOOPBACK_REDIRECTS = ("http://127.0.0.1/oauth/callback", "http://[::1]/oauth/callback")
CALLBACK_PATH = "/oauth/callback"
CLIENT_DOCUMENT_PATH = "/oauth/client.json"
_SECRET_METHODS = ("client_secret_basic", "client_secret_post")


def redirect_digest(redirect_uris: Sequence[str]) -> str:
    """The hex SHA-256 of the sorted, distinct redirect URIs: a registration's key part."""
    return hashlib.sha256("\n".join(sorted(set(redirect_uris))).encode("utf-8")).hexdigest()


def client_metadata_url(settings: OAuthSettings) -> str | None:
    """Where the gateway's CIMD is served: C{clientMetadataUrl}, else
    C{<publicUrl>/oauth/client.json}; C{None} unless an https URL with a path."""
    url = settings.clientMetadataUrl
    if url is None and settings.publicUrl is not None:
        url = settings.publicUrl.rstrip("/") + CLIENT_DOCUMENT_PATH
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.path in ("", "/"):
        return None
    return url


def client_metadata_document(settings: OAuthSettings) -> dict[str, Any] | None:
    """The CIMD (§4.1 item 2) the HTTP front serves, or C{None} without an
    https client metadata URL: a public client whose C{client_id} is the
    document's own URL."""
    url = client_metadata_url(settings)
    if url is None:
        return None
    redirects = list(LOOPBACK_REDIRECTS)
    if settings.publicUrl is not None:
        redirects.insert(0, settings.publicUrl.rstrip("/") + CALLBACK_PATH)
    return {
        "client_id": url,
        "client_name": settings.clientName,
        "redirect_uris": redirects,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "web",
    }


def choose_auth_method(secret: str | None, configured: str | None, supported: Sequence[str] | None) -> str:
    """
    How a pre-registered client authenticates at the token endpoint: as
    configured; else C{none} without a secret; else C{client_secret_basic}
    unless the AS lists only C{client_secret_post}.
    """
    if configured is not None:
        return configured
    if secret is None:
        return "none"
    if supported is not None and "client_secret_basic" not in supported and "client_secret_post" in supported:
        return "client_secret_post"
    return "client_secret_basic"


def registration_metadata(client_name: str, redirect_uris: Sequence[str]) -> dict[str, Any]:
    """The RFC 7591 registration request: a public client, native when every redirect is loopback."""
    loopback = all(is_loopback_host(urlsplit(uri).hostname or "") for uri in redirect_uris)
    return {
        "client_name": client_name,
        "redirect_uris": list(redirect_uris),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native" if loopback else "web",
    }


def _binding_key(issuer: str, backend: str, client_id: str) -> ClientKey:
    return (issuer, f"preregistered {backend} {client_id}")


class Registrar:
    """
    Finds (and registers) the client identity for a flow.

    @param clock: the time registrations are stamped with.
    @param http: the bounded fetcher.
    @param clients: where registrations (and pre-registered clients' issuer bindings) are kept.
    @param settings: the gateway's C{oauth} section.
    """

    def __init__(self, clock: IReactorTime, http: AuthHttp, clients: ClientStore, settings: OAuthSettings) -> None:
        self.clock = clock
        self.http = http
        self.clients = clients
        self.settings = settings

    def client_for(
        self, backend: str, auth: OAuthAuth, server: ServerMetadata, redirect_uris: Sequence[str]
    ) -> Deferred[ClientRecord]:
        """The identity to use with C{server} for a flow redirecting to C{redirect_uris}."""
        return Deferred.fromCoroutine(self._client_for(backend, auth, server, tuple(redirect_uris)))

    async def _client_for(
        self, backend: str, auth: OAuthAuth, server: ServerMetadata, redirect_uris: tuple[str, ...]
    ) -> ClientRecord:
        if auth.client is not None:
            return await self._preregistered(backend, auth, server)
        url = client_metadata_url(self.settings)
        if server.client_id_metadata_document_supported and url is not None:
            document = client_metadata_document(self.settings)
            assert document is not None
            return ClientRecord(
                client_id=url,
                client_secret=None,
                auth_method="none",
                registered_at=self.clock.seconds(),
                kind="cimd",
                redirect_uris=tuple(document["redirect_uris"]),
            )
        if server.registration_endpoint is not None:
            return await self._registered(backend, server, redirect_uris)
        raise AuthorizationUnavailable(
            "no-client-identity",
            f"the authorization server {server.issuer} offers neither client metadata documents nor registration: "
            f"register a client there and set mcpServers.{backend}.auth.oauth.client",
        )

    async def _preregistered(self, backend: str, auth: OAuthAuth, server: ServerMetadata) -> ClientRecord:
        """The configured client, bound to the first issuer it is used with."""
        configured = auth.client
        assert configured is not None
        record = ClientRecord(
            client_id=configured.id,
            client_secret=configured.secret,
            auth_method=choose_auth_method(
                configured.secret, configured.authMethod, server.token_endpoint_auth_methods_supported
            ),
            registered_at=self.clock.seconds(),
            kind="preregistered",
        )
        if auth.issuer is not None:
            return record
        marker = _binding_key("", backend, configured.id)[1]
        for issuer, second in await self.clients.keys():
            if second == marker and issuer != server.issuer:
                raise AuthorizationUnavailable(
                    "client-issuer-changed",
                    f"backend '{backend}' now names the authorization server {server.issuer}, but its configured client "
                    f"was used with {issuer}: check the backend, then set mcpServers.{backend}.auth.oauth.issuer",
                )
        key = _binding_key(server.issuer, backend, configured.id)
        if await self.clients.get(key) is None:
            binding = ClientRecord(
                client_id=configured.id,
                client_secret=None,
                auth_method=record.auth_method,
                registered_at=record.registered_at,
                kind="preregistered",
            )
            try:
                await self.clients.put(key, binding, None)
            except Conflict:
                pass
        return record

    async def _registered(self, backend: str, server: ServerMetadata, redirect_uris: tuple[str, ...]) -> ClientRecord:
        key: ClientKey = (server.issuer, redirect_digest(redirect_uris))
        held = await self.clients.get(key)
        if held is not None:
            return held[0]
        assert server.registration_endpoint is not None
        answer = await self.http.post_json(
            server.registration_endpoint, registration_metadata(self.settings.clientName, redirect_uris)
        )
        where = origin_of(server.registration_endpoint)
        if answer.status not in (200, 201):
            error, description = parse_error(answer.body)
            if answer.status >= 500 or answer.status == 429:
                raise AuthorizationUnavailable("as-unavailable", f"the registration endpoint at {where} answered {answer.status}")
            said = f": {error}" + (f" ({description})" if description else "") if error else ""
            raise AuthorizationUnavailable(
                "registration-refused",
                f"the authorization server {server.issuer} refused to register the gateway ({answer.status}{said})",
                **({"error": error} if error else {}),
            )
        record = self._record(answer.body, where, redirect_uris)
        try:
            await self.clients.put(key, record, None)
        except Conflict:
            other = await self.clients.get(key)
            if other is not None:
                return other[0]
        log.info(
            "backend {backend}: registered client {client_id} at {issuer}",
            backend=backend,
            client_id=record.client_id,
            issuer=server.issuer,
        )
        return record

    def _record(self, body: bytes, where: str, redirect_uris: tuple[str, ...]) -> ClientRecord:
        try:
            document: Any = json.loads(body)
        except (ValueError, RecursionError, UnicodeDecodeError):
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("client_id"), str) or not document["client_id"]:
            raise AuthorizationUnavailable(
                "registration-refused", f"the registration endpoint at {where} answered without a client_id"
            )
        secret = document.get("client_secret")
        secret = secret if isinstance(secret, str) and secret else None
        method = document.get("token_endpoint_auth_method")
        if not isinstance(method, str) or method not in (*_SECRET_METHODS, "none"):
            method = "client_secret_basic" if secret else "none"
        return ClientRecord(
            client_id=document["client_id"],
            client_secret=secret,
            auth_method=method,
            registered_at=self.clock.seconds(),
            kind="dcr",
            redirect_uris=redirect_uris,
        )

    def rejected(self, issuer: str, client: ClientRecord) -> Deferred[bool]:
        """
        The AS answered C{invalid_client} for C{client}: a dynamic
        registration is forgotten (the next flow registers again) and the
        result is C{True}; any other identity cannot be redone (C{False}:
        the operator must act, C{client-rejected}).
        """
        return Deferred.fromCoroutine(self._rejected(issuer, client))

    async def _rejected(self, issuer: str, client: ClientRecord) -> bool:
        if client.kind != "dcr":
            return False
        await self.clients.delete((issuer, redirect_digest(client.redirect_uris)))
        log.warn("client {client_id} was rejected by {issuer}: it will register again", client_id=client.client_id, issuer=issuer)
        return True


__all__ = [
    "LOOPBACK_REDIRECTS",
    "Registrar",
    "choose_auth_method",
    "client_metadata_document",
    "client_metadata_url",
    "redirect_digest",
    "registration_metadata",
]
