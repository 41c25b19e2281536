"""
The gateway's configuration file: YAML (or JSON), with a top-level
C{mcpServers} mapping in the shape MCP clients already use, so that an
existing Claude Desktop or Claude Code config works as it is.

Loading turns the file into frozen attrs models.  Every problem found is
reported with the key path it concerns and what was expected, all at once,
in one L{ConfigError}.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping
from urllib.parse import urlsplit

import attrs
import yaml

from twisted_mcp.urls import shown_url, split_credentials

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}])*))?\}|\$\{[^}]*\}?")

#: Bounds on every configuration file the gateway reads (its config, the pin
#: lock file, and, with a larger size, the client configs `import` reads), so
#: that a hostile or broken file costs a clear error, not minutes of work or
#: gigabytes of memory.  Each is far beyond what a real configuration needs.
MAX_FILE_BYTES = 4 * 1024 * 1024
#: Mappings and lists inside one another.
MAX_DEPTH = 64
#: The nodes that YAML aliases (``*name``) stand for, counted each time one is
#: used: anchors for shared blocks are fine, a "billion laughs" is not.
MAX_ALIAS_NODES = 10_000

DEFAULT_INHERIT_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
)


class ConfigError(Exception):
    """A configuration that cannot be used; C{problems} lists every reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s) in the configuration:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


@attrs.frozen
class GatewaySettings:
    separator: str = "__"
    maxMessageBytes: int = 16 * 1024 * 1024
    #: The longest message a client may send before its initialize is answered.
    maxHandshakeBytes: int = 64 * 1024
    #: Requests one client session may have in flight at once.
    maxCallsInFlight: int = 256
    #: Connections to the --listen sockets, over all of them.
    maxClients: int = 1024
    #: Connections from one peer: one uid on a Unix socket, one IP address on TCP.
    maxClientsPerPeer: int = 256
    #: Seconds a socket client has to send its initialize.
    handshakeTimeout: float = 30.0
    #: Seconds a socket client has to finish a message it began.
    messageTimeout: float = 60.0
    #: File descriptors kept free for backends: no client connection is taken beyond them.
    descriptorReserve: int = 64
    #: Connections to the admin endpoint at once.
    adminMaxConnections: int = 16
    #: Seconds an admin connection may stay idle (or take to send a request).
    adminTimeout: float = 30.0
    #: The largest request body the admin endpoint reads.
    adminMaxBodyBytes: int = 64 * 1024
    #: Kill switch entries POST /kill may hold at once (principals, backends
    #: and tools together; the config's own entries do not count).
    maxKillSwitchEntries: int = 1024
    discoveryTimeout: float = 30.0
    callTimeout: float = 60.0
    shutdownGrace: float = 10.0
    shutdownTimeout: float = 5.0
    restartDelay: float = 1.0
    restartMaxDelay: float = 60.0
    stableAfter: float = 30.0
    inheritEnv: tuple[str, ...] = DEFAULT_INHERIT_ENV
    #: A stdio backend's stderr in the log: each line cut after this many
    #: bytes, at most this many lines a second (in bursts of stderrBurst).
    stderrLineBytes: int = 4096
    stderrLinesPerSecond: int = 100
    stderrBurst: int = 200
    #: A bearer token the admin endpoint (--admin) requires, if set.
    adminToken: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class _Server:
    """What every backend has: a name and its timing."""

    name: str
    #: /readyz on the admin endpoint answers 503 while a required backend is not up.
    required: bool = False
    #: One instance per client session (for stateful servers), started on
    #: the session's first call and stopped when the session ends.
    perSession: bool = False
    discoveryTimeout: float = 30.0
    callTimeout: float = 60.0
    shutdownTimeout: float = 5.0
    restartDelay: float = 1.0
    restartMaxDelay: float = 60.0
    stableAfter: float = 30.0
    #: perSession: instances running at once, over every session.
    maxInstances: int = 32
    #: perSession: instances running at once for one principal.
    maxInstancesPerPrincipal: int = 4
    #: perSession: an instance without a call for this long is stopped
    #: (its session stays; the next call starts a new one); 0: never.
    idleTimeout: float = 600.0


