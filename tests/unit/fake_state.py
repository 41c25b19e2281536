"""
In-memory stores of the state seam (L{twisted_mcp.state.base}) that a test
controls: one store shared by several L{Policy} objects stands for the
replicas' Redis.  Each answers with a Deferred, at once by default; with
C{hold = True} the answers wait for L{Controlled.flush}; with
C{unavailable} set they fail with L{Unavailable}.  Every call is counted.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from twisted_mcp.state.base import FLAG_KINDS, BucketSpec, SharedState, Unavailable


class Controlled:
    """Answers now, later (L{hold}), or never (L{unavailable})."""

    def __init__(self) -> None:
        self.hold = False
        self.unavailable: str | None = None
        self.pending: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def _answer(self, compute: Callable[[], Any]) -> Deferred[Any]:
        if self.unavailable is not None:
            return fail(Unavailable(self.unavailable))
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.pending.append((d, compute))
            return d
        return succeed(compute())

    def flush(self) -> None:
        """Answer every held request now (in order)."""
        pending, self.pending = self.pending, []
        for d, compute in pending:
            if self.unavailable is not None:
                d.errback(Unavailable(self.unavailable))
            else:
                d.callback(compute())


class FakeRates(Controlled):
    """Token buckets on C{clock}, all or nothing, as the Redis script keeps them."""

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__()
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, stamp)
        self.takes: list[tuple[BucketSpec, ...]] = []
        self.given_back: list[tuple[BucketSpec, ...]] = []

    def _tokens(self, spec: BucketSpec, now: float) -> float:
        tokens, stamp = self.buckets.get(spec.key, (spec.burst, now))
        return min(spec.burst, tokens + (now - stamp) * spec.rate)

    def take(self, specs: Sequence[BucketSpec]) -> "Deferred[tuple[float, str]]":
        specs = tuple(specs)
        self.takes.append(specs)

        def compute() -> tuple[float, str]:
            now = self.clock.seconds()
            worst, which = 0.0, ""
            for spec in specs:
                tokens = self._tokens(spec, now)
                wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / spec.rate
                if wait > worst:
                    worst, which = wait, spec.kind
            if worst:
                return worst, which
            for spec in specs:
                self.buckets[spec.key] = (self._tokens(spec, now) - 1.0, now)
            return 0.0, ""

        return self._answer(compute)

    def give_back(self, specs: Sequence[BucketSpec]) -> None:
        self.given_back.append(tuple(specs))
        now = self.clock.seconds()
        for spec in specs:
            self.buckets[spec.key] = (min(spec.burst, self._tokens(spec, now) + 1.0), now)


class FakeLeases(Controlled):
    """At most C{limit} leases per key; ids are unique."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[str, set[str]] = {}
        self.acquires: list[str] = []
        self.released: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    def acquire(self, key: str, limit: int) -> "Deferred[str | None]":
        self.acquires.append(key)

        def compute() -> str | None:
            held = self.held.setdefault(key, set())
            if len(held) >= limit:
                return None
            lease = f"lease-{next(self._ids)}"
            held.add(lease)
            return lease

        return self._answer(compute)

    def release(self, key: str, lease: str) -> None:
        self.released.append((key, lease))
        self.held.get(key, set()).discard(lease)


class FakeFlags(Controlled):
    """Flags by kind; L{set} tells every watcher at once."""

    def __init__(self) -> None:
        super().__init__()
        self.flags: dict[str, dict[str, str]] = {kind: {} for kind in FLAG_KINDS}
        self.sets: list[tuple[str, str, str | None]] = []
        self.watchers: list[Callable[[dict[str, dict[str, str]]], None]] = []

    def set(self, kind: str, name: str, value: str | None) -> "Deferred[None]":
        self.sets.append((kind, name, value))

        def compute() -> None:
            if value is None:
                self.flags[kind].pop(name, None)
            else:
                self.flags[kind][name] = value
            for watcher in list(self.watchers):
                watcher(self.copy())

        return self._answer(compute)

    def copy(self) -> dict[str, dict[str, str]]:
        return {kind: dict(names) for kind, names in self.flags.items()}

    def snapshot(self) -> "Deferred[dict[str, dict[str, str]]]":
        return self._answer(self.copy)

    def watch(self, callback: Callable[[dict[str, dict[str, str]]], None]) -> None:
        self.watchers.append(callback)


class BreakerHub:
    """What the replicas' breaker stores share: every publication, and who watches."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, str, float]] = []  # (replica, backend, state, until)
        self.watchers: list[tuple[str, Callable[[str, str, float], None]]] = []

    def store(self, replica: str) -> "FakeBreakers":
        return FakeBreakers(self, replica)


class FakeBreakers:
    """One replica's breaker store: what it publishes reaches every other replica's watcher."""

    def __init__(self, hub: BreakerHub, replica: str) -> None:
        self.hub = hub
        self.replica = replica

    def publish(self, backend: str, state: str, until: float) -> None:
        self.hub.published.append((self.replica, backend, state, until))
        for replica, callback in list(self.hub.watchers):
            if replica != self.replica:
                callback(backend, state, until)

    def watch(self, callback: Callable[[str, str, float], None]) -> None:
        self.hub.watchers.append((self.replica, callback))


class FakeState(SharedState):
    """A L{SharedState} with the given stores (the others None: in process)."""

    kind = "fake"

    def __init__(
        self,
        replica: str = "r1",
        on_unavailable: dict[str, str] | None = None,
        rates: Any = None,
        leases: Any = None,
        flags: Any = None,
        breakers: Any = None,
    ) -> None:
        super().__init__(replica, on_unavailable)
        self.rates = rates
        self.leases = leases
        self.flags = flags
        self.breakers = breakers
