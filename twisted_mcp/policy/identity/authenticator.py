"""L{Authenticator}: the caller of a request, from the configured principal or a verified JWT (with JWKS fetched and refreshed)."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from typing import Any, Callable, Collection, Mapping

import jwt
from jwt.types import Options
from treq import collect
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.config._check import _describe
from twisted_mcp.policy.identity.config import LOCAL_WARNING, IdentityConfig, JwtConfig
from twisted_mcp.policy.identity.keys import _Key, load_pem, parse_jwks
from twisted_mcp.policy.identity.revocation import REVOKED_MESSAGE, digest_id, is_revoked, jti_of
from twisted_mcp.policy.principal import LOCAL_PRINCIPAL, IdentityError, Principal
from twisted_mcp.urls import shown_text, shown_url

log = Logger()


# -- authentication ----------------------------------------------------------


class _Refused(Exception):
    """A token that cannot be accepted (inside this module)."""

    def __init__(self, message: str, reason: str, refetch: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.refetch = refetch


class Authenticator:
    """
    Establishes the principal of every request (for the stdio front-end,
    where one process serves one caller).

    @param config: the C{identity:} section, or None when there is none.
    @param environ: where the token is read from (once, in L{start}).
    @param clock: the only source of time.
    @param http: a treq-like client (C{get(url, headers=...,
        allow_redirects=False)}, responses readable with C{treq.collect}),
        needed for C{jwksUrl} only.
    @param revoked: the ids of revoked tokens now (C{policy.revoked}, see
        L{twisted_mcp.policy.identity.revocation}), asked on every check: a
        token whose id is among them is refused ("the token was revoked").

    @ivar warning: what the gateway must log loudly at start-up, or None.
    """

    jwks_timeout = 10.0
    """Seconds allowed for fetching C{jwksUrl} (connection, headers and body)."""
    jwks_refetch_interval = 60.0
    """At most one fetch of C{jwksUrl} per this many seconds."""
    jwks_max_bytes = 1 << 20
    bearer_cache_size = 10000
    """Bearer tokens whose signature and claims were verified, kept (by digest) so a client's next request costs no cryptography."""
    bearer_cache_seconds = 60.0
    """How long a verified bearer token is remembered before its signature is checked again (a key withdrawn from the set stops it then)."""

    def __init__(
        self,
        config: IdentityConfig | None,
        environ: Mapping[str, str],
        clock: IReactorTime,
        http: Any = None,
        revoked: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self._config = config
        self._jwt = config.jwt if config is not None else None
        self._environ = environ
        self._clock = clock
        self._http = http
        self._revoked = revoked
        #: The ids (L{digest_id}, and its jti) of the token read from the environment, once verified.
        self._token_ids: tuple[str, ...] = ()
        self.warning: str | None = None
        self._principal: Principal | None = None
        self._failure = IdentityError("the identity token has not been checked yet: the gateway is starting", "starting")
        self._token: str | None = None
        self._times: tuple[float | None, float | None, float | None] = (None, None, None)
        self._static_keys: list[_Key] = []
        self._url_keys: list[_Key] = []
        self._key_problems: list[str] = []
        self._url_problem: str | None = None
        self._last_fetch: float | None = None
        self._fetching = False
        self._refetch_wanted = False
        #: SHA-256 of a verified bearer token -> when, its principal, time claims and revocation ids.
        self._verified: dict[bytes, tuple[float, Principal, tuple[float | None, float | None, float | None], tuple[str, ...]]] = {}
        if config is None:
            self.warning = LOCAL_WARNING
            self._principal = LOCAL_PRINCIPAL
        elif config.principal is not None:
            self._principal = config.principal
        elif self._jwt is not None and self._jwt.jwksUrl is not None and http is None:
            raise ValueError("identity.jwt.jwksUrl is set: the Authenticator needs an HTTP client")

    def start(self) -> Deferred[None]:
        """
        Load the keys (fetching C{jwksUrl}), read the token from the
        environment and verify it.  Never fails: a problem is logged and
        kept, and every request is refused with it.
        """
        if self._jwt is None:
            return succeed(None)
        d = Deferred.fromCoroutine(self._start(self._jwt))
        d.addErrback(self._unexpected)
        return d

    def _unexpected(self, failure: Failure) -> Failure | None:
        if failure.check(CancelledError):
            return failure  # the caller gave up waiting; that is theirs to handle
        log.failure("identity: the token could not be checked", failure)
        self._refuse(_Refused("the identity token could not be checked (an unexpected error; see the gateway's log)", "keys"))
        return None

    async def _start(self, config: JwtConfig) -> None:
        self._load_static_keys(config)
        if config.jwksUrl is not None:
            await self._fetch(config.jwksUrl)
        token = self._environ.get(config.tokenEnv)
        if token is None:
            self._refuse(_Refused(f"environment variable {config.tokenEnv} is not set: there is no identity token (identity.jwt.tokenEnv)", "missing"))
            return
        token = token.strip()
        if not token:
            self._refuse(_Refused(f"environment variable {config.tokenEnv} is empty: there is no identity token (identity.jwt.tokenEnv)", "missing"))
            return
        self._token = token
        self._check(token)

    def _load_static_keys(self, config: JwtConfig) -> None:
        if config.secret is not None:
            self._static_keys.append(_Key(alg="HS256", key=config.secret.encode("utf-8")))
        for name, what in ((config.publicKeyFile, "publicKeyFile"), (config.jwksFile, "jwksFile")):
            if name is None:
                continue
            try:
                with open(name, "rb") as f:
                    data = f.read(1 << 20)
                if what == "publicKeyFile":
                    self._static_keys.append(load_pem(data))
                else:
                    keys, skipped = parse_jwks(data)
                    for why in skipped:
                        log.warn("identity: {file}: key skipped: {why}", file=name, why=why)
                    self._static_keys.extend(keys)
            except OSError as e:
                self._key_problems.append(f"identity.jwt.{what}: cannot read {name}: {e.strerror or e}")
            except ValueError as e:
                self._key_problems.append(f"identity.jwt.{what}: {name}: {e}")
        for problem in self._key_problems:
            log.error("identity: {problem}", problem=problem)

    async def _fetch(self, url: str) -> None:
        """
        Fetch the key set at C{url}; keep its keys, or why it failed.  The
        URL may carry credentials or tokens: every message shows it through
        L{shown_url}, and C{_url_problem} reaches the client and the audit.
        """
        shown = shown_url(url)
        self._last_fetch = self._clock.seconds()
        self._fetching = True
        d = Deferred.fromCoroutine(self._download(url))
        d.addTimeout(self.jwks_timeout, self._clock)
        try:
            body = await d
            keys, skipped = parse_jwks(body)
        except CancelledError:
            raise
        except Exception as e:
            why = shown_text(str(e)) or type(e).__name__
            if isinstance(e, DeferredTimeoutError):
                why = f"no answer within {self.jwks_timeout:g} s"
            self._url_problem = f"the key set at {shown} could not be fetched: {why[:300]}"
            log.error("identity: {problem}", problem=self._url_problem)
            return
        finally:
            self._fetching = False
        for why in skipped:
            log.warn("identity: {url}: key skipped: {why}", url=shown, why=why)
        self._url_keys = keys
        self._url_problem = None if keys else f"the key set at {shown} holds no usable key (RSA or P-256 public keys for signatures)"
        log.info("identity: {count} key(s) fetched from {url}", count=len(keys), url=shown)

    async def _download(self, url: str) -> bytes:
        response = await self._http.get(url, headers={"Accept": ["application/json"]}, allow_redirects=False)
        chunks: list[bytes] = []
        size = [0]
        limit = self.jwks_max_bytes

        def keep(data: bytes) -> None:
            size[0] += len(data)
            if size[0] > limit:
                raise ValueError(f"the answer is larger than {limit} bytes")
            chunks.append(data)

        await collect(response, keep)
        if response.code != 200:
            hint = " (redirects are not followed: configure the final address)" if 300 <= response.code < 400 else ""
            raise ValueError(f"HTTP {response.code}{hint}")
        return b"".join(chunks)

    def _check(self, token: str) -> None:
        try:
            principal, times, jti = self._verify(token)
        except _Refused as e:
            self._refuse(e)
            return
        self._principal = principal
        self._times = times
        self._token_ids = (digest_id(token), jti) if jti else (digest_id(token),)
        self._refetch_wanted = False
        expiry = "does not expire" if times[0] is None else f"expires at {_iso(times[0])}"
        log.info(
            "identity: token verified for {name} (roles: {roles}); it {expiry}",
            name=principal.name,
            roles=", ".join(principal.roles) or "none",
            expiry=expiry,
        )

    def _refuse(self, refused: _Refused) -> None:
        message = refused.message
        if self._token and self._token in message:
            message = message.replace(self._token, "<token>")
        self._principal = None
        self._failure = IdentityError(message, refused.reason)
        self._refetch_wanted = refused.refetch
        log.error("identity: {message}; every request will be refused", message=message)

    def _verify(self, token: str) -> tuple[Principal, tuple[float | None, float | None, float | None], str | None]:
        config = self._jwt
        assert config is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise _Refused(f"the token is not a well-formed JWT ({_short(e)})", "malformed") from None
        alg = header.get("alg")
        allowed = ", ".join(config.algorithms)
        if isinstance(alg, str) and alg.lower() == "none":
            raise _Refused("the token is unsigned (alg: none); unsigned tokens are never accepted", "algorithm")
        if alg not in config.algorithms:
            shown = repr(alg) if isinstance(alg, str) else _describe(alg)
            raise _Refused(f"the token is signed with {shown}, which is not allowed (identity.jwt.algorithms: {allowed})", "algorithm")
        key = self._key_for(alg, header.get("kid"))
        options: Options = {
            "verify_signature": True,
            "verify_exp": False,  # checked against the injected clock, on every request
            "verify_nbf": False,
            "verify_iat": False,
            "verify_iss": config.issuer is not None,
            "verify_aud": config.audience is not None,
            "enforce_minimum_key_length": True,
        }
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[key.alg],  # exactly one, fixed by the kind of key
                options=options,
                issuer=config.issuer,
                audience=config.audience,
            )
        except jwt.InvalidSignatureError:
            raise _Refused("the token's signature does not verify (it was forged, altered or signed with another key)", "signature") from None
        except jwt.MissingRequiredClaimError as e:
            which = {"iss": "issuer", "aud": "audience"}.get(e.claim, e.claim)
            raise _Refused(f"the token has no {e.claim!r} claim, and identity.jwt.{which} is set", "claims") from None
        except jwt.InvalidIssuerError:
            raise _Refused(f"the token was not issued by {config.issuer!r} (identity.jwt.issuer)", "issuer") from None
        except jwt.InvalidAudienceError:
            raise _Refused(f"the token is not meant for audience {config.audience!r} (identity.jwt.audience)", "audience") from None
        except jwt.InvalidAlgorithmError as e:
            raise _Refused(f"the token's algorithm cannot be used here ({_short(e)})", "algorithm") from None
        except jwt.InvalidKeyError as e:
            raise _Refused(f"the configured key cannot verify the token ({_short(e)})", "keys") from None
        except jwt.DecodeError as e:
            raise _Refused(f"the token is not a well-formed JWT ({_short(e)})", "malformed") from None
        except jwt.PyJWTError as e:
            raise _Refused(f"the token is invalid ({_short(e)})", "claims") from None
        times = (_time_claim(payload, "exp"), _time_claim(payload, "nbf"), _time_claim(payload, "iat"))
        name = _claim(payload, config.nameClaim)
        if not isinstance(name, str) or not name.strip():
            raise _Refused(f"the token has no {config.nameClaim!r} claim naming the principal (identity.jwt.nameClaim)", "claims")
        roles = _roles(_claim(payload, config.rolesClaim), config.rolesClaim, name)
        return Principal(name=name, roles=roles, source="jwt", expires_at=times[0]), times, jti_of(payload)

    def _key_for(self, alg: str, kid: Any) -> _Key:
        """The one key that may verify a token signed with C{alg}."""
        candidates = [k for k in self._static_keys + self._url_keys if k.alg == alg]
        if alg != "HS256" and kid is not None:
            if not isinstance(kid, str):
                raise _Refused(f"the token's key id (kid) is {_describe(kid)}, not a string", "malformed")
            named = [k for k in candidates if k.kid == kid]
            # A single PEM key has no kid: it verifies whatever the token names.
            if not named and not any(k.kid is not None for k in candidates) and len(candidates) == 1:
                named = candidates
            if not named:
                raise _Refused(self._no_key(f"no {alg} key with id (kid) {kid!r}"), "keys", refetch=True)
            candidates = named
        if not candidates:
            raise _Refused(self._no_key(f"no {alg} key"), "keys", refetch=True)
        if len(candidates) > 1:
            raise _Refused(f"the token names no key id (kid) and {len(candidates)} {alg} keys could verify it", "keys")
        return candidates[0]

    def _no_key(self, what: str) -> str:
        problems = self._key_problems + ([self._url_problem] if self._url_problem else [])
        where = f" ({'; '.join(problems)})" if problems else ""
        return f"the token cannot be verified: {what} is available{where}"

    def authenticate(self) -> Principal:
        """
        The principal of the current request; cheap (no cryptography).

        @raise IdentityError: when there is none: no token, a bad one, or
            one that has expired or is not valid yet.
        """
        principal = self._principal
        if principal is None:
            failure = self._failure
            self._maybe_refetch()
            raise IdentityError(failure.message, failure.reason)
        if self._revoked is not None and is_revoked(self._revoked(), self._token_ids):
            raise IdentityError(REVOKED_MESSAGE, "revoked")
        exp, nbf, iat = self._times
        if exp is None and nbf is None and iat is None:
            return principal
        now = self._clock.seconds()
        assert self._jwt is not None
        leeway = self._jwt.leeway
        if exp is not None and exp <= now - leeway:
            raise IdentityError(
                f"the token expired at {_iso(exp)} (restart the gateway with a fresh token in {self._jwt.tokenEnv})",
                "expired",
            )
        if nbf is not None and nbf > now + leeway:
            raise IdentityError(f"the token is not valid before {_iso(nbf)}", "not-yet-valid")
        if iat is not None and iat > now + leeway:
            raise IdentityError(f"the token claims to be issued at {_iso(iat)}, in the future", "not-yet-valid")
        return principal

    def verify_bearer(self, token: str) -> Principal:
        """
        The principal of a token presented with one HTTP request
        (C{Authorization: Bearer}), verified now with the same rules as the
        stdio caller's token: algorithm, signature, issuer, audience, and
        its time claims against the clock, on every call.  A token whose
        signature and claims verified is remembered by its SHA-256 digest
        (never the token) for C{bearer_cache_seconds}, so a client's next
        requests cost no cryptography.  The token is never part of the error.
        A revoked token (its jti or its digest among C{revoked}) is refused
        on every request, remembered or not.

        @raise IdentityError: when it cannot be accepted.
        """
        if self._jwt is None:
            raise IdentityError("bearer tokens are not accepted: identity.jwt is not configured", "keys")
        now = self._clock.seconds()
        digest = hashlib.sha256(token.encode("ascii", "replace")).digest()
        verified = self._verified.get(digest)
        if verified is None or now - verified[0] >= self.bearer_cache_seconds:
            try:
                principal, times, jti = self._verify(token)
            except _Refused as e:
                self._verified.pop(digest, None)
                if e.refetch:
                    self._refetch_keys()
                raise IdentityError(_without(e.message, token), e.reason) from None
            if len(self._verified) >= self.bearer_cache_size:
                self._verified.clear()
            ids: tuple[str, ...] = ("sha256:" + digest.hex(), jti) if jti else ("sha256:" + digest.hex(),)
            verified = self._verified[digest] = (now, principal, times, ids)
        _, principal, (exp, nbf, iat), token_ids = verified
        if self._revoked is not None and is_revoked(self._revoked(), token_ids):
            raise IdentityError(REVOKED_MESSAGE, "revoked")
        leeway = self._jwt.leeway
        if exp is not None and exp <= now - leeway:
            raise IdentityError(f"the token expired at {_iso(exp)}", "expired")
        if nbf is not None and nbf > now + leeway:
            raise IdentityError(f"the token is not valid before {_iso(nbf)}", "not-yet-valid")
        if iat is not None and iat > now + leeway:
            raise IdentityError(f"the token claims to be issued at {_iso(iat)}, in the future", "not-yet-valid")
        return principal

    def _refetch_keys(self) -> None:
        """A presented token names a key not held: fetch C{jwksUrl} again, at most once per C{jwks_refetch_interval}."""
        config = self._jwt
        if config is None or config.jwksUrl is None or self._fetching:
            return
        now = self._clock.seconds()
        if self._last_fetch is not None and now - self._last_fetch < self.jwks_refetch_interval:
            return
        d = Deferred.fromCoroutine(self._fetch(config.jwksUrl))
        d.addErrback(self._unexpected)

    def _maybe_refetch(self) -> None:
        """A key may be missing because the key set changed (or could not be
        fetched): fetch it again, at most once per C{jwks_refetch_interval},
        and check the token once more."""
        config = self._jwt
        if not self._refetch_wanted or config is None or config.jwksUrl is None or self._token is None or self._fetching:
            return
        now = self._clock.seconds()
        if self._last_fetch is not None and now - self._last_fetch < self.jwks_refetch_interval:
            return
        d = Deferred.fromCoroutine(self._refetch(config.jwksUrl, self._token))
        d.addErrback(self._unexpected)

    async def _refetch(self, url: str, token: str) -> None:
        log.info("identity: fetching the key set at {url} again", url=shown_url(url))
        await self._fetch(url)
        if self._principal is None and self._failure.reason == "keys":
            self._check(token)


