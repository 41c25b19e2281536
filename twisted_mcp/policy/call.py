"""
L{Call}: steps 6 to 9 of the policy for one allowed request (a tool call,
a prompt get, a resource read...): its concurrency slots (perhaps
waiting), its backend's circuit breaker, and its outcome (what a breaker
counts, the audit record's result).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import CancelledError, Deferred

from twisted_mcp.mcp import errors
from twisted_mcp.policy.breaker import Breaker
from twisted_mcp.policy.limits import Busy, Slots, TokenBucket
from twisted_mcp.policy.principal import Principal
from twisted_mcp.policy.subject import Subject
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


class Call:
    """
    Steps 6 to 9 of one allowed request.

    @ivar subject: what the request is about.
    @ivar entry: the tool's catalog entry (tools only; None otherwise).
    """

    __slots__ = (
        "policy", "record", "subject", "entry", "principal", "peer", "slots", "held", "breaker", "probe", "started", "taken", "waited", "done",
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
        self.held: list[Slots] = []
        self.breaker: Breaker | None = None
        self.probe = False
        self.started = policy.clock.seconds()
        self.taken: list[TokenBucket] = []
        self.waited = False
        self.done = False

    def dispatch(self, send: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """Take the concurrency slots (perhaps waiting), pass the breaker, send."""
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
        return d.addCallback(lambda _: self._pass_breaker(send))

    def _acquire(self, i: int) -> Deferred[None]:
        try:
            d = self.slots[i].acquire()
        except Busy as e:
            self._release()
            raise self._refuse(errors.BUSY, f"busy: {e.reason}", {"backend": self.subject.backend})

        def held(_: None) -> Any:
            self.held.append(self.slots[i])
            if i + 1 < len(self.slots):
                return self._acquire(i + 1)
            return None

        def failed(f: Any) -> Any:
            if f.check(Busy):
                self._release()
                raise self._refuse(errors.BUSY, f"busy: {f.value.reason}", {"backend": self.subject.backend})
            return f

        return d.addCallbacks(held, failed)

    def _refuse(self, code: int, message: str, data: dict[str, Any]) -> JsonRpcError:
        """A refusal after step 5: audited once, and the rate-limit tokens given back."""
        for bucket in self.taken:
            bucket.tokens = min(bucket.burst, bucket.tokens + 1.0)
        self.taken = []
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
