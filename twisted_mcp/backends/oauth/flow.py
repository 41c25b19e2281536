"""
The authorization code flow with PKCE (C{docs/design/oauth.md} §4.2 and
§4.3): L{Flows.begin} builds the authorization URL and keeps a pending
record (sealed, keyed by C{state}); L{Flows.complete} checks a callback in
the order §4.3 gives (C{state}, C{iss}, C{error}, C{code}) and exchanges
the code for a token.

A C{state}, a code or a verifier is never logged nor put in a message: a
C{state} appears only as L{pkce.digest}.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from urllib.parse import urlencode

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_mcp.backends.oauth import pkce
from twisted_mcp.backends.oauth.discovery import Discovered
from twisted_mcp.backends.oauth.fetch import AuthHttp
from twisted_mcp.backends.oauth.problems import AuthorizationFailed
from twisted_mcp.backends.oauth.registration import Registrar
from twisted_mcp.backends.oauth.store import ClientRecord, PendingStore, TokenRecord
from twisted_mcp.backends.oauth.tokens import TokenEndpoint, TokenError

if TYPE_CHECKING:
    from twisted_mcp.config.models import OAuthAuth, OAuthSettings

log = Logger()

#: RFC 6749 §4.1.2.1: C{error} and C{error_description} are NQSCHAR only.
_NQSCHARS = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")
OFFLINE_ACCESS = "offline_access"
#: Authorization request parameters C{extraAuthorizeParams} cannot replace.
RESERVED_PARAMS = frozenset(
    {"response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "resource", "scope"}
)


@frozen
class Authorization:
    """
    A started authorization: the URL the principal opens (it carries the
    C{state}: shown to that principal only, never logged), the C{state}'s
    digest, when the flow expires, and the scopes asked for.
    """

    url: str = field(repr=False)
    state_digest: str
    expires_at: float
    scopes: tuple[str, ...]


@frozen
class Completed:
    """A finished flow: who, for which backend, and the token obtained."""

    principal: str
    backend: str
    issuer: str
    resource: str
    client: ClientRecord
    record: TokenRecord


def choose_scopes(
    discovered: Discovered, configured: Sequence[str], held: Sequence[str], extra: Sequence[str]
) -> tuple[str, ...]:
    """
    §4.2: the union, in order, of the challenge's C{scope} (else the
    resource's C{scopes_supported}), the configured scopes, the scopes of
    the principal's current token and C{extra}; plus C{offline_access} when
    the AS lists it.
    """
    first = discovered.challenge_scope
    if first is None:
        first = discovered.resource.scopes_supported or ()
    chosen: list[str] = []
    for scope in (*first, *configured, *held, *extra):
        if scope not in chosen:
            chosen.append(scope)
    supported = discovered.server.scopes_supported or ()
    if OFFLINE_ACCESS in supported and OFFLINE_ACCESS not in chosen:
        chosen.append(OFFLINE_ACCESS)
    return tuple(chosen)


def _client_data(client: ClientRecord) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "auth_method": client.auth_method,
        "registered_at": client.registered_at,
        "kind": client.kind,
        "redirect_uris": list(client.redirect_uris),
    }


def _client_from(data: Mapping[str, Any]) -> ClientRecord:
    return ClientRecord(
        client_id=data["client_id"],
        client_secret=data["client_secret"],
        auth_method=data["auth_method"],
        registered_at=data["registered_at"],
        kind=data["kind"],
        redirect_uris=tuple(data["redirect_uris"]),
    )


def _shown(value: str | None, limit: int) -> str | None:
    """An AS-supplied C{error} or description, only if made of RFC 6749 characters."""
    if value is None or not _NQSCHARS.match(value):
        return None
    return value[:limit]


class Flows:
    """
    Begins and completes authorizations.

    @param clock: for C{created}/C{expires} of pending records.
    @param http: the bounded fetcher (token requests).
    @param registrar: the client identity for each flow.
    @param pending: where started flows wait for their callback.
    @param settings: the gateway's C{oauth} section (C{authorizationTimeout},
        C{maxPendingPerPrincipal}).
    """

    def __init__(
        self, clock: IReactorTime, http: AuthHttp, registrar: Registrar, pending: PendingStore, settings: OAuthSettings
    ) -> None:
        self.clock = clock
        self.http = http
        self.registrar = registrar
        self.pending = pending
        self.settings = settings
        #: principal -> [(expires, state)], oldest first: this process's started flows.
        self._started: dict[str, list[tuple[float, str]]] = {}

    def begin(
        self,
        principal: str,
        backend: str,
        auth: OAuthAuth,
        discovered: Discovered,
        redirect_uri: str,
        held_scopes: Sequence[str] = (),
        extra_scopes: Sequence[str] = (),
    ) -> Deferred[Authorization]:
        """Start an authorization of C{principal} for C{backend} that will call back at C{redirect_uri}."""
        return Deferred.fromCoroutine(
            self._begin(principal, backend, auth, discovered, redirect_uri, tuple(held_scopes), tuple(extra_scopes))
        )

    async def _begin(
        self,
        principal: str,
        backend: str,
        auth: OAuthAuth,
        discovered: Discovered,
        redirect_uri: str,
        held_scopes: tuple[str, ...],
        extra_scopes: tuple[str, ...],
    ) -> Authorization:
        server = discovered.server
        client = await self.registrar.client_for(backend, auth, server, [redirect_uri])
        scopes = choose_scopes(discovered, auth.scopes, held_scopes, extra_scopes)
        verifier = pkce.new_verifier()
        state = pkce.new_state()
        now = self.clock.seconds()
        expires = now + self.settings.authorizationTimeout
        params: dict[str, str] = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": pkce.challenge_for(verifier),
            "code_challenge_method": "S256",
        }
        if auth.sendResource:
            params["resource"] = discovered.resource.resource
        else:
            log.warn("backend {backend}: sendResource is false: the authorization request carries no resource", backend=backend)
        if scopes:
            params["scope"] = " ".join(scopes)
        if OFFLINE_ACCESS in scopes:
            params["prompt"] = "consent"
        for name, value in auth.extraAuthorizeParams.items():
            if name not in RESERVED_PARAMS:
                params[name] = value
        separator = "&" if "?" in server.authorization_endpoint else "?"
        url = server.authorization_endpoint + separator + urlencode(params)
        await self._make_room(principal, now)
        await self.pending.put(
            state,
            {
                "principal": principal,
                "backend": backend,
                "issuer": server.issuer,
                "iss_supported": server.authorization_response_iss_parameter_supported,
                "verifier": verifier,
                "redirect_uri": redirect_uri,
                "resource": discovered.resource.resource,
                "send_resource": auth.sendResource,
                "scopes": list(scopes),
                "token_endpoint": server.token_endpoint,
                "revocation_endpoint": server.revocation_endpoint,
                "client": _client_data(client),
                "created": now,
                "expires": expires,
            },
        )
        self._started.setdefault(principal, []).append((expires, state))
        log.info(
            "backend {backend}: authorization {state} started for {principal} (scopes: {scopes})",
            backend=backend,
            state=pkce.digest(state),
            principal=principal,
            scopes=" ".join(scopes) or "(none)",
        )
        return Authorization(url=url, state_digest=pkce.digest(state), expires_at=expires, scopes=scopes)

    async def _make_room(self, principal: str, now: float) -> None:
        """Drop this principal's expired flows, and its oldest beyond C{maxPendingPerPrincipal - 1}."""
        started = self._started.get(principal, [])
        keep = [(expires, state) for expires, state in started if expires > now]
        for _, state in (entry for entry in started if entry not in keep):
            await self.pending.take(state)
        while len(keep) >= max(1, self.settings.maxPendingPerPrincipal):
            _, oldest = keep.pop(0)
            await self.pending.take(oldest)
            log.info(
                "authorization {state} of {principal} dropped: too many started", state=pkce.digest(oldest), principal=principal
            )
        self._started[principal] = keep

    def _forget(self, principal: str, state: str) -> None:
        started = self._started.get(principal)
        if started:
            started[:] = [entry for entry in started if entry[1] != state]
            if not started:
                del self._started[principal]

    def complete(self, params: Mapping[str, str], redirect_uri: str) -> Deferred[Completed]:
        """
        Finish the flow a callback's query C{params} belongs to, arrived at
        C{redirect_uri}; fails with L{AuthorizationFailed}
        (C{state-mismatch}, C{iss-mismatch}, C{consent-refused},
        C{token-request-failed}).
        """
        return Deferred.fromCoroutine(self._complete(dict(params), redirect_uri))

    async def _complete(self, params: dict[str, str], redirect_uri: str) -> Completed:
        state = params.get("state")
        if not state:
            raise AuthorizationFailed("state-mismatch", "the callback carries no state: it belongs to no authorization")
        data = await self.pending.take(state)
        shown = pkce.digest(state)
        if data is None:
            raise AuthorizationFailed(
                "state-mismatch", f"no authorization is waiting for this callback (state {shown}): start it again"
            )
        try:
            return await self._checked(params, redirect_uri, data, state, shown)
        except AuthorizationFailed as e:
            # Whose flow it was: the broker tells those waiting for it.
            e.flow = (data["backend"], data["principal"])  # type: ignore[attr-defined]
            raise

    async def _checked(
        self, params: dict[str, str], redirect_uri: str, data: dict[str, Any], state: str, shown: str
    ) -> Completed:
        """The checks of a callback whose pending record was found (and taken), then the token request."""
        backend = data["backend"]
        self._forget(data["principal"], state)
        if self.clock.seconds() > data["expires"]:
            raise AuthorizationFailed(
                "state-mismatch", f"backend '{backend}': the authorization {shown} expired before its callback: start it again"
            )
        if redirect_uri != data["redirect_uri"]:
            raise AuthorizationFailed(
                "state-mismatch", f"backend '{backend}': the authorization {shown} was started for another callback address"
            )
        iss = params.get("iss")
        if (iss is None and data["iss_supported"]) or (iss is not None and iss != data["issuer"]):
            raise AuthorizationFailed(
                "iss-mismatch",
                f"backend '{backend}': the callback of authorization {shown} does not come from {data['issuer']}",
            )
        error = params.get("error")
        if error is not None:
            code = _shown(error, 64)
            description = _shown(params.get("error_description"), 200)
            log.info(
                "backend {backend}: authorization {state} refused by the authorization server: {error} {description}",
                backend=backend,
                state=shown,
                error=code or "(invalid error code)",
                description=description or "",
            )
            problem = AuthorizationFailed(
                "consent-refused",
                f"backend '{backend}': the authorization server refused: {code or 'an invalid error code'}",
                **({"error": code} if code else {}),
            )
            problem.description = description  # type: ignore[attr-defined]
            raise problem
        code = params.get("code")
        if not code:
            raise AuthorizationFailed(
                "token-request-failed", f"backend '{backend}': the callback of authorization {shown} carries no code"
            )
        client = _client_from(data["client"])
        endpoint = TokenEndpoint(
            self.http,
            data["token_endpoint"],
            client,
            data["resource"] if data["send_resource"] else None,
            backend,
            data["revocation_endpoint"],
        )
        try:
            record = await endpoint.authorization_code(code, redirect_uri, data["verifier"], data["scopes"])
        except TokenError as e:
            if e.error == "invalid_client":
                await self.registrar.rejected(data["issuer"], client)
            raise AuthorizationFailed(
                "token-request-failed",
                f"backend '{backend}': the authorization server did not give a token ({e})",
                **({"error": e.error} if e.error else {}),
            )
        log.info(
            "backend {backend}: authorization {state} of {principal} completed (scopes: {scopes})",
            backend=backend,
            state=shown,
            principal=data["principal"],
            scopes=" ".join(record.scope) or "(none)",
        )
        return Completed(data["principal"], backend, data["issuer"], data["resource"], client, record)


__all__ = ["Authorization", "Completed", "Flows", "choose_scopes"]
