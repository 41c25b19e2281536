"""The C{identity:} section: the stdio caller (a named principal or a JWT), and the rules for socket clients."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

from twisted_mcp.config._check import _Checker, _describe, _join, _resolve
from twisted_mcp.policy.peers import parse_certificates, parse_listeners, parse_peers
from twisted_mcp.policy.principal import Principal
from twisted_mcp.urls import shown_url, split_url

if TYPE_CHECKING:
    from twisted_mcp.policy.identity.keys import _Key

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
        from twisted_mcp.policy.identity.keys import load_pem, parse_jwks

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
            parts = split_url(url)
            secure = parts is not None and parts.scheme == "https" and bool(parts.hostname)
            local = parts is not None and parts.scheme == "http" and parts.hostname in _LOOPBACK
            if not (secure or local):
                check.problem(upath, f"expected an https:// address (plain http only on this machine: localhost, 127.0.0.1, ::1), got {shown_url(url)!r}")
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
