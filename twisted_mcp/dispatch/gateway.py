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
from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.mcp import errors
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig
from twisted_mcp.wire.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession

#: The error codes /metrics names one by one: JSON-RPC's and the gateway's.
#: A backend may answer with any integer; the rest share the label "other",
#: or each new code would add a counter that lives as long as the gateway.
_CODE_LABELS = frozenset(
    str(code) for code in (PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR, *errors.GATEWAY_CODES)
)
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
        #: Makes (and starts) a fresh instance of a per-session backend.
        self.spawn = spawn
        #: Running instances of per-session backends, over every session.
        self.instances: set[Backend] = set()
        #: Stops of per-session instances under way (sessions that ended).
        self.stopping_instances: set[Deferred[Any]] = set()
        self.catalog = Catalog(separator)
        #: The governed point (identity, access, limits, audit); the
        #: default lets the local principal do everything.
        self.policy = Policy(PolicyConfig(), separator, clock)
        self.clock = clock
        self.sessions: set[ClientSession] = set()
        #: Sessions draining their calls in flight.
        self.closing: set[ClientSession] = set()
        self.discovery_bound = discovery_bound
        self.ready = False
        self.ready_waiters: list[Deferred[None]] = []
        #: Requests answered, by (method, outcome, error code), for /metrics;
        #: outcome is ok, tool_error, error or cancelled.
        self.requests: dict[tuple[str, str, str], int] = {}
        for b in backends:
            b.add_listener(self._backend_changed)

    def start(self) -> None:
        """Wait (in the background) for every backend's first discovery."""
        ds = [b.when_discovered() for b in self.backends.values()]
        d = DeferredList(ds, consumeErrors=True)
        call = self.clock.callLater(self.discovery_bound, self._discovery_finished)
        d.addCallback(lambda _: call.active() and call.cancel())
        d.addCallback(lambda _: self._discovery_finished())

    def _discovery_finished(self) -> None:
        if self.ready:
            return
        self.ready = True
        self._rebuild(always=True)
        up = [b.name for b in self.backends.values() if b.state.value == "up"]
        down = [b.name for b in self.backends.values() if b.state.value != "up"]
        log.info(
            "discovery finished: {tools} tool(s) from {up} backend(s) up{down}",
            tools=len(self.catalog.listing),
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
            self.policy.breakers.pop(backend.name, None)  # a new backend: a fresh breaker
        self.backends[backend.name] = backend
        backend.add_listener(self._backend_changed)
        if self.ready and (replacing is not None or backend.tools):
            self._rebuild(always=True)  # the entries now name the new backend

    def remove_backend(self, backend: Backend) -> None:
        """Take a backend out of the catalog (reload); the caller stops it."""
        if self.backends.get(backend.name) is backend:
            del self.backends[backend.name]
        backend.remove_listener(self._backend_changed)
        self.policy.breakers.pop(backend.name, None)
        if self.ready:
            self._rebuild()

    def _backend_changed(self, backend: Backend) -> None:
        self.policy.backend_changed(backend)
        if not self.ready:
            return
        if self._rebuild():
            for session in list(self.sessions):
                session.tools_changed()

    def _rebuild(self, always: bool = False) -> bool:
        """Rebuild the catalog from the backends; the policy reviews it when
        the tool list changed (or C{always}).  Returns whether it changed."""
        changed = self.catalog.rebuild(self.backends.values())
        if changed or always:
            self.policy.catalog_changed(self.catalog.entries)
        return changed

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

    def capabilities(self) -> dict[str, Any]:
        return {"tools": {"listChanged": True}}


__all__ = ["Gateway"]
