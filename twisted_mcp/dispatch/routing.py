"""
How a client's request reaches a backend: the policy's checks, progress
notifications routed back to the caller, the session's own instance of a
per-session backend, and the call itself, carrying the context that ties
the backend's own requests and notifications to this call.

Each hop has its own era.  A handshake-era backend is sent no
C{io.modelcontextprotocol/*} key; a stateless-era (2026-07-28) backend is
sent them all, with the calling client's capabilities and log level
(L{twisted_mcp.backends.envelope}), and its results lose what a
handshake-era client must not see.  When such a backend asks for the
client's input (an C{InputRequiredResult}), a handshake-era client is asked
in rounds (L{twisted_mcp.dispatch.rounds}), a stateless-era one is passed
the question with the backend's state sealed (L{twisted_mcp.dispatch.mrtr}).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends.base import Backend
from twisted_mcp.backends.direct import DirectCall
from twisted_mcp.backends.envelope import stamp
from twisted_mcp.dispatch.authorization import AuthRetry, consented
from twisted_mcp.dispatch.held_calls import HELD_METHODS, strip_retry_keys
from twisted_mcp.dispatch.instances import principal_key
from twisted_mcp.dispatch.mrtr import sealed, unsealed
from twisted_mcp.dispatch.rounds import rounds
from twisted_mcp.mcp.errors import HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION, GatewayError
from twisted_mcp.mcp.meta import without_reserved
from twisted_mcp.mcp.results import from_modern_backend, is_input_required, to_legacy
from twisted_mcp.policy.subject import Subject
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.catalog import Listing
    from twisted_mcp.dispatch.session import ClientSession, InFlight

log = Logger()

#: A stateless-era backend's refusals of the envelope the gateway sent: the
#: gateway's hop is at fault, not the client.
_ENVELOPE_REFUSALS = frozenset({HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION})


def forward(
    session: ClientSession,
    request: InFlight,
    subject: Subject,
    backend: Backend,
    params: dict[str, Any],
    out: dict[str, Any],
    transform: Callable[[Any], Any] | None = None,
    send_to: Callable[[Backend, dict[str, Any], Any], Deferred[Any]] | None = None,
    entry: Any = None,
) -> Deferred[Any] | DirectCall:
    """
    Send C{request} to C{backend} with C{out} as its params, once the policy
    allowed it (C{params} as the client sent them, for the policy's checks).
    What it returns is what the session tracks: a Deferred, or a backend's
    direct call, which answers into the session itself.
    C{transform} maps the result on its way back (URIs in it).  C{send_to}
    replaces the call itself: given the backend (the session's own
    instance of a per-session one), C{out} and the call's context.
    C{entry} is the catalog entry of a tool (the policy checks arguments
    against its definition).
    """
    policy = session.gateway.policy
    retry_out = None
    if request.envelope is not None and request.method in HELD_METHODS:
        # A retry's plumbing is no argument: neither a handshake-era
        # backend nor the policy (nor the audit trail, which may not record
        # a person's answers) sees it; a stateless-era backend is sent it
        # (dispatch.mrtr).  The call may be held if its backend asks
        # (dispatch.held_calls: made then, at no cost before).
        params = strip_retry_keys(params)
        stripped = strip_retry_keys(out)
        if stripped is not out:
            retry_out, out = out, stripped
        request.holdable = params
    call = None
    if policy.active:
        protocol = request.envelope.version if request.envelope is not None else session.protocol_version
        call = policy.begin(session.label, request.method, subject, params, session.peer, entry, protocol)
        request.call = call
    method = request.method
    on_progress = None
    meta = params.get("_meta")
    if type(meta) is dict and ("progressToken" in meta or "_meta" in out):
        # The 2026-07-28 envelope is between the client and the gateway: a
        # handshake-era backend is not sent it.
        kept = without_reserved(meta) if request.envelope is not None else dict(meta)
        if kept is None:
            out.pop("_meta", None)
        else:
            out["_meta"] = kept
        if "progressToken" in meta:
            on_progress = _progress_forwarder(session, request, meta["progressToken"])
    send: Callable[[], Deferred[Any] | DirectCall] | None = None
    if send_to is not None or retry_out is not None or backend.per_session or backend.per_principal:
        send = _sender(session, request, backend, method, out, retry_out, on_progress, send_to)
    elif call is not None:
        # A policy's call to a backend shared by every session.
        send = partial(_send_common, session, request, backend, method, out, on_progress)
    # else the common call (the same, no policy): sent below as it is.
    session.routed(request, backend)
    d: Deferred[Any] | DirectCall
    try:
        if send is None:
            if backend.era != "modern" or backend.protocol_version is None:
                d = _send_plainly(session, request, backend, method, out, on_progress)
            else:
                d = _send_common(session, request, backend, method, out, on_progress)
        else:
            d = send() if call is None else call.dispatch(send)
    except BaseException:
        # Refused on the way (the backend is down, its breaker open, a cap
        # reached, a message it cannot take): no longer in flight to it.
        session.unrouted(request)
        raise
    # Applied as the answer is sent (one callback fewer on every call).
    request.transform = transform
    return d


def _sender(
    session: ClientSession,
    request: InFlight,
    backend: Backend,
    method: str,
    out: dict[str, Any],
    retry_out: dict[str, Any] | None,
    on_progress: Callable[[dict[str, Any]], None] | None,
    send_to: Callable[[Backend, dict[str, Any], Any], Deferred[Any]] | None,
) -> Callable[[], Deferred[Any] | DirectCall]:
    """
    What sends C{request} to C{backend} (L{forward}) once the policy lets
    it go: through the session's own instance of a per-session backend,
    with consent for a per-principal one, enveloped for a stateless-era
    one, as C{send_to} when given.  Each is decided when it is sent (a call
    may wait for a slot meanwhile).
    """
    # The request itself is the context a backend reports with what it
    # ties to this call (its .session and .rid name the client request).
    context = request

    def send_body(target: Backend, body: dict[str, Any]) -> Deferred[Any]:
        if send_to is not None:
            return send_to(target, body, context)
        if target.per_principal:
            # Its own OAuth token, its own session with the server.
            principal = principal_key(session.gateway, session.peer)
            return target.call_as(principal, method, body, on_progress, context=context)  # type: ignore[attr-defined]
        return target.call(method, body, on_progress, context=context)

    def send_one(target: Backend) -> Deferred[Any]:
        if target.per_principal:
            # Consent asked inside the call when the principal has no token yet (dispatch.authorization).
            principal = principal_key(session.gateway, session.peer)
            return consented(request, target, principal, lambda: send_once(target))
        return send_once(target)

    def send_once(target: Backend) -> Deferred[Any]:
        retry = retry_out
        if isinstance(request.passed, AuthRetry):
            retry = None  # the gateway's own state: the backend never sees it
        elif request.passed is not None and retry is not None:
            # Refused unless sealed for this run of this backend, whatever era it speaks now.
            retry = unsealed(request, target, retry)
        if target.era != "modern" or target.protocol_version is None:
            return send_body(target, out)
        body = _enveloped(session, request, target, out if retry is None else retry)
        d = send_body(target, body)
        d.addCallbacks(_from_modern, _refused_by_modern, callbackArgs=(request, target, body, send_body), errbackArgs=(method, target))
        return d

    if backend.per_session:
        return lambda: session.instances.call(backend, send_one)
    if send_to is None and retry_out is None and not backend.per_principal:

        def send_plain() -> Deferred[Any] | DirectCall:
            # A policy's call to a shared backend: what send_one would do,
            # three frames fewer for a handshake-era backend (its era read
            # now), answered directly where forward's common call is.
            if backend.era != "modern" or backend.protocol_version is None:
                return _send_plainly(session, request, backend, method, out, on_progress)
            return send_once(backend)

        return send_plain
    return lambda: send_one(backend)


def _send_common(
    session: ClientSession,
    request: InFlight,
    backend: Backend,
    method: str,
    out: dict[str, Any],
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> Deferred[Any] | DirectCall:
    """
    A call to a backend shared by every session, no retry's plumbing in it:
    what L{_sender}'s would do, without building its closures.  Its era is
    read as it is sent (a policy's call that waited for a slot may find the
    server restarted in the other era).  A stateless-era backend that can
    answers directly too, its answers shaped on their way (L{ModernAnswers}).
    """
    if backend.era != "modern" or backend.protocol_version is None:
        return _send_plainly(session, request, backend, method, out, on_progress)
    if on_progress is None and backend.answers_directly:
        body = _enveloped(session, request, backend, out)
        return backend.call_direct(method, body, ModernAnswers(session, backend, body), request)
    return _sender(session, request, backend, method, out, None, on_progress, None)()


class ModernAnswers:
    """
    The receiver of a direct call to a shared stateless-era backend: its
    answer checked and shaped for the client's era as the Deferred way does
    it (L{_from_modern}, L{_refused_by_modern}), then the session's.
    """

    __slots__ = ("session", "target", "body")

    def __init__(self, session: ClientSession, target: Backend, body: dict[str, Any]) -> None:
        self.session = session
        self.target = target
        #: What the backend was sent (a handshake-era client's rounds send it again, answered).
        self.body = body

    def answered(self, result: Any, request: InFlight, source: Any) -> Any:
        session = self.session
        target = self.target
        try:
            shaped = _from_modern(result, request, target, self.body, None)
        except Exception:
            return session.answer_failed(Failure(), request, source)
        if isinstance(shaped, Deferred):
            # A handshake-era client asked in rounds: answered once they end.
            if not session.answers_from(request, source):
                return shaped  # (answered from elsewhere now: passed on, to the held call)
            session.retrack(request, shaped)
            return None
        return session.answered(shaped, request, source)

    def answer_failed(self, failure: Failure, request: InFlight, source: Any) -> Any:
        try:
            failure = _refused_by_modern(failure, request.method, self.target)
        except Exception:
            failure = Failure()
        return self.session.answer_failed(failure, request, source)


def _send_again(request: InFlight, target: Backend, body: dict[str, Any]) -> Deferred[Any]:
    """C{request} sent to C{target} again with C{body} (a handshake-era client's answers, L{rounds})."""
    return target.call(request.method, body, None, context=request)


def _send_plainly(
    session: ClientSession,
    request: InFlight,
    backend: Backend,
    method: str,
    out: dict[str, Any],
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> Deferred[Any] | DirectCall:
    """
    C{request} to a shared handshake-era backend as it is: answered into
    the session itself where the backend can (no Deferred), else through
    L{Backend.call} with the request as the context (see L{_sender}).
    """
    if on_progress is None and backend.answers_directly:
        return backend.call_direct(method, out, session, request)
    return backend.call(method, out, on_progress, context=request)


def _enveloped(session: ClientSession, request: InFlight, target: Backend, out: dict[str, Any]) -> dict[str, Any]:
    """
    C{out} for a stateless-era backend: the calling client's capabilities
    and log level, exactly: a stateless-era client's from its request, a
    handshake-era client's from its session (what its C{initialize}
    declared, the level it set, if any).
    """
    assert target.protocol_version is not None
    envelope = request.envelope
    if envelope is not None:
        return stamp(out, target.protocol_version, envelope.capabilities, envelope.log_level)
    caller = session.caller
    return stamp(out, target.protocol_version, caller.capabilities, caller.log_level)


def _from_modern(
    result: Any,
    request: InFlight,
    target: Backend,
    body: dict[str, Any],
    send_body: Callable[[Backend, dict[str, Any]], Deferred[Any]] | None,
) -> Any:
    """
    A stateless-era backend's result to C{body}, checked, and shaped for
    the client's era.  When it asks for the client's input: a handshake-era
    client is asked in rounds (C{send_body} sends the backend the retries;
    None: the request itself, sent again by L{_send_again}); a
    stateless-era one is passed it, its state sealed.
    """
    if type(result) is dict and result.get("resultType", "complete") == "complete":
        # The common answer, as the checks below would leave it, three calls fewer.
        return result if request.envelope is not None else to_legacy(result)
    result = from_modern_backend(result, target.name, request.method)
    if is_input_required(result):
        if request.envelope is not None:
            return sealed(request, target, result)
        send = send_body if send_body is not None else partial(_send_again, request)
        again = lambda retry: send(target, retry).addErrback(_refused_by_modern, request.method, target)  # noqa: E731
        return rounds(request, target, body, result, again)
    return to_legacy(result) if request.envelope is None else result


def _refused_by_modern(failure: Failure, method: str, target: Backend) -> Failure:
    """A stateless-era backend's -32020/-32022 is the gateway's fault: -32603 naming it, and an error in the log."""
    e = failure.value
    if isinstance(e, JsonRpcError) and not isinstance(e, GatewayError) and e.code in _ENVELOPE_REFUSALS:
        log.error(
            "backend {backend} refused the gateway's {method} ({code}: {why})",
            backend=target.name,
            method=method,
            code=e.code,
            why=e.message[:300],
        )
        raise GatewayError(
            INTERNAL_ERROR,
            f"the gateway's request to backend {target.name!r} was refused: {e.message[:300]}",
            {"backend": target.name},
        )
    return failure


def forward_named(
    session: ClientSession, request: InFlight, params: dict[str, Any], kind: str, listing: Listing
) -> Deferred[Any] | DirectCall:
    """
    C{tools/call} or C{prompts/get}: C{params.name} (as clients see it) to
    its backend under the backend's own name, with its arguments; URIs in
    the result mapped back.  A malformed or unknown name is refused.
    """
    method = request.method
    name = params.get("name")
    if type(name) is not str:
        raise refuse(session, method, INVALID_PARAMS, f"Invalid params: {method} needs params.name, a string")
    entry = listing.entries.get(name)
    if entry is None:
        raise unknown(session, method, kind, name)
    arguments = params.get("arguments")
    if arguments is not None and type(arguments) is not dict:
        raise refuse(session, method, INVALID_PARAMS, f"Invalid params: {method} arguments must be an object")
    backend = entry.backend
    catalog = session.gateway.catalog
    out = dict(params)
    out["name"] = entry.original
    subject = Subject(kind, name, backend.name, entry.original)
    # A tool's catalog entry: the policy checks the arguments against its definition.
    expose = partial(catalog.expose_content, backend)  # a partial: called once per answer, cheaper than a lambda
    return forward(session, request, subject, backend, params, out, expose, entry=entry if kind == "tool" else None)


def _progress_forwarder(session: ClientSession, request: InFlight, token: Any) -> Callable[[dict[str, Any]], None]:
    key = request.progress = (type(token), token)
    rid = request.rid

    def forward_progress(params: dict[str, Any]) -> None:
        held = request.held
        if held is not None and held.request is not request:
            held.progress_elsewhere(params)  # answered already: to the retry open now, if any
            return
        out = dict(params)
        out["progressToken"] = token
        session.send({"jsonrpc": "2.0", "method": "notifications/progress", "params": out}, rid, key)

    return forward_progress


def refuse(session: ClientSession, method: str, code: int, message: str, data: Any = None) -> JsonRpcError:
    """
    The error for a request refused before it names a subject (malformed
    params): audited when the policy is active, after the caller's identity
    (an unknown caller learns nothing more).
    """
    policy = session.gateway.policy
    if not policy.active:
        return JsonRpcError(code, message, data)
    return policy.refuse_request(session.label, method, code, message, session.peer, data, session.protocol_version)


def unknown(session: ClientSession, method: str, kind: str, name: str) -> JsonRpcError:
    """The error for a request about a tool or prompt no backend offers (audited when the policy is active)."""
    policy = session.gateway.policy
    if policy.active:
        return policy.refuse_unknown(session.label, method, kind, name, session.peer, session.protocol_version)
    return JsonRpcError(INVALID_PARAMS, f"Unknown {kind}: {name!r}", {kind: name})


__all__ = ["forward", "forward_named", "refuse", "unknown"]
