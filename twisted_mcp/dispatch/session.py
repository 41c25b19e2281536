"""
The MCP server side of one client (L{ClientSession}): the JSON-RPC
envelope, the lifecycle, requests in flight and their answers, the client's
notifications and its answers to the gateway's own requests, and draining.

It takes decoded messages and sends messages through its L{Caller}; it
knows nothing of the bytes (NDJSON over stdio or a socket, HTTP).  What
each method does lives in L{twisted_mcp.dispatch.handlers}.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends.base import Backend
from twisted_mcp.backends.direct import DirectCall
from twisted_mcp.dispatch.caller import Caller
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.handlers import METHODS
from twisted_mcp.dispatch.handlers.tools import ordinary_call
from twisted_mcp.dispatch.held_calls import HELD_METHODS
from twisted_mcp.dispatch.instances import OwnInstances, principal_name
from twisted_mcp.dispatch.listens import Listens
from twisted_mcp.dispatch.mrtr import retry
from twisted_mcp.dispatch.reverse import ClientRequests
from twisted_mcp.dispatch.surface import reshaped, tools_digest
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.meta import Envelope, claims_modern, read_envelope, unsupported_version
from twisted_mcp.mcp.results import to_modern
from twisted_mcp.mcp.versions import MODERN_VERSIONS
from twisted_mcp.policy.refusals import CoalescedRefusal
from twisted_mcp.wire.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    JsonRpcError,
    MessageError,
    encode,
    encode_or_explain,
    id_key,
)

log = Logger()


class InFlight:
    """
    One request of the client's that is not answered yet.  It is also the
    context a backend call carries: what the backend ties to the call (a
    request to the client, a log message) names this session and request.
    """

    __slots__ = ("session", "rid", "key", "method", "envelope", "call", "progress", "backend", "transform", "holdable", "held", "passed")

    def __init__(self, session: ClientSession, rid: Any, method: str, envelope: Envelope | None = None) -> None:
        self.session = session
        self.rid = rid
        self.key = id_key(rid)
        self.method = method
        #: What a stateless-era request said of itself (None: a handshake-era request).
        self.envelope = envelope
        #: The policy's L{twisted_mcp.policy.call.Call}, once it exists.
        self.call: Any = None
        #: The key of its progress notifications, if the client asked for them.
        self.progress: Any = None
        #: The name of the backend it went to, once routed.
        self.backend: str | None = None
        #: Maps its result on the way out (the URIs in it), if set.
        self.transform: Callable[[Any], Any] | None = None
        #: A stateless-era call its backend may hold to ask the client: its params (None: it may not be held).
        self.holdable: dict[str, Any] | None = None
        #: The L{twisted_mcp.dispatch.held_calls.HeldCall} once its backend asked.
        self.held: Any = None
        #: A retry's pass token, opened and checked (L{twisted_mcp.dispatch.mrtr}): what its backend is sent back.
        self.passed: Any = None


class ClientSession:
    """
    The MCP server side of one client.

    A front-end hands it each decoded message (L{message_received}), and
    reports what it could not decode (L{undecodable}) or cut
    (L{message_too_long}); everything toward the client goes through
    C{caller.send}.
    """

    def __init__(self, gateway: Gateway, caller: Caller, max_in_flight: int = 256, max_listens: int = 8) -> None:
        self.gateway = gateway
        self.caller = caller
        self.initialized = False
        self.closing = False
        #: The client's requests in flight, by id key.
        self.in_flight: dict[tuple[type, Any], InFlight] = {}
        self._deferreds: dict[tuple[type, Any], Deferred[Any] | DirectCall] = {}
        #: Requests beyond this many in flight are refused (gateway.maxCallsInFlight).
        self.max_in_flight = max_in_flight
        self._refusing = False
        #: Calls in flight to each backend (by name): a server-to-client
        #: request from a stdio backend goes to the only session with one.
        self.backend_calls: dict[str, int] = {}
        #: Backends this session has sent a request to (roots/list_changed goes to them).
        self.used: set[str] = set()
        self.instances = OwnInstances(gateway, self, lambda: principal_name(gateway, caller.peer))
        #: The gateway's own requests to this client (sampling, elicitation, roots).
        self.client_requests = ClientRequests(self)
        #: The stateless-era client's open subscriptions/listen requests.
        self.listens = Listens(self, max_listens)
        #: The digest of the tool list this (handshake-era) client last got:
        #: list_changed for tools is sent only when its fitted list changed.
        self.tools_listed: str | None = None
        self._shutdown_error: JsonRpcError | None = None
        self._drained: list[Deferred[None]] = []
        gateway.sessions.add(self)

    # -- what others read of the caller ------------------------------------

    @property
    def label(self) -> str:
        return self.caller.label

    @property
    def peer(self) -> Any:
        return self.caller.peer

    @peer.setter
    def peer(self, peer: Any) -> None:
        self.caller.peer = peer

    @property
    def pinned(self) -> bool:
        """Whether the client has said which era it speaks (C{initialize}, or a 2026-07-28 request)."""
        return self.caller.era is not None

    @property
    def protocol_version(self) -> str | None:
        return self.caller.version

    @property
    def client_info(self) -> dict[str, str]:
        return self.caller.info

    @property
    def own(self) -> dict[str, Backend]:
        """This session's own instances of per-session backends, by name."""
        return self.instances.own

    # -- output ------------------------------------------------------------

    def send(self, message: dict[str, Any], related: Any = None, progress_of: Any = None) -> int:
        """One message toward the client; its size in bytes."""
        return self.caller.send(message, related, progress_of)

    def notify(self, method: str, params: dict[str, Any] | None = None, related: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.caller.send(message, related, None)

    def _send_error(self, id: Any, code: int, message: str, data: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self.caller.send({"jsonrpc": "2.0", "id": id, "error": error}, None, None)

    # -- input (a front-end decodes the bytes) --------------------------------

    def message_received(self, message: Any) -> None:
        """One decoded JSON value from the client, checked as a JSON-RPC message and handled."""
        if type(message) is not dict:
            if type(message) is list:
                self._send_error(
                    None,
                    INVALID_REQUEST,
                    "Invalid Request: JSON-RPC batches are not supported; send each request as its own "
                    "message (MCP dropped batching after 2025-03-26, and every call must pass the gateway's "
                    "checks on its own)",
                )
            else:
                self._send_error(None, INVALID_REQUEST, "Invalid Request: expected a JSON-RPC object")
            return
        method = message.get("method")
        if "id" not in message:
            if type(method) is str and message.get("jsonrpc") == "2.0":
                self._notification(method, message.get("params"))
            elif "result" not in message and "error" not in message:
                log.warn("client {client}: dropped a malformed notification", client=self.label)
            return
        rid = message["id"]
        t = type(rid)
        if t is not int and t is not str and t is not float:
            self._send_error(
                None,
                INVALID_REQUEST,
                f"Invalid Request: the id must be a string or a number, not {_json_type(rid)}",
            )
            return
        if method is None:
            if "result" in message or "error" in message:
                self.client_requests.response_received(message)
                return
            self._send_error(rid, INVALID_REQUEST, "Invalid Request: no method")
            return
        if message.get("jsonrpc") != "2.0":
            self._send_error(rid, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
            return
        if type(method) is not str:
            self._send_error(rid, INVALID_REQUEST, "Invalid Request: the method must be a string")
            return
        params = message.get("params")
        if params is None:
            params = {}
        elif type(params) is not dict:
            self._send_error(rid, INVALID_PARAMS, "Invalid params: params must be an object")
            return
        self._request(rid, method, params)

    def _request(self, rid: Any, method: str, params: dict[str, Any]) -> None:
        envelope = None
        try:
            if claims_modern(params):
                envelope, spec = self._modern(method, params)
            else:
                spec = self._legacy(method, params)
        except JsonRpcError as e:
            self.gateway.count(method if method in METHODS else "other", "error", e.code)
            self._send_error(rid, e.code, e.message, e.data)
            return
        if self.closing:
            self.gateway.count(method, "error", errors.GATEWAY_SHUTTING_DOWN)
            self._send_error(rid, errors.GATEWAY_SHUTTING_DOWN, "the gateway is shutting down")
            return
        request = InFlight(self, rid, method, envelope)
        try:
            if envelope is not None and "requestState" in params and method in HELD_METHODS:
                # A retry (2026-07-28): a held call's is resumed, not sent
                # again; a stateless-era backend's (pass) goes on its way.
                # By alias or through call_tool, it is the real call's retry.
                if method == "tools/call":
                    params = ordinary_call(self, request, params)
                self._admit(rid)
                resumed = retry(self, request, params)
                if resumed is not None:
                    self._track(request, resumed)
                    return
            if spec.waits and not self.gateway.ready:
                # The first requests wait (bounded) for every backend's discovery.
                self._admit(rid)
                d = self.gateway.when_ready().addCallback(lambda _: self._handle_when_ready(spec, request, params))
                self._track(request, d)
                return
            if spec.routed:
                self._admit(rid)
            result = spec.handle(self, request, params)
        except JsonRpcError as e:
            self.gateway.count(method, "error", e.code)
            self._send_request_error(request, e)
            return
        except CancelledError:
            raise
        except ValueError as e:
            self.gateway.count(method, "error", INVALID_REQUEST)
            self._send_error(rid, INVALID_REQUEST, f"Invalid Request: {e}")
            return
        except Exception as e:
            log.failure("client {client}: request {request} ({method}) failed", client=self.label, request=rid, method=method)
            self.gateway.count(method, "error", INTERNAL_ERROR)
            self._send_error(rid, INTERNAL_ERROR, f"Internal error: {e}")
            return
        if type(result) is DirectCall or isinstance(result, Deferred):
            self._track(request, result)
        else:
            self.gateway.count(method, "ok")
            if envelope is not None:
                result = to_modern(method, result, self.gateway.policy.active)
            self.send({"jsonrpc": "2.0", "id": rid, "result": result})

    def _legacy(self, method: str, params: dict[str, Any]) -> Any:
        """The handling of a handshake-era request (no envelope), or the error that refuses it."""
        spec = METHODS.get(method)
        if self.caller.era == "modern":
            if method == "initialize":
                # This connection speaks 2026-07-28 now; its answer names what it speaks.
                requested = params.get("protocolVersion")
                raise unsupported_version(requested if type(requested) is str else "", MODERN_VERSIONS)
            raise JsonRpcError(
                INVALID_PARAMS,
                f"Invalid params: this connection speaks 2026-07-28: {method} needs params._meta with "
                "io.modelcontextprotocol/protocolVersion and io.modelcontextprotocol/clientCapabilities",
            )
        if spec is None:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        if not spec.legacy:
            raise JsonRpcError(
                INVALID_PARAMS,
                f"Invalid params: {method} is a method of MCP 2026-07-28 and needs params._meta with "
                "io.modelcontextprotocol/protocolVersion and io.modelcontextprotocol/clientCapabilities "
                "(handshake-era clients begin with initialize)",
            )
        if not self.initialized and not spec.before_initialize:
            raise JsonRpcError(
                errors.NOT_INITIALIZED,
                f"Invalid Request: {method} before initialize; begin the session with initialize, or send "
                "2026-07-28 requests (with the io.modelcontextprotocol/protocolVersion envelope in params._meta)",
            )
        return spec

    def _modern(self, method: str, params: dict[str, Any]) -> tuple[Envelope, Any]:
        """
        The envelope of a stateless-era request and how its method is
        handled, checked in the order the spec's conformance suite expects:
        the envelope (-32602), the version (-32022), the method (-32601,
        also for a family the caller is not offered).  The first such request other than
        C{server/discover} makes this connection speak 2026-07-28.
        """
        if self.caller.era == "legacy" and method != "server/discover":
            raise JsonRpcError(
                INVALID_REQUEST,
                f"Invalid Request: this connection negotiated {self.caller.version} with initialize; send "
                "2026-07-28 requests on a connection that has not sent initialize",
            )
        envelope = read_envelope(params)
        spec = self.modern_method(method)
        if method != "server/discover" and self.caller.era is None:
            self.caller.era = "modern"
            self.caller.version = envelope.version
            self.caller.info = envelope.client_info
            log.info(
                "client {client}: {name} {version} speaks {protocol} (stateless)",
                client=self.label,
                name=envelope.client_info.get("name", "?"),
                version=envelope.client_info.get("version", "?"),
                protocol=envelope.version,
            )
        if envelope.log_level is not None:
            self.gateway.logs.requested(self, envelope.log_level)
        return envelope, spec

    def modern_method(self, method: str) -> Any:
        """
        How a stateless-era request of C{method} is handled; -32601 if that
        era has no such method for this caller.  Whether a server offers
        its family (prompts, resources, completions) is known once every
        server was discovered: a request that waits for that is judged then
        (L{_handle_when_ready}).
        """
        spec = METHODS.get(method)
        if spec is None or not spec.modern:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method} (not a method of MCP 2026-07-28)")
        if spec.family is not None and (self.gateway.ready or not spec.waits):
            self._check_family(method, spec.family)
        return spec

    def _check_family(self, method: str, family: str) -> None:
        if family not in self.gateway.capabilities(self):
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method} (no server behind this gateway offers {family})")

    def _handle_when_ready(self, spec: Any, request: InFlight, params: dict[str, Any]) -> Any:
        """A request that waited for every server's first discovery: its family checked now (stateless era), then handled."""
        if request.envelope is not None and spec.family is not None:
            self._check_family(request.method, spec.family)
        result = spec.handle(self, request, params)
        # A direct call answers into the session, which answers from this chain's Deferred: passed on to it.
        return result.deferred() if type(result) is DirectCall else result

    def _send_request_error(self, request: InFlight, e: JsonRpcError) -> None:
        code, message, data = e.code, e.message, e.data
        if request.envelope is not None and code == errors.RESOURCE_NOT_FOUND:
            # 2026-07-28 forbids -32002: a resource that does not exist is invalid params.
            code = INVALID_PARAMS
        self._send_error(request.rid, code, message, data)

    def undecodable(self, error: MessageError) -> None:
        """A message the front-end could not decode: answered with its error and no id."""
        self._send_error(None, error.code, error.message)

    def message_too_long(self, size: int, limit: int, setting: str = "maxMessageBytes") -> None:
        """A message over the limit, discarded by the front-end: answered with an error and no id."""
        self._send_error(
            None,
            INVALID_REQUEST,
            f"Invalid Request: message of more than {limit} bytes discarded (the gateway's {setting})",
            {"limit": limit},
        )

    # -- requests in flight ------------------------------------------------

    def _admit(self, rid: Any) -> None:
        """Refuse a request whose id is in flight, or that would be one too many in flight."""
        if id_key(rid) in self.in_flight:
            raise JsonRpcError(INVALID_REQUEST, f"Invalid Request: id {rid!r} is already used by a request in flight")
        limit = self.max_in_flight
        if len(self.in_flight) < limit:
            self._refusing = False
            return
        if not self._refusing:
            # Once per episode: a client pipelining thousands would flood the log.
            self._refusing = True
            log.warn(
                "client {client}: {limit} requests in flight (gateway.maxCallsInFlight); refusing more until some are answered",
                client=self.label,
                limit=limit,
            )
        raise errors.GatewayError(
            errors.TOO_MANY_CALLS,
            f"too many requests in flight on this session (the gateway's maxCallsInFlight is {limit}); "
            "wait for answers before sending more",
            {"limit": limit},
        )

    def _track(self, request: InFlight, d: Deferred[Any] | DirectCall) -> None:
        """Answer the request when C{d} fires (a direct call answers into
        L{answered} itself); until then it is in flight."""
        key = request.key
        self.in_flight[key] = request
        # retrack's two lines, here: once per request, one call fewer.
        self._deferreds[key] = d
        if not isinstance(d, DirectCall):  # a Deferred (DirectCall is no ABC: a quick check)
            d.addCallbacks(self.answered, self.answer_failed, callbackArgs=(request, d), errbackArgs=(request, d))

    def retrack(self, request: InFlight, d: Deferred[Any]) -> None:
        """
        Answer C{request} from C{d}.  Called again for a request in flight
        (a call held for its client's input): what it was to be answered
        from passes its outcome on instead.
        """
        self._deferreds[request.key] = d
        d.addCallbacks(self.answered, self.answer_failed, callbackArgs=(request, d), errbackArgs=(request, d))

    def answers_from(self, request: InFlight, source: Any) -> bool:
        """Whether C{request} is still to be answered from C{source} (not taken over by a held call)."""
        return self._deferreds.get(request.key) is source

    def tracked(self, request: InFlight) -> Deferred[Any] | None:
        """What C{request} is to be answered from, while it is in flight (a
        direct call's Deferred, made now)."""
        if self.in_flight.get(request.key) is not request:
            return None
        d = self._deferreds.get(request.key)
        return d.deferred() if isinstance(d, DirectCall) else d

    def routed(self, request: InFlight, backend: Backend) -> None:
        """The request goes to C{backend}: counted until it is answered."""
        name = backend.name
        request.backend = name
        self.used.add(name)
        self.backend_calls[name] = self.backend_calls.get(name, 0) + 1

    def unrouted(self, request: InFlight) -> None:
        """The request did not reach its backend after all (refused on
        the way) or was answered: no longer counted in flight to it."""
        name = request.backend
        if name is None:
            return
        request.backend = None
        left = self.backend_calls[name] - 1
        if left:
            self.backend_calls[name] = left
        else:
            del self.backend_calls[name]

    def _ended(self, request: InFlight) -> None:
        key = request.key
        self.in_flight.pop(key, None)
        self._deferreds.pop(key, None)
        self.unrouted(request)
        if request.progress is not None:
            self.caller.call_ended(request.progress)

    def answered(self, result: Any, request: InFlight, source: Any) -> Any:
        """C{request}'s outcome from C{source} (a Deferred it was tracked with, or a backend's direct call)."""
        if self._deferreds.get(request.key) is not source:
            return result  # answered from elsewhere now: passed on (to the held call)
        transform = request.transform
        if transform is not None:
            try:
                result = transform(result)
            except Exception:
                self.answer_failed(Failure(), request, source)  # logged there, answered -32603
                return None
        call = request.call
        if call is not None:  # (no policy, no call: not asked on every answer)
            audit = _holding(call)
            if audit is not None:
                self._hold_result(result, request, audit)
                return None
        self._ended(request)
        method = request.method
        try:
            answer = result if request.envelope is None else to_modern(method, result, self.gateway.policy.active)
            size = self.caller.send({"jsonrpc": "2.0", "id": request.rid, "result": answer}, None, None)  # as send() does
        finally:
            # Counted once the answer is on its way (off the call's path).
            self.gateway.count(method, "tool_error" if type(result) is dict and result.get("isError") is True else "ok")
        if call is not None:
            call.succeeded(answer, size)
        if self.closing and not self.in_flight:
            self._fire_drained()

    def answer_failed(self, failure: Failure, request: InFlight, source: Any) -> Any:
        if self._deferreds.get(request.key) is not source:
            return failure  # answered from elsewhere now: passed on (to the held call)
        call = request.call
        audit = _holding(call)
        if audit is not None and not (isinstance(failure.value, CancelledError) and self._shutdown_error is None):
            call.failed(failure.value)  # audited now (once: done is set)
            if call.record.get("decision") != "deny":
                # A call that ran: its error waits for its record.  (A refusal
                # carries no result and is not held: its record may even be
                # dropped, counted, while the trail cannot be written.)
                self._hold(request)
                d = audit.hold()
                d.addCallback(lambda _: self._send_answer_error(failure, request))
                d.addErrback(self._held_failed, request)
                return None
        self._send_answer_error(failure, request)
        return None

    def _send_answer_error(self, failure: Failure, request: InFlight) -> None:
        self._ended(request)
        e = failure.value
        rid, method = request.rid, request.method
        if request.call is not None:
            request.call.failed(e)
        if isinstance(e, JsonRpcError):
            # Who raised it decides, never the code: a backend's own error
            # may carry any code, the gateway's included, and is relayed as
            # it is (counted under "other" when its code is one of ours).
            own = isinstance(e, errors.GatewayError)
            self.gateway.count(method, "error", e.code if own or e.code not in errors.GATEWAY_CODES else "other")
            if own and e.code in errors.GATEWAY_CODES and not isinstance(e, CoalescedRefusal):
                # A refusal or transport error of the gateway's: the message
                # is ours.  Refusals beyond the principal's budget are
                # reported in bulk.
                log.info(
                    "client {client}: request {request} ({method}) failed with {code}: {why}",
                    client=self.label,
                    request=rid,
                    method=method,
                    code=e.code,
                    why=e.message,
                )
            self._send_request_error(request, e)
        elif isinstance(e, CancelledError):
            if self._shutdown_error is not None:
                s = self._shutdown_error
                self.gateway.count(method, "error", s.code)
                self._send_error(rid, s.code, s.message, s.data)
            else:
                # Cancelled by the client: the spec says not to answer.
                self.gateway.count(method, "cancelled")
                log.info("client {client}: request {request} cancelled by the client", client=self.label, request=rid)
        else:
            log.failure("client {client}: request {request} failed", failure, client=self.label, request=rid)
            self.gateway.count(method, "error", INTERNAL_ERROR)
            self._send_error(rid, INTERNAL_ERROR, f"Internal error: {e}")
        if self.closing and not self.in_flight:
            self._fire_drained()

    # -- answers held for their audit record (audit.holdAnswers) -------------

    def _hold(self, request: InFlight) -> None:
        """
        The call is over but its answer waits for its audit record: no
        longer counted toward its backend, its progress stale; still in
        flight, so that its id is not taken again meanwhile and a drain
        waits for it.
        """
        self.unrouted(request)
        if request.progress is not None:
            self.caller.call_ended(request.progress)
            request.progress = None

    def _hold_result(self, result: Any, request: InFlight, audit: Any) -> None:
        """
        A result held until its audit record is committed: encoded once,
        now (the record needs its size), and written once the record is.
        Its C{result_bytes} is the size of the answer as encoded, whether
        or not the client is still there to take it.
        """
        call = request.call
        self._hold(request)
        method = request.method
        self.gateway.count(method, "tool_error" if type(result) is dict and result.get("isError") is True else "ok")
        if request.envelope is not None:
            result = to_modern(method, result, self.gateway.policy.active)
        message, size = _encoded_answer(request.rid, result)
        call.succeeded(result, size)
        d = audit.hold()
        d.addCallback(lambda _: self._send_held(message, request))
        d.addErrback(self._held_failed, request)

    def _send_held(self, message: dict[str, Any], request: InFlight) -> None:
        self._ended(request)
        self.send(message)
        if self.closing and not self.in_flight:
            self._fire_drained()

    def _held_failed(self, failure: Failure, request: InFlight) -> None:
        log.failure("client {client}: the held answer to request {request} could not be sent", failure, client=self.label,
                    request=request.rid)
        if self.in_flight.get(request.key) is request:
            self._ended(request)
            if self.closing and not self.in_flight:
                self._fire_drained()

    # -- notifications from the client --------------------------------------

    def _notification(self, method: str, params: Any) -> None:
        if type(params) is not dict:
            params = {}
        if method == "notifications/cancelled":
            rid = params.get("requestId")
            if type(rid) in (int, str, float):
                d = self._deferreds.get(id_key(rid))
                if d is not None:
                    d.cancel()
        elif method == "notifications/progress":
            self.client_requests.progress_received(params)
        elif method == "notifications/roots/list_changed":
            self.gateway.roots_changed(self)
        # notifications/initialized and anything unknown: nothing to do.

    def list_changed(self, kind: str, surface_only: bool = False) -> None:
        """
        Tell the client a listing changed (C{kind}: tools, prompts or
        resources): unsolicited in the handshake era, on the listens that
        asked for it in the stateless one.  C{surface_only}: only the surface
        settings or profiles changed (a reload): told only if its fitted
        tool list did.
        """
        if self.closing:
            return
        if self.initialized and (kind != "tools" or self._tools_changed(surface_only)):
            self.notify(f"notifications/{kind}/list_changed")
        self.listens.list_changed(kind, surface_only)

    def _tools_changed(self, surface_only: bool = False) -> bool:
        """Whether the tool list this client last got differs from its list
        now (C{surface_only}: a list that was and stays the catalog's own
        did not change)."""
        if self.tools_listed is None:
            return not surface_only or reshaped(self, None)
        now = tools_digest(self, None)
        if now is not None and now == self.tools_listed:
            return False
        self.tools_listed = now
        return True

    def tools_changed(self) -> None:
        self.list_changed("tools")

    # -- closing -----------------------------------------------------------

    def drain(self, grace: float, clock: IReactorTime) -> Deferred[None]:
        """
        Stop taking requests; let calls in flight finish within C{grace}
        seconds, then cancel the rest, answering each with an error.
        """
        self.closing = True
        self.listens.end_all()  # answered at once: a listen has nothing to finish
        self.instances.closing = True
        self.gateway.session_ending(self)
        self.client_requests.close("the client's session ended")
        if not self.in_flight:
            return self.release_backends().addCallback(lambda _: None)
        self.gateway.closing.add(self)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        call = clock.callLater(grace, self.cancel_all)

        def done(result: Any) -> Any:
            self.gateway.closing.discard(self)
            if call.active():
                call.cancel()
            return self.release_backends().addCallback(lambda _: result)

        return d.addBoth(done)

    def release_backends(self) -> Deferred[Any]:
        """Stop this session's per-session backend instances."""
        return self.instances.release()

    def cancel_all(self) -> None:
        if self.in_flight:
            log.warn(
                "client {client}: {n} call(s) still in flight after the grace period; cancelling them",
                client=self.label,
                n=len(self.in_flight),
            )
        self._shutdown_error = errors.GatewayError(
            errors.GATEWAY_SHUTTING_DOWN, "the gateway is shutting down; the call was cancelled"
        )
        for d in list(self._deferreds.values()):
            d.cancel()
        if not self.in_flight:
            # Else answers held for their audit record (audit.holdAnswers) are still on
            # their way, each bounded by audit.holdTimeout: the last one fires drained.
            self._fire_drained()

    def _fire_drained(self) -> None:
        waiters, self._drained = self._drained, []
        for d in waiters:
            d.callback(None)


def _holding(call: Any) -> Any:
    """The audit log that holds this call's answer until its record is committed, or None (C{audit.holdAnswers} off)."""
    if call is None:
        return None
    audit = call.policy.audit
    return audit if getattr(audit, "holds_answers", False) else None


def _encoded_answer(rid: Any, result: Any) -> tuple[dict[str, Any], int]:
    """
    The answer C{{"jsonrpc": "2.0", "id": rid, "result": result}} with its
    result encoded now, once (kept as an C{orjson.Fragment}, which the
    front-end's encoder copies as it is), and its size as the front-end
    will write it.  What cannot be encoded so (a result or id orjson
    refuses) is left to the front-end, measured by encoding it here too.
    """
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "result": result}
    try:
        body = encode(result)
        envelope = orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": 0}, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, ValueError, RecursionError):
        data, _ = encode_or_explain(message)
        return message, len(data) if data is not None else 0
    message["result"] = orjson.Fragment(body[:-1])
    return message, len(envelope) - 2 + len(body)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) is list:
        return "an array"
    if type(value) is dict:
        return "an object"
    return type(value).__name__


__all__ = ["ClientSession", "InFlight", "id_key"]
