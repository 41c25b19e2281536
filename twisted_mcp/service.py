"""
The gateway's service tree, started and stopped in order.

Start: the shared state (C{state:}; in-process without one), backends
(their discovery runs in the background, each bounded), then the catalog,
then the front-ends.  Stop, in reverse: front-ends drain their calls in
flight (bounded by the grace period), then every backend is stopped in
parallel (close stdin, then TERM, then KILL its process group), then the
shared state's connections are closed.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.backends.stdio import StdioBackend, stderr_limits, stop_all
from twisted_mcp.config import Config, HttpServer
from twisted_mcp.config.models import OAuthAuth
from twisted_mcp.dispatch.authorization import announce, consent_for
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.ops.shared_state import SharedStateSync
from twisted_mcp.policy.identity.revocation import revoked_ids
from twisted_mcp.policy.peers import ConnectionIdentity
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.reload import Reloading
from twisted_mcp.state.base import SharedState

if TYPE_CHECKING:
    from twisted_mcp.backends.http import HttpBackend
    from twisted_mcp.backends.oauth.broker import OAuthBroker

# What only some configurations use is imported when the service first
# needs it (HTTP backends and OAuth, the audit trail, identity), so that a
# gateway without them does not load their libraries (treq, twisted.web,
# sqlite3, jwt): the config was validated in full at start-up already.

log = Logger()


def __getattr__(name: str) -> Any:
    """
    C{HttpBackend}, imported with the first HTTP backend (it brings treq and
    twisted.web), then kept in this module: the service makes HTTP backends
    with whatever this module's C{HttpBackend} is.
    """
    if name == "HttpBackend":
        from twisted_mcp.backends.http import HttpBackend

        globals()[name] = HttpBackend
        return HttpBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _http_backend_class() -> type[HttpBackend]:
    """This module's C{HttpBackend} (see L{__getattr__})."""
    return sys.modules[__name__].HttpBackend  # type: ignore[no-any-return]


def _build_broker(config: Config, clock: IReactorTime, environ: dict[str, str] | None) -> OAuthBroker | None:
    """The OAuth broker of C{config}'s backends with C{auth:} (None without any: then no C{oauth:} settings)."""
    if config.oauth is None:
        return None
    from twisted_mcp.backends.oauth.assembly import build_broker

    return build_broker(config, clock, environ)


