"""
The gateway's service tree, started and stopped in order.

Start: backends (their discovery runs in the background, each bounded),
then the catalog, then the front-ends.  Stop, in reverse: front-ends drain
their calls in flight (bounded by the grace period), then every backend is
stopped in parallel (close stdin, then TERM, then KILL its process group).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger

from twisted_mcp.backend import Backend
from twisted_mcp.config import Config, HttpServer
from twisted_mcp.http_backend import HttpBackend
from twisted_mcp.gateway import Gateway
from twisted_mcp.policy.audit import AuditLog
from twisted_mcp.policy.identity import Authenticator
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.stdio_backend import StdioBackend, stop_all

log = Logger()


class GatewayService(MultiService):
    """
    The root service: owns the backends, the L{Gateway} and the front-ends.

    Front-ends are added with L{add_frontend}, given a factory that takes
    the L{Gateway}.
    """

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        spawner: IReactorProcess,
        environ: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.clock = clock
        settings = config.gateway
        self.backends: list[Backend] = []
        for server in config.servers:
            if isinstance(server, HttpServer):
                self.backends.append(HttpBackend(server, clock, settings.maxMessageBytes))
            else:
                self.backends.append(
                    StdioBackend(server, spawner, clock, settings.inheritEnv, settings.maxMessageBytes, environ)
                )
        bound = max([s.discoveryTimeout for s in config.servers] or [0.0]) + 1.0
        self.gateway = Gateway(self.backends, settings.separator, clock, bound)
        self.frontends: list[Service] = []
        self.authenticator: Any = None
        self.audit: Any = None
        rules = config.policy if config.policy is not None else PolicyConfig()
        authenticate = None
        if config.identity is not None:
            http = None
            if config.identity.jwt is not None and config.identity.jwt.jwksUrl:
                from treq.client import HTTPClient
                from twisted.web.client import Agent

                http = HTTPClient(Agent(clock))
            self.authenticator = Authenticator(config.identity, os.environ if environ is None else environ, clock, http)
            authenticate = self.authenticator.authenticate
        if config.audit is not None and config.audit.sink != "none":
            self.audit = AuditLog(config.audit, clock, clock)
        self.gateway.policy = Policy(rules, settings.separator, clock, authenticate, self.audit)

    def add_frontend(self, factory: Callable[[Gateway], Service]) -> Service:
        frontend = factory(self.gateway)
        self.frontends.append(frontend)
        return frontend

    def startService(self) -> None:
        Service.startService(self)
        if self.audit is not None:
            self.audit.start()
        else:
            log.info("no audit trail is configured (add an `audit:` section to keep one)")
        if self.authenticator is not None:
            self.authenticator.start()
        else:
            log.warn(
                "NO IDENTITY IS CONFIGURED: every request runs as the local principal with every "
                "permission (add an `identity:` section to name the caller)"
            )
        rules = self.gateway.policy.rules
        if self.authenticator is not None and not rules.roles_configured:
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
        from twisted_mcp import systemd

        self._watchdog = systemd.start(self.gateway, self.clock)

    def reload(self, load: Callable[[], Config]) -> bool:
        """
        Re-read the configuration (SIGHUP) and apply its policy (roles, kill
        switch, limits, concurrency, breakers, pinning) to new calls at
        once; clients are told their tool list changed.  A config that does
        not validate is rejected and the running one stays.  Changes to
        mcpServers, identity, audit and gateway settings need a restart.
        """
        from twisted_mcp.config import ConfigError

        try:
            config = load()
        except ConfigError as e:
            log.error("reload rejected, the running configuration stays: {problems}", problems=e.render())
            return False
        old = self.config
        needs_restart = [
            name
            for name, same in (
                ("mcpServers", config.servers == old.servers and config.disabled == old.disabled),
                ("identity", config.identity == old.identity),
                ("audit", config.audit == old.audit),
                ("gateway", config.gateway == old.gateway),
            )
            if not same
        ]
        if needs_restart:
            log.warn(
                "reload: changes to {sections} are not applied until the gateway restarts",
                sections=", ".join(needs_restart),
            )
        rules = config.policy if config.policy is not None else PolicyConfig()
        current = self.gateway.policy
        policy = Policy(rules, old.gateway.separator, self.clock, current._authenticate, current.audit)
        policy.catalog_changed(self.gateway.catalog.entries)
        self.gateway.policy = policy
        self.config = config
        log.info("reload: the policy from {source} applies to new calls", source=config.source)
        for session in list(self.gateway.sessions):
            session.tools_changed()
        return True

    def hurry(self) -> None:
        """Cut the grace period short: cancel every call in flight now."""
        for session in list(self.gateway.sessions) + list(self.gateway.closing):
            session.cancel_all()

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None and watchdog.running:
            watchdog.stop()
        log.info("stopping: draining client calls, then stopping backends")
        await DeferredList(
            [_guarded(f.stopService) for f in reversed(self.frontends)], consumeErrors=True
        )
        await stop_all(self.backends)
        if self.audit is not None:
            try:
                await self.audit.stop()
            except Exception:
                log.failure("flushing the audit trail failed")
        log.info("stopped")


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