def _claim(payload: dict[str, Any], name: str) -> Any:
    """A claim by name, or by dotted path (C{realm_access.roles}) when no
    claim has the whole name (namespaced claims are URLs, with dots)."""
    if name in payload:
        return payload[name]
    node: Any = payload
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _roles(value: Any, claim: str, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(dict.fromkeys(value.split()))
    if isinstance(value, list) and all(isinstance(r, str) for r in value):
        return tuple(dict.fromkeys(r for r in value if r.strip()))
    if value is None:
        log.warn("identity: the token has no {claim!r} claim (identity.jwt.rolesClaim): {name} has no roles", claim=claim, name=name)
    else:
        log.warn(
            "identity: the token's {claim!r} claim is {what}, not a list of strings or a space-separated string: {name} has no roles",
            claim=claim,
            what=_describe(value),
            name=name,
        )
    return ()


def _time_claim(payload: dict[str, Any], claim: str) -> float | None:
    if claim not in payload:
        return None
    value = payload[claim]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(f"the token's {claim!r} claim is {_describe(value)}, not a time in seconds", "malformed")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise _Refused(f"the token's {claim!r} claim is not a finite time", "malformed")
    return seconds


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f} (seconds since 1970)"


def _without(message: str, token: str) -> str:
    """C{message} with the token (or any of its parts) cut out: errors never carry it."""
    for part in [token, *token.split(".")]:
        if len(part) >= 8 and part in message:
            message = message.replace(part, "<token>")
    return message


def _short(e: Exception) -> str:
    return (str(e) or type(e).__name__)[:200]
