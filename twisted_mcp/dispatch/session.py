"""
The MCP server side of one client connection (L{ClientSession}): the
JSON-RPC envelope, the MCP lifecycle, the four methods, calls in flight and
draining.  It takes decoded messages and knows nothing of how their bytes
travel (stdio or sockets).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.versions import SERVER_INFO, negotiate
from twisted_mcp.policy.refusals import CoalescedRefusal
from twisted_mcp.wire.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    JsonRpcError,
    MessageError,
    encode,
    id_key,
)

log = Logger()

#: Characters of a client's name and of its version a session keeps.
_CLIENT_INFO_CHARS = 256


def _client_info(info: dict[str, Any]) -> dict[str, str]:
    """The name and version a client gave, as short strings: a session keeps
    them as long as it lasts (for /status), and an initialize may be as
    large as gateway.maxHandshakeBytes; the rest is not used."""
    return {key: value[:_CLIENT_INFO_CHARS] for key in ("name", "version") if type(value := info.get(key)) is str}


class ClientSession:
    """
    The MCP server side of one client connection.

    It receives decoded messages (L{message_received}) from a front-end,
    which also reports what it could not decode (L{undecodable}) or cut
    (L{message_too_long}), and answers through C{send}.

    @param send: writes one encoded message (a line) toward the client.
    """

    def __init__(
        self,
        gateway: Gateway,
        send: Callable[[bytes], None],
        label: str = "stdio",
        peer: Any = None,
        max_in_flight: int = 256,
        progress: Any = None,
    ) -> None:
        self.gateway = gateway
        self._write = send
        #: Where progress notifications go, if not straight to C{send}: an
        #: object with C{send(key, line)} and C{end(key)} (the call of
        #: C{key} was answered), which may coalesce them while the client
        #: is not reading (L{twisted_mcp.frontends.stream.ProgressHold}).
        self.progress = progress
        self.label = label
        #: Who is on the other end (a L{twisted_mcp.policy.peers.Peer}),
        #: which the policy turns into a principal; None on stdio.
        self.peer = peer
        self.protocol_version: str | None = None
        self.client_info: dict[str, Any] = {}
        self.initialized = False
        self.closing = False
        self.in_flight: dict[tuple[type, Any], Deferred[Any]] = {}
        #: Requests beyond this many in flight are refused (gateway.maxCallsInFlight).
        self.max_in_flight = max_in_flight
        self._refusing = False
        #: This session's own instances of per-session backends, by name.
        self.own: dict[str, Backend] = {}
        #: The principal its instances run for (maxInstancesPerPrincipal).
        self.owner: str | None = None
        self._calls_to_own: dict[str, int] = {}
        self._idle_stops: dict[str, Any] = {}
        self._releasing: Deferred[Any] | None = None
        self._shutdown_error: JsonRpcError | None = None
        self._drained: list[Deferred[None]] = []
        self._requests: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
            "initialize": self._initialize,
            "ping": self._ping,
            "tools/list": self._tools_list,
            "tools/call": self._tools_call,
        }
        gateway.sessions.add(self)

    # -- output ------------------------------------------------------------

    def _send(self, message: dict[str, Any], progress_of: Any = None) -> int:
        try:
            data = encode(message)
        except (ValueError, TypeError, RecursionError) as e:
            log.error("could not encode a message for the client: {why}", why=str(e)[:200])
            if "id" in message:
                data = encode(
                    {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "error": {"code": INTERNAL_ERROR, "message": f"the answer could not be encoded: {e}"},
                    }
                )
            else:
                return 0
        if progress_of is not None and self.progress is not None:
            self.progress.send(progress_of, data)
        else:
            self._write(data)
        return len(data)

    def _send_error(self, id: Any, code: int, message: str, data: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        # Through _send: a backend's error data may not encode (too deep, NaN).
        self._send({"jsonrpc": "2.0", "id": id, "error": error})

    # -- input -------------------------------------------------------------

    # -- input (a front-end decodes the bytes) --------------------------------

    def message_received(self, message: Any) -> None:
        """One decoded JSON value from the client, checked as a JSON-RPC message and answered."""
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
                return  # A response from the client: we send it no requests.
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
        handler = self._requests.get(method)
        if handler is None:
            hint = ""
            if method == "server/discover":
                hint = " (this gateway speaks the handshake era: send initialize)"
            self.gateway.count("other", "error", METHOD_NOT_FOUND)
            self._send_error(rid, METHOD_NOT_FOUND, f"Method not found: {method}{hint}")
            return
        if not self.initialized and method != "initialize" and method != "ping":
            self.gateway.count(method, "error", errors.NOT_INITIALIZED)
            self._send_error(
                rid,
                errors.NOT_INITIALIZED,
                f"Invalid Request: {method} before initialize; the session must begin with initialize",
            )
            return
        if self.closing:
            self.gateway.count(method, "error", errors.GATEWAY_SHUTTING_DOWN)
            self._send_error(rid, errors.GATEWAY_SHUTTING_DOWN, "the gateway is shutting down")
            return
        try:
            result = handler(rid, params)
        except JsonRpcError as e:
            self.gateway.count(method, "error", e.code)
            self._send_error(rid, e.code, e.message, e.data)
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
        if result is not None:
            self.gateway.count(method, "ok")
            self._send({"jsonrpc": "2.0", "id": rid, "result": result})

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

    # -- requests ----------------------------------------------------------

    def _initialize(self, rid: Any, params: dict[str, Any]) -> dict[str, Any]:
        if self.protocol_version is not None:
            raise JsonRpcError(INVALID_REQUEST, "Invalid Request: initialize was already received")
        self.protocol_version = negotiate(params.get("protocolVersion"))
        info = params.get("clientInfo")
        given = info if type(info) is dict else {}
        self.client_info = _client_info(given)
        self.initialized = True
        # The log cuts each field itself, longer than the session keeps it.
        log.info(
            "client {client}: {name} {version} connected (protocol {protocol})",
            client=self.label,
            name=given.get("name", "?"),
            version=given.get("version", "?"),
            protocol=self.protocol_version,
        )
        return {
            "protocolVersion": self.protocol_version,
            "capabilities": self.gateway.capabilities(),
            "serverInfo": SERVER_INFO,
        }

    def _ping(self, rid: Any, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _tools_list(self, rid: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        if params.get("cursor") is not None:
            raise JsonRpcError(INVALID_PARAMS, "Invalid params: unknown cursor (the gateway lists every tool in one page)")
        if self.gateway.ready:
            return self._listing()
        # The first listing waits (bounded) for every backend's discovery.
        self._admit(rid)
        self._track(rid, self.gateway.when_ready().addCallback(lambda _: self._listing()), None, "tools/list")
        return None

    def _listing(self) -> dict[str, Any]:
        policy = self.gateway.policy
        if not policy.active:
            return {"tools": self.gateway.catalog.listing}
        record = policy.new_record(self.label, "tools/list")
        try:
            principal = policy.principal(self.peer)
        except JsonRpcError as e:
            raise policy.deny(record, e.code, e.message, e.data)
        catalog = self.gateway.catalog
        tools = policy.listing(principal, catalog.listing, catalog.entries)
        if policy.audit is not None:
            record["principal"] = principal.name
            record["roles"] = list(principal.roles)
            record["outcome"] = "ok"
            record["reason"] = f"{len(tools)} of {len(catalog.listing)} tool(s) visible"
            policy._audit(record)
        return {"tools": tools}

    def _tools_call(self, rid: Any, params: dict[str, Any]) -> None:
        self._admit(rid)
        holder: list[Any] = []
        if self.gateway.ready:
            self._track(rid, self._route_call(params, holder), holder)
        else:
            self._track(rid, self.gateway.when_ready().addCallback(lambda _: self._route_call(params, holder)), holder)
        return None

    def _route_call(self, params: dict[str, Any], holder: list[Any]) -> Deferred[Any]:
        policy = self.gateway.policy
        if policy.active:
            call = policy.begin(self.label, params, self.gateway.catalog, self.peer)
            holder.append(call)
            entry = call.entry
        else:
            call = None
            name = params.get("name")
            if type(name) is not str:
                raise JsonRpcError(INVALID_PARAMS, "Invalid params: tools/call needs params.name, a string")
            entry = self.gateway.catalog.entries.get(name)
            if entry is None:
                raise JsonRpcError(INVALID_PARAMS, f"Unknown tool: {name!r}", {"tool": name})
            args = params.get("arguments")
            if args is not None and type(args) is not dict:
                raise JsonRpcError(INVALID_PARAMS, "Invalid params: tools/call arguments must be an object")
        out = dict(params)
        out["name"] = entry.tool
        on_progress = None
        meta = params.get("_meta")
        if type(meta) is dict and "progressToken" in meta:
            token = meta["progressToken"]
            out["_meta"] = dict(meta)
            on_progress = self._progress_forwarder(token)
        backend = entry.backend
        if backend.per_session:
            send = lambda: self._call_own(backend, out, on_progress)
        else:
            send = lambda: backend.call("tools/call", out, on_progress)
        d = send() if call is None else call.dispatch(send)
        if on_progress is not None and self.progress is not None:
            d.addBoth(self._progress_ended, token)
        return d

    def _progress_ended(self, result: Any, token: Any) -> Any:
        """The call is answered: progress held for it is stale now."""
        self.progress.end((type(token), token))
        return result

    def _call_own(
        self, template: Backend, params: dict[str, Any], on_progress: Callable[[dict[str, Any]], None] | None
    ) -> Deferred[Any]:
        """A call to this session's instance of a per-session backend; the
        instance is stopped once it has had no call for its idle timeout."""
        ready = self._own_instance(template)
        name = template.name
        self._calls_to_own[name] = self._calls_to_own.get(name, 0) + 1
        idle = self._idle_stops.pop(name, None)
        if idle is not None:
            idle.cancel()
        d = ready.addCallback(lambda b: b.call("tools/call", params, on_progress))
        return d.addBoth(self._own_call_done, name)

    def _own_call_done(self, result: Any, name: str) -> Any:
        left = self._calls_to_own[name] = self._calls_to_own[name] - 1
        instance = self.own.get(name)
        if not left and instance is not None and instance.idle_timeout:
            self._idle_stops[name] = self.gateway.clock.callLater(
                instance.idle_timeout, self._stop_idle, name, instance
            )
        return result

    def _stop_idle(self, name: str, instance: Backend) -> None:
        self._idle_stops.pop(name, None)
        if self.own.get(name) is not instance:
            return  # already released (the session ended, or a reload replaced it)
        del self.own[name]
        log.info(
            "client {client}: its instance of backend {backend} had no call for {idle:g} s; stopping it "
            "(the next call starts a new one)",
            client=self.label,
            backend=name,
            idle=instance.idle_timeout,
        )
        self._stop_instances([instance])

    def _own_instance(self, template: Backend) -> Deferred[Backend]:
        """This session's instance of a per-session backend, started on first use."""
        instance = self.own.get(template.name)
        if instance is None:
            if self.gateway.backends.get(template.name) is not template:
                # Removed or replaced (a reload) while this call waited.
                raise errors.backend_error(
                    errors.BACKEND_UNAVAILABLE, template.name, f"backend {template.name!r} was removed or replaced; call again"
                )
            if self.closing or self.gateway.spawn is None:
                raise template.unavailable()
            principal = self._principal_name()
            self._check_instance_caps(template, principal)
            instance = self.own[template.name] = self.gateway.spawn(template)
            self.owner = principal
            self.gateway.instances.add(instance)
            log.info("client {client}: started its own instance of backend {backend}", client=self.label, backend=template.name)
        if instance.state.value == "up":
            return succeed(instance)
        return instance.when_discovered().addCallback(lambda _: instance)

    def _principal_name(self) -> str:
        try:
            return self.gateway.policy.principal(self.peer).name
        except JsonRpcError:
            return ""  # the policy refuses such a caller before any call reaches here

    def _check_instance_caps(self, template: Backend, principal: str) -> None:
        """Refuse (C{errors.BUSY}) a new instance beyond the backend's caps."""
        name = template.name
        running = self.gateway.instance_counts().get(name, 0)
        if running >= template.max_instances:
            raise errors.backend_error(
                errors.BUSY,
                name,
                f"backend {name!r} already runs {running} per-session instance(s), its cap (maxInstances); "
                "try again when another session ends or goes idle",
                limit=template.max_instances,
                cap="maxInstances",
            )
        sessions = self.gateway.sessions | self.gateway.closing
        mine = sum(1 for s in sessions if name in s.own and s.owner == principal)
        if mine >= template.max_instances_per_principal:
            raise errors.backend_error(
                errors.BUSY,
                name,
                f"backend {name!r} already runs {mine} per-session instance(s) for {principal or 'this caller'}, "
                "the cap per principal (maxInstancesPerPrincipal); end another session first",
                limit=template.max_instances_per_principal,
                cap="maxInstancesPerPrincipal",
            )

    def release_backends(self) -> Deferred[Any]:
        """Stop this session's per-session backend instances; the result
        fires once they (and any stopped by an earlier call) are gone."""
        own, self.own = self.own, {}
        idle, self._idle_stops = self._idle_stops, {}
        for call in idle.values():
            call.cancel()
        if own:
            self._stop_instances(list(own.values()))
        if self._releasing is None or self._releasing.called:
            return succeed(None)
        done: Deferred[Any] = Deferred()
        self._releasing.addBoth(lambda result: (done.callback(None), result)[1])
        return done

    def _stop_instances(self, instances: list[Backend]) -> None:
        from twisted_mcp.backends.stdio import stop_all

        for instance in instances:
            self.gateway.instances.discard(instance)
            log.info("client {client}: stopping its instance of backend {backend}", client=self.label, backend=instance.name)
        releasing = stop_all(instances)
        earlier = self._releasing
        self._releasing = releasing if earlier is None or earlier.called else DeferredList([earlier, releasing])
        stopping = self.gateway.stopping_instances
        stopping.add(releasing)
        releasing.addBoth(lambda result: (stopping.discard(releasing), result)[1])

    def _check_unused(self, rid: Any) -> None:
        if (type(rid), rid) in self.in_flight:
            raise JsonRpcError(INVALID_REQUEST, f"Invalid Request: id {rid!r} is already used by a request in flight")

    def _admit(self, rid: Any) -> None:
        """Refuse a request whose id is in flight, or that would be one too many in flight."""
        self._check_unused(rid)
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

    def _track(self, rid: Any, d: Deferred[Any], holder: list[Any] | None = None, method: str = "tools/call") -> None:
        """Answer C{rid} when C{d} fires; until then it is a call in flight.
        C{holder} receives the call's policy L{Call} once it exists."""
        key = (type(rid), rid)
        self.in_flight[key] = d
        args = (rid, key, holder, method)
        d.addCallbacks(self._answer, self._answer_error, args, None, args)

    def _progress_forwarder(self, token: Any) -> Callable[[dict[str, Any]], None]:
        key = (type(token), token)

        def forward(params: dict[str, Any]) -> None:
            out = dict(params)
            out["progressToken"] = token
            self._send({"jsonrpc": "2.0", "method": "notifications/progress", "params": out}, key)

        return forward

    def _answer(self, result: Any, rid: Any, key: Any, holder: list[Any] | None, method: str) -> None:
        del self.in_flight[key]
        self.gateway.count(method, "tool_error" if type(result) is dict and result.get("isError") is True else "ok")
        size = self._send({"jsonrpc": "2.0", "id": rid, "result": result})
        if holder:
            holder[0].succeeded(result, size)
        if self.closing and not self.in_flight:
            self._fire_drained()

    def _answer_error(self, failure: Failure, rid: Any, key: Any, holder: list[Any] | None, method: str) -> None:
        self.in_flight.pop(key, None)
        e = failure.value
        if holder:
            holder[0].failed(e)
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
            self._send_error(rid, e.code, e.message, e.data)
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

    # -- notifications -----------------------------------------------------

    def _notification(self, method: str, params: Any) -> None:
        if method == "notifications/cancelled":
            if type(params) is dict:
                rid = params.get("requestId")
                if type(rid) in (int, str, float):
                    d = self.in_flight.get((type(rid), rid))
                    if d is not None:
                        d.cancel()
        elif method == "notifications/initialized":
            pass
        # Other notifications (progress from the client, roots changes...)
        # have no backend to go to yet.

    def tools_changed(self) -> None:
        if self.initialized and not self.closing:
            self._send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})

    # -- closing -----------------------------------------------------------

    def drain(self, grace: float, clock: IReactorTime) -> Deferred[None]:
        """
        Stop taking requests; let calls in flight finish within C{grace}
        seconds, then cancel the rest, answering each with an error.
        """
        self.closing = True
        self.gateway.sessions.discard(self)
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
        for d in list(self.in_flight.values()):
            d.cancel()
        self._fire_drained()

    def _fire_drained(self) -> None:
        waiters, self._drained = self._drained, []
        for d in waiters:
            d.callback(None)


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


__all__ = ["ClientSession", "id_key"]
