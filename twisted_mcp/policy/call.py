"""
L{Call}: steps 6 to 9 of the policy for one allowed request (a tool call,
a prompt get, a resource read...): its concurrency slots (perhaps
waiting), its backend's circuit breaker, and its outcome (what a breaker
counts, the audit record's result).  With rate limits in the shared state
(L{twisted_mcp.state}), step 5's tokens are taken here too, first (a round
trip: L{Call.specs}).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from twisted_mcp.backends.direct import deferred_of
from twisted_mcp.mcp import errors
from twisted_mcp.policy.breaker import Breaker
from twisted_mcp.policy.limits import Busy, Slots, TokenBucket
from twisted_mcp.policy.principal import Principal
from twisted_mcp.policy.shared_limits import StateRefused, take_tokens, unavailable_message, why_unavailable
from twisted_mcp.policy.subject import Subject
from twisted_mcp.state.base import BucketSpec, Unavailable
from twisted_mcp.wire.jsonrpc import JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.policy.pipeline import Policy


#: Transport failures and timeouts: what counts against a breaker, when the
#: gateway raised them (a backend's own error with such a code is an answer).
_BREAKER_CODES = frozenset(
    {
        errors.BACKEND_UNAVAILABLE,
        errors.BACKEND_TIMEOUT,
        errors.BACKEND_LOST,
        errors.BACKEND_RESPONSE_TOO_LARGE,
        errors.BACKEND_HTTP_ERROR,
    }
)


def _up(seconds: float) -> float:
    """Seconds rounded up to the millisecond: retrying after it is never too early."""
    return math.ceil(seconds * 1000) / 1000


#: The refusal of a call while the audit trail cannot be written (C{onFailure: refuse}, or its queue full).
AUDIT_REFUSAL = "the audit trail cannot be written; requests are refused until it can"


def rate_refusal(wait: float, which: str) -> tuple[str, dict[str, Any]]:
    """The message and data of a C{RATE_LIMITED} refusal: which limit, and when to retry."""
    return f"rate limit ({which}) reached; retry in {_up(wait):.3f} s", {"retryAfter": _up(wait), "limit": which}


class Call:
    """
    Steps 6 to 9 of one allowed request.

    @ivar subject: what the request is about.
    @ivar entry: the tool's catalog entry (tools only; None otherwise).
    @ivar specs: the shared rate buckets L{dispatch} takes a token of
        first (None: none, or step 5 was done in this process).
    @ivar shared: the shared buckets it took a token of (given back when
        the call is refused later).
    """

    __slots__ = (
        "policy", "record", "subject", "entry", "principal", "peer", "slots", "held", "breaker", "probe", "started", "taken", "waited", "done",
        "specs", "shared",
    )  # fmt: skip

    def __init__(
        self,
        policy: Policy,
        record: dict[str, Any],
        subject: Subject,
        slots: list[Slots],
        principal: Principal,
        peer: Any = None,
        entry: Any = None,
    ) -> None:
        self.policy = policy
        self.peer = peer
        self.record = record
        self.subject = subject
        self.entry = entry
        self.principal = principal
        self.slots = slots
        self.held: list[Any] = []
        self.breaker: Breaker | None = None
        self.probe = False
        self.started = policy.clock.seconds()
        self.taken: list[TokenBucket] = []
        self.waited = False
        self.done = False
        self.specs: tuple[BucketSpec, ...] | None = None
        self.shared: tuple[BucketSpec, ...] | None = None

    def dispatch(self, send: Callable[[], Any]) -> Any:
        """
        Take the shared rate-limit tokens (if any), the concurrency slots
        (perhaps waiting), pass the breaker, send.  What C{send} returns (a
        Deferred, or a backend's direct call) is returned when it is sent
        at once; a Deferred when it is sent after a wait.  While the audit
        trail is behind, the call first waits for it (bounded) to catch up.
        """
        audit = self.policy.audit
        if audit is not None and audit.behind:
            self.waited = True
            return audit.room().addCallback(self._audit_caught_up, send)
        return self._dispatch_now(send)

    def _audit_caught_up(self, _: bool, send: Callable[[], Any]) -> Any:
        """After the wait for the audit trail: refused if it cannot be written now (C{onFailure}), else on its way."""
        if self.policy.audit_blocked():
            raise self._refuse(errors.AUDIT_UNAVAILABLE, AUDIT_REFUSAL)
        # Sent from the chain now: a direct call is waited for through its Deferred.
        return deferred_of(self._dispatch_now(send))

    def _dispatch_now(self, send: Callable[[], Any]) -> Any:
        if self.specs is not None:
            return self._take_rates(send)
        slots = self.slots
        if not slots:
            return self._pass_breaker(send)
        # Fast path: every slot free now, no Deferred in between.
        for s in slots:
            if not s.try_acquire():
                break
            self.held.append(s)
        else:
            return self._pass_breaker(send)
        self.waited = True
        d = self._acquire(len(self.held))
        # Sent from the chain now: a direct call is waited for through its Deferred.
        return d.addCallback(lambda _: deferred_of(self._pass_breaker(send)))

    def _take_rates(self, send: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """
        Step 5 in the shared state: one token of every bucket of
        L{specs}, across the replicas, then on with L{dispatch}.  A
        refusal is audited once, as one in L{Policy.begin} is.  While the
        store cannot be reached, the operator's choice for C{limits}:
        refuse (C{STATE_UNAVAILABLE}), or this process's own buckets.
        """
        policy = self.policy
        state = policy.state
        rates = state.rates
        assert rates is not None
        specs, self.specs = self.specs, None
        assert specs is not None

        def taken(answer: tuple[float, str]) -> Any:
            wait, which = answer
            if wait:
                message, data = rate_refusal(wait, which)
                raise self._refuse(errors.RATE_LIMITED, message, data)
            self.shared = specs
            return deferred_of(self._dispatch_now(send))

        def unavailable(f: Failure) -> Any:
            f.trap(Unavailable)
            if state.on_unavailable("limits") != "local":
                why = unavailable_message("rate limits", why_unavailable(state, f))
                raise self._refuse(errors.STATE_UNAVAILABLE, why, {"unavailable": "limits"})
            wait, which = policy._rate_check(self.principal, self.subject)
            if wait:
                message, data = rate_refusal(wait, which)
                raise self._refuse(errors.RATE_LIMITED, message, data)
            self.taken, policy._taken = policy._taken, []
            return deferred_of(self._dispatch_now(send))

        return take_tokens(rates, specs).addCallbacks(taken, unavailable)

    def _acquire(self, i: int) -> Deferred[None]:
        try:
            d = self.slots[i].acquire()
        except Busy as e:
            self._release()
            raise self._refuse(errors.BUSY, f"busy: {e.reason}", {"backend": self.subject.backend})

        def held(handle: Any) -> Any:
            # In-process slots fire None; shared ones, the lease to give back.
            self.held.append(self.slots[i] if handle is None else handle)
            if i + 1 < len(self.slots):
                return self._acquire(i + 1)
            return None

        def failed(f: Any) -> Any:
            if f.check(Busy):
                self._release()
                raise self._refuse(errors.BUSY, f"busy: {f.value.reason}", {"backend": self.subject.backend})
            if f.check(StateRefused):
                self._release()
                raise self._refuse(errors.STATE_UNAVAILABLE, f.value.message, {"unavailable": "limits"})
            return f

        return d.addCallbacks(held, failed)

    def _refuse(self, code: int, message: str, data: dict[str, Any] | None = None) -> JsonRpcError:
        """A refusal after step 5: audited once, and the rate-limit tokens given back."""
        for bucket in self.taken:
            bucket.tokens = min(bucket.burst, bucket.tokens + 1.0)
        self.taken = []
        shared, self.shared = self.shared, None
        if shared is not None:
            rates = self.policy.state.rates
            if rates is not None:
                rates.give_back(shared)
        self.done = True
        return self.policy.deny(self.record, code, message, data)

    def _pass_breaker(self, send: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        backend = self.subject.backend
        if self.waited:
            # Things may have changed while the call waited for a slot, the
            # policy itself included (a reload): check against the one in force.
            self.policy = self.policy.current()
            try:
                principal = self.policy.principal(self.peer)
            except JsonRpcError as e:
                self._release()
                raise self._refuse(e.code, e.message, e.data)
            refused = self.policy.decision(principal, self.subject)
            if refused is not None:
                self._release()
                raise self._refuse(refused[0], refused[1], self.subject.data())
        breaker = self.policy.breaker(backend)
        wait, probe = breaker.admit_call()
        if wait:
            self._release()
            raise self._refuse(
                errors.CIRCUIT_OPEN,
                f"the circuit breaker of backend {backend!r} is {breaker.state}; retry in {_up(wait):.1f} s",
                {"backend": backend, "retryAfter": _up(wait), "state": breaker.state},
            )
        self.breaker = breaker
        self.probe = probe
        try:
            return send()
        except BaseException as e:
            self.failed(e)
            self.done = True  # the caller's errback must not audit it again
            raise

    def _release(self) -> None:
        held, self.held = self.held, []
        for s in reversed(held):
            s.release()

    def succeeded(self, result: Any, size: int) -> None:
        if self.done:
            return
        self.done = True
        self._release()
        if self.breaker is not None:
            self.breaker.succeeded(self.probe)
        record = self.record
        record["outcome"] = "tool_error" if type(result) is dict and result.get("isError") is True else "ok"
        record["result_bytes"] = size
        record["latency_ms"] = round((self.policy.clock.seconds() - self.started) * 1000, 3)
        self.policy._audit(record)

    def failed(self, error: BaseException) -> None:
        if self.done:
            return
        self.done = True
        self._release()
        record = self.record
        if record["decision"] == "deny":
            return  # refused on the way: already audited
        breaker = self.breaker
        self.breaker = None
        if isinstance(error, JsonRpcError):
            record["outcome"] = "error"
            record["error_code"] = error.code
            if breaker is not None:
                if isinstance(error, errors.GatewayError) and error.code in _BREAKER_CODES:
                    breaker.failed(self.probe)
                else:
                    breaker.succeeded(self.probe)  # The backend answered: it is alive.
        else:
            record["outcome"] = "cancelled" if isinstance(error, CancelledError) else "error"
            if breaker is not None:
                breaker.abandoned(self.probe)
        record["latency_ms"] = round((self.policy.clock.seconds() - self.started) * 1000, 3)
        self.policy._audit(record)
