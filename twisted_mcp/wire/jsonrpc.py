"""
JSON-RPC 2.0: decoding and encoding at the edge, typed errors, and a peer
that keeps track of the requests it sent.

Nothing here knows about MCP.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Protocol

import orjson
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

# Standard JSON-RPC 2.0 codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

_log = Logger()


class JsonRpcError(Exception):
    """
    A JSON-RPC error object, as an exception: raised by handlers to answer
    with an error, and delivered to requesters when the peer answered one.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


class MessageError(Exception):
    """
    A message that cannot be handled: C{code} and C{message} say why, and
    C{id} is the request id when one could be read (else C{None}).
    """

    def __init__(self, code: int, message: str, id: Any = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.id = id


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode(line: bytes) -> Any:
    """
    Parse one message.

    orjson reads it (several times faster than the standard library).  Where
    orjson refuses a message or might read it differently, the standard
    library reads it, so that every value and every error is what the
    standard library makes of it: what orjson refuses (lone surrogates,
    which a peer may legally send as escapes; numbers too large for a
    double; any syntax error, whose message is the standard library's), what
    it reads as a float (integer literals beyond 64 bits), and anything
    nested deeper than L{_DEPTH_SAFE} (the standard library's limit is the
    interpreter's recursion limit less the stack in use, orjson's 1,024).
    See L{_may_read_differently}.

    @raise MessageError: (-32700) for anything that is not a single valid
        JSON value in UTF-8: bad syntax, bad UTF-8, NaN/Infinity, numbers
        too large to convert, nesting too deep.
    """
    try:
        value = _orjson_loads(line)
    except _OrjsonDecodeError:
        pass
    else:
        if not _may_read_differently(line, value):
            return value
    # As _decode_exactly, in this frame: the recursion limit applies as before.
    try:
        return _decode(line.decode("utf-8"))
    except RecursionError:
        raise MessageError(PARSE_ERROR, "Parse error: JSON nested too deeply")
    except ValueError as e:
        reason = str(e).splitlines()[0][:200]
        raise MessageError(PARSE_ERROR, f"Parse error: {reason}")


def _decode_exactly(line: bytes) -> Any:
    """The standard library's reading of C{line} alone: what L{decode} gave before orjson (the tests compare the two)."""
    try:
        return _decode(line.decode("utf-8"))
    except RecursionError:
        raise MessageError(PARSE_ERROR, "Parse error: JSON nested too deeply")
    except ValueError as e:
        reason = str(e).splitlines()[0][:200]
        raise MessageError(PARSE_ERROR, f"Parse error: {reason}")


def _may_read_differently(line: bytes, value: Any) -> bool:
    """
    Whether orjson's reading C{value} of C{line} may differ from the
    standard library's: an integer beyond 64 bits (which orjson reads as a
    float) or nesting deeper than L{_DEPTH_SAFE}.  A short line is scanned:
    a run of 19 digits, or more openers than that depth.  A long one is
    looked into (a float at least 2**63 in size, a container that deep) up
    to L{_WALK_BUDGET} members; beyond that it is scanned.
    """
    if len(line) >= _WALK_FROM:
        known = _walked(value)
        if known is not None:
            return known
    # Each level of nesting takes two bytes: a line this short cannot nest that deep.
    if len(line) > 2 * _DEPTH_SAFE and line.count(b"[") + line.count(b"{") > _DEPTH_SAFE:
        return True
    return _LONG_DIGIT_RUN in line.translate(_DIGITS_AS_ZERO)


def _walked(value: Any) -> bool | None:
    """L{_may_read_differently} for a decoded value: None when it holds
    more than L{_WALK_BUDGET} members (then the line is scanned)."""
    t = type(value)
    if t is not dict and t is not list:
        return t is float and not -_INT64_FLOAT < value < _INT64_FLOAT
    stack = [(value, 1)]
    budget = _WALK_BUDGET
    while stack:
        container, depth = stack.pop()
        if depth > _DEPTH_SAFE:
            return True
        budget -= len(container)
        if budget < 0:
            return None
        for member in container.values() if type(container) is dict else container:
            t = type(member)
            if t is dict or t is list:
                stack.append((member, depth + 1))
            elif t is float and not -_INT64_FLOAT < member < _INT64_FLOAT:
                return True
    return False


def _parse_float(text: str) -> float:
    value = float(text)
    if value == _INF or value == -_INF:
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_INF = float("inf")
_decode = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float).decode
_orjson_loads = orjson.loads
_OrjsonDecodeError = orjson.JSONDecodeError
#: Every digit as C{0}: a run of 19 zeros in the translation is a number
#: (or part of a string) orjson might read as a float (beyond int64/uint64).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGIT_RUN = b"0" * 19
#: orjson reads an integer literal outside [-2**63, 2**64) as a float at
#: least this large.
_INT64_FLOAT = 9.2e18
#: Nesting up to this deep is read the same by both (the standard library
#: reads at least this deep wherever the gateway decodes).
_DEPTH_SAFE = 500
#: A line this long is looked into rather than scanned, up to this many members.
_WALK_FROM = 4096
_WALK_BUDGET = 4096

