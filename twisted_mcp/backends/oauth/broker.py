"""
The OAuth broker (C{docs/design/oauth.md} §5, §7): what HTTP backends ask
for the token of the principal a call runs as, and what the CLI, the admin
endpoint and the HTTP front use to start and finish authorizations.

Tokens come from the L{TokenStore}, keyed by (principal, issuer, resource).
A token is refreshed once its refresh window opens (§7.2), one refresh per
key at a time however many calls wait (§7.3), and the refreshed record is
written before its token is handed out (a rotated refresh token is never
lost).  An AS outage keeps the record and backs off per key; C{invalid_grant}
deletes it and sends the principal back to consent.  C{clientCredentials}
backends have one machine token, held in memory only (§7.5).

A backend's 403 C{insufficient_scope} is a step-up (§7.4): the broker
remembers the union of the scopes granted, configured and asked for, the
principal is told to log in again (the next L{OAuthBroker.begin} asks for
that union), at most L{MAX_STEP_UPS} times per principal, backend and tool
within C{authorizationTimeout}; a machine token is fetched again with the
union, once.

Nothing here logs or raises a token, refresh token, code, verifier, client
secret or whole C{state}.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Mapping, Sequence, TypeVar

import attrs
from attrs import field, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_mcp.backends.oauth.challenge import Challenge, bearer_challenge
from twisted_mcp.backends.oauth.discovery import Discovered, Discovery
from twisted_mcp.backends.oauth.fetch import AuthHttp
from twisted_mcp.backends.oauth.flow import Authorization, Flows
from twisted_mcp.backends.oauth.pkce import digest
from twisted_mcp.backends.oauth.problems import (
    AuthorizationFailed,
    AuthorizationRequired,
    AuthorizationUnavailable,
    OAuthProblem,
)
from twisted_mcp.backends.oauth.registration import Registrar, choose_auth_method, client_metadata_url
from twisted_mcp.backends.oauth.single_flight import SingleFlight
from twisted_mcp.backends.oauth.store import (
    ClientRecord,
    ClientStore,
    Conflict,
    PendingStore,
    StoreUnusable,
    TokenKey,
    TokenRecord,
    TokenStore,
)
from twisted_mcp.backends.oauth.tokens import TokenEndpoint, TokenError
from twisted_mcp.config.models import OAuthAuth

if TYPE_CHECKING:
    from twisted_mcp.config.models import ClientCredentialsAuth, OAuthSettings

log = Logger()

_T = TypeVar("_T")
LOCAL = "local"
#: Discovery failures after which the last metadata found is still used.
_TRANSIENT = frozenset({"metadata-unavailable", "as-unavailable", "as-timeout"})
#: Backoff after a failed refresh, per key: the first wait, the longest.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
#: Step-ups (§7.4) per (principal, backend, tool) within C{authorizationTimeout}; one more fails.
MAX_STEP_UPS = 2
#: Principals whose step-up scopes are remembered at once (the oldest are forgotten beyond).
MAX_REMEMBERED = 1024
#: What a scope a backend names may be (RFC 6749 §3.3 NQCHAR), and how many are kept.
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")
MAX_CHALLENGE_SCOPES = 32


@frozen
class Bearer:
    """The token to send, its version (to report a 401 against), and whose it is."""

    token: str = field(repr=False)
    version: int
    principal: str


@frozen
class Authorized:
    """A completed authorization, as the CLI and the callback page report it (no secret)."""

    principal: str
    backend: str
    issuer: str
    scopes: tuple[str, ...]
    expires_at: float | None
    refreshable: bool


def refresh_window_opens(record: TokenRecord, refresh_before: float, max_early: float) -> float | None:
    """
    §7.2: when C{record} should be refreshed, C{max(granted + refreshBefore
    x lifetime, expires_at - refreshMaxEarly)}; C{None} for a token of
    unknown lifetime (refreshed only after a 401).
    """
    if record.expires_at is None:
        return None
    lifetime = record.expires_at - record.granted_at
    return max(record.granted_at + refresh_before * lifetime, record.expires_at - max_early)


def login_command(backend: str, scopes: Sequence[str] = ()) -> str:
    """The CLI command that authorizes C{backend}, asking for C{scopes} beyond the usual ones."""
    return " ".join(["twisted-mcp", "login", shlex.quote(backend), *(f"--scope {shlex.quote(s)}" for s in scopes)])


def challenge_scopes(www_authenticate: Sequence[bytes]) -> tuple[str, ...]:
    """
    The scopes a Bearer challenge asks for, only those made of the
    characters a scope may hold (they are shown in messages and commands),
    at most L{MAX_CHALLENGE_SCOPES}.
    """
    challenge = bearer_challenge(list(www_authenticate))
    if challenge is None or challenge.scope is None:
        return ()
    return union_of(s for s in challenge.scope if _SCOPE.match(s))[:MAX_CHALLENGE_SCOPES]


def union_of(*groups: Any) -> tuple[str, ...]:
    """The scopes of every group in C{groups}, each once, in order of first appearance."""
    chosen: dict[str, None] = {}
    for group in groups:
        for scope in group:
            chosen.setdefault(scope, None)
    return tuple(chosen)


def step_up_required(
    backend: str, principal: str, tool: str, scopes: Sequence[str], missing: Sequence[str]
) -> AuthorizationRequired:
    """-31040 C{insufficient-scope}: the scopes to authorize, and the command asking for them."""
    command = login_command(backend, missing)
    asked = " ".join(scopes) or "(none named)"
    message = f"backend '{backend}' needs more scopes for {tool} ({asked}): run `{command}`"
    if principal != LOCAL:
        message += f" (or ask the operator to run it with `--as {principal}`)"
    return AuthorizationRequired("insufficient-scope", message, login=command, scopes=list(scopes))


def authorization_required(reason: str, backend: str, principal: str | None) -> AuthorizationRequired:
    """-31040 naming the command that fixes it (and the operator's form for another principal)."""
    command = login_command(backend)
    message = f"backend '{backend}' needs your authorization: run `{command}`"
    if principal is not None and principal != LOCAL:
        message += f" (or ask the operator to run it with `--as {principal}`)"
    return AuthorizationRequired(reason, message, login=command)


@attrs.define
class _Backend:
    """What the broker knows of one configured backend."""

    name: str
    url: str
    auth: Any
    challenge: Challenge | None = None
    last_principal: str | None = None
    principals: set[str] = attrs.Factory(set)
    problem: OAuthProblem | None = None


@attrs.define
class _Backoff:
    until: float
    delay: float


@attrs.define
class _StepUps:
    """The step-ups of one principal for one backend: the scopes its next
    authorization asks for, and when each tool's step-ups happened."""

    scopes: tuple[str, ...]
    #: Per tool: (when, the digest of the token refused) of each step-up counted.
    tools: dict[str, list[tuple[float, str]]] = attrs.Factory(dict)


class OAuthBroker:
    """
    Tokens for backends with C{auth}, per principal.

    @param clock: every time and timer.
    @param http: the bounded fetcher for every request to an AS.
    @param tokens: the token records.
    @param clients: client registrations.
    @param pending: started authorizations.
    @param settings: the C{oauth:} section.
    """

    def __init__(
        self,
        clock: IReactorTime,
        http: AuthHttp,
        tokens: TokenStore,
        clients: ClientStore,
        pending: PendingStore,
        settings: OAuthSettings,
    ) -> None:
        self.clock = clock
        self.http = http
        self.tokens = tokens
        self.clients = clients
        self._failure_callbacks: list[Callable[[str, str, OAuthProblem], None]] = []
        #: The issuer each (backend, client id) of client credentials was first used with, since the start.
        self._machine_issuers: dict[tuple[str, str], str] = {}
        self.settings = settings
        self.discovery = Discovery(clock, http)
        self.registrar = Registrar(clock, http, clients, settings)
        self.flows = Flows(clock, http, self.registrar, pending, settings)
        self._backends: dict[str, _Backend] = {}
        self._refreshing: SingleFlight[TokenKey, tuple[TokenRecord, int]] = SingleFlight()
        self._backoff: dict[TokenKey, _Backoff] = {}
        #: key -> the version a refresh after a 401 produced: a 401 to it is final.
        self._after_rejection: dict[TokenKey, int] = {}
        #: client-credentials tokens, in memory only: key -> (record, version).
        self._machine: dict[TokenKey, tuple[TokenRecord, int]] = {}
        self._machine_versions = 0
        #: key -> the scopes machine tokens are asked with after a step-up.
        self._machine_scopes: dict[TokenKey, tuple[str, ...]] = {}
        #: key -> the machine token version a step-up produced: a 403 to it is final.
        self._machine_stepped: dict[TokenKey, int] = {}
        #: (principal, backend) -> its step-ups (§7.4), least recent first.
        self._step_ups: dict[tuple[str, str], _StepUps] = {}
        self._callbacks: list[Callable[[str, str], None]] = []

    # -- configuration ---------------------------------------------------

    def add_backend(self, name: str, url: str, auth: OAuthAuth | ClientCredentialsAuth) -> None:
        """Serve tokens for backend C{name} at C{url} (again, after a change:
        discovery restarts, a machine token's step-up scopes are forgotten)."""
        self._backends[name] = _Backend(name, url, auth)
        self.discovery.forget(name)
        if not isinstance(auth, OAuthAuth):
            for key in [k for k in self._machine_scopes if k[0] == f"client:{auth.id}"]:
                del self._machine_scopes[key]

    def backend_url(self, name: str) -> str | None:
        """The URL backend C{name} was added with, or None."""
        b = self._backends.get(name)
        return b.url if b is not None else None

    @property
    def keeps_tokens_on_disk(self) -> bool:
        """Whether principals' tokens outlive the process (a file store, not memory)."""
        return bool(getattr(self.tokens, "durable", False))

    def remove_backend(self, name: str) -> None:
        """Forget backend C{name} (its stored tokens stay)."""
        self._backends.pop(name, None)
        self.discovery.forget(name)

    def on_authorized(self, callback: Callable[[str, str], None]) -> None:
        """Call C{callback(backend, principal)} each time an authorization stores a token."""
        self._callbacks.append(callback)

    def on_failed(self, callback: Callable[[str, str, OAuthProblem], None]) -> None:
        """C{callback(backend, principal, problem)} when a principal's authorization flow ends in failure (refused, forged, expired)."""
        self._failure_callbacks.append(callback)

    def challenged(self, backend: str, www_authenticate: Sequence[bytes]) -> None:
        """Remember the Bearer challenge of a 401 C{backend} answered (its
        C{resource_metadata} and C{scope} guide discovery)."""
        challenge = bearer_challenge(list(www_authenticate))
        if challenge is not None and backend in self._backends:
            self._backends[backend].challenge = challenge

    # -- tokens ----------------------------------------------------------

    def token_for(self, principal: str | None, backend: str) -> Deferred[Bearer]:
        """
        The token for C{principal}'s calls to C{backend} (C{None}: the
        gateway's own requests, made with the catalog principal's token).
        Fails with L{AuthorizationRequired} or L{AuthorizationUnavailable}.
        """
        return Deferred.fromCoroutine(_guarded(backend, self._token_for(principal, backend)))

    async def _token_for(self, principal: str | None, backend: str) -> Bearer:
        b = self._backend(backend)
        if not _is_oauth(b.auth):
            return await self._machine_token(b)
        discovered = await self._discover(b)
        if principal is None:
            principal = await self._catalog_principal(b, discovered)
        key: TokenKey = (principal, discovered.server.issuer, discovered.resource.resource)
        held = await self.tokens.get(key)
        if held is None:
            b.principals.discard(principal)
            if b.last_principal == principal:
                b.last_principal = None
            raise authorization_required("authorization-required", backend, principal)
        record, version = held
        now = self.clock.seconds()
        opens = refresh_window_opens(record, self.settings.refreshBefore, self.settings.refreshMaxEarly)
        expired = record.expires_at is not None and record.expires_at <= now
        if opens is not None and opens <= now:
            if record.refresh_token is None:
                if expired:
                    raise authorization_required("expired", backend, principal)
            elif self._backing_off(key, now):
                if expired:
                    raise AuthorizationUnavailable(
                        "as-unavailable",
                        f"backend '{backend}': the token expired and its authorization server could not refresh it: try again later",
                    )
            else:
                try:
                    record, version = await self._refresh(b, discovered, key, version)
                except AuthorizationRequired:
                    b.principals.discard(principal)
                    raise
                except (TokenError, AuthorizationUnavailable) as e:
                    if expired:
                        raise _unavailable(backend, e)
                    log.info(
                        "backend {backend}: refresh for {principal} failed ({why}): the current token is used until it expires",
                        backend=backend,
                        principal=principal,
                        why=str(e),
                    )
        b.last_principal = principal
        b.principals.add(principal)
        return Bearer(record.access_token, version, principal)

    async def _catalog_principal(self, b: _Backend, discovered: Discovered) -> str:
        """§6.3: C{catalogAs}, else the principal whose token was used last, else any holding one."""
        if b.auth.catalogAs is not None:
            return str(b.auth.catalogAs)
        if b.last_principal is not None:
            last: TokenKey = (b.last_principal, discovered.server.issuer, discovered.resource.resource)
            if await self.tokens.get(last) is not None:
                return b.last_principal
            b.last_principal = None  # its tokens are gone (revoked, rejected): another holder's
        held = sorted(
            key[0]
            for key in await self.tokens.keys()
            if key[1] == discovered.server.issuer and key[2] == discovered.resource.resource
        )
        if not held:
            raise authorization_required("authorization-required", b.name, None)
        return held[0]

    def _backing_off(self, key: TokenKey, now: float) -> bool:
        backoff = self._backoff.get(key)
        return backoff is not None and now < backoff.until

    def _failed_refresh(self, key: TokenKey) -> None:
        previous = self._backoff.get(key)
        delay = BACKOFF_FIRST if previous is None else min(previous.delay * 2, BACKOFF_MAX)
        self._backoff[key] = _Backoff(self.clock.seconds() + delay, delay)

    def _refresh(self, b: _Backend, discovered: Discovered, key: TokenKey, version: int) -> Deferred[tuple[TokenRecord, int]]:
        """Refresh the record at C{key} read at C{version}, one refresh per key
        at a time: each caller gets its own Deferred."""
        return self._refreshing.run(key, lambda: Deferred.fromCoroutine(self._refresh_once(b, discovered, key, version)))

    async def _refresh_once(self, b: _Backend, discovered: Discovered, key: TokenKey, version: int) -> tuple[TokenRecord, int]:
        principal = key[0]
        held = await self.tokens.get(key)
        if held is None:
            raise authorization_required("reauthorization-required", b.name, principal)
        record, current = held
        if current != version:
            # Refreshed meanwhile (by another flight, or another replica): its
            # refresh token is spent, never send it again.
            return record, current
        if record.refresh_token is None:
            raise authorization_required("token-rejected", b.name, principal)
        client = await self._client_of(b, discovered, record.client_id)
        endpoint = self._endpoint(b, discovered, client)
        try:
            fresh = await endpoint.refresh(record)
        except TokenError as e:
            if e.error == "invalid_grant":
                await self.tokens.delete(key)
                self._backoff.pop(key, None)
                log.info(
                    "backend {backend}: the authorization of {principal} was revoked or expired (invalid_grant): record deleted",
                    backend=b.name,
                    principal=principal,
                )
                raise authorization_required("reauthorization-required", b.name, principal)
            if e.error == "invalid_client":
                if await self.registrar.rejected(discovered.server.issuer, client):
                    await self.tokens.delete(key)
                    raise authorization_required("reauthorization-required", b.name, principal)
                b.problem = AuthorizationUnavailable(
                    "client-rejected",
                    f"backend '{b.name}': the authorization server rejects the configured client {client.client_id!r}: "
                    f"check mcpServers.{b.name}.auth.oauth.client",
                    error="invalid_client",
                )
                raise b.problem
            self._failed_refresh(key)
            raise
        except AuthorizationUnavailable:
            self._failed_refresh(key)
            raise
        try:
            new_version = await self.tokens.put(key, fresh, current)
        except Conflict:
            theirs = await self.tokens.get(key)
            if theirs is None:
                raise authorization_required("reauthorization-required", b.name, principal)
            return theirs
        self._backoff.pop(key, None)
        log.info(
            "backend {backend}: token of {principal} refreshed (rotation {rotation})",
            backend=b.name,
            principal=principal,
            rotation=fresh.rotation,
        )
        return fresh, new_version

    def rejected(self, bearer: Bearer, backend: str, www_authenticate: Sequence[bytes]) -> Deferred[Bearer]:
        """
        C{backend} answered 401 to C{bearer}: one refresh, and the new
        token; when none is possible, or C{bearer} already was the one a
        401 refreshed, the record is deleted and the call gets
        L{AuthorizationRequired} C{token-rejected}.
        """
        self.challenged(backend, www_authenticate)
        # The server may have moved to another authorization server: its
        # metadata is fetched afresh (the last found is kept if that fails).
        self.discovery.expire(backend)
        return Deferred.fromCoroutine(_guarded(backend, self._rejected(bearer, backend)))

    async def _rejected(self, bearer: Bearer, backend: str) -> Bearer:
        b = self._backend(backend)
        if not _is_oauth(b.auth):
            return await self._machine_rejected(b, bearer)
        discovered = await self._discover(b)
        key: TokenKey = (bearer.principal, discovered.server.issuer, discovered.resource.resource)
        held = await self.tokens.get(key)
        if held is None:
            raise authorization_required("token-rejected", backend, bearer.principal)
        record, version = held
        if version != bearer.version:
            return Bearer(record.access_token, version, bearer.principal)
        if self._after_rejection.get(key) == bearer.version or record.refresh_token is None:
            await self._forget_token(b, key, "the backend refused its token")
            raise authorization_required("token-rejected", backend, bearer.principal)
        try:
            record, version = await self._refresh(b, discovered, key, version)
        except AuthorizationRequired as e:
            if e.reason == "token-rejected":
                await self._forget_token(b, key, "the backend refused its token")
            b.principals.discard(bearer.principal)
            raise
        except TokenError as e:
            raise _unavailable(backend, e)
        self._after_rejection[key] = version
        return Bearer(record.access_token, version, bearer.principal)

    # -- step-up (§7.4) --------------------------------------------------

    def forbidden(self, bearer: Bearer, backend: str, www_authenticate: Sequence[bytes], tool: str) -> Deferred[Bearer]:
        """
        C{backend} answered 403 C{insufficient_scope} to C{bearer} on a call
        of C{tool} (a tool's name, or the method of another request).

        A principal's token: the union of the scopes its record was granted,
        the configured ones, those of earlier step-ups and those the
        challenge asks for is remembered for the principal's next
        authorization, and the call fails with L{AuthorizationRequired}
        C{insufficient-scope} (its C{data.scopes} is that union, its
        C{login} the command with the C{--scope}s still missing); after
        L{MAX_STEP_UPS} of them for the same principal, backend and tool
        within C{authorizationTimeout}, with L{AuthorizationFailed}
        C{step-up-limit}.  A token replaced meanwhile (a new login): the
        current one, to send the request with again.

        A machine token (C{clientCredentials}): a new one asked with the
        union, once; a 403 to that one is C{step-up-limit}.
        """
        asked = challenge_scopes(www_authenticate)
        return Deferred.fromCoroutine(_guarded(backend, self._forbidden(bearer, backend, asked, tool)))

    async def _forbidden(self, bearer: Bearer, backend: str, asked: tuple[str, ...], tool: str) -> Bearer:
        b = self._backend(backend)
        if not _is_oauth(b.auth):
            return await self._machine_forbidden(b, bearer, asked)
        discovered = await self._discover(b)
        principal = bearer.principal
        held = await self.tokens.get((principal, discovered.server.issuer, discovered.resource.resource))
        if held is not None and held[1] != bearer.version:
            return Bearer(held[0].access_token, held[1], principal)
        granted = held[0].scope if held is not None else ()
        now = self.clock.seconds()
        self._prune_step_ups(now)
        steps = self._step_ups.pop((principal, backend), None)
        remembered = steps.scopes if steps is not None else ()
        union = union_of(granted, b.auth.scopes, remembered, asked)
        if steps is None:
            steps = _StepUps(union)
        steps.scopes = union
        self._step_ups[(principal, backend)] = steps  # last: the most recent
        attempts = steps.tools.setdefault(tool, [])
        grant = digest(bearer.token)
        if any(counted == grant for _, counted in attempts):
            # A 403 to an authorization already counted (calls at once, a
            # retry before the new consent): the same step-up, not another.
            raise step_up_required(backend, principal, tool, union, [s for s in union if s not in granted])
        if len(attempts) >= MAX_STEP_UPS:
            log.info(
                "backend {backend}: {principal} still lacks scopes for {tool} after {count} step-ups",
                backend=backend,
                principal=principal,
                tool=tool,
                count=len(attempts),
            )
            raise AuthorizationFailed(
                "step-up-limit",
                f"backend '{backend}' still refuses after {len(attempts)} authorizations with more scopes "
                f"(it asked for: {' '.join(asked) or 'no scope named'})",
                scopes=list(union),
            )
        attempts.append((now, grant))
        log.info(
            "backend {backend}: {principal}'s token lacks scopes for {tool}: step-up {count} asks for {scopes}",
            backend=backend,
            principal=principal,
            tool=tool,
            count=len(attempts),
            scopes=" ".join(union),
        )
        raise step_up_required(backend, principal, tool, union, [s for s in union if s not in granted])

    def _prune_step_ups(self, now: float) -> None:
        """Forget step-ups older than C{authorizationTimeout}, and the oldest
        remembered scopes beyond L{MAX_REMEMBERED} principals."""
        since = now - self.settings.authorizationTimeout
        for where, steps in list(self._step_ups.items()):
            for tool, times in list(steps.tools.items()):
                times[:] = [(t, grant) for t, grant in times if t > since]
                if not times:
                    del steps.tools[tool]
            if not steps.tools and not steps.scopes:
                del self._step_ups[where]
        while len(self._step_ups) > MAX_REMEMBERED:
            del self._step_ups[next(iter(self._step_ups))]

    def step_up_scopes(self, principal: str, backend: str) -> tuple[str, ...]:
        """The scopes the step-ups of C{principal} on C{backend} ask its next authorization for."""
        steps = self._step_ups.get((principal, backend))
        return steps.scopes if steps is not None else ()

    def _stepped_up(self, principal: str, backend: str) -> None:
        """C{principal} authorized C{backend} again: the scopes remembered are
        in its record now (the step-up counts stay, for the limit)."""
        steps = self._step_ups.get((principal, backend))
        if steps is not None:
            steps.scopes = ()

    async def _machine_forbidden(self, b: _Backend, bearer: Bearer, asked: tuple[str, ...]) -> Bearer:
        key, endpoint = await self._machine_setup(b)
        held = self._machine.get(key)
        if held is not None and held[1] != bearer.version:
            return Bearer(held[0].access_token, held[1], key[0])
        requested = self._machine_scopes.get(key, tuple(b.auth.scopes))
        granted = held[0].scope if held is not None else ()
        union = union_of(granted, requested, asked)
        if self._machine_stepped.get(key) == bearer.version:
            raise AuthorizationFailed(
                "step-up-limit",
                f"backend '{b.name}' still refuses the client credentials' token with the scopes {' '.join(union) or '(none)'} "
                f"(it asked for: {' '.join(asked) or 'no scope named'})",
                scopes=list(union),
            )
        log.info(
            "backend {backend}: the client credentials' token lacks scopes: asking for {scopes}",
            backend=b.name,
            scopes=" ".join(union),
        )
        try:
            record, version = await self._machine_fetch(b, key, endpoint, bearer.version, union)
        except AuthorizationUnavailable as e:
            if e.reason != "client-rejected":
                raise
            raise AuthorizationFailed(
                "token-request-failed",
                f"backend '{b.name}' needs the scopes {' '.join(union)} and the authorization server refused them "
                f"to the client credentials ({e.data.get('error', 'refused')})",
                scopes=list(union),
                **({"error": e.data["error"]} if "error" in e.data else {}),
            ) from None
        self._machine_stepped[key] = version
        return Bearer(record.access_token, version, key[0])

    async def _forget_token(self, b: _Backend, key: TokenKey, why: str) -> None:
        await self.tokens.delete(key)
        self._after_rejection.pop(key, None)
        b.principals.discard(key[0])
        log.info("backend {backend}: token of {principal} deleted: {why}", backend=b.name, principal=key[0], why=why)

    # -- client credentials (§7.5) ---------------------------------------

    async def _machine_setup(self, b: _Backend) -> tuple[TokenKey, TokenEndpoint]:
        auth = b.auth
        if auth.tokenEndpoint is not None:
            issuer, resource, token_endpoint, supported = auth.tokenEndpoint, b.url, auth.tokenEndpoint, None
        else:
            discovered = await self._discover(b)
            issuer, resource = discovered.server.issuer, discovered.resource.resource
            bound = self._machine_issuers.setdefault((b.name, auth.id), issuer)
            if bound != issuer:
                # The secret is sent to the token endpoint: never to another
                # authorization server than the one it was first used with.
                raise AuthorizationUnavailable(
                    "client-issuer-changed",
                    f"backend '{b.name}' now names the authorization server {issuer}, not {bound} its client "
                    f"credentials were used with: not sent there (set auth.clientCredentials.tokenEndpoint, or restart the gateway "
                    f"once you trust the new one)",
                )
            token_endpoint = discovered.server.token_endpoint
            supported = discovered.server.token_endpoint_auth_methods_supported
        client = ClientRecord(
            client_id=auth.id,
            client_secret=auth.secret,
            auth_method=choose_auth_method(auth.secret, auth.authMethod, supported),
            registered_at=self.clock.seconds(),
            kind="preregistered",
        )
        return (f"client:{auth.id}", issuer, resource), TokenEndpoint(self.http, token_endpoint, client, resource, b.name)

    async def _machine_token(self, b: _Backend) -> Bearer:
        """The machine token; what stops it from being fetched is kept for L{status} until one is."""
        try:
            bearer = await self._machine_token_now(b)
        except AuthorizationUnavailable as problem:
            if problem.reason == "client-rejected":
                b.problem = problem
            raise
        if b.problem is not None and b.problem.reason == "client-rejected":
            b.problem = None
        return bearer

    async def _machine_token_now(self, b: _Backend) -> Bearer:
        key, endpoint = await self._machine_setup(b)
        held = self._machine.get(key)
        now = self.clock.seconds()
        if held is not None:
            record, version = held
            opens = refresh_window_opens(record, self.settings.refreshBefore, self.settings.refreshMaxEarly)
            if opens is None or opens > now:
                return Bearer(record.access_token, version, key[0])
            expired = record.expires_at is not None and record.expires_at <= now
            if self._backing_off(key, now) and not expired:
                return Bearer(record.access_token, version, key[0])
            try:
                record, version = await self._machine_fetch(b, key, endpoint, version)
            except (TokenError, AuthorizationUnavailable) as e:
                if expired:
                    raise _unavailable(b.name, e)
            return Bearer(record.access_token, version, key[0])
        record, version = await self._machine_fetch(b, key, endpoint, None)
        return Bearer(record.access_token, version, key[0])

    async def _machine_rejected(self, b: _Backend, bearer: Bearer) -> Bearer:
        key, endpoint = await self._machine_setup(b)
        held = self._machine.get(key)
        if held is not None and held[1] != bearer.version:
            return Bearer(held[0].access_token, held[1], key[0])
        if self._after_rejection.get(key) == bearer.version:
            self._machine.pop(key, None)
            raise AuthorizationUnavailable(
                "client-rejected",
                f"backend '{b.name}' refuses the token the authorization server gave its client credentials",
            )
        record, version = await self._machine_fetch(b, key, endpoint, bearer.version)
        self._after_rejection[key] = version
        return Bearer(record.access_token, version, key[0])

    def _machine_fetch(
        self, b: _Backend, key: TokenKey, endpoint: TokenEndpoint, version: int | None, scopes: tuple[str, ...] | None = None
    ) -> Deferred[tuple[TokenRecord, int]]:
        """
        A new client-credentials token, one request per key at a time,
        asked with C{scopes} (a step-up's union; kept for the next ones once
        granted), else those asked last.
        """

        async def fetch() -> tuple[TokenRecord, int]:
            held = self._machine.get(key)
            if held is not None and held[1] != version:
                return held
            asked = scopes if scopes is not None else self._machine_scopes.get(key, tuple(b.auth.scopes))
            try:
                record = await endpoint.client_credentials(asked)
            except TokenError as e:
                if e.transient:
                    self._failed_refresh(key)
                    raise
                raise AuthorizationUnavailable(
                    "client-rejected",
                    f"backend '{b.name}': the authorization server refused the client credentials ({e})",
                    **({"error": e.error} if e.error else {}),
                )
            except AuthorizationUnavailable:
                self._failed_refresh(key)
                raise
            self._backoff.pop(key, None)
            if scopes is not None:
                self._machine_scopes[key] = scopes
            self._machine_versions += 1
            self._machine[key] = (record, self._machine_versions)
            return self._machine[key]

        return self._refreshing.run(key, lambda: Deferred.fromCoroutine(fetch()))

    # -- authorization flows ---------------------------------------------

    def begin(self, principal: str, backend: str, redirect_uri: str, scopes: Sequence[str] = ()) -> Deferred[Authorization]:
        """
        Start an authorization of C{principal} for C{backend}; its callback
        will arrive at C{redirect_uri}.  It asks for the union (§4.2) of the
        401 challenge's scopes (else the resource's C{scopes_supported}),
        the configured ones, those of the principal's current token, those
        its step-ups remembered (§7.4) and C{scopes}.
        """
        return Deferred.fromCoroutine(_guarded(backend, self._begin(principal, backend, redirect_uri, tuple(scopes))))

    async def _begin(self, principal: str, backend: str, redirect_uri: str, scopes: tuple[str, ...]) -> Authorization:
        b = self._backend(backend)
        if not _is_oauth(b.auth):
            raise AuthorizationUnavailable(
                "no-client-identity", f"backend '{backend}' uses client credentials: there is nothing to authorize"
            )
        discovered = await self._discover(b)
        held = await self.tokens.get((principal, discovered.server.issuer, discovered.resource.resource))
        held_scopes = held[0].scope if held is not None else ()
        extra = union_of(self.step_up_scopes(principal, backend), scopes)
        return await self.flows.begin(principal, backend, b.auth, discovered, redirect_uri, held_scopes, extra)

    def complete(self, params: Mapping[str, str], redirect_uri: str) -> Deferred[Authorized]:
        """Finish the authorization a callback belongs to and store its token."""
        return Deferred.fromCoroutine(_guarded(None, self._complete(params, redirect_uri)))

    async def _complete(self, params: Mapping[str, str], redirect_uri: str) -> Authorized:
        try:
            done = await self.flows.complete(params, redirect_uri)
        except AuthorizationFailed as e:
            flow = getattr(e, "flow", None)
            if flow is not None:
                for failed in list(self._failure_callbacks):
                    try:
                        failed(flow[0], flow[1], e)
                    except Exception:
                        log.failure("an on_failed callback failed")
            raise
        key: TokenKey = (done.principal, done.issuer, done.resource)
        for attempt in (1, 2):
            held = await self.tokens.get(key)
            try:
                await self.tokens.put(key, done.record, held[1] if held is not None else None)
                break
            except Conflict:
                if attempt == 2:
                    raise
        self._after_rejection.pop(key, None)
        self._backoff.pop(key, None)
        self._stepped_up(done.principal, done.backend)
        b = self._backends.get(done.backend)
        if b is not None:
            b.principals.add(done.principal)
            if b.last_principal is None:
                b.last_principal = done.principal
        for callback in list(self._callbacks):
            try:
                callback(done.backend, done.principal)
            except Exception:
                log.failure("an on_authorized callback failed")
        return Authorized(
            principal=done.principal,
            backend=done.backend,
            issuer=done.issuer,
            scopes=done.record.scope,
            expires_at=done.record.expires_at,
            refreshable=done.record.refresh_token is not None,
        )

    # -- listing, logout, status -----------------------------------------

    def list_tokens(self, principal: str | None = None, backend: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """Rows describing the records held (of C{principal}, for C{backend}); never a secret."""
        return Deferred.fromCoroutine(self._list_tokens(principal, backend))

    async def _list_tokens(self, principal: str | None, backend: str | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        now = self.clock.seconds()
        for key in sorted(await self.tokens.keys(principal)):
            held = await self.tokens.get(key)
            if held is None:
                continue
            record = held[0]
            names = self._backends_for(key) or [record.backend]
            for name in names:
                if backend is not None and name != backend:
                    continue
                rows.append(
                    {
                        "principal": key[0],
                        "backend": name,
                        "issuer": key[1],
                        "resource": key[2],
                        "scopes": list(record.scope),
                        "expires_at": record.expires_at,
                        "refreshable": record.refresh_token is not None,
                        "state": self._token_state(record, now),
                    }
                )
        return rows

    def _token_state(self, record: TokenRecord, now: float) -> str:
        if record.expires_at is not None and record.expires_at <= now:
            return "expired" if record.refresh_token is None else "refresh-due"
        opens = refresh_window_opens(record, self.settings.refreshBefore, self.settings.refreshMaxEarly)
        return "refresh-due" if opens is not None and opens <= now and record.refresh_token is not None else "valid"

    def _backends_for(self, key: TokenKey) -> list[str]:
        names = []
        for name, b in self._backends.items():
            found = self.discovery.cached(name)
            if found is not None and (found.server.issuer, found.resource.resource) == key[1:] and _is_oauth(b.auth):
                names.append(name)
        return names

    def logout(self, principal: str, backend: str, revoke: bool = False) -> Deferred[dict[str, Any]]:
        """Delete C{principal}'s token for C{backend}, after asking the AS to revoke it when C{revoke}."""
        return Deferred.fromCoroutine(self._logout(principal, backend, revoke))

    async def _logout(self, principal: str, backend: str, revoke: bool) -> dict[str, Any]:
        """
        The records are found without the network (by principal, then the
        backend each names), so that logout works while the server or its
        authorization server is down, or after they moved; only revoking
        needs them.
        """
        b = self._backend(backend)
        result: dict[str, Any] = {"principal": principal, "backend": backend, "removed": False, "revoked": False}
        found = []
        for key in await self.tokens.keys(principal):
            held = await self.tokens.get(key)
            if held is not None and held[0].backend == backend:
                found.append((key, held[0]))
        for key, record in found:
            if revoke:
                try:
                    discovered = await self._discover(b)
                    client = await self._client_of(b, discovered, record.client_id)
                    endpoint = self._endpoint(b, discovered, client)
                    if record.refresh_token is not None:
                        result["revoked"] = await endpoint.revoke(record.refresh_token, "refresh_token")
                    else:
                        result["revoked"] = await endpoint.revoke(record.access_token, "access_token")
                except CancelledError:
                    raise
                except (OAuthProblem, TokenError) as e:
                    result["revokeError"] = str(e)
            await self._forget_token(b, key, "logout")
            result["removed"] = True
        if b.last_principal == principal:
            b.last_principal = None
        return result

    def status(self, backend: str) -> dict[str, Any]:
        """What C{/status} shows of C{backend}'s authorization (never a secret)."""
        b = self._backend(backend)
        found = self.discovery.cached(backend)
        kind = self._client_kind(b, found)
        if b.problem is not None:
            state, reason = "unavailable", b.problem.reason
        elif found is None:
            state, reason = "undiscovered", None
        elif not _is_oauth(b.auth):
            state, reason = "ready", None
        elif not b.principals:
            state, reason = "needs-authorization", None
        else:
            state, reason = "ready", None
        return {
            "issuer": found.server.issuer if found is not None else None,
            "resource": found.resource.resource if found is not None else None,
            "clientIdKind": kind,
            "principalsAuthorized": len(b.principals),
            "state": state,
            "reason": reason,
        }

    def _client_kind(self, b: _Backend, found: Discovered | None) -> str | None:
        if not _is_oauth(b.auth):
            return "clientCredentials"
        if b.auth.client is not None:
            return "preregistered"
        if found is None:
            return None
        if found.server.client_id_metadata_document_supported and client_metadata_url(self.settings) is not None:
            return "cimd"
        if found.server.registration_endpoint is not None:
            return "dcr"
        return None

    # -- helpers ---------------------------------------------------------

    def _backend(self, name: str) -> _Backend:
        try:
            return self._backends[name]
        except KeyError:
            raise KeyError(f"backend {name!r} has no auth") from None

    async def _discover(self, b: _Backend) -> Discovered:
        issuer = b.auth.issuer if _is_oauth(b.auth) else None
        try:
            found = await self.discovery.discover(b.name, b.url, b.challenge, issuer)
        except OAuthProblem as problem:
            b.problem = problem
            stale = self.discovery.cached(b.name)
            if problem.reason not in _TRANSIENT or stale is None:
                raise
            # The metadata was found before and cannot be fetched now: an
            # outage must not stop the calls whose tokens are stored.
            return stale
        if b.problem is not None and b.problem.reason != "client-rejected":
            b.problem = None
        return found

    async def _client_of(self, b: _Backend, discovered: Discovered, client_id: str) -> ClientRecord:
        """The client identity a record was obtained with (its secret authenticates the refresh)."""
        configured = b.auth.client
        if configured is not None and configured.id == client_id:
            return ClientRecord(
                client_id=configured.id,
                client_secret=configured.secret,
                auth_method=choose_auth_method(
                    configured.secret, configured.authMethod, discovered.server.token_endpoint_auth_methods_supported
                ),
                registered_at=self.clock.seconds(),
                kind="preregistered",
            )
        issuer = discovered.server.issuer
        for key in await self.clients.keys(issuer):
            held = await self.clients.get(key)
            if held is not None and held[0].client_id == client_id and held[0].kind == "dcr":
                return held[0]
        kind = "cimd" if client_id == client_metadata_url(self.settings) else "dcr"
        return ClientRecord(client_id=client_id, client_secret=None, auth_method="none", registered_at=0.0, kind=kind)

    def _endpoint(self, b: _Backend, discovered: Discovered, client: ClientRecord) -> TokenEndpoint:
        return TokenEndpoint(
            self.http,
            discovered.server.token_endpoint,
            client,
            discovered.resource.resource if b.auth.sendResource else None,
            b.name,
            discovered.server.revocation_endpoint,
        )


def _is_oauth(auth: Any) -> bool:
    """C{auth: oauth} (per principal), as opposed to C{clientCredentials}."""
    return isinstance(auth, OAuthAuth)


def _unavailable(backend: str, e: BaseException) -> AuthorizationUnavailable:
    if isinstance(e, AuthorizationUnavailable):
        return e
    return AuthorizationUnavailable(
        "as-unavailable",
        f"backend '{backend}': the authorization server gave no usable token ({e})",
        **({"error": e.error} if isinstance(e, TokenError) and e.error else {}),
    )


async def _guarded(backend: str | None, work: Coroutine[Any, Any, _T]) -> _T:
    """C{work}'s result; what fails below the broker's vocabulary (a token
    endpoint's answer, the store) becomes L{AuthorizationUnavailable}."""
    where = f"backend '{backend}'" if backend is not None else "the authorization callback"
    try:
        return await work
    except TokenError as e:
        raise AuthorizationUnavailable(
            "as-unavailable",
            f"{where}: the authorization server gave no usable token ({e})",
            **({"error": e.error} if e.error else {}),
        )
    except (OSError, StoreUnusable) as e:
        log.error("{where}: the token store failed: {why}", where=where, why=type(e).__name__)
        raise AuthorizationUnavailable("store-unavailable", f"{where}: the token store cannot be used now ({type(e).__name__})")


__all__ = [
    "Authorization",
    "Authorized",
    "Bearer",
    "OAuthBroker",
    "authorization_required",
    "refresh_window_opens",
]
