"""
Live reload (SIGHUP, C{POST /reload}, C{twisted-mcp reload}): the new
configuration read off the event loop, then applied to the running service
as a diff (L{Reloading}, a part of L{twisted_mcp.service.GatewayService}).
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.config import Config
from twisted_mcp.config.shaping import KINDS as SHAPED_KINDS
from twisted_mcp.config.shaping import shaping_of
from twisted_mcp.dispatch.authorization import announce, connect_allowed
from twisted_mcp.policy.identity.revocation import revoked_ids
from twisted_mcp.policy.peers import ConnectionIdentity
from twisted_mcp.policy.rules import PolicyConfig

if TYPE_CHECKING:
    from twisted_mcp.service import GatewayService

# The HTTP front is imported only by a gateway with HTTP listeners (twisted.web).

log = Logger()


def reload_in_a_thread(
    reactor: Any, service: "GatewayService", load: Callable[[], Config]
) -> "Deferred[tuple[bool, list[str], str]]":
    """
    Reload as SIGHUP and C{POST /reload} both do: read and validate the
    config file in a worker thread (a large file takes seconds to parse, and
    no client should wait for that), then apply it on the event loop, where
    the service's state lives.  Fires with L{Reloading.reload}'s answer.

    @param reactor: gives the thread pool and brings the outcome back.
    """
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.failure import Failure

    def loaded(outcome: Any) -> Config:
        if isinstance(outcome, Failure):
            outcome.raiseException()  # service.reload reports it; the running config stays
        return outcome  # type: ignore[no-any-return]

    d = deferToThreadPool(reactor, reactor.getThreadPool(), load)
    d.addBoth(lambda outcome: service.reload(lambda: loaded(outcome)))
    return d


def removed_profiles_in_use(listeners: Mapping[str, tuple[str, ...]], profiles: Mapping[str, Any]) -> str | None:
    """
    Why a configuration with C{profiles} cannot replace the running one: it
    removes a profile a C{--listen profile:<name>:...} listener serves
    (C{listeners}, by profile).  Refused rather than served with the
    default view, which would show that listener's clients more than the
    operator chose for them.  None when nothing in use is removed.
    """
    gone = sorted(name for name in listeners if name not in profiles)
    if not gone:
        return None
    named = "; ".join(f"profiles.{name} is removed, but --listen {', '.join(listeners[name])} serves it" for name in gone)
    return f"{named}: keep the profile, or restart the gateway without that listener"


def _is_http_frontend(front: Any) -> bool:
    """Whether C{front} is an HTTP listener (without importing the HTTP front when none was started)."""
    http = sys.modules.get("twisted_mcp.frontends.http")
    return http is not None and isinstance(front, http.HttpFrontend)


class Reloading:
    """
    How L{twisted_mcp.service.GatewayService} applies a new configuration:
    it uses the service's backends, gateway, policy and identity.
    """

    def reload(self, load: Callable[[], Config]) -> tuple[bool, list[str], str]:
        """
        Re-read the configuration (SIGHUP, C{twisted-mcp reload}) and apply
        it as a diff: added backends start, removed ones stop (after their
        calls in flight finish, within the grace period), changed ones are
        replaced, untouched ones keep running.  Identity and policy apply to
        new calls at once; clients whose view of the tools changed get
        C{list_changed}.  A config that does not validate is rejected and
        the running one stays.  No client connection is dropped.

        @return: whether it was applied, what changed, and the problems.
        """
        from twisted_mcp.config import ConfigError

        try:
            config = load()
        except ConfigError as e:
            log.error("reload rejected, the running configuration stays: {problems}", problems=e.render())
            return False, [], e.render()
        except Exception as e:
            log.failure("reload rejected, the running configuration stays")
            return False, [], f"the configuration could not be read: {e}"
        if self.stopping:
            return False, [], "the gateway is stopping"
        refusal = removed_profiles_in_use(self.profile_listeners, config.profiles)
        if refusal is not None:
            log.error("reload rejected, the running configuration stays: {refusal}", refusal=refusal)
            return False, [], refusal
        old = self.config
        started = self.settings
        changes: list[str] = []
        if config.gateway.separator != started.separator:
            log.error(
                "reload rejected: gateway.separator changed ({old!r} to {new!r}); every tool name would change, "
                "restart the gateway to apply it",
                old=started.separator,
                new=config.gateway.separator,
            )
            return False, [], "gateway.separator cannot change without a restart"
        restart = [
            name
            for name, same in (
                ("audit", config.audit == old.audit),
                ("state", getattr(config, "state", None) == getattr(old, "state", None)),
                ("oauth", config.oauth == old.oauth),
                (
                    "gateway (other than adminToken)",
                    attrs.evolve(config.gateway, adminToken=None) == attrs.evolve(started, adminToken=None),
                ),
                ("http", self.http_jwt_at_start is None or config.http == self.http_started),
                (
                    "identity.jwt being added or removed (HTTP listeners' bearer tokens)",
                    self.http_jwt_at_start is None
                    or self.http_jwt_at_start == (config.identity is not None and config.identity.jwt is not None),
                ),
            )
            if not same
        ]
        if restart:
            log.warn("reload: changes to {sections} are not applied until the gateway restarts", sections=", ".join(restart))
            changes += [f"{name}: needs a restart" for name in restart]
        if config.gateway.adminToken != old.gateway.adminToken:
            changes.append("gateway.adminToken: replaced")
        old_servers = {s.name: s for s in old.servers}
        new_servers = {s.name: s for s in config.servers}
        removed = sorted(old_servers.keys() - new_servers.keys())
        changed = sorted(
            n for n in old_servers.keys() & new_servers.keys() if _running(old_servers[n]) != _running(new_servers[n])
        )
        # Only its priority or shaping changed: applied in place, the backend keeps running.
        reshaped = sorted(
            n for n in old_servers.keys() & new_servers.keys() if n not in changed and old_servers[n] != new_servers[n]
        )
        added = sorted(new_servers.keys() - old_servers.keys())

        # Prepare everything that can fail before touching what runs.
        try:
            authenticator, identity = self.authenticator, self.identity
            new_authenticator = False
            if config.identity != old.identity:
                same_caller = (
                    config.identity is not None
                    and old.identity is not None
                    and (config.identity.jwt, config.identity.principal) == (old.identity.jwt, old.identity.principal)
                )
                if same_caller:
                    identity = ConnectionIdentity(config.identity, authenticator.authenticate if authenticator else None)
                else:
                    authenticator, identity = self._make_identity(config)
                    new_authenticator = authenticator is not None
            fresh = {name: self._make_backend(new_servers[name]) for name in changed + added}
            rules = config.policy if config.policy is not None else PolicyConfig()
            current = self.gateway.policy
            policy = self._make_policy(rules, identity, current.audit)
        except Exception as e:
            log.failure("reload rejected, the running configuration stays")
            return False, [], f"the configuration cannot be applied: {e}"

        before = self.views()
        if config.identity != old.identity:
            if new_authenticator:
                authenticator.start()
            changes.append("identity: replaced")
            if identity is None:
                log.warn(
                    "reload: NO IDENTITY IS CONFIGURED any more: every client now runs as the local principal "
                    "with every permission"
                )
        for name in removed:
            self._take_out(name)
            changes.append(f"backend {name}: removed")
        for name in changed:
            # The replacement serves the same listings until it lists its
            # own: clients see no change unless they really differ.
            previous = self.gateway.backends.get(name)
            if previous is not None:
                replacement = fresh[name]
                replacement.tools = list(previous.tools)
                replacement.prompts = list(previous.prompts)
                replacement.resources = list(previous.resources)
                replacement.resource_templates = list(previous.resource_templates)
                replacement.capabilities = dict(previous.capabilities)
                replacement.instructions = previous.instructions
            self._take_out(name, replacement=fresh[name])
            changes.append(f"backend {name}: restarted (its configuration changed)")
        for name in added:
            self._bring_in(fresh[name])
            changes.append(f"backend {name}: added")
        changes += [f"backend {name}: shaping or priority applied (not restarted)" for name in reshaped]

        # Policy: new calls see it at once; the state of unchanged checks carries over.
        policy.inherit(current)
        # Tokens revoked on this replica stay revoked (without a shared state they live only here).
        revoked_ids(policy).update(revoked_ids(current))
        # The shared flags (and whether they can be read) apply to the new policy too.
        self.state_sync.policy_replaced(policy)
        policy.breakers = {k: v for k, v in policy.breakers.items() if k in self.gateway.backends}
        if current.rules != rules:
            changes.append("policy: replaced")
        policy.note_backends(self.gateway.backends.values())
        policy.catalog_changed(self.gateway.catalog.entries)
        self.gateway.policy = policy
        # Reshaped under the new policy: its pins review the reshaped tools, in its mode.
        reshaped_kinds = self._reshape({name: new_servers[name] for name in reshaped})
        self.gateway.subscriptions.drop_unreachable(self.gateway.catalog.reachable)
        surface_changed = config.surface != old.surface
        if surface_changed:
            changes.append("surface: replaced")
        self.gateway.surface = config.surface
        self.authenticator, self.identity = authenticator, identity
        if config.profiles != old.profiles:
            changes.append("profiles: replaced")
        self.gateway.profiles = config.profiles
        for front in self.frontends:
            if _is_http_frontend(front):
                front.resource.end_removed_profiles(config.profiles)
        self.config = config
        consent = getattr(self.gateway, "consent", None)
        if consent is not None:
            # Identities added (or browserCheck changed) by this reload decide the connect page from now on.
            allowed = connect_allowed(config)
            if allowed != consent.connect:
                consent.connect = allowed
                announce(consent, config)
        self.notify_views(before, reshaped_kinds)
        if surface_changed or config.profiles != old.profiles:
            self.gateway.surface_changed()
        log.info(
            "reload from {source} applied: {changes}",
            source=config.source,
            changes="; ".join(changes) or "nothing changed",
        )
        return True, changes, ""

    def views(self) -> dict[Any, dict[str, tuple[tuple[str, str], ...]] | None]:
        """What every session may see now (compare later with L{notify_views})."""
        return {s: self._view(s) for s in list(self.gateway.sessions)}

    def _view(self, session: Any) -> dict[str, tuple[tuple[str, str], ...]] | None:
        """What C{session} may see now, by the notification that tells it of
        a change (tools, prompts, resources): each definition's name and a
        digest of it, so that a changed description counts as a change;
        None: it may see nothing."""
        policy = self.gateway.policy
        catalog = self.gateway.catalog
        try:
            principal = policy.principal(session.peer)
        except Exception:
            return None
        kinds = (
            ("tools", "tool", catalog.tools, "name"),
            ("prompts", "prompt", catalog.prompts, "name"),
            ("resources", "resource", catalog.resources, "uri"),
            ("resources", "template", catalog.templates, "uriTemplate"),
        )
        view: dict[str, tuple[tuple[str, str], ...]] = {}
        for notice, kind, listing, key in kinds:
            shown = tuple((d[key], _digest(d)) for d in policy.listing(principal, kind, listing.listing, listing.entries))
            view[notice] = view.get(notice, ()) + shown
        return view

    def notify_views(self, before: dict[Any, Any], changed: frozenset[str] = frozenset()) -> int:
        """
        Send C{list_changed} for each listing whose view changed, to every
        session it changed for; return how many sessions were told.

        @param changed: notices (C{tools}, C{prompts}, C{resources}) every
            session that may see something is sent: a reshaping changed
            definitions, not only names.
        """
        told = 0
        for session, view in before.items():
            if session not in self.gateway.sessions:
                continue
            now = self._view(session)
            notices = [
                notice
                for notice in ("tools", "prompts", "resources")
                if (now or {}).get(notice, ()) != (view or {}).get(notice, ())
                or (notice in changed and (now or {}).get(notice, ()))
            ]
            for notice in notices:
                session.list_changed(notice)
            told += bool(notices) or now != view
        return told

    def _reshape(self, servers: dict[str, Any]) -> frozenset[str]:
        """
        Apply the new priority and shaping of C{servers} (name -> config) to
        their running backends and rebuild the catalog; the notices whose
        listings changed.
        """
        for name, config in servers.items():
            backend = self.gateway.backends.get(name)
            if backend is None:
                continue
            backend.priority, backend.shaping = shaping_of(config)
            if hasattr(backend, "config"):
                backend.config = config
        if not servers or not self.gateway.ready:
            return frozenset()
        notices = {"resourceTemplates": "resources"}
        return frozenset(notices.get(kind, kind) for kind in self.gateway._rebuild())

    def _bring_in(self, backend: Backend, replacing: Backend | None = None) -> None:
        self.backends.append(backend)
        backend.add_listener(self._idle_template)
        self.gateway.add_backend(backend, replacing)
        backend.startService()

    def _take_out(self, name: str, replacement: Backend | None = None) -> None:
        """Take a backend out (and put C{replacement} in its place); it
        stops once its calls in flight are done."""
        backend = self.gateway.backends.get(name)
        if backend is None:
            if replacement is not None:
                self._bring_in(replacement)
            return
        backend.remove_listener(self._idle_template)
        self.backends.remove(backend)
        if replacement is None:
            self.gateway.remove_backend(backend)
        else:
            self._bring_in(replacement, backend)
        instances = []
        for session in list(self.gateway.sessions) + list(self.gateway.closing):
            own = session.own.pop(name, None)
            if own is not None:
                self.gateway.instances.discard(own)
                instances.append(own)
        for b in [backend, *instances]:
            self.retiring.add(b)
            Deferred.fromCoroutine(self._retire(b, instance=b is not backend))

    async def _retire(self, backend: Backend, instance: bool = False) -> None:
        """Let a removed backend finish its calls in flight (within the grace
        period), then stop it; a session's C{instance} is then forgotten
        (until then its requests still reach its session)."""
        grace = self.settings.shutdownGrace
        deadline = self.clock.seconds() + grace
        while backend.in_flight() and self.clock.seconds() < deadline:
            await deferLater(self.clock, 0.05)
        if backend.in_flight():
            log.warn(
                "backend {backend}: {n} call(s) still in flight {grace:g} s after it was removed; stopping it",
                backend=backend.name,
                n=backend.in_flight(),
                grace=grace,
            )
        try:
            await backend.stopService()
        except Exception:
            log.failure("backend {backend}: stopping failed", backend=backend.name)
        if instance:
            self.gateway.forget_instance(backend)
        self.retiring.discard(backend)


def _digest(definition: dict[str, Any]) -> str:
    """A digest of a served definition (equal definitions, equal digests)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _running(server: Any) -> Any:
    """A server's config without what applies in place (priority, shaping): what a restart is for."""
    return attrs.evolve(server, priority=0, **dict.fromkeys(SHAPED_KINDS))
