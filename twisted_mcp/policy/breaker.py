"""
Circuit breakers: after C{threshold} consecutive transport failures or
timeouts, a backend's breaker opens and calls fail at once; after
C{open_seconds} exactly one probe call is let through; its success closes
the breaker, its failure opens it again.

With breakers shared across replicas (C{state: {breakers: shared}}), each
transition is passed to L{Breaker.on_change} (the pipeline publishes it),
and another replica's is applied with L{Breaker.apply}, which publishes
nothing (no echo).  Each replica sends its own probe.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class Breaker:
    """
    @ivar on_change: called with the breaker and its new state after each
        transition of its own (None: nobody is told).
    """

    def __init__(self, name: str, threshold: int, open_seconds: float, clock: IReactorTime) -> None:
        self.name = name
        self.threshold = threshold
        self.open_seconds = open_seconds
        self.clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False
        self.on_change: Callable[[Breaker, str], None] | None = None

    def until(self) -> float:
        """When an open breaker lets a probe through (the clock's seconds)."""
        return self.opened_at + self.open_seconds

    def apply(self, state: str, until: float) -> bool:
        """
        Another replica's breaker of the same backend went to C{state}
        (C{"open"} until C{until}, the clock's seconds; C{"closed"}): this
        one follows, without telling L{on_change}.  Half-open is each
        replica's own (its probe).  Returns whether anything changed.
        """
        if state == OPEN:
            if until <= self.clock.seconds() or (self.state == OPEN and self.until() == until):
                return False
            old, self.state = self.state, OPEN
            self.opened_at = until - self.open_seconds
            self.probing = False
            log.warn(
                "circuit breaker of backend {backend}: {old} -> open (opened on another replica); calls fail at once for {seconds:.1f} s",
                backend=self.name,
                old=old,
                seconds=until - self.clock.seconds(),
            )
            return True
        if state == CLOSED and self.state != CLOSED:
            old, self.state = self.state, CLOSED
            self.failures = 0
            self.probing = False
            log.info("circuit breaker of backend {backend}: {old} -> closed (closed on another replica)", backend=self.name, old=old)
            return True
        return False

    def retry_after(self) -> float:
        return max(0.0, self.opened_at + self.open_seconds - self.clock.seconds())

    def admit(self) -> float:
        """0.0 if a call may go through now (perhaps as the probe), else
        the seconds to wait."""
        return self.admit_call()[0]

    def admit_call(self) -> tuple[float, bool]:
        """(seconds to wait, or 0.0; whether the admitted call is the probe)."""
        if self.state == CLOSED:
            return 0.0, False
        if self.state == OPEN:
            wait = self.retry_after()
            if wait > 0:
                return wait, False
            self._set(HALF_OPEN)
        if self.probing:
            return max(1.0, self.open_seconds / 10), False
        self.probing = True
        return 0.0, True

    def succeeded(self, probe: bool = True) -> None:
        self.failures = 0
        if self.state != CLOSED and probe:
            self.probing = False
            self._set(CLOSED)

    def failed(self, probe: bool = True) -> None:
        if self.state == HALF_OPEN:
            if probe:
                self.probing = False
                self.opened_at = self.clock.seconds()
                self._set(OPEN)
            return
        if self.state == OPEN:
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self.clock.seconds()
            self._set(OPEN)

    def backend_up(self) -> None:
        """The backend came (back) up: an open breaker may probe at once."""
        if self.state == OPEN:
            self.opened_at = self.clock.seconds() - self.open_seconds
            log.info("circuit breaker of backend {backend}: the backend is up again; the next call is the probe", backend=self.name)

    def abandoned(self, probe: bool = True) -> None:
        """The call was cancelled: it proves nothing either way."""
        if self.state == HALF_OPEN and probe:
            self.probing = False

    def _set(self, state: str) -> None:
        old, self.state = self.state, state
        if state == OPEN:
            log.warn(
                "circuit breaker of backend {backend}: {old} -> open after {n} failure(s); calls fail at once for {seconds:g} s",
                backend=self.name,
                old=old,
                n=self.failures,
                seconds=self.open_seconds,
            )
        else:
            log.info("circuit breaker of backend {backend}: {old} -> {new}", backend=self.name, old=old, new=state)
        if state == CLOSED:
            self.failures = 0
        if self.on_change is not None:
            self.on_change(self, state)
