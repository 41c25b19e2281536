"""
Held calls: a handshake-era backend asks for sampling, elicitation or roots
during the call of a stateless-era (2026-07-28) client, which cannot be sent
a request.  The client's request is answered with an C{InputRequiredResult}
(the backend's requests under keys of the gateway's, and a C{requestState}
token it seals); the backend call is I{held}, its requests waiting, until
the client retries the same request with C{inputResponses} and the token.
The answers go to the backend as the results of its requests, and the retry
waits for the backend's result (or for its next question: another round).

A stateless-era C{tools/call}, C{prompts/get} or C{resources/read} that
reaches a backend becomes a L{HeldCall} the first time its backend asks
(L{HeldCalls.adopt}): until then it costs nothing more than any call.  It
enters the table of held calls (and counts against its bounds) then.
Its states::

    running --backend asks--> asking --after `gather`--> waiting
       ^                                                   |
       +-------------- retry answers every key ------------+
    waiting --retry leaves keys unanswered--> waiting (next round)
    any --backend answers, cancelled, timed out, session ends--> done

While C{waiting}, nothing of the client's is open: after
C{heldCallTimeout} the held call ends (elicitations answered
C{{"action": "cancel"}}, sampling and roots with an error, the backend call
cancelled).  Its token then gets C{-32602}, as does a token of an earlier
round, of another caller or of another request: each token works once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, cast

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.caller import can_answer, required_capability
from twisted_mcp.dispatch.instances import principal_name
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.request_state import Claims, Seal, StateRefused, digest, request_digest
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight

log = Logger()

#: The requests whose answer may be an InputRequiredResult (2026-07-28, mrtr).
HELD_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
#: Params that carry a retry's plumbing, never an argument: not sent to a
#: handshake-era backend, not seen by the policy or the audit trail.
RETRY_KEYS = ("inputResponses", "requestState")
#: The kind of token that names a held call.
KIND = "held"


@attrs.frozen
class HeldCallLimits:
    """Bounds on held calls (the gateway.* settings of the same names)."""

    maxHeldCalls: int = 128
    maxHeldCallsPerPrincipal: int = 8
    #: Seconds a held call waits for the client's retry.
    heldCallTimeout: float = 300.0
    #: Seconds the gateway gathers a backend's requests before answering the client.
    gather: float = 0.01


class _Routed:
    """
    Counts a held call as in flight to its backend while no request of the
    client's is (the session's tally is how a stdio backend's request finds
    its call); it has the one attribute of an InFlight the tally reads.
    """

    __slots__ = ("backend",)

    def __init__(self) -> None:
        self.backend: str | None = None


class _Ask:
    """One backend request waiting for the client's answer."""

    __slots__ = ("method", "params", "deferred")

    def __init__(self, method: str, params: dict[str, Any], deferred: Deferred[Any]) -> None:
        self.method = method
        self.params = params
        self.deferred = deferred


