"""
The state seam: what replicas of the gateway share, behind one small
interface per kind.

Each kind of shared state has a store interface here.  L{SharedState}
holds one store of each kind, or None for a kind kept in this process (the
default: today's in-process code paths, no new dependency, no Deferred on
the fast path).  With C{state: {redis: URL}} the Redis implementation
(L{twisted_mcp.state.redis}) provides every store, and replicas behind one
load balancer share rate buckets, concurrency leases, the run-time kill
switch, pin approvals and quarantine, revoked tokens, (optionally)
circuit breakers, and the records of handshake-era HTTP sessions.

Every store method that talks to the shared store returns a Deferred that
fires within C{state.timeout} seconds: with a result, or with
L{Unavailable} (the store cannot be reached now).  None of them blocks the
reactor.  What the gateway does while a store is unavailable is the
operator's choice per kind (L{SharedState.on_unavailable}): C{"refuse"}
(fail closed) or C{"local"} (keep serving with this process's own state).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import attrs
from twisted.internet.defer import Deferred, succeed

#: The kinds of state an operator chooses a behaviour for when the shared store is unreachable.
UNAVAILABLE_KINDS = ("limits", "killSwitch", "sessions")
#: What the gateway may do then: refuse (fail closed), or go on with this process's own state.
UNAVAILABLE_CHOICES = ("refuse", "local")

#: The kinds of flags a L{FlagStore} holds (name -> value, each a str).
FLAG_KINDS = (
    "kill:principal",
    "kill:backend",
    "kill:tool",
    "kill:prompt",
    "kill:resource",
    "approval",  # exposed tool name -> the JSON of its lock-file entry
    "quarantine",  # exposed tool name -> the reason
    # token id (a JWT's jti, or "sha256:" + hex of a static token) -> "<expires epoch seconds>": the
    # time after which the revocation may be forgotten (the token's own expiry, e.g. a JWT's exp;
    # else a bounded default, L{REVOCATION_DEFAULT_SECONDS} from now), as decimal text ("1767225600").
    "revoked",
)

#: How long a revocation is kept when the token's own expiry is not known (30 days).
REVOCATION_DEFAULT_SECONDS = 30 * 24 * 3600


class Unavailable(Exception):
    """The shared store cannot be reached now; the message says why (no secret in it)."""


class Refused(Unavailable):
    """The shared store answered, and refused: sending the same again will not help (a write is not retried)."""


class FlagLimitReached(Refused):
    """
    L{FlagStore.set} refused a new flag: its kind already holds the most
    flags the store keeps (C{limit}); nothing was written, nothing dropped.
    The message says so for an operator.
    """

    def __init__(self, message: str, kind: str, limit: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.limit = limit


@attrs.frozen
class BucketSpec:
    """
    One token bucket a request takes a token from: C{rate} tokens per
    second, at most C{burst} saved up.  C{key} names it among every
    replica's (C{"p\\x00alice"}, C{"t\\x00alice\\x000\\x00tool"}, C{"b\\x00github"});
    C{kind} is what a refusal names (C{"principal"}, C{"tool"}, C{"backend"}).
    """

    key: str
    rate: float
    burst: float
    kind: str


class RateStore(Protocol):
    def take(self, specs: Sequence[BucketSpec]) -> "Deferred[tuple[float, str]]":
        """
        All or nothing, atomically across replicas: when every bucket of
        C{specs} holds a token, take one from each and fire C{(0.0, "")};
        else take none and fire C{(seconds until the worst has one, its kind)}.
        """

    def give_back(self, specs: Sequence[BucketSpec]) -> None:
        """Return the token each of C{specs} gave (a call refused after step 5); best effort, never raises."""


class LeaseStore(Protocol):
    def acquire(self, key: str, limit: int) -> "Deferred[str | None]":
        """
        A lease on one of C{limit} slots named C{key} (shared by every
        replica): its id, or None when all are held.  A lease lasts until
        L{release}d, or until C{state.leaseSeconds} after its replica
        stopped renewing it (it died).
        """

    def release(self, key: str, lease: str) -> None:
        """Give the lease back; best effort, never raises."""


class FlagStore(Protocol):
    def set(self, kind: str, name: str, value: str | None) -> "Deferred[None]":
        """
        Set (or, with None, remove) one flag, and tell every replica.  A
        new flag of a kind that already holds the most the store keeps
        fails with L{FlagLimitReached}; a C{revoked} value must be
        C{"<expires epoch seconds>"} (ValueError otherwise).
        """

    def snapshot(self) -> "Deferred[dict[str, dict[str, str]]]":
        """Every flag: kind -> name -> value (every kind of L{FLAG_KINDS} present)."""

    def watch(self, callback: Callable[[dict[str, dict[str, str]]], None]) -> None:
        """
        Call C{callback} with a fresh snapshot soon after any replica changes
        a flag (pub/sub), and every C{state.resyncInterval} seconds anyway
        (the backstop).  Its exceptions are logged, never raised.
        """


class BreakerStore(Protocol):
    def publish(self, backend: str, state: str, until: float) -> None:
        """This replica's breaker of C{backend} went to C{state} (C{"open"}: until C{until}, epoch seconds)."""

    def watch(self, callback: Callable[[str, str, float], None]) -> None:
        """Call C{callback(backend, state, until)} for each change another replica publishes."""


