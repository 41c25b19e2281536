"""
The requests a server sent the gateway (sampling, elicitation, roots, ...)
that are being answered: each is handed on, its answer or error sent back
with the server's own id, and it is forgotten on every path (answered,
cancelled by the server, connection lost).  The table is bounded.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.wire.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    JsonRpcError,
    JsonRpcPeer,
    id_key,
    valid_id,
)

log = Logger()

#: Requests from one server connection the gateway holds at once; more are
#: refused until some are answered.
MAX_HELD_REQUESTS = 64

#: Hands a request on: (method, params, related) -> a Deferred of its result.
Handler = Callable[[str, dict[str, Any], Any], "Deferred[Any]"]


class HeldRequests:
    """
    The server's requests in progress on one connection.

    @param peer: where answers are sent.
    @param name: the backend's name, for the log and error messages.
    """

    def __init__(self, peer: JsonRpcPeer, name: str, limit: int | None = None) -> None:
        self._peer = peer
        self._name = name
        self._limit = MAX_HELD_REQUESTS if limit is None else limit
        self._held: dict[tuple[type, Any], Deferred[Any]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def received(self, message: dict[str, Any], handler: Handler, related: Any) -> None:
        """A request from the server: hand it to C{handler}, answer it when that fires."""
        rid, method = message["id"], message["method"]
        if not valid_id(rid):
            log.warn(
                "backend {backend} sent a {method} request with an unusable id {id}; ignored",
                backend=self._name,
                method=method,
                id=str(rid)[:100],
            )
            return
        key = id_key(rid)
        if key in self._held:
            self._refuse(rid, INVALID_REQUEST, f"request id {rid!r} is already in use by a request in progress")
            return
        if len(self._held) >= self._limit:
            self._refuse(
                rid,
                INTERNAL_ERROR,
                f"the gateway already holds {len(self._held)} requests from backend {self._name!r}, "
                "its limit; answer or cancel some first",
            )
            return
        params = message.get("params", {})
        if type(params) is not dict:
            self._refuse(rid, INVALID_PARAMS, f"the params of {method} must be an object")
            return
        # A refusal at once (raised) is answered like a later one.
        d = maybeDeferred(handler, method, params, related)
        self._held[key] = d
        d.addCallbacks(self._answered, self._failed, callbackArgs=(key, rid, d), errbackArgs=(key, rid, d, method))

    def cancelled(self, rid: Any) -> None:
        """The server cancelled its request C{rid}: stop answering it (no answer is sent)."""
        if not valid_id(rid):
            return
        d = self._held.pop(id_key(rid), None)
        if d is not None:
            d.cancel()

    def cancel_all(self) -> None:
        """The connection is gone (or its session ended): cancel everything held."""
        held, self._held = self._held, {}
        for d in held.values():
            d.cancel()

    def _answered(self, result: Any, key: tuple[type, Any], rid: Any, d: Deferred[Any]) -> None:
        if self._held.get(key) is not d:
            return  # Cancelled meanwhile: the server expects no answer.
        del self._held[key]
        try:
            self._peer.respond(rid, result)
        except ValueError:
            self._refuse(rid, INTERNAL_ERROR, "the gateway could not encode the answer (nested too deeply, or not finite numbers)")
        except Exception as e:
            self._not_sent(e)

    def _failed(self, failure: Failure, key: tuple[type, Any], rid: Any, d: Deferred[Any], method: str) -> None:
        if self._held.get(key) is not d:
            return  # Cancelled here: the failure is that cancellation.
        del self._held[key]
        e = failure.value
        if isinstance(e, JsonRpcError):
            self._send_error(rid, e)
        elif isinstance(e, CancelledError):
            self._refuse(rid, INTERNAL_ERROR, f"the gateway cancelled {method}")
        else:
            log.failure("backend {backend}: answering its {method} request failed", failure, backend=self._name, method=method)
            self._refuse(rid, INTERNAL_ERROR, f"the gateway failed to handle {method}")

    def _refuse(self, rid: Any, code: int, message: str) -> None:
        self._send_error(rid, JsonRpcError(code, message))

    def _send_error(self, rid: Any, error: JsonRpcError) -> None:
        try:
            self._peer.respond_error(rid, error)
        except Exception as e:
            self._not_sent(e)

    def _not_sent(self, e: Exception) -> None:
        # The connection is gone (its end cancels what is held).
        log.info("backend {backend}: could not send an answer to its request: {why}", backend=self._name, why=e)


__all__ = ["MAX_HELD_REQUESTS", "HeldRequests"]
