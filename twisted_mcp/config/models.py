"""
The configuration as frozen attrs models: the C{gateway:} settings, each
server of C{mcpServers} (stdio or HTTP) with its C{auth:}, the C{oauth:}
section, and the whole L{Config}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import attrs

from twisted_mcp.config.surface import SurfaceSettings

if TYPE_CHECKING:
    from twisted_mcp.state.config import StateSettings

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


@attrs.frozen
class Shaping:
    """
    What a backend's C{tools:}, C{prompts:} or C{resources:} section does
    to its listing before clients see it (design §2.1): a filter over the
    server's own names (URIs and URI templates for resources), renames
    (tools and prompts) and overrides of a few display fields.
    """

    #: Globs over the server's own names: kept when one matches ...
    allow: tuple[str, ...] = ("*",)
    #: ... and none of these does (deny beats allow).
    deny: tuple[str, ...] = ()
    #: Own name -> the new own name (the backend's prefix still applies).
    rename: Mapping[str, str] = attrs.field(factory=dict)
    #: Own name (or URI) -> the fields that replace the server's; C{annotations}
    #: are merged key by key (a None value removes the key).
    overrides: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


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
    #: Order among backends when a client's budget cuts the list (higher first).
    priority: int = 0
    #: What is done to the server's tools, prompts and resources before
    #: clients see them; None: nothing.
    tools: Shaping | None = None
    prompts: Shaping | None = None
    resources: Shaping | None = None


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


@attrs.frozen
class OAuthClient:
    """A client registered beforehand at an authorization server (C{auth.oauth.client})."""

    id: str
    #: None: a public client (authMethod none).  Secret: never shown.
    secret: str | None = attrs.field(default=None, repr=False)
    #: client_secret_basic, client_secret_post or none; None: as the server's metadata allows.
    authMethod: str | None = None


@attrs.frozen
class OAuthAuth:
    """
    C{auth: oauth} (or C{auth: {oauth: {...}}}): each principal consents
    once at the backend's authorization server, and its calls carry its own
    token.  Everything not set here is discovered (design §3).
    """

    #: Scopes asked for; empty: the 401's scope, else the resource's scopes_supported.
    scopes: tuple[str, ...] = ()
    #: A pre-registered client; None: CIMD or dynamic registration.
    client: OAuthClient | None = None
    #: The only authorization server accepted (its issuer identifier), if set.
    issuer: str | None = None
    #: Parameters added to the authorization request (provider quirks).
    extraAuthorizeParams: Mapping[str, str] = attrs.field(factory=dict)
    #: Send RFC 8707 C{resource} (false only for an AS that rejects it).
    sendResource: bool = True
    #: Whose token lists the backend's tools; None: see design §6.3.
    catalogAs: str | None = None


@attrs.frozen
class ClientCredentialsAuth:
    """C{auth: {clientCredentials: {...}}}: one machine identity for every call."""

    id: str
    #: Secret: never shown.
    secret: str | None = attrs.field(repr=False)
    #: client_secret_basic or client_secret_post; None: as the server's metadata allows.
    authMethod: str | None = None
    scopes: tuple[str, ...] = ()
    #: None: discovered from the backend's 401 (design §3).
    tokenEndpoint: str | None = None


BackendAuth = OAuthAuth | ClientCredentialsAuth


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
    #: How the gateway authorizes itself toward the server; None: headers only.
    auth: OAuthAuth | ClientCredentialsAuth | None = None


ServerConfig = StdioServer | HttpServer


@attrs.frozen
class OAuthStoreSettings:
    """
    Where OAuth tokens and client registrations are kept (C{oauth.store}),
    and the keys that seal them.  Only the keys' sources are held here:
    their bytes are read at start.
    """

    path: str
    keyFile: str | None
    keyEnv: str | None
    keyCredential: str | None
    #: Keys that still open records sealed before a rotation.
    oldKeyFiles: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class OAuthSettings:
    """The gateway-wide C{oauth:} section (design §2.2)."""

    #: Where browsers and authorization servers reach the HTTP front; None:
    #: no CIMD, no /oauth/* routes (CLI login only).
    publicUrl: str | None = None
    clientName: str = "twisted-mcp"
    #: None: <publicUrl>/oauth/client.json.
    clientMetadataUrl: str | None = None
    store: OAuthStoreSettings
    #: oidc or none; None: not configured (no connect page).
    browserCheck: str | None = None
    #: The gateway's client at its own identity provider (browserCheck: oidc).
    browserCheckClient: OAuthClient | None = None
    authorizationTimeout: float = 600.0
    consentWait: float = 120.0
    refreshBefore: float = 0.8
    refreshMaxEarly: float = 300.0
    requestTimeout: float = 10.0
    maxMetadataBytes: int = 65536
    maxPendingPerPrincipal: int = 4


@attrs.frozen
class Profile:
    """
    One entry of C{profiles:} (design of issue 14, section 2.2): a selection
    of the shaped catalog, served at C{<http.path>/<name>} and on any
    C{--listen profile:<name>:<endpoint>}.  A selection, never a grant: the
    roles decide inside it.
    """

    name: str
    #: Globs and exact SHAPED tool names, in order (C{"*"}: all).
    tools: tuple[str, ...] = ()
    #: In search mode, listed beside the two search tools.
    pinned: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    #: URI globs.
    resources: tuple[str, ...] = ()
    #: From C{budget:}; None: not set by the profile (the client tables decide).
    maxTools: int | None = None
    maxNameLength: int | None = None
    nameOverhead: int | None = None
    #: auto, always or never; None: not set by the profile.
    search: str | None = None
    instructions: str | None = None


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
    #: The C{oauth:} section; present (with defaults) whenever a backend has C{auth}.
    oauth: OAuthSettings | None = None
    #: The C{profiles:} section by name ({}: none; C{default} replaces the default view).
    profiles: Mapping[str, Profile] = attrs.field(factory=dict)
    #: How tool lists are fitted to clients (surface:, search:, clients:).
    surface: SurfaceSettings = SurfaceSettings()
    #: The C{state:} section: what replicas share through Redis; None: everything in this process.
    state: StateSettings | None = None