class SessionStore(Protocol):
    def save(self, sid: str, record: dict[str, Any], ttl: float) -> "Deferred[None]":
        """Store the record of HTTP session C{sid} (JSON-able), expiring C{ttl} seconds after its last use."""

    def load(self, sid: str) -> "Deferred[dict[str, Any] | None]":
        """The record of C{sid}, or None (never saved, deleted, or expired)."""

    def touch(self, sid: str, ttl: float) -> None:
        """C{sid} was used: it expires C{ttl} seconds from now.  Best effort, never raises."""

    def delete(self, sid: str) -> "Deferred[None]":
        """Forget C{sid}, and tell every replica (L{watch_ended})."""

    def watch_ended(self, callback: Callable[[str], None]) -> None:
        """Call C{callback(sid)} when another replica deleted session C{sid}."""


class SharedState:
    """
    The stores the gateway's state goes through.  This base class is the
    in-process state: every store None, always available.

    @ivar kind: C{"local"} or C{"redis"}.
    @ivar replica: this process's name among the replicas (in logs, audit
        records and lease ids).
    """

    kind = "local"
    rates: RateStore | None = None
    leases: LeaseStore | None = None
    flags: FlagStore | None = None
    breakers: BreakerStore | None = None
    sessions: SessionStore | None = None

    def __init__(self, replica: str = "local", on_unavailable: dict[str, str] | None = None) -> None:
        self.replica = replica
        self._choices = {kind: "refuse" if kind != "sessions" else "local" for kind in UNAVAILABLE_KINDS}
        self._choices.update(on_unavailable or {})
        self._listeners: list[Callable[[bool, str | None], None]] = []
        #: Whether the shared store answers now, and why not.
        self.available = True
        self.problem: str | None = None
        #: Times it became unreachable (the metric).
        self.outages = 0

    def on_unavailable(self, kind: str) -> str:
        """C{"refuse"} or C{"local"}: what to do about C{kind} (L{UNAVAILABLE_KINDS}) while the store is unreachable."""
        return self._choices[kind]

    def add_listener(self, callback: Callable[[bool, str | None], None]) -> None:
        """Call C{callback(available, problem)} whenever availability changes."""
        self._listeners.append(callback)

    def set_available(self, available: bool, problem: str | None = None) -> None:
        """Record (and report, once per change) whether the store answers."""
        if available == self.available:
            self.problem = problem if not available else None
            return
        self.available = available
        self.problem = None if available else problem
        if not available:
            self.outages += 1
        for callback in list(self._listeners):
            callback(available, self.problem)

    def start(self) -> "Deferred[None]":
        return succeed(None)

    def stop(self) -> "Deferred[None]":
        return succeed(None)

    def describe(self) -> str:
        """What the state is, for logs and /status (no secret: a URL without its password)."""
        return "in-process (this replica only)"


__all__ = [
    "FLAG_KINDS",
    "REVOCATION_DEFAULT_SECONDS",
    "UNAVAILABLE_CHOICES",
    "UNAVAILABLE_KINDS",
    "BreakerStore",
    "BucketSpec",
    "FlagLimitReached",
    "FlagStore",
    "LeaseStore",
    "RateStore",
    "Refused",
    "SessionStore",
    "SharedState",
    "Unavailable",
]
