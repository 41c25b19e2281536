"""
The configuration as frozen attrs models: the C{gateway:} settings, each
server of C{mcpServers} (stdio or HTTP), and the whole L{Config}.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

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


@attrs.frozen
class GatewaySettings:
    separator: str = "__"
    maxMessageBytes: int = 16 * 1024 * 1024
    #: The longest message a client may send before its initialize is answered.
    maxHandshakeBytes: int = 64 * 1024
    #: Requests one client session may have in flight at once.
    maxCallsInFlight: int = 256
    #: subscriptions/listen streams one client session may have open at once (2026-07-28).
    maxListensPerSession: int = 8
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
    #: 2026-07-28 calls held waiting for their clients' input, at once and per principal.
    maxHeldCalls: int = 128
    maxHeldCallsPerPrincipal: int = 8
    #: Seconds a held call waits for its client's retry before it ends.
    heldCallTimeout: float = 300.0
    #: Rounds of input a 2026-07-28 backend may ask of a handshake-era client in one call.
    maxInputRounds: int = 8
    #: Seconds a requestState token the gateway seals stays valid.
    requestStateTtl: float = 600.0
    #: HMAC keys for requestState tokens (the first seals, all verify); none:
    #: a random key per process.  Secrets: never shown.
    requestStateKeys: tuple[str, ...] = attrs.field(default=(), repr=False)
    #: A bearer token the admin endpoint (--admin) requires, if set.
    adminToken: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class _Server:
    """What every backend has: a name and its timing."""

    name: str
    #: What comes before the names of the backend's tools and prompts in the
    #: merged catalog; None: C{<name><separator>}; "" serves them unprefixed.
    prefix: str | None = None
    #: /readyz on the admin endpoint answers 503 while a required backend is not up.
    required: bool = False
    #: One instance per client session (for stateful servers), started on
    #: the session's first call and stopped when the session ends.
    perSession: bool = False
    #: Which MCP era to speak to it: C{auto} probes C{server/discover} and
    #: falls back to C{initialize}; C{legacy} (the handshake era) and
    #: C{modern} (2026-07-28) skip the probe.
    protocol: str = "auto"
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
    #: twisted_mcp.policy.identity.config.IdentityConfig, or None: the local principal.
    identity: Any = None
    #: twisted_mcp.policy.audit.AuditConfig, or None: no audit trail.
    audit: Any = None
    #: twisted_mcp.frontends.http_config.HttpSettings: the Streamable HTTP front's settings.
    http: Any = None