class GatewayService(Reloading, MultiService):
    """
    The root service: owns the backends, the L{Gateway} and the front-ends.

    Front-ends are added with L{add_frontend}, given a factory that takes
    the L{Gateway}.

    @param state: the shared state to use (tests); by default the one
        C{config.state} describes (L{make_state}).
    """

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        spawner: IReactorProcess,
        environ: dict[str, str] | None = None,
        state: SharedState | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        #: What the replicas share (C{state:}); in-process (every store None) without it.
        self.state = state if state is not None else make_state(config, clock)
        #: The gateway settings it started with (a reload does not change them).
        self.settings = config.gateway
        #: The http settings its HTTP listeners started with (a reload does not change them).
        self.http_started = config.http
        #: Whether its HTTP listeners started with identity.jwt (None: no HTTP listener).
        self.http_jwt_at_start: bool | None = None
        self.clock = clock
        self.spawner = spawner
        self.environ = environ
        self.started_at = clock.seconds()
        #: True once stopping began (/readyz then answers 503).
        self.stopping = False
        #: The OAuth broker of the backends with C{auth:} (None without any).
        self.oauth = _build_broker(config, clock, environ)
        if self.oauth is not None:
            self.oauth.on_authorized(self._authorized)
        self.backends: list[Backend] = [self._make_backend(server) for server in config.servers]
        bound = max([s.discoveryTimeout for s in config.servers] or [0.0]) + 1.0
        self.gateway = Gateway(self.backends, config.gateway.separator, clock, bound, self._spawn)
        self.gateway.reverse.held.configure(config.gateway)
        self.gateway.max_input_rounds = config.gateway.maxInputRounds
        self.gateway.surface = config.surface
        self.gateway.consent = consent_for(config, self.oauth, clock)
        self.gateway.profiles = config.profiles
        self.gateway.state = self.state
        #: The C{--listen} values bound to each profile (a reload may not remove those profiles).
        self.profile_listeners: dict[str, tuple[str, ...]] = {}
        for b in self.backends:
            b.add_listener(self._idle_template)
        self.frontends: list[Service] = []
        #: Backends taken out by a reload, finishing their calls before they stop.
        self.retiring: set[Backend] = set()
        self.audit: Any = None
        if config.audit is not None and config.audit.sink != "none":
            # With state:, each record names the replica that wrote it (several write one trail).
            replica = self.state.replica if getattr(config, "state", None) is not None else None
            from twisted_mcp.policy.audit.log import AuditLog

            self.audit = AuditLog(config.audit, clock, clock, replica=replica)
        self.authenticator, self.identity = self._make_identity(config)
        rules = config.policy if config.policy is not None else PolicyConfig()
        self.gateway.policy = self._make_policy(rules, self.identity, self.audit)
        #: Applies the shared flags, availability and breakers to the policy in force.
        self.state_sync = SharedStateSync(self.state, lambda: self.gateway.policy, self.views, self.notify_views)

    def _make_policy(self, rules: PolicyConfig, identity: Any, audit: Any) -> Policy:
        """A policy for C{rules}, over the service's shared state."""
        return Policy(rules, self.settings.separator, self.clock, self._authenticate_with(identity), audit, state=self.state)

    def _make_backend(self, server: Any) -> Backend:
        settings = self.settings
        if isinstance(server, HttpServer):
            if server.auth is not None:
                server = self._with_oauth(server)
            return _http_backend_class()(server, self.clock, settings.maxMessageBytes, oauth=self.oauth)
        return StdioBackend(
            server, self.spawner, self.clock, settings.inheritEnv, settings.maxMessageBytes, self.environ, stderr_limits(settings)
        )

    def _with_oauth(self, server: HttpServer) -> HttpServer:
        """
        C{server} (with C{auth}) known to the broker, its C{catalogAs}
        resolved to a principal key.  Refused (a reload then is) when the
        gateway started without what it needs, or when the server's URL
        changes while its old backend may still be finishing calls: tokens
        for one server must never go to another.
        """
        broker = self.oauth
        if broker is None:
            raise ValueError(
                f"backend {server.name!r} has auth: the gateway started without OAuth backends; restart it to add one"
            )
        auth = server.auth
        if isinstance(auth, OAuthAuth):
            if not broker.keeps_tokens_on_disk:
                raise ValueError(
                    f"backend {server.name!r} has auth: oauth, and the gateway started without a token store; restart it to add one"
                )
            if auth.catalogAs is not None:
                from twisted_mcp.ops.admin_oauth import PrincipalUnknown, resolve_principal

                try:
                    catalog = resolve_principal(self.config.identity, auth.catalogAs)
                except PrincipalUnknown as e:
                    raise ValueError(f"mcpServers.{server.name}.auth.oauth.catalogAs: {e}") from None
                server = attrs.evolve(server, auth=attrs.evolve(auth, catalogAs=catalog))
        known = broker.backend_url(server.name)
        if known is not None and known != server.url:
            raise ValueError(
                f"mcpServers.{server.name}.url: the URL of a server with auth cannot change on reload; restart the gateway"
            )
        broker.add_backend(server.name, server.url, server.auth)
        return server

    def _authorized(self, backend: str, principal: str) -> None:
        """
        A principal authorized toward C{backend}: audited (who, which
        server; never a token), and the backend, if it waits to restart for
        want of a token, starts now.
        """
        self.gateway.policy.audit_event("oauth/authorized", principal, backend)
        http_backend = _http_backend_class()
        for b in self.backends:
            if b.name == backend and isinstance(b, http_backend):
                b.authorized()

    def _spawn(self, template: Backend) -> Backend:
        """A fresh, started instance of a per-session backend."""
        if self.stopping:
            raise template.unavailable()
        instance = self._make_backend(template.config)  # type: ignore[attr-defined]
        instance.latency = template.latency  # one histogram per backend name
        instance.startService()
        return instance

    def _idle_template(self, backend: Backend) -> None:
        """A per-session backend's shared instance only discovers the tools:
        once it has, it stops (each session gets its own instance)."""
        if backend.per_session and backend.state.value == "up":
            log.info(
                "backend {backend} is per-session: its {n} tool(s) are discovered; each client session "
                "starts its own instance on first use",
                backend=backend.name,
                n=len(backend.tools),
            )
            self.clock.callLater(0, lambda: stop_all([backend]))

    def _make_identity(self, config: Config) -> tuple[Any, Any]:
        if config.identity is None:
            return None, None
        authenticator = None
        if config.identity.jwt is not None or config.identity.principal is not None:
            from twisted_mcp.policy.identity.authenticator import Authenticator

            http = None
            if config.identity.jwt is not None and config.identity.jwt.jwksUrl:
                from treq.client import HTTPClient
                from twisted.web.client import Agent

                http = HTTPClient(Agent(self.clock))
            environ = os.environ if self.environ is None else self.environ
            authenticator = Authenticator(config.identity, environ, self.clock, http, self._revoked)
        identity = ConnectionIdentity(config.identity, authenticator.authenticate if authenticator else None)
        return authenticator, identity

    def _revoked(self) -> set[str]:
        """The ids of the revoked tokens the policy in force enforces (C{policy.revoked})."""
        return revoked_ids(self.gateway.policy)

    @staticmethod
    def _authenticate_with(identity: Any) -> Callable[[Any], Any] | None:
        return None if identity is None else identity.resolve

    def add_frontend(self, factory: Callable[[Gateway], Service]) -> Service:
        frontend = factory(self.gateway)
        self.frontends.append(frontend)
        return frontend

    def startService(self) -> None:
        Service.startService(self)
        self._start_state()
        if self.audit is not None:
            self.audit.start()
        else:
            log.info("no audit trail is configured (add an `audit:` section to keep one)")
        if self.authenticator is not None:
            self.authenticator.start()
        if self.identity is None:
            log.warn(
                "NO IDENTITY IS CONFIGURED: every request runs as the local principal with every "
                "permission (add an `identity:` section to name the caller)"
            )
        announce(self.gateway.consent, self.config)
        rules = self.gateway.policy.rules
        if self.identity is not None and not rules.roles_configured:
            log.warn("an identity is configured but no `roles:` are: no principal may call anything")
        log.info(
            "starting {n} backend(s): {names}",
            n=len(self.backends),
            names=", ".join(b.name for b in self.backends) or "none",
        )
        for name in self.config.disabled:
            log.info("backend {backend} is disabled in the configuration", backend=name)
        if not self.backends:
            log.warn("no MCP servers are configured: the catalog will be empty")
        for b in self.backends:
            b.startService()
        self.gateway.start()
        for f in self.frontends:
            f.startService()
        from twisted_mcp.ops import systemd

        self._watchdog = systemd.start(self.gateway, self.clock)

    def _start_state(self) -> None:
        """Start the shared state (never waits: a store that does not answer starts unavailable)."""
        self.state_sync.start()
        d = self.state.start()
        d.addCallback(lambda _: self.state_sync.started())
        d.addErrback(lambda f: log.failure("shared state: starting it failed", f))

    def hurry(self) -> None:
        """Cut the grace period short: cancel every call in flight now."""
        for session in list(self.gateway.sessions) + list(self.gateway.closing):
            session.cancel_all()

    def stopService(self) -> Deferred[Any]:
        self.stopping = True
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None and watchdog.running:
            watchdog.stop()
        log.info("stopping: draining client calls, then stopping backends")
        await DeferredList([_guarded(f.stopService) for f in reversed(self.frontends)], consumeErrors=True)
        # Every backend, including per-session instances (running, or being
        # stopped for sessions that ended) and retiring ones.
        await DeferredList(
            [stop_all(self.backends + list(self.gateway.instances) + list(self.retiring)), *self.gateway.stopping_instances],
            consumeErrors=True,
        )
        try:
            await self.state.stop()
        except Exception:
            log.failure("shared state: closing its connections failed")
        self.gateway.policy.flush()  # its last report of suppressed refusals, while the trail is open
        if self.audit is not None:
            try:
                await self.audit.stop()
            except Exception:
                log.failure("flushing the audit trail failed")
        log.info("stopped")


def make_state(config: Config, reactor: Any) -> SharedState:
    """
    The shared state C{config.state} describes: Redis (L{twisted_mcp.state.redis},
    imported only then, as its client library is optional), or the
    in-process state without a C{state:} section.
    """
    settings = getattr(config, "state", None)
    if settings is None:
        return SharedState()
    from twisted_mcp.state.redis import connect

    return connect(settings, reactor)  # type: ignore[no-any-return]


def _guarded(stop: Callable[[], Any]) -> Deferred[Any]:
    try:
        result = stop()
    except Exception:
        log.failure("a service failed to stop")
        return Deferred.fromCoroutine(_none())
    if isinstance(result, Deferred):
        return result.addErrback(lambda f: log.failure("a service failed to stop", f))
    return Deferred.fromCoroutine(_none())


async def _none() -> None:
    return None
