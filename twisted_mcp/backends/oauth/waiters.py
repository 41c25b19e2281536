"""
Calls waiting for a principal to finish an authorization in a browser
(C{docs/design/oauth.md} §5): each waiter is its own Deferred, fired with
C{True} when the broker reports that (principal, backend) authorized
(L{Waiters.authorized}, given to C{OAuthBroker.on_authorized}) and with
C{False} once its bound (C{oauth.consentWait}) passes on the injected
clock.  Cancelling a waiter forgets it and its timer.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted_mcp.backends.oauth.problems import OAuthProblem

Key = tuple[str, str]


class _Waiter:
    __slots__ = ("deferred", "timer")

    def __init__(self, deferred: Deferred[bool]) -> None:
        self.deferred = deferred
        self.timer: IDelayedCall | None = None


class Waiters:
    """
    Who waits for which (principal, backend) to authorize.

    @param clock: every timer.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._waiting: dict[Key, list[_Waiter]] = {}

    def __repr__(self) -> str:
        return f"<Waiters: {len(self)} waiting>"

    def __len__(self) -> int:
        return sum(len(each) for each in self._waiting.values())

    def wait(self, principal: str, backend: str, timeout: float) -> Deferred[bool]:
        """A Deferred firing True once C{principal} authorized C{backend}, False after C{timeout} seconds."""
        key = (principal, backend)

        def cancelled(_: Deferred[bool]) -> None:
            self._forget(key, waiter)

        waiter = _Waiter(Deferred(cancelled))
        self._waiting.setdefault(key, []).append(waiter)
        waiter.timer = self.clock.callLater(timeout, self._expired, key, waiter)
        return waiter.deferred

    def authorized(self, backend: str, principal: str) -> None:
        """C{principal} authorized C{backend} (the broker's C{on_authorized} order): every waiter for it fires True."""
        for waiter in self._waiting.pop((principal, backend), []):
            self._stop_timer(waiter)
            waiter.deferred.callback(True)

    def failed(self, backend: str, principal: str, problem: OAuthProblem) -> None:
        """C{principal}'s authorization of C{backend} failed (refused at the AS...): every waiter for it fails with it."""
        for waiter in self._waiting.pop((principal, backend), []):
            self._stop_timer(waiter)
            waiter.deferred.errback(problem.to_error(backend))

    def _expired(self, key: Key, waiter: _Waiter) -> None:
        waiter.timer = None
        self._forget(key, waiter)
        waiter.deferred.callback(False)

    def _forget(self, key: Key, waiter: _Waiter) -> None:
        self._stop_timer(waiter)
        each = self._waiting.get(key)
        if each is not None and waiter in each:
            each.remove(waiter)
            if not each:
                del self._waiting[key]

    @staticmethod
    def _stop_timer(waiter: _Waiter) -> None:
        timer: Any = waiter.timer
        waiter.timer = None
        if timer is not None and timer.active():
            timer.cancel()


__all__ = ["Waiters"]
