"""
One piece of work per key at a time (a refresh, a token fetch, a
discovery): callers that come while it runs wait for the same outcome, each
through a Deferred of its own, so that one caller cancelling never cancels
the work the others wait for.
"""

from __future__ import annotations

from typing import Callable, Generic, Hashable, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """The work running now, by key, and who waits for each."""

    def __init__(self) -> None:
        self._waiting: dict[K, list[Deferred[T]]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._waiting

    def run(self, key: K, start: Callable[[], Deferred[T]]) -> Deferred[T]:
        """C{start()}'s outcome, shared with whoever asks for C{key} while it runs."""
        waiter: Deferred[T] = Deferred()
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        waiters = self._waiting[key] = [waiter]

        def done(outcome: T | Failure) -> None:
            del self._waiting[key]
            for each in waiters:
                if each.called:
                    continue
                if isinstance(outcome, Failure):
                    each.errback(outcome)
                else:
                    each.callback(outcome)

        start().addBoth(done)
        return waiter


__all__ = ["SingleFlight"]
