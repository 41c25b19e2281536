"""
The OAuth parts of the configuration (design §2): a backend's C{auth:}
(C{oauth}, C{{oauth: {...}}} or C{{clientCredentials: {...}}}) and the
gateway-wide C{oauth:} section.

Secrets (client secrets, from C{secret:} or C{secretFile:}) are read here
and never appear in a problem or a log line; the store's key is only named
here (its bytes are read at start).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from typing import Any, Mapping

from twisted.logger import Logger

from twisted_mcp.config._check import ConfigError, _Checker, _describe, _join, _resolve
from twisted_mcp.config.models import (
    ClientCredentialsAuth,
    OAuthAuth,
    OAuthClient,
    OAuthSettings,
    OAuthStoreSettings,
)
from twisted_mcp.config.reading import read_file
from twisted_mcp.urls import shown_url, split_url

log = Logger()

AUTH_FORMS = "auth: oauth, auth: {oauth: {...}} or auth: {clientCredentials: {...}}"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
#: Authorization request parameters the gateway sets itself: extraAuthorizeParams may not override them.
RESERVED_AUTHORIZE_PARAMS = frozenset(
    {"response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "resource", "scope"}
)
KEY_SOURCES = ("keyFile", "keyEnv", "keyCredential")
BROWSER_CHECKS = ("oidc", "none")
#: The largest secret file read (a client secret is a few dozen bytes).
MAX_SECRET_BYTES = 64 * 1024
STORE_KEY_MISSING = "needs a key (keyFile, keyEnv or keyCredential): tokens are never stored unencrypted"

_OAUTH_KEYS = {"scopes", "client", "issuer", "extraAuthorizeParams", "sendResource", "catalogAs"}
_CLIENT_KEYS = {"id", "secret", "secretFile", "authMethod"}
_CLIENT_CREDENTIALS_KEYS = {"id", "secret", "secretFile", "authMethod", "scopes", "tokenEndpoint"}
_SECTION_KEYS = {
    "publicUrl",
    "clientName",
    "clientMetadataUrl",
    "store",
    "browserCheck",
    "browserCheckClient",
    "authorizationTimeout",
    "consentWait",
    "refreshBefore",
    "refreshMaxEarly",
    "requestTimeout",
    "maxMetadataBytes",
    "maxPendingPerPrincipal",
}
_NULLABLE = {"publicUrl", "clientMetadataUrl", "browserCheck", "browserCheckClient"}
_STORE_KEYS = {"path", *KEY_SOURCES, "oldKeyFiles"}
#: The section's numbers: (kind, bounds), as the gateway section's.
_SECTION_NUMBERS: dict[str, tuple[str, tuple[Any, Any]]] = {
    "authorizationTimeout": ("seconds", (1, 86400)),
    "consentWait": ("seconds", (0.1, 86400)),
    "refreshMaxEarly": ("seconds", (0.1, 86400)),
    "requestTimeout": ("seconds", (0.1, 600)),
    "maxMetadataBytes": ("int", (1024, 16 << 20)),
    "maxPendingPerPrincipal": ("int", (1, 1000)),
}
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: RFC 6749 §3.3 scope-token: printable ASCII but space, " and \\.
_SCOPE_RE = re.compile(r'^[\x21\x23-\x5b\x5d-\x7e]+$')


def is_loopback_host(host: str) -> bool:
    """C{localhost}, C{::1} or an address of C{127.0.0.0/8}."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secure_url(check: _Checker, path: str, value: Any, what: str) -> str | None:
    """
    A URL that is C{https}, or C{http} to a loopback host (logged as a
    warning), without a fragment; C{None} (and a problem) otherwise.
    """
    url = check.string(path, value)
    if url is None:
        return None
    parts = split_url(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        check.problem(path, f"expected an https:// address for {what}, got {shown_url(url)!r}")
        return None
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        check.problem(path, f"{what} must be https:// (plain http is allowed only to a loopback host), got {shown_url(url)!r}")
        return None
    if parts.fragment:
        check.problem(path, f"{what} may not have a fragment (#...)")
        return None
    if parts.scheme == "http":
        log.warn("{path}: {url} is plain http (allowed because the host is a loopback address)", path=path, url=shown_url(url))
    return url


def parse_auth(check: _Checker, path: str, value: Any, base_dir: str | None) -> OAuthAuth | ClientCredentialsAuth | None:
    """A backend's C{auth:} in one of its three forms (L{AUTH_FORMS})."""
    if value == "oauth":
        return OAuthAuth()
    if isinstance(value, dict) and len(value) == 1:
        (form, spec), = value.items()
        if form == "oauth":
            return _oauth(check, _join(path, "oauth"), {} if spec is None else spec, base_dir)
        if form == "clientCredentials":
            return _client_credentials(check, _join(path, "clientCredentials"), spec, base_dir)
    # Only the kind of value is named: a token pasted here must not reach a message.
    check.problem(path, f"expected {AUTH_FORMS}, got {_kind(value)}")
    return None


def _kind(value: Any) -> str:
    """What C{value} is, without what it says (it may be a token pasted in the wrong place)."""
    if isinstance(value, dict):
        return f"a mapping with the keys {', '.join(sorted(map(str, value)))}" if value else "an empty mapping"
    return " ".join(_describe(value).split(" ")[:2]) if value is not None else _describe(value)


def _oauth(check: _Checker, path: str, value: Any, base_dir: str | None) -> OAuthAuth | None:
    spec = check.mapping(path, value)
    if spec is None:
        return None
    check.unknown(path, spec, _OAUTH_KEYS)
    fields: dict[str, Any] = {}
    if "scopes" in spec:
        fields["scopes"] = _scopes(check, _join(path, "scopes"), spec["scopes"])
    if "client" in spec:
        fields["client"] = _client(check, _join(path, "client"), spec["client"], base_dir)
    if "issuer" in spec:
        fields["issuer"] = _secure_url(check, _join(path, "issuer"), spec["issuer"], "an issuer")
    if "extraAuthorizeParams" in spec:
        fields["extraAuthorizeParams"] = _extra_params(check, _join(path, "extraAuthorizeParams"), spec["extraAuthorizeParams"])
    if "sendResource" in spec:
        fields["sendResource"] = check.boolean(_join(path, "sendResource"), spec["sendResource"])
    if "catalogAs" in spec:
        fields["catalogAs"] = check.string(_join(path, "catalogAs"), spec["catalogAs"])
    if any(v is None for v in fields.values()):
        return None
    return OAuthAuth(**fields)


def _client_credentials(check: _Checker, path: str, value: Any, base_dir: str | None) -> ClientCredentialsAuth | None:
    spec = check.mapping(path, value)
    if spec is None:
        return None
    check.unknown(path, spec, _CLIENT_CREDENTIALS_KEYS)
    ok = True
    scopes: tuple[str, ...] | None = ()
    if "scopes" in spec:
        scopes = _scopes(check, _join(path, "scopes"), spec["scopes"])
    token_endpoint = None
    if "tokenEndpoint" in spec:
        token_endpoint = _secure_url(check, _join(path, "tokenEndpoint"), spec["tokenEndpoint"], "a token endpoint")
        ok = token_endpoint is not None
    identity = _identity(check, path, spec, base_dir, methods=AUTH_METHODS[:2])
    if identity is None or scopes is None or not ok:
        return None
    client_id, secret, method = identity
    if secret is None:
        check.problem(path, "the client credentials grant needs the client's secret: set secret or secretFile")
        return None
    return ClientCredentialsAuth(id=client_id, secret=secret, authMethod=method, scopes=scopes, tokenEndpoint=token_endpoint)


def _client(check: _Checker, path: str, value: Any, base_dir: str | None) -> OAuthClient | None:
    spec = check.mapping(path, value)
    if spec is None:
        return None
    check.unknown(path, spec, _CLIENT_KEYS)
    identity = _identity(check, path, spec, base_dir, methods=AUTH_METHODS)
    if identity is None:
        return None
    client_id, secret, method = identity
    return OAuthClient(id=client_id, secret=secret, authMethod=method)


def _identity(
    check: _Checker, path: str, spec: dict[str, Any], base_dir: str | None, methods: tuple[str, ...]
) -> tuple[str, str | None, str | None] | None:
    """A client's C{id}, its secret (from C{secret} or C{secretFile}) and C{authMethod}, checked together."""
    client_id = None
    if "id" not in spec:
        check.problem(_join(path, "id"), "missing: the client_id the authorization server knows the gateway by")
    else:
        client_id = check.string(_join(path, "id"), spec["id"])
    method = None
    if "authMethod" in spec:
        method = spec["authMethod"]
        if method not in methods:
            check.problem(_join(path, "authMethod"), f"expected one of {', '.join(methods)}, got {_describe(method)}")
            return None
    secret = None
    if "secret" in spec and "secretFile" in spec:
        check.problem(_join(path, "secretFile"), "only one of secret, secretFile may be given")
        return None
    if "secret" in spec:
        if not isinstance(spec["secret"], str) or not spec["secret"]:
            check.problem(_join(path, "secret"), "expected a non-empty string (write secret: ${ENV_NAME} to keep it out of the file)")
            return None
        secret = spec["secret"]
    elif "secretFile" in spec:
        secret = _secret_file(check, _join(path, "secretFile"), spec["secretFile"], base_dir)
        if secret is None:
            return None
    if method == "none" and secret is not None:
        check.problem(_join(path, "authMethod"), "is none (a public client), but a secret is given: keep one of them")
        return None
    if method in ("client_secret_basic", "client_secret_post") and secret is None:
        check.problem(_join(path, "authMethod"), f"is {method}, which needs the client's secret: set secret or secretFile")
        return None
    if client_id is None:
        return None
    return client_id, secret, method


def _secret_file(check: _Checker, path: str, value: Any, base_dir: str | None) -> str | None:
    """
    The secret a file holds (surrounding whitespace removed).  A file that
    group or others may read is a warning; what it holds is never quoted.
    """
    name = check.string(path, value)
    if name is None:
        return None
    name = _resolve(name, base_dir)
    try:
        text = read_file(name, MAX_SECRET_BYTES)
        mode = os.stat(name).st_mode
    except OSError as e:
        check.problem(path, f"cannot read {name}: {e.strerror or e}")
        return None
    except UnicodeDecodeError:
        check.problem(path, f"{name} is not UTF-8 text")
        return None
    except ConfigError:
        check.problem(path, f"{name} is larger than {MAX_SECRET_BYTES} bytes: not a client secret")
        return None
    secret = text.strip()
    if not secret:
        check.problem(path, f"{name} is empty")
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warn(
            "{path}: {file} may be read by group or others (mode {mode}): chmod 600 it",
            path=path,
            file=name,
            mode=oct(stat.S_IMODE(mode)),
        )
    return secret


def _scopes(check: _Checker, path: str, value: Any) -> tuple[str, ...] | None:
    scopes = check.string_list(path, value)
    if scopes is None:
        return None
    for i, scope in enumerate(scopes):
        if not _SCOPE_RE.match(scope):
            check.problem(f"{path}[{i}]", "a scope is one word of printable ASCII (no spaces, quotes or backslashes)")
            return None
    return scopes


def _extra_params(check: _Checker, path: str, value: Any) -> dict[str, str] | None:
    params = check.mapping(path, value)
    if params is None:
        return None
    out: dict[str, str] = {}
    for name, param in params.items():
        ppath = _join(path, name)
        if isinstance(param, (int, float)) and not isinstance(param, bool):
            param = str(param)
        if not isinstance(name, str) or not name:
            check.problem(ppath, "not a valid parameter name")
        elif name in RESERVED_AUTHORIZE_PARAMS:
            check.problem(ppath, f"the gateway sets {name} itself (so do it for {', '.join(sorted(RESERVED_AUTHORIZE_PARAMS))})")
        elif check.string(ppath, param, nonempty=False) is not None:
            out[name] = param
    return out if len(out) == len(params) else None


def check_auth_backend(check: _Checker, server_path: str, auth: Any, fields: Mapping[str, Any]) -> None:
    """
    The rules between a backend's C{auth} and its other keys: no
    Authorization header (nor credentials in the URL, which become one), no
    C{perSession} with C{auth: oauth}, and an C{https} (or loopback) URL.
    """
    path = _join(server_path, "auth")
    headers = fields.get("headers") or {}
    if any(name.lower() == "authorization" for name in headers):
        check.problem(path, "has auth and an Authorization header (headers.Authorization, or a user name and password in the url): keep one of them")
    if isinstance(auth, OAuthAuth) and fields.get("perSession"):
        check.problem(path, "auth: oauth and perSession: true together are not supported yet (oauth backends already run one connection per principal)")
    url = fields.get("url")
    if url is not None:
        parts = split_url(url)
        if parts is not None and parts.scheme == "http":
            if not is_loopback_host(parts.hostname or ""):
                check.problem(
                    _join(server_path, "url"),
                    "a server with auth must be reached over https:// (plain http is allowed only to a loopback host)",
                )
            else:
                log.warn("{path}: plain http to a loopback host, allowed for auth (use https anywhere else)", path=_join(server_path, "url"))


def parse_oauth_section(
    check: _Checker, value: Any, environ: Mapping[str, str], base_dir: str | None
) -> OAuthSettings | None:
    """The C{oauth:} section (C{value} None: every default)."""
    path = "oauth"
    spec = check.mapping(path, {} if value is None else value)
    if spec is None:
        return None
    check.unknown(path, spec, _SECTION_KEYS)
    # null is the default of these (as the README shows them): the same as leaving them out.
    spec = {k: v for k, v in spec.items() if not (v is None and k in _NULLABLE)}
    fields: dict[str, Any] = {}
    if "publicUrl" in spec:
        url = _secure_url(check, "oauth.publicUrl", spec["publicUrl"], "the public URL")
        parts = split_url(url) if url is not None else None
        if url is not None and parts is not None and parts.query:
            check.problem("oauth.publicUrl", "may not have a query (?...)")
            url = None
        fields["publicUrl"] = url
    if "clientName" in spec:
        fields["clientName"] = check.string("oauth.clientName", spec["clientName"])
    if "clientMetadataUrl" in spec:
        fields["clientMetadataUrl"] = _secure_url(check, "oauth.clientMetadataUrl", spec["clientMetadataUrl"], "the client metadata URL")
    if "browserCheck" in spec:
        choice = spec["browserCheck"]
        if choice not in BROWSER_CHECKS:
            check.problem("oauth.browserCheck", f"expected oidc or none, got {_describe(choice)}")
        fields["browserCheck"] = choice if choice in BROWSER_CHECKS else None
    if "browserCheckClient" in spec:
        fields["browserCheckClient"] = _client(check, "oauth.browserCheckClient", spec["browserCheckClient"], base_dir)
    if spec.get("browserCheck") == "oidc" and "browserCheckClient" not in spec:
        check.problem("oauth.browserCheck", "is oidc: set oauth.browserCheckClient (the gateway's client at its identity provider)")
    for key, (kind, bounds) in _SECTION_NUMBERS.items():
        if key in spec:
            kpath = _join(path, key)
            fields[key] = check.integer(kpath, spec[key], *bounds) if kind == "int" else check.number(kpath, spec[key], *bounds)
    if "refreshBefore" in spec:
        share = spec["refreshBefore"]
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
            check.problem("oauth.refreshBefore", f"expected a share of the token's lifetime between 0 and 1 (e.g. 0.8), got {_describe(share)}")
            fields["refreshBefore"] = None
        else:
            fields["refreshBefore"] = float(share)
    store = _store(check, spec.get("store"), environ, base_dir)
    if store is None or any(v is None for v in fields.values()):
        return None
    return OAuthSettings(store=store, **fields)


def default_store_path(environ: Mapping[str, str]) -> str:
    """C{$STATE_DIRECTORY/oauth} (systemd's StateDirectory=), else C{~/.local/state/twisted-mcp/oauth}."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return os.path.join(state, "oauth")
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".local", "state", "twisted-mcp", "oauth")


def _store(check: _Checker, value: Any, environ: Mapping[str, str], base_dir: str | None) -> OAuthStoreSettings | None:
    path = "oauth.store"
    spec = check.mapping(path, {} if value is None else value)
    if spec is None:
        return None
    check.unknown(path, spec, _STORE_KEYS)
    ok = True
    store_path = default_store_path(environ)
    if "path" in spec:
        given = check.string("oauth.store.path", spec["path"])
        ok = given is not None
        store_path = _resolve(given, base_dir) if given is not None else store_path
    keys: dict[str, str | None] = dict.fromkeys(KEY_SOURCES)
    given_sources = [source for source in KEY_SOURCES if source in spec]
    if len(given_sources) > 1:
        check.problem(_join(path, given_sources[1]), f"only one of {', '.join(KEY_SOURCES)} may be given")
        ok = False
    for source in given_sources[:1]:
        where = _join(path, source)
        name = check.string(where, spec[source])
        if name is None:
            ok = False
        elif source == "keyFile":
            keys[source] = _resolve(name, base_dir)
        elif source == "keyEnv" and not _ENV_NAME_RE.match(name):
            check.problem(where, "expected the name of an environment variable")
            ok = False
        elif source == "keyCredential" and ("/" in name or name in (".", "..")):
            check.problem(where, "expected a credential name (systemd LoadCredential=NAME:PATH), not a path")
            ok = False
        else:
            keys[source] = name
    old: tuple[str, ...] | None = ()
    if "oldKeyFiles" in spec:
        old = check.string_list("oauth.store.oldKeyFiles", spec["oldKeyFiles"])
    if old is None or not ok:
        return None
    return OAuthStoreSettings(
        path=store_path,
        keyFile=keys["keyFile"],
        keyEnv=keys["keyEnv"],
        keyCredential=keys["keyCredential"],
        oldKeyFiles=tuple(_resolve(name, base_dir) for name in old),
    )


def has_store_key(settings: OAuthSettings) -> bool:
    """Whether the store names a key to seal its records with."""
    store = settings.store
    return any(source is not None for source in (store.keyFile, store.keyEnv, store.keyCredential))
