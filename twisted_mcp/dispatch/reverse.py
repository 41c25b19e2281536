"""
Server-to-client requests (C{sampling/createMessage}, C{elicitation/create},
C{roots/list}) and the backends' notifications, routed to the right client.

L{Reverse} is the gateway's side of L{twisted_mcp.backends.base.BackendEvents}.
The client a backend's request is for is, in this order:
  1. the session of the call the transport ties it to (a Streamable HTTP
     backend sends it on the stream answering that call's POST);
  2. the owner of a per-session instance;
  3. the only session with a call in flight to that backend.
Otherwise the gateway cannot know, and refuses the request with a clear
error (and says why in its log): it never guesses.  A client that did not
declare the capability a request needs is never sent it.  A stateless-era
(2026-07-28) client cannot be sent a request at all: its call is held
(L{twisted_mcp.dispatch.held_calls}) and the request put to it in the
call's answer, an C{InputRequiredResult}.

L{ClientRequests} is one session's side: the gateway's requests to its
client, with ids of the gateway's own, progress both ways, cancellation
and a timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.held_calls import HeldCalls
from twisted_mcp.mcp.request_state import Seal
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, JsonRpcError, id_key

if TYPE_CHECKING:
    from twisted_mcp.dispatch.gateway import Gateway
    from twisted_mcp.dispatch.session import ClientSession

log = Logger()

#: Seconds a client has to answer a server-to-client request (a person may
#: be filling in an elicitation form).
CLIENT_REQUEST_TIMEOUT = 600.0
#: The server-to-client requests the gateway passes on.
PASSED = ("sampling/createMessage", "elicitation/create", "roots/list")


class _Pending:
    __slots__ = ("deferred", "timer", "backend", "token", "method")

    def __init__(self, deferred: Deferred[Any], backend: Backend, token: Any, method: str) -> None:
        self.deferred = deferred
        self.timer: Any = None
        self.backend = backend
        #: The backend's own progress token for this request, if it gave one.
        self.token = token
        self.method = method


class ClientRequests:
    """The gateway's requests to one session's client."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self._next = 1
        self._pending: dict[int, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def request(self, backend: Backend, method: str, params: dict[str, Any], related: Any, timeout: float) -> Deferred[Any]:
        """
        Send C{method} to the client for C{backend}; the Deferred fires with
        the client's result, fails with its error (a L{JsonRpcError}), and
        cancelling it tells the client the request is cancelled.
        """
        rid = self._next
        self._next = rid + 1
        out = dict(params)
        token = None
        meta = params.get("_meta")
        if type(meta) is dict:
            meta = dict(meta)
            if "progressToken" in meta:
                # The client's progress comes back under our id; the backend gets its own token.
                token = meta["progressToken"]
                meta["progressToken"] = rid
            out["_meta"] = meta
        pending = self._pending

        def cancelled(d: Deferred[Any]) -> None:
            entry = pending.pop(rid, None)
            if entry is not None:
                if entry.timer is not None and entry.timer.active():
                    entry.timer.cancel()
                self.session.notify("notifications/cancelled", {"requestId": rid, "reason": "the server cancelled it"})

        d: Deferred[Any] = Deferred(cancelled)
        entry = pending[rid] = _Pending(d, backend, token, method)
        entry.timer = self.session.gateway.clock.callLater(timeout, self._timed_out, rid, timeout)
        self.session.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": out}, related)
        return d

    def _timed_out(self, rid: int, timeout: float) -> None:
        entry = self._pending.pop(rid, None)
        if entry is None:
            return
        entry.timer = None
        self.session.notify("notifications/cancelled", {"requestId": rid, "reason": "timed out"})
        log.warn(
            "client {client} did not answer {method} for backend {backend} within {timeout:g} s",
            client=self.session.label,
            method=entry.method,
            backend=entry.backend.name,
            timeout=timeout,
        )
        entry.deferred.errback(
            JsonRpcError(INTERNAL_ERROR, f"the client did not answer {entry.method} within {timeout:g} s (through the gateway)")
        )

    def response_received(self, message: dict[str, Any]) -> None:
        """The client answered one of our requests (or one that timed out or was cancelled: dropped)."""
        rid = message.get("id")
        entry = self._pending.pop(rid, None) if type(rid) is int else None
        if entry is None:
            log.debug("client {client}: dropped an answer to no request in flight ({id!r})", client=self.session.label, id=rid)
            return
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        error = message.get("error")
        if "result" in message and type(message["result"]) is dict:
            entry.deferred.callback(message["result"])
        elif type(error) is dict:
            code = error.get("code")
            entry.deferred.errback(
                JsonRpcError(code if type(code) is int else INTERNAL_ERROR, str(error.get("message", ""))[:2000], error.get("data"))
            )
        else:
            entry.deferred.errback(JsonRpcError(INTERNAL_ERROR, f"the client answered {entry.method} with neither a result object nor an error"))

    def progress_received(self, params: dict[str, Any]) -> None:
        """The client's progress on one of our requests: to the backend, under its own token."""
        token = params.get("progressToken")
        entry = self._pending.get(token) if type(token) is int else None
        if entry is None or entry.token is None:
            return
        out = dict(params)
        out["progressToken"] = entry.token
        entry.backend.notify("notifications/progress", out)

    def close(self, why: str) -> None:
        """The session ends: every request still waiting fails, and its held calls waiting for a retry end."""
        self.session.gateway.reverse.held.session_ended(self.session)
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.deferred.errback(JsonRpcError(INTERNAL_ERROR, f"the client went away before answering {entry.method} ({why})"))


class Reverse:
    """What the backends report to the gateway: their requests to clients and their notifications."""

    def __init__(self, gateway: Gateway, timeout: float = CLIENT_REQUEST_TIMEOUT) -> None:
        self.gateway = gateway
        self.timeout = timeout
        #: Stateless-era calls whose backend may ask their client for input.
        self.held = HeldCalls(gateway.clock, Seal(gateway.clock))

    # -- BackendEvents -----------------------------------------------------

    def server_request(self, backend: Backend, method: str, params: dict[str, Any], related: Any) -> Deferred[Any]:
        if method not in PASSED:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method} (the gateway does not pass it on to clients)")
        session, rid, why = self.client_for(backend, related)
        if session is None:
            log.warn("backend {backend} sent {method}; refused: {why}", backend=backend.name, method=method, why=why)
            raise JsonRpcError(INVALID_REQUEST, f"the gateway refused {method}: {why}")
        held = None
        if session.caller.era == "modern":
            held = self.held.find(session, backend, related)
            if held is None:
                why = "the client speaks MCP 2026-07-28 and no call of its to this server is open to tie the request to"
                log.warn("backend {backend} sent {method}; refused: {why}", backend=backend.name, method=method, why=why)
                raise JsonRpcError(INVALID_REQUEST, f"the gateway refused {method}: {why}")
            held.check(method, params)
            cannot = None
        else:
            cannot = session.caller.can_answer(method, params)
        if cannot is not None:
            log.info(
                "backend {backend} sent {method} for client {client}; refused: {why}",
                backend=backend.name,
                method=method,
                client=session.label,
                why=cannot,
            )
            raise JsonRpcError(METHOD_NOT_FOUND, f"the client cannot answer {method}: {cannot}")
        policy = self.gateway.policy
        principal = None
        cause = None
        if policy.active:
            try:
                principal = policy.principal(session.peer)
            except JsonRpcError as e:
                raise JsonRpcError(INVALID_REQUEST, f"the gateway refused {method}: the client's identity is no longer valid ({e.message})")
            cause = _cause(session, rid if held is None else held.origin.rid)
            refusal = policy.reverse_refusal(principal, backend.name, method)
            if refusal is not None:
                policy.audit_reverse(
                    session.label, principal, backend.name, method, "refused", INVALID_REQUEST, None, refusal, cause, session.protocol_version
                )
                raise JsonRpcError(INVALID_REQUEST, f"the gateway refused {method}: {refusal}")
        started = self.gateway.clock.seconds()
        if held is not None:
            d = held.ask(method, params)
        else:
            d = session.client_requests.request(backend, method, params, rid, self.timeout)
        if principal is not None:
            d.addBoth(self._audit, session, principal, backend, method, started, cause)
        return d

    def _audit(
        self, result: Any, session: ClientSession, principal: Any, backend: Backend, method: str, started: float, cause: str | None
    ) -> Any:
        error = getattr(result, "value", None) if not isinstance(result, dict) else None
        if error is None:
            outcome, code = "ok", None
        elif isinstance(error, CancelledError):
            outcome, code = "cancelled", None
        else:
            outcome, code = "error", getattr(error, "code", INTERNAL_ERROR)
        latency = round((self.gateway.clock.seconds() - started) * 1000, 3)
        self.gateway.policy.audit_reverse(
            session.label, principal, backend.name, method, outcome, code, latency, None, cause, session.protocol_version
        )
        return result

    def server_notification(self, backend: Backend, method: str, params: dict[str, Any], related: Any) -> None:
        if method == "notifications/message":
            self.gateway.logs.deliver(backend, params, related)
        elif method == "notifications/resources/updated":
            self.gateway.subscriptions.updated(backend, params)
        else:
            log.debug("backend {backend}: ignored notification {method}", backend=backend.name, method=method)

    # -- which client ------------------------------------------------------

    def client_for(self, backend: Backend, related: Any) -> tuple[ClientSession | None, Any, str]:
        """The session a backend's request is for, the id of its call it belongs to, or why none."""
        gateway = self.gateway
        session = getattr(related, "session", None)
        if session is not None:
            if session in gateway.sessions:
                return session, related.rid, ""
            return None, None, "the client whose call it belongs to has gone"
        owner = gateway.instance_owners.get(backend)
        if owner is not None:
            if owner in gateway.sessions:
                return owner, None, ""
            return None, None, "the client that owns this per-session instance has gone"
        calling = [s for s in gateway.sessions if s.backend_calls.get(backend.name)]
        if len(calling) == 1:
            return calling[0], None, ""
        if not calling:
            return None, None, f"no client has a call in flight to backend {backend.name!r}, so none can be told it is for"
        return None, None, (
            f"{len(calling)} clients have calls in flight to backend {backend.name!r} and its transport does not say "
            "which call this is for (make the backend perSession, or reach it over Streamable HTTP)"
        )


def _cause(session: ClientSession, rid: Any) -> str | None:
    """The audit id of the client's call a request belongs to, when known."""
    if rid is None:
        return None
    request = session.in_flight.get(id_key(rid))
    call = request.call if request is not None else None
    return call.record.get("id") if call is not None else None


__all__ = ["CLIENT_REQUEST_TIMEOUT", "ClientRequests", "Reverse"]
