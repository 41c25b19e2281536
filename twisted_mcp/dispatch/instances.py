"""
L{OwnInstances}: one client session's instances of per-session backends
(C{perSession: true}): started on the session's first call to such a
backend, stopped when it has had no call for the backend's idle timeout
(and the session holds no resource subscription on it), and when the
session ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.mcp import errors
from twisted_mcp.wire.jsonrpc import JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.gateway import Gateway
    from twisted_mcp.dispatch.session import ClientSession

log = Logger()


class OwnInstances:
    """
    The per-session backend instances of one session.

    @param session: the session they belong to.
    @param principal: who the session's caller is (for maxInstancesPerPrincipal).
    """

    def __init__(self, gateway: Gateway, session: ClientSession, principal: Callable[[], str]) -> None:
        self.gateway = gateway
        self.session = session
        self.label = session.label
        self._principal = principal
        #: Running instances, by backend name.
        self.own: dict[str, Backend] = {}
        #: The principal its instances run for.
        self.owner: str | None = None
        self.closing = False
        self._calls: dict[str, int] = {}
        self._idle_stops: dict[str, Any] = {}
        self._releasing: Deferred[Any] | None = None

    def call(self, template: Backend, send: Callable[[Backend], Deferred[Any]]) -> Deferred[Any]:
        """C{send} to this session's instance of C{template} (started on
        first use); the instance is stopped once it has had no call for its
        idle timeout."""
        ready = self._instance(template)
        name = template.name
        self._calls[name] = self._calls.get(name, 0) + 1
        idle = self._idle_stops.pop(name, None)
        if idle is not None:
            idle.cancel()
        return ready.addCallback(send).addBoth(self._call_done, name)

    def owns(self, backend: Backend) -> bool:
        return self.own.get(backend.name) is backend

    def _call_done(self, result: Any, name: str) -> Any:
        left = self._calls[name] = self._calls[name] - 1
        instance = self.own.get(name)
        if not left and instance is not None and instance.idle_timeout:
            self._idle_stops[name] = self.gateway.clock.callLater(instance.idle_timeout, self._stop_idle, name, instance)
        return result

    def _stop_idle(self, name: str, instance: Backend) -> None:
        self._idle_stops.pop(name, None)
        if self.own.get(name) is not instance:
            return  # already released (the session ended, or a reload replaced it)
        if self.gateway.subscriptions.holds(instance):
            # The session waits for updates of its resources: not idle.
            self._idle_stops[name] = self.gateway.clock.callLater(instance.idle_timeout, self._stop_idle, name, instance)
            return
        del self.own[name]
        log.info(
            "client {client}: its instance of backend {backend} had no call for {idle:g} s; stopping it "
            "(the next call starts a new one)",
            client=self.label,
            backend=name,
            idle=instance.idle_timeout,
        )
        self._stop([instance])

    def _instance(self, template: Backend) -> Deferred[Backend]:
        instance = self.own.get(template.name)
        if instance is None:
            if self.gateway.backends.get(template.name) is not template:
                # Removed or replaced (a reload) while this call waited.
                raise errors.backend_error(
                    errors.BACKEND_UNAVAILABLE, template.name, f"backend {template.name!r} was removed or replaced; call again"
                )
            if self.closing or self.gateway.spawn is None:
                raise template.unavailable()
            principal = self._principal()
            self._check_caps(template, principal)
            instance = self.own[template.name] = self.gateway.spawn(template)
            self.owner = principal
            self.gateway.instances.add(instance)
            self.gateway.instance_owners[instance] = self.session
            log.info("client {client}: started its own instance of backend {backend}", client=self.label, backend=template.name)
        if instance.state.value == "up":
            return succeed(instance)
        return instance.when_discovered().addCallback(lambda _: instance)

    def _check_caps(self, template: Backend, principal: str) -> None:
        """Refuse (C{errors.BUSY}) a new instance beyond the backend's caps."""
        name = template.name
        running = self.gateway.instance_counts().get(name, 0)
        if running >= template.max_instances:
            raise errors.backend_error(
                errors.BUSY,
                name,
                f"backend {name!r} already runs {running} per-session instance(s), its cap (maxInstances); "
                "try again when another session ends or goes idle",
                limit=template.max_instances,
                cap="maxInstances",
            )
        sessions = self.gateway.sessions | self.gateway.closing
        mine = sum(1 for s in sessions if name in s.own and s.instances.owner == principal)
        if mine >= template.max_instances_per_principal:
            raise errors.backend_error(
                errors.BUSY,
                name,
                f"backend {name!r} already runs {mine} per-session instance(s) for {principal or 'this caller'}, "
                "the cap per principal (maxInstancesPerPrincipal); end another session first",
                limit=template.max_instances_per_principal,
                cap="maxInstancesPerPrincipal",
            )

    def release(self) -> Deferred[Any]:
        """Stop every instance; the result fires once they (and any stopped
        by an earlier call) are gone."""
        own, self.own = self.own, {}
        idle, self._idle_stops = self._idle_stops, {}
        for call in idle.values():
            call.cancel()
        if own:
            self._stop(list(own.values()))
        if self._releasing is None or self._releasing.called:
            return succeed(None)
        done: Deferred[Any] = Deferred()

        def released(result: Any) -> Any:
            done.callback(None)
            return result

        self._releasing.addBoth(released)
        return done

    def _stop(self, instances: list[Backend]) -> None:
        from twisted_mcp.backends.stdio import stop_all

        for instance in instances:
            self.gateway.forget_instance(instance)
            log.info("client {client}: stopping its instance of backend {backend}", client=self.label, backend=instance.name)
        releasing = stop_all(instances)
        earlier = self._releasing
        self._releasing = releasing if earlier is None or earlier.called else DeferredList([earlier, releasing])
        stopping = self.gateway.stopping_instances
        stopping.add(releasing)

        def stopped(result: Any) -> Any:
            stopping.discard(releasing)
            return result

        releasing.addBoth(stopped)


def principal_name(gateway: Gateway, peer: Any) -> str:
    try:
        return gateway.policy.principal(peer).name
    except JsonRpcError:
        return ""  # the policy refuses such a caller before any call reaches here


def principal_key(gateway: Gateway, peer: Any) -> str:
    """
    The stable name of the principal a peer's requests run as, for what is
    kept per principal beyond a session (OAuth tokens toward a backend):
    C{local} for the local principal, else C{<source>:<name>}, so that a
    JWT subject and a config principal of the same name never share.
    """
    principal = gateway.policy.principal(peer)
    if principal.source == "local":
        return "local"
    return f"{principal.source}:{principal.name}"


__all__ = ["OwnInstances", "principal_key", "principal_name"]
