"""
Token requests (C{docs/design/oauth.md} §7.1): the three grants the gateway
uses (authorization code, refresh token, client credentials) and token
revocation (RFC 7009), each one POST to the authorization server with the
client's authentication (§4.1) and C{resource} (RFC 8707) on every request.

A successful answer becomes a L{TokenRecord}; a refusal becomes
L{TokenError} carrying only the RFC 6749 §5.2 C{error} code and a short
C{error_description}; the body is never kept whole, and no token, code,
verifier or secret ever appears in a message.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Sequence
from urllib.parse import quote_plus

from twisted.internet.defer import Deferred

from twisted_mcp.backends.oauth.fetch import AuthHttp, Fetched, origin_of
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable
from twisted_mcp.backends.oauth.store import ClientRecord, TokenRecord

#: RFC 6749 §5.2: C{error} and C{error_description} are NQSCHAR only.
_NQSCHARS = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")
#: The longest C{error} code and C{error_description} kept.
MAX_ERROR = 64
MAX_DESCRIPTION = 200


class TokenError(Exception):
    """
    The token (or revocation) endpoint did not give a usable answer.

    @ivar status: the HTTP status.
    @ivar error: the RFC 6749 §5.2 C{error} code, or C{None} when the
        answer carried none (a 5xx, a body that is not the expected JSON).
    @ivar description: at most 200 characters of C{error_description}, or C{None}.
    """

    def __init__(self, status: int, error: str | None, description: str | None, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.error = error
        self.description = description

    @property
    def transient(self) -> bool:
        """Whether asking again later may succeed: no RFC 6749 error, or a
        5xx or 429 (an outage, not a refusal)."""
        return self.error is None or self.status >= 500 or self.status == 429


def parse_error(body: bytes) -> tuple[str | None, str | None]:
    """The C{error} and C{error_description} of an RFC 6749 §5.2 body,
    each only when made of the allowed characters (else C{None})."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    error = document.get("error")
    description = document.get("error_description")
    if not (isinstance(error, str) and len(error) <= MAX_ERROR and _NQSCHARS.match(error)):
        error = None
    if isinstance(description, str) and _NQSCHARS.match(description):
        description = description[:MAX_DESCRIPTION]
    else:
        description = None
    return error, description


def client_authentication(client: ClientRecord) -> tuple[dict[str, str], dict[bytes, bytes]]:
    """
    The form fields and headers that authenticate C{client} at the token
    endpoint (§4.1): C{client_secret_basic} puts the form-urlencoded id and
    secret in an C{Authorization: Basic} header (RFC 6749 §2.3.1);
    C{client_secret_post} puts both in the form; C{none} sends C{client_id}
    only.
    """
    method = client.auth_method
    if method in ("client_secret_basic", "client_secret_post") and client.client_secret is None:
        method = "none"
    if method == "client_secret_basic":
        assert client.client_secret is not None
        pair = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}"
        return {}, {b"Authorization": b"Basic " + base64.b64encode(pair.encode("utf-8"))}
    if method == "client_secret_post":
        assert client.client_secret is not None
        return {"client_id": client.client_id, "client_secret": client.client_secret}, {}
    return {"client_id": client.client_id}, {}


