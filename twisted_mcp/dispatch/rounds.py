"""
Rounds: a stateless-era (2026-07-28) backend answers a handshake-era
client's C{tools/call}, C{prompts/get} or C{resources/read} with an
C{InputRequiredResult}, which that client would not understand.  The
gateway asks the client itself instead, with real JSON-RPC requests (the way
a handshake-era backend's own sampling reaches it, policy and audit
included), and retries the backend with the answers.

One round::

    input_required --client can answer every request?-- no --> isError result (tools/call) or -32021
          |                                              yes
          v
    every inputRequests entry sent to the client at once (a URL-mode
    elicitation with a fresh elicitationId) --an error, a refusal--> -32603, the others cancelled
          |  all answered                    (no inputRequests: 250 ms, then)
          v
    the same method and params again, as a new request, with inputResponses
    (this round's answers) and the backend's requestState, byte for byte

until a complete result, at most C{gateway.maxInputRounds} rounds
(-32603 beyond).  The loop is the one call the policy sees; cancelling it
cancels what it waits on: the client's requests, the backend's current
call or the pause.  The backend's state never leaves the gateway: no seal.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import CancelledError, Deferred, DeferredList, FirstError
from twisted.internet.task import deferLater

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.caller import can_answer, required_capability
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.results import from_modern_backend, is_input_required, to_legacy
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import InFlight

#: Rounds of input a backend may ask of a handshake-era client in one call (gateway.maxInputRounds).
DEFAULT_MAX_ROUNDS = 8
#: Seconds before a round that asks nothing of the client (only requestState) is retried.
STATE_ONLY_PAUSE = 0.25


def rounds(
    request: InFlight, target: Backend, body: dict[str, Any], result: dict[str, Any], again: Callable[[dict[str, Any]], Deferred[Any]]
) -> Deferred[Any]:
    """
    The outcome of C{request} (a handshake-era client's) once C{target}'s
    InputRequiredResult C{result} to C{body} is answered, round after round,
    by the client: a complete result as that client sees it.  C{again}
    sends the backend a new request with the given params (and checks what
    it refuses).
    """
    return Deferred.fromCoroutine(_rounds(request, target, body, result, again))


async def _rounds(
    request: InFlight, target: Backend, body: dict[str, Any], result: dict[str, Any], again: Callable[[dict[str, Any]], Deferred[Any]]
) -> Any:
    session = request.session
    gateway = session.gateway
    limit = gateway.max_input_rounds
    asked = 0
    while is_input_required(result):
        asked += 1
        if asked > limit:
            raise errors.GatewayError(
                INTERNAL_ERROR,
                f"backend {target.name!r} asked for input more than {limit} times (gateway.maxInputRounds)",
                {"backend": target.name},
            )
        questions = result.get("inputRequests") or {}
        refusal = _cannot_answer(session.caller.capabilities, request.method, target, questions)
        if refusal is not None:
            return refusal
        retry = dict(body)
        if questions:
            retry["inputResponses"] = await _ask(request, target, questions)
        else:
            retry.pop("inputResponses", None)
            await deferLater(gateway.clock, STATE_ONLY_PAUSE)
        state = result.get("requestState")
        if state is None:
            retry.pop("requestState", None)
        else:
            retry["requestState"] = state
        result = from_modern_backend(await again(retry), target.name, request.method)
    return to_legacy(result)


def _cannot_answer(capabilities: dict[str, Any], method: str, target: Backend, questions: dict[str, Any]) -> Any:
    """
    None when the client declared every capability C{questions} need; else
    the call's answer without them: for C{tools/call} a result with
    C{isError} naming the capability, for the others a -32021 error.
    """
    for question in questions.values():
        asked, params = question["method"], question.get("params") or {}
        why = can_answer(capabilities, asked, params)
        if why is None:
            continue
        required = required_capability(asked, params)
        message = (
            f"the server behind this {method} (backend {target.name!r}) asked for {asked}, but the client cannot "
            f"answer it: {why} (capabilities {', '.join(sorted(required))})"
        )
        if method == "tools/call":
            return {"content": [{"type": "text", "text": message}], "isError": True}
        raise errors.GatewayError(errors.MISSING_CLIENT_CAPABILITY, message, {"requiredCapabilities": required})
    return None


async def _ask(request: InFlight, target: Backend, questions: dict[str, Any]) -> dict[str, Any]:
    """Every question sent to the client at once; their answers by key.  The first failure cancels the rest."""
    reverse = request.session.gateway.reverse
    keys = list(questions)
    asked: list[Deferred[Any]] = []
    try:
        for key in keys:
            question = questions[key]
            asked.append(reverse.server_request(target, question["method"], _for_client(question), request))
    except JsonRpcError as e:
        for d in asked:
            d.addErrback(lambda _: None)
            d.cancel()
        raise _failed(target, questions[keys[len(asked)]]["method"], e) from None
    try:
        answers = await DeferredList(asked, fireOnOneErrback=True, consumeErrors=True)
    except FirstError as e:
        failure = e.subFailure
        if failure.check(CancelledError):
            raise CancelledError() from None
        if not isinstance(failure.value, JsonRpcError):
            failure.raiseException()
        raise _failed(target, questions[keys[e.index]]["method"], failure.value) from None
    finally:
        for d in asked:
            d.cancel()  # those still waiting (nothing for the answered)
    return {key: answer for key, (_, answer) in zip(keys, answers, strict=True)}


def _for_client(question: dict[str, Any]) -> dict[str, Any]:
    """
    The params of a question as a handshake-era client is sent them: a
    URL-mode elicitation gets the C{elicitationId} 2025-11-25 requires
    (2026-07-28 dropped it).
    """
    params = question.get("params") or {}
    if question["method"] == "elicitation/create" and params.get("mode") == "url":
        params = {**params, "elicitationId": str(uuid.uuid4())}
    return params


def _failed(target: Backend, method: str, e: JsonRpcError) -> errors.GatewayError:
    """The call's error when one question of a round was refused or answered with an error."""
    return errors.GatewayError(
        INTERNAL_ERROR,
        f"backend {target.name!r} asked the client for {method}, which failed: {e.message[:300]}",
        {"backend": target.name, "method": method},
    )


__all__ = ["DEFAULT_MAX_ROUNDS", "STATE_ONLY_PAUSE", "rounds"]