class HeldCall:
    """One stateless-era call to a handshake-era backend, which its backend may hold to ask the client."""

    # One is made for every stateless-era call that may be held: kept small.
    __slots__ = (
        "table",
        "session",
        "origin",
        "target",
        "backend_label",
        "request",
        "waiter",
        "backend_call",
        "state",
        "id",
        "round",
        "principal",
        "owner",
        "request_digest",
        "origin_params",
        "asks",
        "_keys",
        "_timer",
        "_policy_call",
        "_transform",
        "_outcome",
        "_has_outcome",
        "_routed",
    )

    def __init__(self, table: HeldCalls, session: ClientSession, request: InFlight, target: Backend) -> None:
        self.table = table
        self.session = session
        #: The client's first request: the context the backend ties its requests to.
        self.origin = request
        self.target = target
        #: The backend and its MCP session when the call was first held: a restart ends the call.
        self.backend_label = ""
        #: The client's request now waiting for the outcome (the first one, or a retry); None while waiting.
        self.request: InFlight | None = request
        self.waiter: Deferred[Any] | None = Deferred(self._cancelled)
        self.backend_call: Deferred[Any] | None = None
        self.state = "running"
        #: Set when the held call enters the table.
        self.id = 0
        self.round = 0
        self.principal = ""
        self.owner = ""
        self.request_digest = ""
        #: The params of the client's first request (what a retry must repeat).
        self.origin_params: dict[str, Any] = {}
        self.asks: dict[str, _Ask] = {}
        self._keys = 0
        self._timer: IDelayedCall | None = None
        #: The policy's record and the result mapping, kept while no request of the client's is open.
        self._policy_call: Any = None
        self._transform: Callable[[Any], Any] | None = None
        #: The backend's outcome when it came while nobody waited (a Failure or a result).
        self._outcome: Any = None
        self._has_outcome = False
        self._routed: _Routed | None = None

    # -- wiring (HeldCalls.adopt) ------------------------------------------------

    def progress_elsewhere(self, params: dict[str, Any]) -> None:
        """The backend's progress while its first request is answered: to the retry open now, under its token; dropped while waiting."""
        request = self.request
        if request is None:
            self.table.dropped_progress += 1
            return
        key = request.progress
        if key is None:
            return
        self.session.send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {**params, "progressToken": key[1]}}, request.rid, key)

    def attach(self, backend_call: Deferred[Any]) -> None:
        """The backend call under way: its outcome answers the request open then (L{waiter})."""
        self.backend_call = backend_call
        backend_call.addCallbacks(self._backend_answered, self._backend_answered)

    # -- the backend's side ----------------------------------------------------

    def check(self, method: str, params: dict[str, Any]) -> None:
        """
        Refuse (C{-32601}) a backend request this call cannot put to its
        client: it ended, or the client's request did not declare the
        capability.  Without sampling or elicitation, the client's request
        then fails with C{-32021}: the tool cannot do its work.  Without
        roots, the call goes on: servers ask for roots in passing (to scope
        what they do), and a client that has none is the common case, as
        for handshake-era clients.
        """
        if self.state == "done" or self._has_outcome:
            raise JsonRpcError(METHOD_NOT_FOUND, f"the client cannot answer {method}: the call it belongs to has ended")
        request = self.request or self.origin
        capabilities = request.envelope.capabilities if request.envelope is not None else {}
        cannot = can_answer(capabilities, method, params)
        if cannot is None:
            return
        if self.waiter is not None and method != "roots/list":
            required = required_capability(method, params)
            self._fail_client(
                errors.GatewayError(
                    errors.MISSING_CLIENT_CAPABILITY,
                    f"the server behind this tool asked for {method}, but the request did not declare "
                    f"{', '.join(sorted(required))} in its client capabilities",
                    {"requiredCapabilities": required},
                )
            )
        raise JsonRpcError(METHOD_NOT_FOUND, f"the client cannot answer {method}: {cannot}")

    def ask(self, method: str, params: dict[str, Any]) -> Deferred[Any]:
        """The backend's request C{method}: put to the client at the next round; fires with the client's answer."""
        if not self.id:
            refusal = self.table.admit(self)
            if refusal is not None:
                self._fail_client(refusal)
                raise JsonRpcError(INTERNAL_ERROR, "too many calls are waiting for client input")
        self._keys += 1
        key = f"r{self._keys}"
        shown = {k: v for k, v in params.items() if k != "elicitationId"}
        meta = shown.get("_meta")
        if type(meta) is dict and "progressToken" in meta:
            meta = {k: v for k, v in meta.items() if k != "progressToken"}
            if meta:
                shown["_meta"] = meta
            else:
                del shown["_meta"]

        def cancelled(d: Deferred[Any]) -> None:
            self.asks.pop(key, None)

        ask = self.asks[key] = _Ask(method, shown, Deferred(cancelled))
        if self.state == "running":
            self.state = "asking"
            self._timer = self.table.clock.callLater(self.table.limits.gather, self._put_to_client)
        return ask.deferred

    def _backend_answered(self, outcome: Any) -> None:
        self.backend_call = None
        if self.state == "done":
            return None
        if isinstance(outcome, Failure) and self._cancelling(outcome):
            return None
        waiter = self.waiter
        if waiter is None:
            # Nobody waits now: the next retry (if it comes in time) gets it.
            self._outcome, self._has_outcome = outcome, True
            for ask in list(self.asks.values()):
                ask.deferred.cancel()
            return None
        self._end()
        if isinstance(outcome, Failure):
            waiter.errback(outcome)
        else:
            waiter.callback(outcome)
        return None

    def _cancelling(self, failure: Failure) -> bool:
        return failure.check(CancelledError) is not None and self.state == "done"

    # -- the client's side -----------------------------------------------------

    def _put_to_client(self) -> None:
        """Answer the open request with an InputRequiredResult for every unanswered key; wait for the retry."""
        self._timer = None
        request, waiter = self.request, self.waiter
        if request is None or waiter is None or self.state == "done":
            return
        if self.session.closing:
            self._fail_client(errors.GatewayError(errors.GATEWAY_SHUTTING_DOWN, "the session is ending; the call was cancelled"))
            return
        self.round += 1
        if request.call is not None:
            self._policy_call, request.call = request.call, None
        if request.transform is not None:
            self._transform, request.transform = request.transform, None
        token = self.table.seal.seal(
            Claims(KIND, self.principal, self.origin.method, self.request_digest, self.backend_label, self.table.seal.expiry(), [self.id, self.round])
        )
        result = {
            "resultType": "input_required",
            "inputRequests": {key: {"method": ask.method, "params": ask.params} for key, ask in self.asks.items()},
            "requestState": token,
        }
        self.state = "waiting"
        self.request = self.waiter = None
        self._timer = self.table.clock.callLater(self.table.limits.heldCallTimeout, self._expired)
        if self._routed is None:
            self._routed = _Routed()
        self.session.routed(cast("InFlight", self._routed), self.target)
        log.debug(
            "client {client}: call {id} held, round {round}: {n} request(s) from backend {backend}",
            client=self.session.label,
            id=self.id,
            round=self.round,
            n=len(self.asks),
            backend=self.target.name,
        )
        waiter.callback(result)

    def resume(self, request: InFlight, responses: dict[str, Any]) -> Deferred[Any]:
        """The client's retry C{request} (its token checked): answer the backend's requests, then wait for what comes next."""
        self._cancel_timer()
        self._unroute()
        waiter: Deferred[Any] = Deferred(self._cancelled)
        self.request, self.waiter = request, waiter
        self.session.routed(request, self.target)
        request.call, request.transform = self._policy_call, self._transform
        self._policy_call = self._transform = None
        if self._has_outcome:
            outcome = self._outcome
            self._end()
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)
            return waiter
        self.state = "running"
        for key in [k for k in self.asks if k in responses]:
            ask = self.asks.pop(key)
            ask.deferred.callback(responses[key])
        if self.asks and self.waiter is waiter and self.state != "done":
            # Keys the retry left unanswered: put to the client again at once.
            self._cancel_timer()
            self._put_to_client()
        return waiter

    def _cancelled(self, waiter: Deferred[Any]) -> None:
        """The client cancelled its open request (or the session is shutting down): the backend call too."""
        if self.waiter is waiter:
            self.waiter = None
            self.end("the client cancelled the call")

    def _fail_client(self, error: JsonRpcError) -> None:
        waiter = self.waiter
        self.waiter = None
        self.end(error.message)
        if waiter is not None:
            waiter.errback(error)

    def _expired(self) -> None:
        self._timer = None
        log.info(
            "client {client}: held call {id} ended: no retry within {timeout:g} s (gateway.heldCallTimeout)",
            client=self.session.label,
            id=self.id,
            timeout=self.table.limits.heldCallTimeout,
        )
        self.end(f"the client did not answer within {self.table.limits.heldCallTimeout:g} s")

    def end(self, why: str) -> None:
        """End the call: the backend's waiting requests answered as declined, the backend call cancelled."""
        if self.state == "done":
            return
        asks, self.asks = self.asks, {}
        self._end()
        for ask in asks.values():
            if ask.method == "elicitation/create":
                ask.deferred.callback({"action": "cancel"})
            else:
                ask.deferred.errback(JsonRpcError(INTERNAL_ERROR, f"{why} (through the gateway)"))
        call, self.backend_call = self.backend_call, None
        if call is not None:
            call.cancel()
        policy_call, self._policy_call = self._policy_call, None
        if policy_call is not None:
            policy_call.failed(CancelledError())

    def _end(self) -> None:
        self.state = "done"
        if self._timer is not None:
            self._cancel_timer()
        self._unroute()
        self.table.forget(self)
        if self.asks:
            asks, self.asks = self.asks, {}
            for ask in list(asks.values()):
                # The backend answered its call without waiting for these: withdrawn.
                ask.deferred.cancel()

    def _unroute(self) -> None:
        if self._routed is not None:
            self.session.unrouted(cast("InFlight", self._routed))

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


