"""
Rate and concurrency limits held in the shared state (L{twisted_mcp.state}),
so that they hold across every replica of the gateway.

Rate limits: the pipeline names the buckets a request takes from
(L{BucketSpec}s), and the call takes them at the start of its dispatch with
one L{RateStore.take} (L{take_tokens}).

Concurrency limits: L{LeaseSlots} is a L{twisted_mcp.policy.limits.Slots}
whose slots are leases in a L{LeaseStore}, C{limit} across every replica.
Waiting stays a bounded queue in this process, each waiter at most
C{timeout} seconds: the head of the queue tries again when a call of this
replica gives its lease back, and every L{RETRY} seconds for slots freed on
other replicas.

While the shared store cannot be reached (L{Unavailable}), the operator's
choice for C{limits} (C{state.onUnavailable.limits}) decides: C{"refuse"}
(L{StateRefused}: the caller gets C{STATE_UNAVAILABLE}) or C{"local"} (this
process's own buckets and slots, as without shared state).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.policy.limits import Busy, Slots
from twisted_mcp.state.base import BucketSpec, LeaseStore, RateStore, SharedState, Unavailable

log = Logger()


class StateRefused(Exception):
    """
    A limit cannot be checked across replicas now and the operator chose to
    refuse (C{onUnavailable.limits: refuse}); C{message} says what and why.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def unavailable_message(what: str, why: str, kind: str = "limits") -> str:
    """The message of a refusal because the shared store cannot be reached: what could not be checked, and why."""
    return (
        f"the shared state (Redis) cannot be reached: {what} cannot be checked across replicas; {why} "
        f"(state.onUnavailable.{kind} is refuse)"
    )


def why_unavailable(state: SharedState, failure: Failure) -> str:
    """Why the store did not answer: the store's own words, else the state's problem."""
    text = str(failure.value) if failure.check(Unavailable) else ""
    return text or state.problem or "it did not answer in time"


def take_tokens(rates: RateStore, specs: Sequence[BucketSpec]) -> "Deferred[tuple[float, str]]":
    """
    L{RateStore.take} of C{specs}, cancellable: a call cancelled while the
    store answers gives the tokens it was then given back.
    """
    cancelled = False

    def cancel(_: Deferred[Any]) -> None:
        nonlocal cancelled
        cancelled = True

    outer: Deferred[tuple[float, str]] = Deferred(cancel)

    def answered(answer: tuple[float, str]) -> None:
        if not cancelled:
            outer.callback(answer)
        elif not answer[0]:
            rates.give_back(specs)

    def failed(f: Failure) -> None:
        if not cancelled:
            outer.errback(f)
        elif not f.check(Unavailable):
            log.failure("the shared rate limits failed after the call was cancelled", f)

    try:
        inner = rates.take(specs)
    except Exception:
        inner = fail()
    inner.addCallbacks(answered, failed)
    return outer


class Lease:
    """One lease held by one call: L{release} gives exactly it back."""

    __slots__ = ("owner", "lease")

    def __init__(self, owner: "LeaseSlots", lease: str) -> None:
        self.owner = owner
        self.lease = lease

    def release(self) -> None:
        self.owner._give_back(self.lease)


class _Waiter:
    """One call's wait for a lease: first its own attempt, then (perhaps) a place in the queue."""

    __slots__ = ("d", "queued", "gone", "timer", "inner")

    def __init__(self) -> None:
        self.d: Deferred[Any] | None = None
        self.queued = False
        self.gone = False
        self.timer: IDelayedCall | None = None
        self.inner: Deferred[Any] | None = None