class TokenEndpoint:
    """
    The token and revocation endpoints of one authorization server, used
    by one client.

    @param http: the bounded fetcher.
    @param token_endpoint: the ASM C{token_endpoint}.
    @param client: the client identity (its secret, if any, authenticates).
    @param resource: the C{resource} sent on every token request, or
        C{None} (C{sendResource: false}).
    @param backend: the backend name recorded in the records (informational).
    @param revocation_endpoint: the ASM C{revocation_endpoint}, if any.
    """

    def __init__(
        self,
        http: AuthHttp,
        token_endpoint: str,
        client: ClientRecord,
        resource: str | None,
        backend: str,
        revocation_endpoint: str | None = None,
    ) -> None:
        self.http = http
        self.token_endpoint = token_endpoint
        self.client = client
        self.resource = resource
        self.backend = backend
        self.revocation_endpoint = revocation_endpoint

    def __repr__(self) -> str:
        return f"<TokenEndpoint {origin_of(self.token_endpoint)} client {self.client.client_id!r}>"

    def authorization_code(self, code: str, redirect_uri: str, verifier: str, scopes: Sequence[str]) -> Deferred[TokenRecord]:
        """Exchange C{code} (with its PKCE C{verifier}); C{scopes} are those asked for."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
        return self._grant(form, tuple(scopes), None)

    def refresh(self, record: TokenRecord) -> Deferred[TokenRecord]:
        """Refresh C{record}: C{scope} omitted (unchanged, RFC 6749 §6); a
        response without C{refresh_token} keeps the old one; C{rotation}
        counts the refresh tokens that replaced an old one."""
        assert record.refresh_token is not None
        form = {"grant_type": "refresh_token", "refresh_token": record.refresh_token}
        return self._grant(form, record.scope, record)

    def client_credentials(self, scopes: Sequence[str]) -> Deferred[TokenRecord]:
        """A machine token for the client itself (§7.5)."""
        form = {"grant_type": "client_credentials"}
        if scopes:
            form["scope"] = " ".join(scopes)
        return self._grant(form, tuple(scopes), None)

    def revoke(self, token: str, hint: str) -> Deferred[bool]:
        """RFC 7009: ask the AS to revoke C{token} (C{hint}: C{refresh_token}
        or C{access_token}).  C{True} when it answered 200, C{False} when it
        has no revocation endpoint; a refusal is a L{TokenError}."""
        return Deferred.fromCoroutine(self._revoke(token, hint))

    async def _revoke(self, token: str, hint: str) -> bool:
        if self.revocation_endpoint is None:
            return False
        fields, headers = client_authentication(self.client)
        form = {"token": token, "token_type_hint": hint, **fields}
        answer = await self.http.post_form(self.revocation_endpoint, form, headers)
        if answer.status != 200:
            raise _refusal(answer, "revocation")
        return True

    def _grant(self, form: dict[str, str], requested: tuple[str, ...], previous: TokenRecord | None) -> Deferred[TokenRecord]:
        return Deferred.fromCoroutine(self._request(form, requested, previous))

    async def _request(self, form: dict[str, str], requested: tuple[str, ...], previous: TokenRecord | None) -> TokenRecord:
        fields, headers = client_authentication(self.client)
        form = {**form, **fields}
        if self.resource is not None:
            form["resource"] = self.resource
        answer = await self.http.post_form(self.token_endpoint, form, headers)
        if answer.status != 200:
            raise _refusal(answer, "token")
        return self._record(answer, requested, previous)

    def _record(self, answer: Fetched, requested: tuple[str, ...], previous: TokenRecord | None) -> TokenRecord:
        now = self.http.clock.seconds()
        where = origin_of(self.token_endpoint)
        try:
            document: Any = json.loads(answer.body)
        except (ValueError, RecursionError, UnicodeDecodeError):
            raise TokenError(answer.status, None, None, f"the token endpoint at {where} answered something that is not JSON")
        if not isinstance(document, dict):
            raise TokenError(answer.status, None, None, f"the token endpoint at {where} answered JSON that is not an object")
        access_token = document.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise TokenError(answer.status, None, None, f"the token endpoint at {where} answered without an access_token")
        token_type = document.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            shown = token_type if isinstance(token_type, str) and _NQSCHARS.match(token_type) else "(none)"
            raise AuthorizationUnavailable(
                "unsupported-token-type",
                f"the token endpoint at {where} issued a token of type {shown[:40]!r}: only Bearer tokens are supported",
            )
        expires_at = _expires_at(document.get("expires_in"), now)
        scope = document.get("scope")
        scopes = tuple(scope.split()) if isinstance(scope, str) else requested
        refresh_token = document.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            refresh_token = None
        if previous is None:
            return TokenRecord(
                access_token=access_token,
                expires_at=expires_at,
                refresh_token=refresh_token,
                scope=scopes,
                granted_at=now,
                client_id=self.client.client_id,
                backend=self.backend,
            )
        rotated = refresh_token is not None and refresh_token != previous.refresh_token
        return TokenRecord(
            access_token=access_token,
            expires_at=expires_at,
            refresh_token=refresh_token if refresh_token is not None else previous.refresh_token,
            scope=scopes,
            granted_at=now,
            client_id=self.client.client_id,
            backend=self.backend,
            refreshed_at=now,
            rotation=previous.rotation + (1 if rotated else 0),
        )


#: The longest lifetime taken from an C{expires_in}, in seconds (ten years).
MAX_EXPIRES_IN = 10 * 365 * 24 * 3600.0


def _expires_at(expires_in: Any, now: float) -> float | None:
    """C{now + expires_in}, or C{None} (unknown) when absent or not a positive number."""
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not expires_in > 0:
        return None
    # A number JSON allows but no clock can reach (1e400 is infinite): at
    # most ten years, so the record can still be written.
    return now + min(float(expires_in), MAX_EXPIRES_IN)


def _refusal(answer: Fetched, what: str) -> TokenError:
    error, description = parse_error(answer.body)
    said = f": {error}" if error else ""
    return TokenError(answer.status, error, description, f"the {what} endpoint answered {answer.status}{said}")


__all__ = ["TokenEndpoint", "TokenError", "client_authentication", "parse_error"]