@attrs.frozen(kw_only=True)
class StdioServer(_Server):
    """One stdio MCP server the gateway starts and supervises."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict)
    cwd: str | None = None
    #: Bytes that may wait for the server to read them before new calls
    #: are refused as busy; None: 4 x gateway.maxMessageBytes, at least 1 MiB.
    maxQueuedBytes: int | None = None
    #: A server that writes nothing (not even the answer to a ping) for this
    #: long is taken for dead and restarted; 0: never.
    livenessTimeout: float = 300.0


@attrs.frozen(kw_only=True)
class HttpServer(_Server):
    """
    One remote MCP server reached over HTTP: Streamable HTTP
    (C{transport="streamable"}) or the legacy HTTP+SSE transport
    (C{transport="sse"}).
    """

    url: str
    transport: str = "streamable"
    headers: Mapping[str, str] = attrs.field(factory=dict)
    connectTimeout: float = 10.0
    maxConnections: int = 32
    #: Requests in flight to the server at once (each holds a connection).
    maxRequests: int = 256
    caFile: str | None = None
    certFile: str | None = None
    keyFile: str | None = None


ServerConfig = StdioServer | HttpServer


@attrs.frozen
class Config:
    source: str
    gateway: GatewaySettings
    servers: tuple[ServerConfig, ...]
    disabled: tuple[str, ...] = ()
    #: The policy's rules (twisted_mcp.policy.rules.PolicyConfig).
    policy: Any = None
    #: twisted_mcp.policy.identity.IdentityConfig, or None: the local principal.
    identity: Any = None
    #: twisted_mcp.policy.audit.AuditConfig, or None: no audit trail.
    audit: Any = None


class _Checker:
    """Collects problems, each with its key path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    def mapping(self, path: str, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_describe(value)}")
            return None
        return value

    def unknown(self, path: str, value: dict[str, Any], known: Any) -> None:
        for key in value:
            if key not in known:
                hint = ", ".join(sorted(known))
                self.problem(_join(path, key), f"unknown key (expected one of: {hint})")

    def string(self, path: str, value: Any, nonempty: bool = True) -> str | None:
        if not isinstance(value, str):
            self.problem(path, f"expected a string, got {_describe(value)}")
            return None
        if nonempty and not value:
            self.problem(path, "expected a non-empty string")
            return None
        return value

    def number(self, path: str, value: Any, minimum: float, maximum: float) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(path, f"expected a number of seconds, got {_describe(value)}")
            return None
        if not (minimum <= value <= maximum):
            self.problem(path, f"expected a number from {minimum:g} to {maximum:g}, got {value!r}")
            return None
        return float(value)

    def integer(self, path: str, value: Any, minimum: int, maximum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"expected a whole number, got {_describe(value)}")
            return None
        if not (minimum <= value <= maximum):
            self.problem(path, f"expected a whole number from {minimum} to {maximum}, got {value}")
            return None
        return value

    def boolean(self, path: str, value: Any) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, f"expected true or false, got {_describe(value)}")
            return None
        return value

    def string_list(self, path: str, value: Any) -> tuple[str, ...] | None:
        if not isinstance(value, list):
            self.problem(path, f"expected a list of strings, got {_describe(value)}")
            return None
        out = []
        for i, item in enumerate(value):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            s = self.string(f"{path}[{i}]", item, nonempty=False)
            if s is not None:
                out.append(s)
        return tuple(out)


def _join(path: str, key: Any) -> str:
    key = str(key)
    if NAME_RE.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    kind = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
    text = json.dumps(value, default=str) if not isinstance(value, (dict, list)) else ""
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}".rstrip()


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


def _duplicate_keys(node: yaml.Node, path: str, found: list[str]) -> None:
    """Find repeated keys in a composed YAML document, with their key paths."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
                where = _join(path, key)
                if key in seen:
                    found.append(f"{where}: duplicate key (line {key_node.start_mark.line + 1}); each key may appear once")
                seen.add(key)
            else:
                where = path
            _duplicate_keys(value_node, where, found)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{i}]", found)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _BoundedLoader(yaml.SafeLoader):
    """
    A SafeLoader that refuses, while it composes the document (before any
    value is built, and before anything walks the document as a tree),
    nesting deeper than L{MAX_DEPTH} and aliases that stand for more than
    L{MAX_ALIAS_NODES} nodes in all.
    """

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.depth = 0
        self.alias_nodes = 0
        #: id(node) -> how many nodes it holds with its aliases expanded;
        #: a node being composed has none yet.
        self.sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        node: Any
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(id(node))
            if size is None:
                raise ConfigError(self.source, [f"{self.source}: a YAML alias inside the node it refers to (recursive), at line {line}"])
            self.alias_nodes += size
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise ConfigError(
                    self.source,
                    [f"{self.source}: YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (the limit), at line {line}"],
                )
            return node
        if self.depth >= MAX_DEPTH:
            raise ConfigError(self.source, [_too_deep(self.source, f" at line {line}")])
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self.sizes[id(node)] = 1 + sum(self.sizes[id(child)] for child in _children(node))
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A value that does not fit its tag (``!!int abc``, ``!!bool maybe``,
        # ``!!int`` with no value, the timestamp ``0000-00-00``) fails in
        # SafeConstructor with whatever Python error its conversion raised.
        try:
            return super().construct_object(node, deep)
        except (ValueError, LookupError, AttributeError, OverflowError):
            mark = node.start_mark
            where = f"at line {mark.line + 1}, column {mark.column + 1}"
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise ConfigError(self.source, [f"not valid YAML {where}: the value does not fit its type ({tag})"]) from None


def _too_deep(source: str, where: str = "") -> str:
    return f"{source}: nested deeper than {MAX_DEPTH} levels (the limit){where}"


def _check_depth(data: Any, source: str) -> None:
    """Raise L{ConfigError} if C{data} nests deeper than L{MAX_DEPTH}."""
    todo = [(data, 1)]
    while todo:
        node, depth = todo.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise ConfigError(source, [_too_deep(source)])
        todo.extend((child, depth + 1) for child in children)


def json_document(text: str, source: str, pairs: Any) -> Any:
    """
    C{json.loads} within the bounds of a configuration file (deep nesting
    is a L{ConfigError}, not a C{RecursionError}); C{pairs} is its
    C{object_pairs_hook}.  Invalid JSON raises C{ValueError}.
    """
    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except RecursionError:
        raise ConfigError(source, [_too_deep(source)]) from None
    _check_depth(data, source)
    return data


def read_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """
    The UTF-8 text of the file at C{path}, of at most C{max_bytes}: no more
    than that is ever read, whatever the file is (C{/dev/zero}, a pipe).

    @raise ConfigError: the file is larger.
    @raise OSError: it cannot be read.
    @raise UnicodeDecodeError: it is not UTF-8.
    """
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(path, [f"{path}: larger than {_size(max_bytes)} (the limit for this file)"])
    return data.decode("utf-8")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n} bytes"


def _load_yaml(text: str, source: str) -> Any:
    loader = _BoundedLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates: list[str] = []
        _duplicate_keys(node, "", duplicates)
        if duplicates:
            raise ConfigError(source, duplicates)
        return loader.construct_document(node)
    except TypeError as e:
        # An unhashable mapping key (``? [a, b]``).
        raise ConfigError(source, [f"not valid here: {e} (mapping keys must be plain values)"])
    finally:
        loader.dispose()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_text(text: str, source: str) -> Any:
    """Parse YAML or JSON text; a syntax error becomes a L{ConfigError}."""
    stripped = text.lstrip()
    if source.endswith(".json") or stripped.startswith("{"):
        try:
            return json_document(text, source, _no_duplicates)
        except ValueError as e:
            if source.endswith(".json"):
                raise ConfigError(source, [f"not valid JSON: {e}"])
    try:
        return _load_yaml(text, source)
    except yaml.YAMLError as e:
        raise ConfigError(source, [_yaml_problem(e)])


def _yaml_problem(e: yaml.YAMLError) -> str:
    """Where and what, without quoting the file's text (it may hold secrets)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or type(e).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {what}"


