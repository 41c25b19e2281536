"""
Rate limits (token buckets) and concurrency limits (slots with a bounded
queue), all on the injected clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime


class TokenBucket:
    """
    C{rate} tokens per second, at most C{burst} saved up; a call takes one.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available (0.0: one is available now)."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.tokens = tokens
        self.stamp = now
        if tokens >= 1.0:
            return 0.0
        return (1.0 - tokens) / self.rate if self.rate > 0 else float("inf")

    def take(self) -> None:
        self.tokens -= 1.0


#: Beyond this many buckets in one table, the full (idle) ones are forgotten.
MAX_BUCKETS = 10000


def forget_full(buckets: dict[Any, TokenBucket], now: float) -> None:
    """Keep a table of buckets (one per principal, say) bounded: a full
    bucket admits exactly as a new one would, so it can go."""
    if len(buckets) < MAX_BUCKETS:
        return
    for key, bucket in list(buckets.items()):
        if bucket.wait_time(now) == 0.0 and bucket.tokens >= bucket.burst:
            del buckets[key]


class Busy(Exception):
    """No slot became free: the queue was full, or the wait timed out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Slots:
    """
    At most C{limit} holders at once; up to C{queue} more wait (each at most
    C{timeout} seconds) in arrival order; beyond that, L{Busy}.
    """

    def __init__(self, limit: int, queue: int, timeout: float, clock: IReactorTime) -> None:
        self.limit = limit
        self.queue = queue
        self.timeout = timeout
        self.clock = clock
        self.held = 0
        self.waiting: deque[Deferred[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a slot now if one is free (nobody waiting); no Deferred."""
        if self.held < self.limit and not self.waiting:
            self.held += 1
            return True
        return False

    def acquire(self) -> Deferred[None]:
        """Fires when a slot is held (release it with L{release})."""
        if self.held < self.limit and not self.waiting:
            self.held += 1
            return succeed(None)
        if len(self.waiting) >= self.queue:
            raise Busy(f"{self.held} call(s) running and {len(self.waiting)} waiting (the limit is {self.limit}, the queue {self.queue})")

        def cancel(d: Deferred[None]) -> None:
            try:
                self.waiting.remove(d)
            except ValueError:
                pass

        d: Deferred[None] = Deferred(cancel)
        self.waiting.append(d)
        call = self.clock.callLater(self.timeout, self._expire, d)

        def done(result: Any) -> Any:
            if call.active():
                call.cancel()
            return result

        d.addBoth(done)
        return d

    def _expire(self, d: Deferred[None]) -> None:
        try:
            self.waiting.remove(d)
        except ValueError:
            return
        d.errback(Busy(f"no slot became free within {self.timeout:g} s (the limit is {self.limit})"))

    def release(self) -> None:
        if self.waiting:
            # Hand the slot straight to the next in line.
            self.waiting.popleft().callback(None)
        else:
            self.held -= 1
