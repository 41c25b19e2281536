"""
L{DirectCall}: a backend call whose outcome goes straight to whoever made
it, without a Deferred (L{twisted_mcp.backends.base.Backend.call_direct}).

The common call (a client's request relayed to a shared stdio server, no
policy in the way) is cheap enough that a Deferred and its two pairs of
callbacks were a tenth of the gateway's CPU per call.  A direct call does
what those callbacks did (the latency observed, a transport error
translated as L{Backend.call} translates it) and hands the outcome to its
receiver, an object with the two methods of L{Receiver}.

A receiver that needs a Deferred after all (a held call attaching to the
call in flight) asks L{DirectCall.deferred} for one: it fires with what the
receiver's method returned, as a Deferred's next callback would.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted_mcp.backends.base import Backend
    from twisted_mcp.wire.jsonrpc import JsonRpcPeer

log = Logger()


class Receiver(Protocol):
    """Whoever made a L{DirectCall}: told its outcome, with the C{context} it
    was made with and the call itself (to tell it from what the receiver
    tracks now).  What either returns is what L{DirectCall.deferred} fires with."""

    def answered(self, result: Any, context: Any, source: Any) -> Any: ...

    def answer_failed(self, failure: Failure, context: Any, source: Any) -> Any: ...


class DirectCall:
    """
    One request in flight to a backend, answered into its L{Receiver}.  The
    peer calls L{callback} or L{errback} (it takes one where it takes a
    Deferred); L{cancel} is a Deferred's cancel.  Never answered from the
    call that sent it: the answer is a later message, the timeout a timer.
    """

    __slots__ = ("_backend", "_method", "_timeout", "_receiver", "_context", "_peer", "rid", "_started", "_deferred", "_then")

    def __init__(self, backend: Backend, method: str, timeout: float, receiver: Receiver, context: Any) -> None:
        self._backend = backend
        self._method = method
        self._timeout = timeout
        self._receiver = receiver
        self._context = context
        self._peer: JsonRpcPeer | None = None
        #: The request's id toward the backend, once sent.
        self.rid = 0
        self._started = 0.0
        self._deferred: Deferred[Any] | None = None
        #: What the receiver made of the answer when that is still to come
        #: (a Deferred: L{deferred} waits for it, and cancelling cancels it).
        self._then: Deferred[Any] | None = None

    def sent(self, peer: JsonRpcPeer, rid: int) -> None:
        """The request went out as C{rid} on C{peer}: its latency counts from now."""
        self._peer = peer
        self.rid = rid
        self._started = monotonic()

    def callback(self, result: Any) -> None:
        """The backend's result."""
        took = monotonic() - self._started
        try:
            out = self._receiver.answered(result, self._context, self)
        except Exception:
            out = self._unhandled()
        # Observed once the answer is on its way: off the call's path.
        self._backend.latency.observe(took)
        if self._deferred is not None:
            self._pass_on(out)
        elif isinstance(out, Deferred):
            out.cancel()  # an outcome still to come that nobody waits for (the request is gone)

    def errback(self, reason: Any) -> None:
        """The backend's error, or the transport's (translated as L{Backend.call} translates it)."""
        backend = self._backend
        backend.latency.observe(monotonic() - self._started)
        failure = reason if isinstance(reason, Failure) else Failure(reason)
        try:
            translated = backend._call_failed(failure, self._method, self._timeout)
        except Exception:
            translated = Failure()
        try:
            out = self._receiver.answer_failed(translated, self._context, self)
        except Exception:
            out = self._unhandled()
        if self._deferred is not None:
            self._pass_on(out)

    def cancel(self) -> None:
        """Forget the request (the backend is told) and fail it with
        CancelledError; nothing once it is answered."""
        peer = self._peer
        if peer is not None and peer.cancel(self.rid):
            self.errback(CancelledError())
        elif self._then is not None:
            self._then.cancel()

    def deferred(self) -> Deferred[Any]:
        """A Deferred for what the receiver makes of the outcome (made once,
        on demand); cancelling it cancels the call."""
        if self._deferred is None:
            self._deferred = Deferred(lambda _: self.cancel())
        return self._deferred

    def _pass_on(self, out: Any) -> None:
        d = self._deferred
        assert d is not None
        if isinstance(out, Deferred):
            # The outcome is still to come (a client asked in rounds): passed
            # on when it is, as a Deferred's chain would wait for it.
            self._then = out
            out.addBoth(self._pass_on)
            return
        if not d.called:
            if isinstance(out, Failure):
                d.errback(out)
            else:
                d.callback(out)

    def _unhandled(self) -> Failure:
        # What a Deferred's callback raising would leave: the failure, logged.
        failure = Failure()
        log.failure(
            "backend {backend}: the outcome of {method} (request {rid}) could not be handled",
            failure,
            backend=self._backend.name,
            method=self._method,
            rid=self.rid,
        )
        return failure


def deferred_of(outcome: Any) -> Any:
    """
    What a callback returns for C{outcome}, a call sent from inside a
    Deferred's chain (after a wait): a direct call's L{DirectCall.deferred},
    which the chain then waits for; anything else as it is.
    """
    return outcome.deferred() if type(outcome) is DirectCall else outcome


__all__ = ["DirectCall", "Receiver", "deferred_of"]
