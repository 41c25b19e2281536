"""
Loading the gateway's configuration file: YAML (or JSON), with a top-level
C{mcpServers} mapping in the shape MCP clients already use, so that an
existing Claude Desktop or Claude Code config works as it is.

Loading turns the file into frozen attrs models.  Every problem found is
reported with the key path it concerns and what was expected, all at once,
in one L{ConfigError}.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from twisted_mcp.config._check import NAME_RE, ConfigError, _Checker, _describe, _join, _resolve
from twisted_mcp.config.models import Config, GatewaySettings, HttpServer, OAuthAuth, OAuthSettings, StdioServer
from twisted_mcp.config.oauth import STORE_KEY_MISSING, check_auth_backend, has_store_key, parse_auth, parse_oauth_section
from twisted_mcp.config.profiles import parse_profiles
from twisted_mcp.config.reading import parse_text, read_file
from twisted_mcp.config.shaping import SHAPING_KEYS, parse_server_shaping
from twisted_mcp.config.surface import check_name_limits, parse_surface
from twisted_mcp.frontends.http_config import HttpSettings, parse_http
from twisted_mcp.mcp.names import MAX_NAME, name_prefix
from twisted_mcp.policy.audit.config import parse_audit
from twisted_mcp.policy.identity.config import parse_identity
from twisted_mcp.policy.rules import PatternError, compile_pattern, parse_policy
from twisted_mcp.state.config import parse_state
from twisted_mcp.urls import shown_url, split_credentials, split_url

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}])*))?\}|\$\{[^}]*\}?")


def expand(value: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """
    Expand C{${VAR}} and C{${VAR:-default}} in C{value}; C{$$} is a literal
    C{$}.  Returns the expanded text and the problems found (unset
    variables without a default, malformed references).
    """
    problems: list[str] = []

    def sub(m: re.Match[str]) -> str:
        text = m.group(0)
        if text == "$$":
            return "$"
        name = m.group(1)
        if name is None or not text.endswith("}"):
            problems.append(f"malformed variable reference {text!r} (use ${{NAME}} or ${{NAME:-default}}; $$ for a literal $)")
            return text
        if name in environ and (environ[name] != "" or m.group(2) is None):
            return environ[name]
        if m.group(2) is not None:
            return m.group(2)
        problems.append(f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)")
        return ""

    return _VAR_RE.sub(sub, value), problems


def _expand_all(node: Any, path: str, environ: Mapping[str, str], check: _Checker) -> Any:
    if isinstance(node, str):
        if "$" not in node:
            return node
        out, problems = expand(node, environ)
        for p in problems:
            check.problem(path, p)
        return out
    if isinstance(node, dict):
        return {k: _expand_all(v, _join(path, k), environ, check) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_all(v, f"{path}[{i}]", environ, check) for i, v in enumerate(node)]
    return node


_GATEWAY_KEYS: dict[str, tuple[str, Any]] = {
    "separator": ("separator", None),
    "maxMessageBytes": ("int", (1024, 1 << 30)),
    "maxHandshakeBytes": ("int", (1024, 1 << 30)),
    "maxCallsInFlight": ("int", (1, 1 << 20)),
    "maxListensPerSession": ("int", (1, 1024)),
    "maxClients": ("int", (1, 1 << 20)),
    "maxClientsPerPeer": ("int", (1, 1 << 20)),
    "handshakeTimeout": ("seconds", (0.1, 86400)),
    "messageTimeout": ("seconds", (0.1, 86400)),
    "descriptorReserve": ("int", (0, 1 << 20)),
    "adminMaxConnections": ("int", (1, 4096)),
    "adminTimeout": ("seconds", (0.1, 3600)),
    "adminMaxBodyBytes": ("int", (1024, 1 << 30)),
    "maxKillSwitchEntries": ("int", (1, 1_000_000)),
    "discoveryTimeout": ("seconds", (0.1, 3600)),
    "callTimeout": ("seconds", (0.1, 86400)),
    "shutdownGrace": ("seconds", (0, 3600)),
    "shutdownTimeout": ("seconds", (0.1, 600)),
    "restartDelay": ("seconds", (0.01, 3600)),
    "restartMaxDelay": ("seconds", (0.01, 86400)),
    "stableAfter": ("seconds", (0, 86400)),
    "inheritEnv": ("strings", None),
    "stderrLineBytes": ("int", (80, 1 << 20)),
    "stderrLinesPerSecond": ("int", (1, 100_000)),
    "stderrBurst": ("int", (1, 1_000_000)),
    "maxHeldCalls": ("int", (0, 1 << 20)),
    "maxHeldCallsPerPrincipal": ("int", (0, 1 << 20)),
    "heldCallTimeout": ("seconds", (0.1, 86400)),
    "maxInputRounds": ("int", (1, 1000)),
    "requestStateTtl": ("seconds", (1, 86400)),
    "requestStateKeys": ("keys", None),
    "adminToken": ("token", None),
}
#: The shortest HMAC key accepted for requestState tokens, in characters.
MIN_KEY_CHARS = 32


def _secret_keys(check: _Checker, path: str, value: Any) -> tuple[str, ...] | None:
    """A list of secret keys (gateway.requestStateKeys): each long enough; never repeated in a problem."""
    keys = check.string_list(path, value)
    if keys is None:
        return None
    for i, key in enumerate(keys):
        if len(key) < MIN_KEY_CHARS:
            check.problem(
                f"{path}[{i}]", f"a key must have at least {MIN_KEY_CHARS} characters (e.g. the output of `openssl rand -hex 32`)"
            )
            return None
    return keys


_SERVER_TIMEOUTS = (
    "discoveryTimeout",
    "callTimeout",
    "shutdownTimeout",
    "restartDelay",
    "restartMaxDelay",
    "stableAfter",
)
#: Limits of one server: (kind, bounds) as in _GATEWAY_KEYS.
_SERVER_LIMITS: dict[str, tuple[str, Any]] = {
    "maxInstances": ("int", (1, 100_000)),
    "maxInstancesPerPrincipal": ("int", (1, 100_000)),
    "idleTimeout": ("seconds", (0, 86400 * 7)),
}
_STDIO_LIMITS: dict[str, tuple[str, Any]] = {
    "maxQueuedBytes": ("int", (1024, 1 << 40)),
    "livenessTimeout": ("seconds", (0, 86400 * 7)),
}
_STDIO_KEYS = {
    "type",
    "command",
    "args",
    "env",
    "cwd",
    "disabled",
    "required",
    "perSession",
    "prefix",
    "protocol",
    *_SERVER_TIMEOUTS,
    *_SERVER_LIMITS,
    *_STDIO_LIMITS,
    *SHAPING_KEYS,
}
_HTTP_KEYS = {
    "type",
    "url",
    "auth",
    "headers",
    "connectTimeout",
    "maxConnections",
    "maxRequests",
    "tls",
    "disabled",
    "required",
    "perSession",
    "prefix",
    "protocol",
    *_SERVER_TIMEOUTS,
    *_SERVER_LIMITS,
    *SHAPING_KEYS,
}
_TLS_KEYS = {"caFile", "certFile", "keyFile"}
_HTTP_TYPES = {"http": "streamable", "streamable-http": "streamable", "streamableHttp": "streamable", "sse": "sse"}
_TOP_KEYS = {
    "mcpServers",
    "gateway",
    "identity",
    "roles",
    "killSwitch",
    "limits",
    "concurrency",
    "breaker",
    "pinning",
    "audit",
    "http",
    "oauth",
    "profiles",
    "surface",
    "search",
    "clients",
    "state",
}


def build(data: Any, source: str, environ: Mapping[str, str] | None = None, base_dir: str | None = None) -> Config:
    """
    Validate parsed config data and build a L{Config}.

    @param base_dir: directory against which a relative C{cwd} is resolved
        (the config file's own directory).
    @raise ConfigError: listing every problem.
    """
    environ = os.environ if environ is None else environ
    check = _Checker()
    top = check.mapping("", data if data is not None else {})
    if top is None:
        raise ConfigError(source, check.problems)
    top = _expand_all(top, "", environ, check)
    check.unknown("", top, _TOP_KEYS)
    if "mcpServers" not in top:
        check.problem("mcpServers", "missing: the mapping of MCP servers to start (name: {command, args, env})")

    gw_values: dict[str, Any] = {}
    gw = check.mapping("gateway", top.get("gateway", {}) or {})
    if gw is not None:
        check.unknown("gateway", gw, _GATEWAY_KEYS)
        for key, (kind, bounds) in _GATEWAY_KEYS.items():
            if key not in gw:
                continue
            path = f"gateway.{key}"
            value: Any
            if kind == "separator":
                value = check.string(path, gw[key])
                if value is not None and not NAME_RE.match(value):
                    check.problem(path, "expected characters from A-Z a-z 0-9 _ - only")
                    value = None
            elif kind == "int":
                value = check.integer(path, gw[key], *bounds)
            elif kind == "seconds":
                value = check.number(path, gw[key], *bounds)
            elif kind == "token":
                value = check.string(path, gw[key])
            elif kind == "keys":
                value = _secret_keys(check, path, gw[key])
            else:
                value = check.string_list(path, gw[key])
            if value is not None:
                gw_values[key] = value
    settings = GatewaySettings(**gw_values)

    servers: list[StdioServer] = []
    disabled: list[str] = []
    entries = check.mapping("mcpServers", top.get("mcpServers", {}) or {})
    for name, entry in (entries or {}).items():
        path = _join("mcpServers", name)
        if not isinstance(name, str):
            check.problem(
                path,
                "a server name must be a string (quote it: YAML reads on, off, yes, no, true, false and numbers as other types)",
            )
            continue
        if not NAME_RE.match(name):
            check.problem(path, "a server name may use only A-Z a-z 0-9 _ - (it prefixes its tools' names)")
            continue
        if settings.separator in name:
            check.problem(path, f"a server name may not contain the tool-name separator {settings.separator!r}")
            continue
        spec = check.mapping(path, entry)
        if spec is None:
            continue
        kind = spec.get("type", "http" if "url" in spec and "command" not in spec else "stdio")
        if not isinstance(kind, str) or (kind not in _HTTP_TYPES and kind != "stdio"):
            check.problem(
                _join(path, "type"),
                f'expected "stdio", "http" (Streamable HTTP) or "sse" (the legacy HTTP+SSE transport), got {_describe(kind)}',
            )
            continue
        if kind == "stdio" and "auth" in spec:
            check.problem(
                _join(path, "auth"),
                "stdio servers take credentials from their environment (the MCP spec: STDIO transports SHOULD NOT use OAuth)",
            )
        check.unknown(path, spec, (_STDIO_KEYS | {"auth"}) if kind == "stdio" else _HTTP_KEYS)
        if "disabled" in spec and check.boolean(_join(path, "disabled"), spec["disabled"]):
            disabled.append(name)
            continue
        fields: dict[str, Any] = {}
        for flag in ("required", "perSession"):
            if flag in spec:
                fields[flag] = check.boolean(_join(path, flag), spec[flag])
        if "prefix" in spec:
            fields["prefix"] = _prefix(check, _join(path, "prefix"), spec["prefix"])
        if "protocol" in spec:
            fields["protocol"] = _protocol(check, _join(path, "protocol"), spec["protocol"], kind == "sse")
        parse_server_shaping(check, path, spec, fields, _glob_problem)
        for key in _SERVER_TIMEOUTS:
            if key in spec:
                fields[key] = check.number(_join(path, key), spec[key], *_GATEWAY_KEYS[key][1])
            else:
                fields[key] = getattr(settings, key)
        limits = {**_SERVER_LIMITS, **_STDIO_LIMITS} if kind == "stdio" else _SERVER_LIMITS
        for key in limits.keys() & spec.keys():
            kind_of, bounds = limits[key]
            check_value = check.integer if kind_of == "int" else check.number
            fields[key] = check_value(_join(path, key), spec[key], *bounds)
        server: Any
        if kind == "stdio":
            _stdio_fields(check, path, spec, base_dir, fields)
            server = StdioServer
        else:
            fields["transport"] = _HTTP_TYPES[kind]
            _http_fields(check, path, spec, base_dir, fields)
            if "auth" in spec:
                fields["auth"] = parse_auth(check, _join(path, "auth"), spec["auth"], base_dir)
                if fields["auth"] is not None:
                    check_auth_backend(check, path, fields["auth"], fields)
            server = HttpServer
        if any(v is None for v in fields.values()):
            continue
        servers.append(server(name=name, **fields))
    _check_prefixes(check, servers, settings.separator)

    names = {s.name for s in servers} | set(disabled) | {n for n in (entries or {}) if isinstance(n, str)}
    policy = parse_policy(top, base_dir, check.problems, names)
    identity = parse_identity(top["identity"], "identity", base_dir, check.problems) if "identity" in top else None
    audit = None
    http = parse_http(top["http"], "http", check.problems) if "http" in top else HttpSettings()
    if http.bearer in ("required", "optional") and (identity is None or identity.jwt is None):
        check.problem(
            "http.bearer",
            f"is {http.bearer}, but identity.jwt is not configured: bearer tokens are verified with its keys, issuer and audience",
        )
    if "audit" in top:
        audit = parse_audit(top["audit"] if top["audit"] is not None else {}, "audit", base_dir, check.problems)
    oauth = _oauth_settings(check, top, servers, environ, base_dir)
    profiles = parse_profiles(check, top.get("profiles"), glob_problem=_glob_problem)
    surface = parse_surface(check, top)
    check_name_limits(check, surface, profiles)
    state = parse_state(check, top.get("state"))
    if (
        oauth is not None
        and oauth.browserCheck == "oidc"
        and (identity is None or identity.jwt is None or not identity.jwt.issuer)
    ):
        check.problem(
            "oauth.browserCheck",
            "is oidc, which signs the browser in at identity.jwt.issuer: configure identity.jwt with an issuer",
        )
    if check.problems:
        raise ConfigError(source, check.problems)
    servers.sort(key=lambda s: s.name)
    return Config(
        source=source,
        gateway=settings,
        servers=tuple(servers),
        disabled=tuple(disabled),
        policy=policy,
        identity=identity,
        audit=audit,
        http=http,
        oauth=oauth,
        profiles=profiles,
        surface=surface,
        state=state,
    )


def _oauth_settings(
    check: _Checker, top: dict[str, Any], servers: list[Any], environ: Mapping[str, str], base_dir: str | None
) -> OAuthSettings | None:
    """
    The C{oauth:} section, with its defaults when a backend has C{auth} and
    the section is absent; an C{auth: oauth} backend needs a store key.
    """
    with_auth = [s for s in servers if getattr(s, "auth", None) is not None]
    if "oauth" not in top and not with_auth:
        return None
    settings = parse_oauth_section(check, top.get("oauth"), environ, base_dir)
    if settings is not None and any(isinstance(s.auth, OAuthAuth) for s in with_auth) and not has_store_key(settings):
        check.problem("oauth.store", STORE_KEY_MISSING)
    return settings


def _glob_problem(pattern: str) -> str | None:
    """Why C{pattern} is not a glob of the roles' dialect, or None."""
    try:
        compile_pattern(pattern)
    except PatternError as e:
        return str(e)
    return None


#: What C{protocol} may say of a server (see L{twisted_mcp.backends.probe}).
PROTOCOLS = ("auto", "legacy", "modern")


def _protocol(check: _Checker, path: str, value: Any, sse: bool) -> str | None:
    if value not in PROTOCOLS:
        check.problem(path, f"must be auto, legacy or modern, got {_describe(value)}")
        return None
    if value == "modern" and sse:
        check.problem(
            path,
            "the HTTP+SSE transport (type: sse, 2024-11-05) is of the handshake era: modern (2026-07-28) servers speak Streamable HTTP (type: http); use auto or legacy",
        )
        return None
    return str(value)


#: The longest tool-name prefix: a longer one would leave no room for the
#: tool's own name within the 64 characters of an exposed name.
MAX_PREFIX = MAX_NAME - 10


def _prefix(check: _Checker, path: str, value: Any) -> str | None:
    prefix = check.string(path, value, nonempty=False)
    if prefix is None:
        return None
    if prefix and not NAME_RE.match(prefix):
        check.problem(path, "a tool-name prefix may use only A-Z a-z 0-9 _ - (or be empty: the tools keep their own names)")
        return None
    if len(prefix) > MAX_PREFIX:
        check.problem(path, f"a tool-name prefix may have at most {MAX_PREFIX} characters (exposed names are cut at {MAX_NAME})")
        return None
    return prefix


def _check_prefixes(check: _Checker, servers: list[Any], separator: str) -> None:
    """
    Two servers whose tools and prompts would be named under the same
    prefix are refused: any tool or prompt they both offer would be shown
    to clients under one name, and only one of them could be called.
    """
    owners: dict[str, str] = {}
    for server in sorted(servers, key=lambda s: s.name):
        prefix = name_prefix(server.name, server.prefix, separator)
        other = owners.setdefault(prefix, server.name)
        if other != server.name:
            shown = f"the prefix {prefix!r}" if prefix else "no prefix"
            check.problem(
                _join(_join("mcpServers", server.name), "prefix"),
                f"the servers {other!r} and {server.name!r} would both name their tools and prompts with {shown}, "
                "so a tool of one could hide a tool of the other: give one of them another prefix",
            )


def _stdio_fields(check: _Checker, path: str, spec: dict[str, Any], base_dir: str | None, fields: dict[str, Any]) -> None:
    if "command" not in spec:
        check.problem(_join(path, "command"), "missing: the program to run (or a url, for an HTTP server)")
        fields["command"] = None
    else:
        fields["command"] = check.string(_join(path, "command"), spec["command"])
    if "args" in spec:
        fields["args"] = check.string_list(_join(path, "args"), spec["args"])
    if "env" in spec:
        fields["env"] = _string_map(check, _join(path, "env"), spec["env"], "environment variable")
    if "cwd" in spec:
        cwd = check.string(_join(path, "cwd"), spec["cwd"])
        if cwd is not None:
            cwd = _resolve(cwd, base_dir)
            if not os.path.isdir(cwd):
                check.problem(_join(path, "cwd"), f"no such directory: {cwd}")
            fields["cwd"] = cwd


def _http_fields(check: _Checker, path: str, spec: dict[str, Any], base_dir: str | None, fields: dict[str, Any]) -> None:
    upath = _join(path, "url")
    if "headers" in spec:
        fields["headers"] = _string_map(check, _join(path, "headers"), spec["headers"], "header")
    if "url" not in spec:
        check.problem(upath, "missing: the server's address (http:// or https://)")
        fields["url"] = None
    else:
        url = check.string(upath, spec["url"])
        if url is not None:
            parts = split_url(url)
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                check.problem(
                    upath, f"expected an http:// or https:// address with a valid host and port, got {shown_url(url)!r}"
                )
                url = None
            else:
                url = _credentials_to_header(check, path, url, fields)
        fields["url"] = url
    if "connectTimeout" in spec:
        fields["connectTimeout"] = check.number(_join(path, "connectTimeout"), spec["connectTimeout"], 0.1, 600)
    if "maxConnections" in spec:
        fields["maxConnections"] = check.integer(_join(path, "maxConnections"), spec["maxConnections"], 1, 1024)
    if "maxRequests" in spec:
        fields["maxRequests"] = check.integer(_join(path, "maxRequests"), spec["maxRequests"], 1, 100_000)
    if "tls" in spec:
        tpath = _join(path, "tls")
        tls = check.mapping(tpath, spec["tls"])
        if tls is not None:
            check.unknown(tpath, tls, _TLS_KEYS)
            for key in sorted(_TLS_KEYS & set(tls)):
                value = check.string(_join(tpath, key), tls[key])
                if value is not None:
                    value = _resolve(value, base_dir)
                    if not os.path.isfile(value):
                        check.problem(_join(tpath, key), f"no such file: {value}")
                fields[key] = value
            if "keyFile" in tls and "certFile" not in tls:
                check.problem(_join(tpath, "keyFile"), "a client key needs its certificate: set certFile too")


def _credentials_to_header(check: _Checker, path: str, url: str, fields: dict[str, Any]) -> str | None:
    """The URL without its userinfo, which becomes an Authorization header
    (never both: an explicit header and credentials in the URL are refused)."""
    url, authorization = split_credentials(url)
    if authorization is None:
        return url
    headers = fields.get("headers") or {}
    if any(name.lower() == "authorization" for name in headers):
        check.problem(
            _join(path, "url"),
            "has a user name and password, and headers.Authorization is set too: keep only one of them",
        )
        return None
    fields["headers"] = {**headers, "Authorization": authorization}
    return url


def _string_map(check: _Checker, path: str, value: Any, what: str) -> dict[str, str] | None:
    mapping = check.mapping(path, value)
    if mapping is None:
        return None
    out: dict[str, str] = {}
    for k, v in mapping.items():
        vpath = _join(path, k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(k, str) or not k or "=" in k or "\n" in k or ":" in k and what == "header":
            check.problem(vpath, f"not a valid {what} name")
        elif check.string(vpath, v, nonempty=False) is not None:
            if "\n" in v or "\r" in v:
                check.problem(vpath, "a value may not contain line breaks")
            elif what == "header" and not _latin1(k + v):
                check.problem(vpath, "HTTP headers carry Latin-1 text only (percent-encode or base64 anything else)")
            else:
                out[k] = v
    return out


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False


def load(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the config file at C{path}."""
    try:
        text = read_file(path)
    except OSError as e:
        raise ConfigError(path, [f"cannot read the file: {e.strerror or e}"])
    except UnicodeDecodeError as e:
        raise ConfigError(path, [f"not UTF-8 text: {e}"])
    data = parse_text(text, path)
    return build(data, path, environ, os.path.dirname(os.path.abspath(path)))
