"""
The gateway proper: the backends, their readiness and merged catalog, the
client sessions open on it (L{twisted_mcp.dispatch.session.ClientSession})
and the counters /metrics reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.config.surface import SurfaceSettings
from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.dispatch.reverse import Reverse
from twisted_mcp.dispatch.rounds import DEFAULT_MAX_ROUNDS
from twisted_mcp.dispatch.server_logs import ServerLogs
from twisted_mcp.dispatch.subscriptions import Subscriptions
from twisted_mcp.dispatch.surface import FittedCache, fitted_for, search_sentence
from twisted_mcp.dispatch.views import DEFAULT_VIEW, Views, view_of
from twisted_mcp.mcp import errors
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.state.base import SharedState
from twisted_mcp.wire.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    JsonRpcError,
)

if TYPE_CHECKING:
    from typing import Mapping

    from twisted_mcp.config.models import Profile
    from twisted_mcp.dispatch.handlers.search import IndexHolder
    from twisted_mcp.dispatch.session import ClientSession, InFlight

#: The error codes /metrics names one by one: JSON-RPC's and the gateway's.
#: A backend may answer with any integer; the rest share the label "other",
#: or each new code would add a counter that lives as long as the gateway.
_CODE_LABELS = frozenset(
    str(code) for code in (PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR, *errors.GATEWAY_CODES)
)
#: The key of a definition's exposed name or URI, per listing.
_NAME_KEYS = {"tools": "name", "prompts": "name", "resources": "uri", "resourceTemplates": "uriTemplate"}
log = Logger()


class Gateway:
    """
    The backends, their merged catalog, and the client sessions to tell
    when it changes.

    @param discovery_bound: the longest a first C{tools/list} waits for the
        backends' first discovery.
    """

    def __init__(
        self,
        backends: list[Backend],
        separator: str,
        clock: IReactorTime,
        discovery_bound: float,
        spawn: Callable[[Backend], Backend] | None = None,
    ) -> None:
        self.backends = {b.name: b for b in backends}
        self._spawn = spawn
        #: Running instances of per-session backends, over every session.
        self.instances: set[Backend] = set()
        #: The session each running instance belongs to.
        self.instance_owners: dict[Backend, ClientSession] = {}
        #: Stops of per-session instances under way (sessions that ended).
        self.stopping_instances: set[Deferred[Any]] = set()
        self.catalog = Catalog(separator)
        #: The governed point (identity, access, limits, audit); the
        #: default lets the local principal do everything.
        self.policy = Policy(PolicyConfig(), separator, clock)
        #: What replicas share (L{twisted_mcp.state}): in-process unless C{state:} is configured.
        self.state = SharedState()
        self.clock = clock
        self.sessions: set[ClientSession] = set()
        #: Sessions draining their calls in flight.
        self.closing: set[ClientSession] = set()
        self.discovery_bound = discovery_bound
        #: The backends each session may see something of (for log messages).
        self._sight: dict[ClientSession, tuple[Any, frozenset[str]]] = {}
        self.ready = False
        self.ready_waiters: list[Deferred[None]] = []
        #: Requests answered, by (method, outcome, error code), for /metrics;
        #: outcome is ok, tool_error, error or cancelled.
        self.requests: dict[tuple[str, str, str], int] = {}
        #: Where backends' requests to clients and their notifications go.
        self.reverse = Reverse(self)
        #: Rounds of input a stateless-era backend may ask of a handshake-era client per call (gateway.maxInputRounds).
        self.max_input_rounds = DEFAULT_MAX_ROUNDS
        #: The HTTP front's OAuth connect route (twisted_mcp.dispatch.authorization.Consent), if any.
        self.consent: Any = None
        #: The C{profiles:} of the running configuration (set by the service at start and on reload).
        self.profiles: Mapping[str, Profile] = {}
        self.subscriptions = Subscriptions(self)
        #: How tool lists are fitted to clients (config surface:, search:,
        #: clients:); set by the service at start and on reload.
        self.surface = SurfaceSettings()
        #: What each view selects of the catalog, per catalog rebuild.
        self.views = Views()
        #: The tool lists fitted to clients lately.
        self.fits = FittedCache()
        #: The search index over the catalog's tools (made at the first
        #: search; see L{twisted_mcp.dispatch.handlers.search.search_index}).
        self.search_index: IndexHolder | None = None
        self.logs = ServerLogs(self)
        #: Each backend's state and handshake count when its listener last
        #: ran (to tell a restart, or a new MCP session with the server).
        self._states: dict[Backend, tuple[str, int]] = {}
        for b in backends:
            self._watch(b)

    @property
    def spawn(self) -> Callable[[Backend], Backend] | None:
        """Makes (and starts) a fresh instance of a per-session backend,
        wired to this gateway like the shared ones."""
        if self._spawn is None:
            return None
        return self._spawn_instance

    @spawn.setter
    def spawn(self, spawn: Callable[[Backend], Backend] | None) -> None:
        self._spawn = spawn

    def _spawn_instance(self, template: Backend) -> Backend:
        assert self._spawn is not None
        instance = self._spawn(template)
        self._watch(instance)
        return instance

    def _watch(self, backend: Backend) -> None:
        backend.events = self.reverse
        backend.add_listener(self._backend_changed)

    def forget_instance(self, instance: Backend) -> None:
        """A per-session instance is being stopped: the gateway keeps
        nothing of it, and what the stopping process still sends (a log
        message, a request) reaches no client, its former owner's or any
        other's."""
        self.instances.discard(instance)
        self.instance_owners.pop(instance, None)
        instance.remove_listener(self._backend_changed)
        instance.events = None
        self._states.pop(instance, None)
        self.logs.forget(instance)
        self.subscriptions.backend_gone(instance)

    def start(self) -> None:
        """Wait (in the background) for every backend's first discovery."""
        ds = [b.when_discovered() for b in self.backends.values()]
        d = DeferredList(ds, consumeErrors=True)
        call = self.clock.callLater(self.discovery_bound, self._discovery_finished)

        def discovered(_: object) -> None:
            if call.active():
                call.cancel()
            self._discovery_finished()

        d.addCallback(discovered)

    def _discovery_finished(self) -> None:
        if self.ready:
            return
        self.ready = True
        self._rebuild(always=True)
        up = [b.name for b in self.backends.values() if b.state.value == "up"]
        down = [b.name for b in self.backends.values() if b.state.value != "up"]
        catalog = self.catalog
        others = [
            f", {len(listing.listing)} {noun}(s)"
            for listing, noun in ((catalog.prompts, "prompt"), (catalog.resources, "resource"), (catalog.templates, "resource template"))
            if listing.listing
        ]
        log.info(
            "discovery finished: {tools} tool(s){others} from {up} backend(s) up{down}",
            tools=len(catalog.listing),
            others="".join(others),
            up=len(up),
            down=f"; down: {', '.join(sorted(down))}" if down else "",
        )
        waiters, self.ready_waiters = self.ready_waiters, []
        for w in waiters:
            w.callback(None)

    def when_ready(self) -> Deferred[None]:
        if self.ready:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.ready_waiters.append(d)
        return d

    def add_backend(self, backend: Backend, replacing: Backend | None = None) -> None:
        """A backend added while running (reload): its tools join the
        catalog once it is discovered (or at once, if it starts with the
        tools of the backend it replaces)."""
        if replacing is not None:
            replacing.remove_listener(self._backend_changed)
            self._states.pop(replacing, None)
            self.logs.forget(replacing)
            self.subscriptions.replaced(replacing, backend)
            self.policy.breakers.pop(backend.name, None)  # a new backend: a fresh breaker
        self.backends[backend.name] = backend
        self._watch(backend)
        if self.ready and (replacing is not None or backend.tools):
            self._rebuild(always=True)  # the entries now name the new backend

    def remove_backend(self, backend: Backend) -> None:
        """Take a backend out of the catalog (reload); the caller stops it."""
        if self.backends.get(backend.name) is backend:
            del self.backends[backend.name]
        backend.remove_listener(self._backend_changed)
        self._states.pop(backend, None)
        self.logs.forget(backend)
        self.subscriptions.backend_gone(backend)
        self.policy.breakers.pop(backend.name, None)
        if self.ready:
            self._rebuild()  # the reload tells the sessions it concerns

    def _backend_changed(self, backend: Backend) -> None:
        state = backend.state.value
        was = self._states.get(backend)
        now = self._states[backend] = (state, backend.handshakes)
        if state == "up" and was != now:
            # A (re)start, or a new session with an HTTP server that forgot
            # ours: the backend forgot what clients asked of it.
            self.subscriptions.backend_up(backend)
            self.logs.backend_up(backend)
        if backend in self.instances:
            if state == "stopped":
                self._states.pop(backend, None)
                self.logs.forget(backend)
            return  # an instance's listings are its template's
        self.policy.backend_changed(backend)
        if not self.ready:
            return
        self._changed(self._rebuild())

    def _changed(self, kinds: frozenset[str]) -> None:
        """Tell every session which listings changed."""
        notices = {"resourceTemplates": "resources"}
        for kind in {notices.get(k, k) for k in kinds}:
            for session in list(self.sessions):
                session.list_changed(kind)

    def _rebuild(self, always: bool = False) -> frozenset[str]:
        """Rebuild the catalog from the backends; the policy reviews it when
        the tool list changed (or C{always}).  Returns the kinds that changed."""
        changed = self.catalog.rebuild(self.backends.values())
        if "tools" in changed or always:
            self.policy.catalog_changed(self.catalog.entries)
        self._sight.clear()
        return changed

    def surface_changed(self) -> None:
        """The surface settings or profiles changed (a reload): tell the
        sessions (and listens) whose fitted tool list changed, and only
        those (a list that was and stays the catalog's own did not)."""
        for session in list(self.sessions):
            session.list_changed("tools", surface_only=True)

    def session_ending(self, session: ClientSession) -> None:
        """C{session} takes no more requests: it leaves what it subscribed to."""
        self.sessions.discard(session)
        self.subscriptions.session_ended(session)
        self._sight.pop(session, None)
        self.logs.apply()  # its level no longer counts

    def roots_changed(self, session: ClientSession) -> None:
        """The client's roots changed: tell every backend it has used."""
        for name in sorted(session.used):
            backend = session.own.get(name) or self.backends.get(name)
            if backend is not None and backend.state.value == "up":
                backend.notify("notifications/roots/list_changed", None)

    def sees_backend(self, session: ClientSession, name: str) -> bool:
        """Whether the session's caller may see anything of backend C{name}
        (its log messages are for those who do)."""
        policy = self.policy
        if not policy.active:
            return True
        key = (policy, policy.generation)
        cached = self._sight.get(session)
        if cached is None or cached[0] != key:
            cached = self._sight[session] = (key, self._visible_backends(session))
        return name in cached[1]

    def _visible_backends(self, session: ClientSession) -> frozenset[str]:
        from twisted_mcp.dispatch.lists import NOUNS

        policy = self.policy
        try:
            principal = policy.principal(session.peer)
        except JsonRpcError:
            return frozenset()
        names: set[str] = set()
        catalog = self.catalog
        for kind, listing in (("tools", catalog.tools), ("prompts", catalog.prompts), ("resources", catalog.resources), ("resourceTemplates", catalog.templates)):
            name_key = _NAME_KEYS[kind]
            for definition in policy.listing(principal, NOUNS[kind], listing.listing, listing.entries):
                entry = listing.entries.get(definition.get(name_key, ""))
                if entry is not None:
                    names.add(entry.backend.name)
        return frozenset(names)

    def instance_counts(self) -> dict[str, int]:
        """Running per-session instances, by backend name."""
        counts: dict[str, int] = {}
        for instance in self.instances:
            counts[instance.name] = counts.get(instance.name, 0) + 1
        return counts

    def count(self, method: str, outcome: str, code: Any = "") -> None:
        label = str(code)
        key = (method, outcome, label if not label or label in _CODE_LABELS else "other")
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def capabilities(self, session: ClientSession | None = None) -> dict[str, Any]:
        """What the gateway offers a client: tools always; the rest when
        some backend it may see offers it (every backend without a policy).
        On a profile's view, prompts and resources only when the view
        selects some (and completions only with one of them)."""
        offered: dict[str, Any] = {"tools": {"listChanged": True}}
        seen = self._seen_by(session)
        servers = [b.capabilities for b in seen]
        view = DEFAULT_VIEW if session is None else view_of(self, session.caller)
        selection = None if view is DEFAULT_VIEW else self.views.selection(view, self.catalog)
        if any("prompts" in c for c in servers) and (selection is None or selection.prompts.names):
            offered["prompts"] = {"listChanged": True}
        if any("resources" in c for c in servers) and (selection is None or selection.resources.names or selection.templates.names):
            subscribe = any(type(c.get("resources")) is dict and c["resources"].get("subscribe") is True for c in servers)
            offered["resources"] = {"listChanged": True, **({"subscribe": True} if subscribe else {})}
        if any("completions" in c for c in servers) and (selection is None or offered.keys() & {"prompts", "resources"}):
            offered["completions"] = {}
        if any("logging" in c for c in servers):
            offered["logging"] = {}
        return offered

    def _seen_by(self, session: ClientSession | None) -> list[Backend]:
        """The backends C{session}'s caller may see something of, by name."""
        backends = [self.backends[name] for name in sorted(self.backends)]
        if session is None or not self.policy.active:
            return backends
        return [b for b in backends if self.sees_backend(session, b.name)]

    def instructions(self, session: ClientSession | None = None, request: InFlight | None = None) -> str | None:
        """
        The instructions of the backends C{session}'s caller may see, each
        under its backend's name; before them, its profile's instructions
        and, when its tool list is in search mode, how to search.

        @param request: the request they answer, whose own envelope's
            C{clientInfo} (2026-07-28) decides the budget; None: the
            session's, as its C{initialize} described its client.
        """
        parts = []
        if session is not None:
            parts += self._surface_instructions(session, request)
        for backend in self._seen_by(session):
            text = backend.instructions
            if text and text.strip():
                parts.append(f"## {backend.name}\n\n{text.strip()}")
        return "\n\n".join(parts) or None

    def _surface_instructions(self, session: ClientSession, request: InFlight | None) -> list[str]:
        parts = []
        view = view_of(self, session.caller)
        if view.instructions and view.instructions.strip():
            parts.append(view.instructions.strip())
        try:
            principal = self.policy.principal(session.peer) if self.policy.active else None
            fitted = fitted_for(session, request, principal)
        except JsonRpcError:
            return parts
        if fitted.mode == "search":
            parts.append(search_sentence(fitted))
        return parts


__all__ = ["Gateway"]