_GATEWAY_KEYS: dict[str, tuple[str, Any]] = {
    "separator": ("separator", None),
    "maxMessageBytes": ("int", (1024, 1 << 30)),
    "maxHandshakeBytes": ("int", (1024, 1 << 30)),
    "maxCallsInFlight": ("int", (1, 1 << 20)),
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
    "adminToken": ("token", None),
}
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
    "type", "command", "args", "env", "cwd", "disabled", "required", "perSession",
    *_SERVER_TIMEOUTS, *_SERVER_LIMITS, *_STDIO_LIMITS,
}
_HTTP_KEYS = {
    "type",
    "url",
    "headers",
    "connectTimeout",
    "maxConnections",
    "maxRequests",
    "tls",
    "disabled",
    "required",
    "perSession",
    *_SERVER_TIMEOUTS,
    *_SERVER_LIMITS,
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
            check.problem(path, "a server name must be a string (quote it: YAML reads on, off, yes, no, true, false and numbers as other types)")
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
        if kind not in _HTTP_TYPES and kind != "stdio":
            check.problem(
                _join(path, "type"),
                f"expected \"stdio\", \"http\" (Streamable HTTP) or \"sse\" (the legacy HTTP+SSE transport), got {_describe(kind)}",
            )
            continue
        check.unknown(path, spec, _STDIO_KEYS if kind == "stdio" else _HTTP_KEYS)
        if "disabled" in spec and check.boolean(_join(path, "disabled"), spec["disabled"]):
            disabled.append(name)
            continue
        fields: dict[str, Any] = {}
        for flag in ("required", "perSession"):
            if flag in spec:
                fields[flag] = check.boolean(_join(path, flag), spec[flag])
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
            server = HttpServer
        if any(v is None for v in fields.values()):
            continue
        servers.append(server(name=name, **fields))

    from twisted_mcp.policy.audit import parse_audit
    from twisted_mcp.policy.identity import parse_identity
    from twisted_mcp.policy.rules import parse_policy

    names = {s.name for s in servers} | set(disabled) | {n for n in (entries or {}) if isinstance(n, str)}
    policy = parse_policy(top, base_dir, check.problems, names)
    identity = parse_identity(top["identity"], "identity", base_dir, check.problems) if "identity" in top else None
    audit = None
    if "audit" in top:
        audit = parse_audit(top["audit"] if top["audit"] is not None else {}, "audit", base_dir, check.problems)
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
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                check.problem(upath, f"expected an http:// or https:// address, got {shown_url(url)!r}")
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


def _resolve(path: str, base_dir: str | None) -> str:
    path = os.path.expanduser(path)
    if not os.path.isabs(path) and base_dir is not None:
        path = os.path.normpath(os.path.join(base_dir, path))
    return path


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