class HeldCalls:
    """
    Every stateless-era call that may be held, and those held now (bounded).

    @param clock: the source of time (gathering, timeouts, token expiry).
    @param seal: seals and opens the tokens.
    """

    def __init__(self, clock: IReactorTime, seal: Seal, limits: HeldCallLimits = HeldCallLimits()) -> None:
        self.clock = clock
        self.seal = seal
        self.limits = limits
        #: Held calls by id (those that asked the client at least once and have not ended).
        self.held: dict[int, HeldCall] = {}
        #: Every call that may be held, by the client's first request (the backend's context).
        self._by_origin: dict[Any, HeldCall] = {}
        self._next_id = 1
        #: Progress notifications of held calls that no open request could take.
        self.dropped_progress = 0

    def __len__(self) -> int:
        return len(self.held)

    def configure(self, settings: Any) -> None:
        """Take the bounds, the token lifetime and the keys from the gateway settings (C{gateway.*} of the config)."""
        self.limits = HeldCallLimits(settings.maxHeldCalls, settings.maxHeldCallsPerPrincipal, settings.heldCallTimeout)
        keys = [key.encode() for key in settings.requestStateKeys]
        self.seal = Seal(self.clock, keys, settings.requestStateTtl)

    def adopt(self, session: ClientSession, request: InFlight, target: Backend) -> HeldCall | None:
        """
        C{request} (a stateless-era call to C{target} that may be held) as
        a held call, the first time its backend asks: answered from the
        held call from now on, its backend call's outcome passed to it.
        None if the request is no longer in flight.
        """
        backend_call = session.tracked(request)
        if backend_call is None or request.holdable is None:
            return None
        call = HeldCall(self, session, request, target)
        call.origin_params = request.holdable
        self._by_origin[request] = call
        request.held = call
        assert call.waiter is not None
        session.retrack(request, call.waiter)
        call.attach(backend_call)
        return call

    def find(self, session: ClientSession, backend: Backend, related: Any) -> HeldCall | None:
        """
        The call a backend's request belongs to: the call it names (an HTTP
        backend's request comes on that call's stream); else, the session's
        only call to that backend, or, among several, the only one whose
        client request is open.  A call held waiting for its client's retry
        has put its questions and waits for their answers: a client that
        gave up on it must not leave the backend unable to ask in the next
        call.  Any other case is ambiguous (None).  A call whose backend
        asks for the first time becomes a held call (L{adopt}).
        """
        if getattr(related, "session", None) is not None:
            held = self._by_origin.get(related)
            return held if held is not None else self.adopt(session, related, backend)
        name = backend.name
        mine: list[Any] = [c for c in self._by_origin.values() if c.session is session and c.target.name == name and c.state != "done"]
        mine += [r for r in session.in_flight.values() if r.holdable is not None and r.held is None and r.backend == name]
        if len(mine) > 1:
            mine = [c for c in mine if not isinstance(c, HeldCall) or c.waiter is not None]
        if len(mine) != 1:
            return None
        found = mine[0]
        return found if isinstance(found, HeldCall) else self.adopt(session, found, backend)

    def admit(self, call: HeldCall) -> JsonRpcError | None:
        """Enter C{call} in the table, or the refusal when a bound is reached."""
        session = call.session
        owner = principal_name(session.gateway, session.peer)
        limits = self.limits
        if len(self.held) >= limits.maxHeldCalls:
            setting, value = "maxHeldCalls", limits.maxHeldCalls
        elif sum(1 for c in self.held.values() if c.owner == owner) >= limits.maxHeldCallsPerPrincipal:
            setting, value = "maxHeldCallsPerPrincipal", limits.maxHeldCallsPerPrincipal
        else:
            call.id, self._next_id = self._next_id, self._next_id + 1
            call.owner = owner
            call.backend_label = backend_label(call.target)
            call.principal = caller_digest(session)
            params = call.origin_params
            call.request_digest = request_digest(params)
            self.held[call.id] = call
            return None
        log.warn("client {client}: a call cannot be held: {setting} is {value}", client=session.label, setting=setting, value=value)
        return errors.GatewayError(
            errors.BUSY,
            f"busy: too many calls are waiting for their clients' input (gateway.{setting} is {value}); try again later",
            {"limit": setting, "value": value},
        )

    def forget(self, call: HeldCall) -> None:
        if call.id:
            self.held.pop(call.id, None)
        if self._by_origin.get(call.origin) is call:
            del self._by_origin[call.origin]

    def resume(self, session: ClientSession, request: InFlight, params: dict[str, Any], claims: Claims) -> Deferred[Any]:
        """
        A retry carrying the token of a held call (C{claims}, opened and
        bound to this caller and request by L{twisted_mcp.dispatch.mrtr}):
        the held call it names resumed with its C{inputResponses};
        L{StateRefused} when that call is not waiting for this round.
        """
        state = claims.state
        if type(state) is not list or len(state) != 2 or any(type(n) is not int for n in state):
            raise StateRefused("requestState was not issued by this gateway")
        call = self.held.get(state[0])
        if call is None or call.session is not session or call.round != state[1] or call.waiter is not None:
            raise StateRefused("requestState was already used or its call has ended")
        if claims.backend != call.backend_label:
            raise StateRefused("requestState names a server that has restarted since")
        responses = params.get("inputResponses")
        if responses is None:
            responses = {}
        if type(responses) is not dict:
            raise JsonRpcError(INVALID_PARAMS, "Invalid params: inputResponses must be an object")
        for key in call.asks:
            if key in responses and type(responses[key]) is not dict:
                raise JsonRpcError(INVALID_PARAMS, f"Invalid params: inputResponses.{key} must be an object")
        meta = params.get("_meta")
        if type(meta) is dict and "progressToken" in meta:
            # The backend's progress goes to this retry, under its own token.
            token = meta["progressToken"]
            request.progress = (type(token), token)
        return call.resume(request, responses)

    def session_ended(self, session: ClientSession) -> None:
        """The session ends: its calls waiting for a retry end too (those with a request open end with it)."""
        for call in [c for c in self.held.values() if c.session is session and c.waiter is None]:
            call.end("the client's session ended")

    def describe(self) -> dict[str, Any]:
        """For /status and /metrics: how many calls are held, and their limits."""
        return {
            "held": len(self.held),
            "waiting": sum(1 for c in self.held.values() if c.state == "waiting"),
            "maxHeldCalls": self.limits.maxHeldCalls,
            "droppedProgress": self.dropped_progress,
        }


#: This gateway process, in the tokens it seals: with C{requestStateKeys} kept
#: across restarts, a token of an earlier process names other backend runs.
_PROCESS = os.urandom(8).hex()


def backend_label(target: Backend) -> str:
    """What a token binds of its backend: the name and the MCP sessions this process made with it (a restart ends its calls)."""
    return f"{target.name}#{target.handshakes}@{_PROCESS}"


def caller_digest(session: ClientSession) -> str:
    """Who may retry a held call: this caller (principal) on this session, hashed (tokens may be logged)."""
    return digest(["caller", principal_name(session.gateway, session.peer), session.label])


def strip_retry_keys(params: dict[str, Any]) -> dict[str, Any]:
    """C{params} without a retry's plumbing (C{inputResponses}, C{requestState})."""
    if "inputResponses" not in params and "requestState" not in params:
        return params
    return {k: v for k, v in params.items() if k not in RETRY_KEYS}


__all__ = ["HELD_METHODS", "RETRY_KEYS", "HeldCall", "HeldCallLimits", "HeldCalls", "backend_label", "caller_digest", "strip_retry_keys"]