_orjson_dumps = orjson.dumps
#: Subclasses of the built-in types go to L{_spliced}: an L{EncodedList}
#: is written from its own bytes.
_NEWLINE = orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_SUBCLASS
_Fragment = orjson.Fragment
_UNENCODED = b""


class EncodedList(list[Any]):
    """
    A list that keeps its own JSON: L{encode} writes the bytes of its first
    encoding (a megabyte of tool definitions copied, not encoded again), and
    anything else sees an ordinary list.  Never change one after it is
    made: the bytes would no longer say what it holds.
    """

    __slots__ = ("_json",)

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self._json: bytes | None = _UNENCODED

    def json(self) -> bytes | None:
        """Its items as compact JSON (orjson's), encoded on the first call;
        None when orjson refuses them (then L{encode} uses the standard
        library, as for any other message)."""
        data = self._json
        if data is _UNENCODED:
            try:
                data = _orjson_dumps(list(self))
            except TypeError:
                data = None
            self._json = data
        return data


def _spliced(o: Any) -> Any:
    """orjson's C{default}: an L{EncodedList} as its bytes; any other
    subclass of a built-in type as that type (what orjson writes without
    C{OPT_PASSTHROUGH_SUBCLASS}); anything else is refused."""
    if type(o) is EncodedList:
        data = o.json()
        return list(o) if data is None else _Fragment(data)
    if isinstance(o, list):
        return list(o)
    if isinstance(o, dict):
        return dict(o)
    if isinstance(o, str):
        return str.__str__(o)
    if isinstance(o, int):
        return int.__int__(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")

_make_encoder: Any
try:
    from _json import make_encoder as _make_encoder
except ImportError:  # pragma: no cover - pure-Python json
    _make_encoder = None


def _no_default(o: Any) -> Any:
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


if _make_encoder is not None:
    # One C encoder, reused: json.dumps builds a new one per call.  No
    # circular-reference check: what we encode came from JSON.
    _c_encode = _make_encoder(
        None, _no_default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def _encode(message: Any, /) -> str:
        return "".join(_c_encode(message, 0))

else:  # pragma: no cover
    _encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode(message: Any) -> bytes:
    """
    Serialize one message as a line (compact JSON in UTF-8, and C{b"\\n"}).

    orjson writes it (a megabyte of text in tens of microseconds, where the
    standard library's escaping takes milliseconds).  What orjson refuses is
    written by the standard library, as ASCII-only JSON: lone surrogates
    (which a peer may legally send as escapes, and ASCII output keeps
    representable), integers beyond 64 bits, nesting deeper than orjson's
    limit.  Either way the result is the same JSON value.  An
    L{EncodedList} is written from the bytes it keeps (the standard library
    writes its items).  A non-finite
    float (which no peer can send: L{decode} refuses NaN and Infinity, so
    only the gateway's own code could make one) is written as C{null}.

    @raise ValueError: for what cannot be encoded at all (nesting too deep
        for the standard library too).
    """
    try:
        return _orjson_dumps(message, default=_spliced, option=_NEWLINE)
    except TypeError:
        pass
    try:
        return _encode(message).encode("ascii") + b"\n"
    except RecursionError:
        raise ValueError("the message is nested too deeply to encode")


def encode_or_explain(message: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """
    Encode one outgoing message; when it cannot be encoded (a peer's data
    nested too deeply, a non-finite number), a response becomes an internal
    error answering the same id, and anything else is dropped (None).  The
    second value says why, for the caller's log.
    """
    try:
        return encode(message), None
    except (ValueError, TypeError, RecursionError) as e:
        why = str(e)[:200]
        if "id" not in message or "method" in message:
            return None, why
        fallback = error_response(message["id"], INTERNAL_ERROR, f"the answer could not be encoded: {e}")
        return encode(fallback), why


def valid_id(value: Any) -> bool:
    """Whether C{value} is a usable request id: a string or a number, not a bool."""
    t = type(value)
    return t is int or t is str or t is float


def id_key(value: Any) -> tuple[type, Any]:
    """A dict key that tells C{1}, C{1.0} and C{"1"} apart."""
    return (type(value), value)


def error_response(id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": error}


class Answer(Protocol):
    """
    What a pending request's outcome goes to: a Deferred, or an object of
    the caller's with the same two methods (L{JsonRpcPeer.send_request}).
    C{errback} is given an exception.
    """

    def callback(self, result: Any) -> Any: ...

    def errback(self, reason: Any) -> Any: ...


class PeerGone(Exception):
    """The transport to the peer was lost while a request was pending."""


class JsonRpcPeer:
    """
    The requesting side of a JSON-RPC connection: mints its own integer ids,
    keeps C{id -> Deferred}, puts a timeout on every request, and fails every
    pending request at once when the connection is lost.

    Incoming messages are handed to L{messageReceived}; responses are
    matched here, requests and notifications go to the callables given.

    @ivar on_cancel: called with the id of a request that was cancelled or
        timed out, so that the protocol above can tell the peer.
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        clock: IReactorTime,
        on_request: Callable[[dict[str, Any]], None],
        on_notification: Callable[[dict[str, Any]], None],
        on_cancel: Callable[[int, str], None],
        label: str = "peer",
    ) -> None:
        self._send = send
        self._clock = clock
        self._on_request = on_request
        self._on_notification = on_notification
        self._on_cancel = on_cancel
        self._label = label
        self._next_id = 1
        self._pending: dict[int, tuple[Answer, float | None]] = {}
        self._sweeper: Any = None
        self._lost: BaseException | None = None

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def request(
        self,
        method: str,
        params: Any,
        timeout: float | None,
        minted: Callable[[int], None] | None = None,
    ) -> Deferred[Any]:
        """
        Send a request and return a Deferred for its C{result}.

        The Deferred fails with L{JsonRpcError} when the peer answers an
        error, L{PeerGone} when the connection is lost first, and
        L{twisted.internet.defer.TimeoutError} after C{timeout} seconds.
        Cancelling it forgets the request and calls C{on_cancel}.

        @param minted: called with the id before the message is sent.
        """
        if self._lost is not None:
            raise PeerGone(str(self._lost))
        rid = self._next_id

        def cancel(_: Deferred[Any]) -> None:
            self.cancel(rid)

        d: Deferred[Any] = Deferred(cancel)
        self._start(rid, method, params, timeout, d, minted)
        return d

    def send_request(self, method: str, params: Any, timeout: float | None, answer: Answer) -> int:
        """
        Send a request whose outcome goes to C{answer} itself, without a
        Deferred (the common call's way): its C{callback} gets the
        C{result}, its C{errback} what L{request}'s Deferred would fail
        with.  Either comes from a later message or timer, never from this
        call.  L{cancel} with the id returned forgets the request.
        """
        if self._lost is not None:
            raise PeerGone(str(self._lost))
        rid = self._next_id
        self._start(rid, method, params, timeout, answer, None)
        return rid

    def cancel(self, rid: int) -> bool:
        """
        Forget the pending request C{rid} and call C{on_cancel} (the peer is
        told); whether it was pending.  Its answer is not told: the
        canceller does that (a Deferred fails with CancelledError).
        """
        if self._pending.pop(rid, None) is None:
            return False
        self._idle_check()
        self._on_cancel(rid, "cancelled")
        return True

    def _start(
        self, rid: int, method: str, params: Any, timeout: float | None, answer: Answer, minted: Callable[[int], None] | None
    ) -> None:
        self._next_id = rid + 1
        pending = self._pending
        deadline = None if timeout is None else self._clock.seconds() + timeout
        pending[rid] = (answer, deadline)
        if minted is not None:
            minted(rid)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        try:
            self._send(message)
        except BaseException:
            pending.pop(rid, None)
            self._idle_check()
            raise
        # The timer after the send: the peer starts on the request meanwhile.
        # (Its deadline was read before: a clock that moves in between
        # changes nothing.)
        if deadline is not None and rid in self._pending:  # (not answered, nor the peer lost, meanwhile)
            sweeper = self._sweeper
            if sweeper is None:
                self._sweeper = self._clock.callLater(max(0.0, deadline - self._clock.seconds()), self._sweep)
            elif sweeper.getTime() > deadline:
                sweeper.reset(max(0.0, deadline - self._clock.seconds()))

    def _sweep(self) -> None:
        """Time out every request past its deadline (one timer per peer,
        not one per request)."""
        self._sweeper = None
        now = self._clock.seconds()
        pending = self._pending
        expired = [rid for rid, (_, dl) in pending.items() if dl is not None and dl <= now]
        for rid in expired:
            entry = pending.pop(rid, None)
            if entry is not None:
                self._on_cancel(rid, "timed out")
                entry[0].errback(RequestTimeout(rid))
        upcoming = [dl for _, dl in pending.values() if dl is not None]
        if not upcoming:
            return
        first = min(upcoming)
        sweeper = self._sweeper
        if sweeper is None:
            self._sweeper = self._clock.callLater(max(0.0, first - now), self._sweep)
        elif sweeper.getTime() > first:
            # A timed-out request's errback sent another (a slot freed):
            # its timer is for that request's deadline, not the earliest.
            sweeper.reset(max(0.0, first - self._clock.seconds()))

    def _idle_check(self) -> None:
        if not self._pending and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def respond(self, id: Any, result: Any) -> None:
        self._send({"jsonrpc": "2.0", "id": id, "result": result})

    def respond_error(self, id: Any, error: JsonRpcError) -> None:
        self._send({"jsonrpc": "2.0", "id": id, "error": error.to_dict()})

    def messageReceived(self, message: Any) -> None:
        """
        Handle one decoded message from the peer.

        @raise MessageError: for a message that is not JSON-RPC, so that the
            caller can log it.
        """
        if type(message) is not dict:
            raise MessageError(INVALID_REQUEST, "not a JSON-RPC object")
        if "method" in message:
            if type(message["method"]) is not str:
                raise MessageError(INVALID_REQUEST, "method is not a string")
            if "id" in message:
                self._on_request(message)
            else:
                self._on_notification(message)
            return
        rid = message.get("id")
        if type(rid) is not int:
            raise MessageError(INVALID_REQUEST, f"response with an id we never sent: {rid!r}")
        entry = self._pending.pop(rid, None)
        if entry is None:
            # Answer to a request that timed out or was cancelled: dropped.
            return
        d = entry[0]
        if not self._pending and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if "error" in message:
            error = message["error"]
            if type(error) is dict:
                code = error.get("code")
                d.errback(
                    JsonRpcError(
                        code if type(code) is int else INTERNAL_ERROR,
                        str(error.get("message", "")),
                        error.get("data"),
                    )
                )
            else:
                d.errback(JsonRpcError(INTERNAL_ERROR, f"malformed error: {error!r}"))
        elif "result" in message:
            d.callback(message["result"])
        else:
            d.errback(JsonRpcError(INTERNAL_ERROR, "response without result or error"))

    def is_pending(self, rid: Any) -> bool:
        return rid in self._pending

    def fail(self, rid: int, reason: BaseException) -> bool:
        """Fail one pending request (e.g. its answer was unreadable)."""
        entry = self._pending.pop(rid, None)
        if entry is None:
            return False
        self._idle_check()
        entry[0].errback(reason)
        return True

    def connectionLost(self, reason: BaseException) -> None:
        """Fail every pending request with L{PeerGone}; refuse new ones."""
        self._lost = reason
        pending, self._pending = self._pending, {}
        self._idle_check()
        for d, _ in pending.values():
            d.errback(PeerGone(str(reason)))


class RequestTimeout(Exception):
    """A request got no answer within its timeout."""


__all__ = [
    "CancelledError",
    "EncodedList",
    "Answer",
    "JsonRpcError",
    "JsonRpcPeer",
    "MessageError",
    "PeerGone",
    "RequestTimeout",
    "decode",
    "encode",
    "encode_or_explain",
]
