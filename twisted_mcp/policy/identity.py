"""
Identity: who is calling.

Every request runs as a L{Principal}.  Where it comes from is configured
under the config file's top-level C{identity:} key:

    identity:
      principal: {name: alice, roles: [dev]}     # a fixed principal

    identity:
      jwt:                                       # a token from the environment
        tokenEnv: MCP_TOKEN
        algorithms: [RS256]
        jwksUrl: https://idp.example.com/.well-known/jwks.json
        issuer: https://idp.example.com/
        audience: twisted-mcp
        rolesClaim: realm_access.roles

With no C{identity:} at all, every request runs as one local principal with
every permission, and the gateway says so loudly at start-up.

A token is read from the environment once and verified once, in
L{Authenticator.start}: signature, algorithm, issuer and audience.  Its
time claims (C{exp}, C{nbf}, C{iat}) are compared with the injected clock
on every request, so an expiring token starts failing requests the moment
it expires.  A missing or bad token never stops the gateway: every request
then gets an L{IdentityError} saying what is wrong.

Algorithm confusion is ruled out by construction: every key has one
algorithm, fixed by its kind (a shared secret: HS256; an RSA public key:
RS256; a P-256 public key: ES256), and PyJWT is asked to verify a token
with that single algorithm only.  An asymmetric public key is never used as
an HMAC secret, and C{alg: none} is never in the allowed list.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import urlsplit

import attrs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.types import Options
from treq import collect
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.config._check import _Checker, _describe, _join, _resolve
from twisted_mcp.policy.peers import parse_certificates, parse_listeners, parse_peers
from twisted_mcp.policy.principal import LOCAL_PRINCIPAL, IdentityError, Principal

log = Logger()

ALGORITHMS = ("HS256", "RS256", "ES256")
"""The algorithms a token may be signed with (when the config allows them)."""

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MIN_SECRET_BYTES = 32  # RFC 7518 3.2: a key of at least the hash's size
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}

LOCAL_WARNING = "no identity is configured: every request runs as the local principal with every permission"


@attrs.frozen
class JwtConfig:
    """C{identity.jwt}: a token read from the environment variable
    C{tokenEnv}, verified with the configured keys."""

    tokenEnv: str
    algorithms: tuple[str, ...]
    secret: str | None = attrs.field(default=None, repr=False)
    publicKeyFile: str | None = None
    jwksFile: str | None = None
    jwksUrl: str | None = None
    issuer: str | None = None
    audience: str | None = None
    rolesClaim: str = "roles"
    nameClaim: str = "sub"
    leeway: float = 30.0


@attrs.frozen
class IdentityConfig:
    """
    The C{identity:} section: at most one of C{principal} and C{jwt} (the
    stdio caller; C{principal} is also the default for socket clients), and
    the per-connection rules for socket clients (see L{twisted_mcp.policy.peers}).
    """

    principal: Principal | None = None
    jwt: JwtConfig | None = None
    peers: tuple[Any, ...] = ()
    certificates: tuple[Any, ...] = ()
    listeners: tuple[tuple[str, Principal], ...] = ()


# -- keys ------------------------------------------------------------------


@attrs.frozen
class _Key:
    """One verification key, usable with exactly one algorithm."""

    alg: str
    key: Any = attrs.field(repr=False)
    kid: str | None = None


def _public_key_alg(key: Any) -> str:
    """The one algorithm a public key may verify, or raise ValueError."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"an RSA key of {key.key_size} bits is too short (at least 2048 bits)")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"an EC key on curve {key.curve.name} does not fit ES256 (which needs P-256)")
        return "ES256"
    raise ValueError(f"a {type(key).__name__} does not fit RS256 or ES256")


def load_pem(data: bytes) -> _Key:
    """A public key (or certificate) in PEM form; ValueError if unusable."""
    if b"PRIVATE KEY-----" in data:
        raise ValueError("holds a private key; give the public key only (openssl pkey -pubout)")
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        except ValueError as e:
            raise ValueError(f"not a readable PEM certificate ({e})") from None
    else:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"not a PEM public key ({e})") from None
    return _Key(alg=_public_key_alg(key), key=key)