class LeaseSlots:
    """
    A L{Slots} whose C{limit} slots named C{key} are leases in C{store},
    shared by every replica.  L{try_acquire} is always False (a lease takes
    a round trip): L{acquire} fires with what to L{release} later (a
    L{Lease}, or C{local} when the store could not be reached and the
    operator chose C{"local"}).

    @param local: this process's own slots of the same limit (those the
        gateway uses without shared state).
    @param state: the shared state (its choice for C{limits} while the
        store is unreachable).
    """

    #: Seconds between attempts of the head of the queue (slots freed on other replicas).
    RETRY = 0.05

    def __init__(
        self,
        key: str,
        limit: int,
        queue: int,
        timeout: float,
        clock: IReactorTime,
        store: LeaseStore,
        state: SharedState,
        local: Slots,
    ) -> None:
        self.key = key
        self.limit = limit
        self.queue = queue
        self.timeout = timeout
        self.clock = clock
        self.store = store
        self.state = state
        self.local = local
        self.waiting: deque[_Waiter] = deque()
        self._trying = False
        self._again = False
        self._timer: IDelayedCall | None = None

    def try_acquire(self) -> bool:
        """Never at once: a lease is a round trip to the shared store."""
        return False

    def acquire(self) -> "Deferred[Any]":
        """
        Fires with the holder's handle (release it with its C{release()})
        once a lease is held; fails with L{Busy} (the queue full, the wait
        too long) or L{StateRefused}.  Raises L{Busy} at once when the
        queue is full already.
        """
        if self.waiting and len(self.waiting) >= self.queue:
            raise Busy(self._full())
        w = _Waiter()
        w.d = Deferred(lambda _: self._cancel(w))
        if self.waiting:
            self._enqueue(w)  # behind those already waiting here
        else:
            self._attempt(w, head=False)
        return w.d

    def release(self) -> None:
        raise TypeError("a shared concurrency slot is released through the handle acquire() gave")

    # -- the attempts ------------------------------------------------------

    def _attempt(self, w: _Waiter, head: bool) -> None:
        try:
            d = self.store.acquire(self.key, self.limit)
        except Exception:
            d = fail()
        d.addCallbacks(self._answered, self._failed, callbackArgs=(w, head), errbackArgs=(w, head))

    def _answered(self, lease: str | None, w: _Waiter, head: bool) -> None:
        if head:
            self._trying = False
        if lease is not None:
            if not w.gone:
                self._fire(w, lease)
            elif self.waiting:
                self._fire(self.waiting[0], lease)  # the one it was for left: the next in line takes it
            else:
                self._give_back(lease)
                return
            if self.waiting:
                self._try_head()  # perhaps more are free
            return
        if not w.gone and not w.queued:
            if len(self.waiting) >= self.queue:
                w.gone = True
                assert w.d is not None
                w.d.errback(Busy(self._full()))
            else:
                self._enqueue(w)
        if head and self._again:
            self._try_head()
        else:
            self._arm()

    def _failed(self, f: Failure, w: _Waiter, head: bool) -> None:
        if head:
            self._trying = False
        if f.check(CancelledError):
            return
        if not f.check(Unavailable):
            log.failure("concurrency limit {key}: the shared store failed", f, key=self.key)
        # Every waiter of this replica meets the same store: the operator's choice, for each.
        waiters = [w] if not w.gone and not w.queued else []
        waiters += list(self.waiting)
        self.waiting.clear()
        self._disarm()
        if self.state.on_unavailable("limits") == "local":
            for one in waiters:
                self._stop_timer(one)
                self._locally(one)
            return
        refused = StateRefused(unavailable_message("concurrency limits", why_unavailable(self.state, f)))
        for one in waiters:
            self._stop_timer(one)
            one.gone = True
            assert one.d is not None
            one.d.errback(refused)

    def _locally(self, w: _Waiter) -> None:
        """C{w} waits for this process's own slots instead."""
        w.queued = False
        d = w.d
        assert d is not None
        try:
            inner = self.local.acquire()
        except Busy as e:
            w.gone = True
            d.errback(e)
            return
        w.inner = inner
        local = self.local

        def held(_: None) -> None:
            w.gone = True
            d.callback(local)

        def failed(f: Failure) -> None:
            if not w.gone:
                w.gone = True
                d.errback(f)

        inner.addCallbacks(held, failed)

    def _try_head(self) -> None:
        if self._trying:
            self._again = True
            return
        if not self.waiting:
            self._disarm()
            return
        self._trying = True
        self._again = False
        self._attempt(self.waiting[0], head=True)

    # -- the queue ---------------------------------------------------------

    def _enqueue(self, w: _Waiter) -> None:
        w.queued = True
        self.waiting.append(w)
        w.timer = self.clock.callLater(self.timeout, self._expire, w)
        self._arm()

    def _fire(self, w: _Waiter, lease: str) -> None:
        w.gone = True
        self._leave(w)
        assert w.d is not None
        w.d.callback(Lease(self, lease))

    def _leave(self, w: _Waiter) -> None:
        self._stop_timer(w)
        if w.queued:
            w.queued = False
            try:
                self.waiting.remove(w)
            except ValueError:
                pass
        if not self.waiting:
            self._disarm()

    @staticmethod
    def _stop_timer(w: _Waiter) -> None:
        timer, w.timer = w.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _expire(self, w: _Waiter) -> None:
        w.timer = None
        if w.gone:
            return
        w.gone = True
        self._leave(w)
        assert w.d is not None
        w.d.errback(Busy(f"no slot became free within {self.timeout:g} s (the limit is {self.limit}, across the replicas)"))

    def _cancel(self, w: _Waiter) -> None:
        w.gone = True
        self._leave(w)
        inner, w.inner = w.inner, None
        if inner is not None:
            inner.cancel()

    def _arm(self) -> None:
        if self.waiting and self._timer is None:
            self._timer = self.clock.callLater(self.RETRY, self._tick)

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _tick(self) -> None:
        self._timer = None
        if not self._trying:
            self._try_head()

    def _give_back(self, lease: str) -> None:
        try:
            self.store.release(self.key, lease)
        except Exception:
            log.failure("concurrency limit {key}: giving a lease back failed", key=self.key)
        if self.waiting:
            self._try_head()  # the next in line here tries again at once

    def _full(self) -> str:
        return (
            f"{self.limit} call(s) running across the replicas and {len(self.waiting)} waiting on this one "
            f"(the limit is {self.limit}, the queue {self.queue})"
        )


__all__ = ["Lease", "LeaseSlots", "StateRefused", "take_tokens", "unavailable_message", "why_unavailable"]