def parse_jwks(data: bytes) -> tuple[list[_Key], list[str]]:
    """
    The verification keys of a JWKS document, and why others were
    skipped.  ValueError if the document is not a key set at all.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('not a JSON Web Key Set (expected an object with a "keys" list)')
    keys: list[_Key] = []
    skipped: list[str] = []
    for i, jwk in enumerate(doc["keys"]):
        if not isinstance(jwk, dict):
            skipped.append(f"keys[{i}]: not an object")
            continue
        kid = jwk.get("kid")
        label = f"keys[{i}]" + (f" (kid {kid!r})" if isinstance(kid, str) else "")
        if kid is not None and not isinstance(kid, str):
            skipped.append(f"{label}: kid is not a string")
            continue
        if jwk.get("use", "sig") != "sig":
            skipped.append(f"{label}: for use {jwk.get('use')!r}, not sig")
            continue
        kty = jwk.get("kty")
        if kty not in ("RSA", "EC"):
            skipped.append(f"{label}: key type {kty!r} (only RSA and EC public keys are used)")
            continue
        if "d" in jwk:
            skipped.append(f"{label}: holds private key material; publish public keys only")
            continue
        try:
            key = (RSAAlgorithm if kty == "RSA" else ECAlgorithm).from_jwk(jwk)
            alg = _public_key_alg(key)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as e:
            skipped.append(f"{label}: {e}")
            continue
        declared = jwk.get("alg")
        if declared is not None and declared != alg:
            skipped.append(f"{label}: declared for {declared!r}, not {alg}")
            continue
        keys.append(_Key(alg=alg, key=key, kid=kid))
    return keys, skipped


# -- configuration ---------------------------------------------------------

_IDENTITY_KEYS = {"principal", "jwt", "peers", "certificates", "listeners"}
_PRINCIPAL_KEYS = {"name", "roles"}
_JWT_KEYS = {
    "tokenEnv",
    "algorithms",
    "secret",
    "publicKeyFile",
    "jwksFile",
    "jwksUrl",
    "issuer",
    "audience",
    "rolesClaim",
    "nameClaim",
    "leeway",
}
_ASYMMETRIC_SOURCES = ("publicKeyFile", "jwksFile", "jwksUrl")


def parse_identity(data: Any, path: str, base_dir: str | None, problems: list[str]) -> IdentityConfig | None:
    """
    Validate the C{identity:} section (already C{${VAR}}-expanded).

    Every problem is appended to C{problems} with its key path; the result
    is None when there was any.

    @param base_dir: the directory relative key files are resolved against
        (the config file's own).
    """
    check = _Checker()
    check.problems = problems
    before = len(problems)
    spec = check.mapping(path, data)
    if spec is None:
        return None
    check.unknown(path, spec, _IDENTITY_KEYS)
    present = [k for k in ("principal", "jwt") if k in spec]
    per_connection = [k for k in ("peers", "certificates", "listeners") if k in spec]
    if len(present) == 2:
        check.problem(
            path,
            "expected one of principal (a fixed principal) or jwt (a token from the environment), not both",
        )
    elif not present and not per_connection:
        check.problem(
            path,
            "expected principal (a fixed principal), jwt (a token from the environment), or, for socket "
            "clients, peers, certificates or listeners",
        )
    principal = _parse_principal(check, _join(path, "principal"), spec["principal"]) if "principal" in spec else None
    jwt_config = _parse_jwt(check, _join(path, "jwt"), spec["jwt"], base_dir) if "jwt" in spec else None
    peers = parse_peers(check, _join(path, "peers"), spec["peers"]) if "peers" in spec else ()
    certs = parse_certificates(check, _join(path, "certificates"), spec["certificates"]) if "certificates" in spec else ()
    listeners = (
        parse_listeners(check, _join(path, "listeners"), spec["listeners"], _parse_principal) if "listeners" in spec else ()
    )
    if len(problems) > before:
        return None
    return IdentityConfig(principal=principal, jwt=jwt_config, peers=peers, certificates=certs, listeners=listeners)


def _parse_principal(check: _Checker, path: str, value: Any) -> Principal | None:
    spec = check.mapping(path, value)
    if spec is None:
        return None
    check.unknown(path, spec, _PRINCIPAL_KEYS)
    name = None
    if "name" not in spec:
        check.problem(_join(path, "name"), "missing: the principal's name")
    else:
        name = check.string(_join(path, "name"), spec["name"])
    roles: tuple[str, ...] | None = ()
    if "roles" in spec:
        roles = check.string_list(_join(path, "roles"), spec["roles"])
        for i, role in enumerate(roles or ()):
            if not role.strip():
                check.problem(f"{_join(path, 'roles')}[{i}]", "expected a role name, got an empty string")
    if name is None or roles is None:
        return None
    return Principal(name=name, roles=tuple(dict.fromkeys(roles)), source="config")


def _parse_jwt(check: _Checker, path: str, value: Any, base_dir: str | None) -> JwtConfig | None:
    spec = check.mapping(path, value)
    if spec is None:
        return None
    before = len(check.problems)
    check.unknown(path, spec, _JWT_KEYS)
    fields: dict[str, Any] = {}

    if "tokenEnv" not in spec:
        check.problem(_join(path, "tokenEnv"), "missing: the name of the environment variable that holds the token")
    else:
        env = check.string(_join(path, "tokenEnv"), spec["tokenEnv"])
        if env is not None and not _ENV_NAME_RE.match(env):
            check.problem(_join(path, "tokenEnv"), f"expected an environment variable name (A-Z a-z 0-9 _), got {env!r}")
        fields["tokenEnv"] = env

    algorithms: list[str] | None = None
    apath = _join(path, "algorithms")
    if "algorithms" not in spec:
        check.problem(apath, "missing: the algorithms tokens may be signed with (any of HS256, RS256, ES256)")
    elif not isinstance(spec["algorithms"], list) or not spec["algorithms"]:
        check.problem(apath, f"expected a non-empty list of HS256, RS256, ES256, got {_describe(spec['algorithms'])}")
    else:
        algorithms = []
        for i, item in enumerate(spec["algorithms"]):
            if item not in ALGORITHMS:
                got = repr(item) if isinstance(item, str) else _describe(item)
                check.problem(f"{apath}[{i}]", f"expected one of {', '.join(ALGORITHMS)}, got {got}")
                algorithms = None
            elif algorithms is not None and item not in algorithms:
                algorithms.append(item)
    if algorithms is not None:
        fields["algorithms"] = tuple(algorithms)

    if "secret" in spec:
        spath = _join(path, "secret")
        secret = check.string(spath, spec["secret"])
        if secret is not None:
            if secret.lstrip().startswith("-----BEGIN") or secret.startswith("ssh-"):
                check.problem(spath, "looks like a PEM or SSH key: a public key is never used as an HMAC secret (use publicKeyFile for RS256/ES256)")
            elif len(secret.encode("utf-8")) < _MIN_SECRET_BYTES:
                check.problem(spath, f"an HS256 secret must be at least {_MIN_SECRET_BYTES} bytes long (RFC 7518), got {len(secret.encode('utf-8'))}")
        fields["secret"] = secret

    file_keys: dict[str, list[_Key]] = {}
    for key in ("publicKeyFile", "jwksFile"):
        if key not in spec:
            continue
        kpath = _join(path, key)
        name = check.string(kpath, spec[key])
        if name is None:
            fields[key] = None
            continue
        name = _resolve(name, base_dir)
        fields[key] = name
        try:
            with open(name, "rb") as f:
                data = f.read(1 << 20)
        except OSError as e:
            check.problem(kpath, f"cannot read {name}: {e.strerror or e}")
            continue
        try:
            if key == "publicKeyFile":
                file_keys[key] = [load_pem(data)]
            else:
                keys, skipped = parse_jwks(data)
                for why in skipped:
                    log.warn("{path}: {file}: key skipped: {why}", path=kpath, file=name, why=why)
                if not keys:
                    raise ValueError("no usable key (RSA or P-256 public keys for signatures)")
                file_keys[key] = keys
        except ValueError as e:
            check.problem(kpath, f"{name}: {e}")

    if "jwksUrl" in spec:
        upath = _join(path, "jwksUrl")
        url = check.string(upath, spec["jwksUrl"])
        if url is not None:
            parts = urlsplit(url)
            secure = parts.scheme == "https" and bool(parts.hostname)
            local = parts.scheme == "http" and parts.hostname in _LOOPBACK
            if not (secure or local):
                check.problem(upath, f"expected an https:// address (plain http only on this machine: localhost, 127.0.0.1, ::1), got {url!r}")
                url = None
        fields["jwksUrl"] = url

    for key in ("issuer", "audience"):
        if key in spec:
            fields[key] = check.string(_join(path, key), spec[key])
    for key in ("rolesClaim", "nameClaim"):
        if key in spec:
            claim = check.string(_join(path, key), spec[key])
            if claim is not None and "" in claim.split("."):
                check.problem(_join(path, key), f"expected a claim name or a dotted path (realm_access.roles), got {claim!r}")
            fields[key] = claim
    if "leeway" in spec:
        fields["leeway"] = check.number(_join(path, "leeway"), spec["leeway"], 0, 600)

    if algorithms:
        _check_key_sources(check, path, spec, algorithms, file_keys)

    if len(check.problems) > before or any(v is None for v in fields.values()):
        return None
    return JwtConfig(**fields)


def _check_key_sources(check: _Checker, path: str, spec: dict[str, Any], algorithms: list[str], file_keys: dict[str, list[_Key]]) -> None:
    """Every configured algorithm has a key, and every key an algorithm."""
    asymmetric = [a for a in algorithms if a != "HS256"]
    sources = [k for k in _ASYMMETRIC_SOURCES if k in spec]
    if "HS256" in algorithms and "secret" not in spec:
        check.problem(_join(path, "secret"), "missing: HS256 is in algorithms and needs the shared secret (usually ${JWT_SECRET})")
    if "secret" in spec and "HS256" not in algorithms:
        check.problem(_join(path, "secret"), "HS256 is not in algorithms, so this secret would never be used (add HS256, or remove the secret)")
    if len(sources) > 1:
        check.problem(path, f"{' and '.join(sources)} are alternatives: set only one of publicKeyFile, jwksFile, jwksUrl")
    if asymmetric and not sources:
        check.problem(path, f"missing: {', '.join(asymmetric)} need(s) a public key: set publicKeyFile, jwksFile or jwksUrl")
    if sources and not asymmetric:
        check.problem(_join(path, sources[0]), "neither RS256 nor ES256 is in algorithms, so this key would never be used")
    for source, keys in file_keys.items():
        fitting = [k for k in keys if k.alg in asymmetric]
        if asymmetric and not fitting:
            kinds = sorted({k.alg for k in keys})
            check.problem(
                _join(path, source),
                f"the key(s) fit {', '.join(kinds)}, which is not in algorithms ({', '.join(algorithms)})",
            )


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

    @ivar warning: what the gateway must log loudly at start-up, or None.
    """

    jwks_timeout = 10.0
    """Seconds allowed for fetching C{jwksUrl} (connection, headers and body)."""
    jwks_refetch_interval = 60.0
    """At most one fetch of C{jwksUrl} per this many seconds."""
    jwks_max_bytes = 1 << 20

    def __init__(self, config: IdentityConfig | None, environ: Mapping[str, str], clock: IReactorTime, http: Any = None) -> None:
        self._config = config
        self._jwt = config.jwt if config is not None else None
        self._environ = environ
        self._clock = clock
        self._http = http
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
        """Fetch the key set at C{url}; keep its keys, or why it failed."""
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
            why = str(e) or type(e).__name__
            if isinstance(e, DeferredTimeoutError):
                why = f"no answer within {self.jwks_timeout:g} s"
            self._url_problem = f"the key set at {url} could not be fetched: {why[:300]}"
            log.error("identity: {problem}", problem=self._url_problem)
            return
        finally:
            self._fetching = False
        for why in skipped:
            log.warn("identity: {url}: key skipped: {why}", url=url, why=why)
        self._url_keys = keys
        self._url_problem = None if keys else f"the key set at {url} holds no usable key (RSA or P-256 public keys for signatures)"
        log.info("identity: {count} key(s) fetched from {url}", count=len(keys), url=url)

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
            principal, times = self._verify(token)
        except _Refused as e:
            self._refuse(e)
            return
        self._principal = principal
        self._times = times
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

    def _verify(self, token: str) -> tuple[Principal, tuple[float | None, float | None, float | None]]:
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
        return Principal(name=name, roles=roles, source="jwt", expires_at=times[0]), times

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
        log.info("identity: fetching the key set at {url} again", url=url)
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


def _short(e: Exception) -> str:
    return (str(e) or type(e).__name__)[:200]
