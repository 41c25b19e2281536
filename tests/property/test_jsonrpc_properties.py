"""
Properties of the JSON-RPC layer (L{twisted_mcp.wire.jsonrpc}) and of the
client-facing session that applies it (L{twisted_mcp.dispatch.session.ClientSession}):
any byte string or JSON value gives a message or a defined JSON-RPC error,
never a crash; ids come back exactly as they were sent; bool ids are refused.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.wire import jsonrpc
from twisted_mcp.wire.jsonrpc import MessageError, decode, encode

from ..unit.fakes import FakeBackend

#: Every code the gateway may answer a client with.
DEFINED_CODES = {
    jsonrpc.PARSE_ERROR,
    jsonrpc.INVALID_REQUEST,
    jsonrpc.METHOD_NOT_FOUND,
    jsonrpc.INVALID_PARAMS,
    jsonrpc.INTERNAL_ERROR,
    *errors.GATEWAY_CODES,
}

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Text including lone surrogates, which JSON escapes can carry.
any_text = st.text(st.characters(codec=None, exclude_categories=()))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), finite_floats, any_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(any_text, inner, max_size=5)),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal in JSON terms, with types told apart (1, 1.0 and True differ)."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is float:
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def decode_or_parse_error(data: bytes) -> Any:
    try:
        return decode(data)
    except MessageError as e:
        assert e.code == jsonrpc.PARSE_ERROR
        assert e.message.startswith("Parse error")
        return e


@given(st.binary(max_size=200))
@example(b"NaN")
@example(b"[-Infinity]")
@example(b"1e400")
@example(b"9" * 5000)
@example(b"[" * 100_000)
@example(b'{"a": 1' + b"}" * 3)
@example(b'"\\ud800"')
@example(b"\xff\xfe")
def test_decodeGivesAValueOrAParseError(data: bytes) -> None:
    """
    Any byte string decodes to a value or raises a -32700 MessageError:
    never ValueError, RecursionError or UnicodeDecodeError.
    """
    decode_or_parse_error(data)


@given(json_values)
def test_encodeDecodeRoundTrip(value: Any) -> None:
    """
    What decode gives, encode writes back as one line of UTF-8 that decodes
    to the same value (lone surrogates included, written as ASCII escapes),
    unless it is too big to write, which encode reports as ValueError.
    """
    try:
        line = encode(value)
    except ValueError:
        return  # e.g. an integer of more than 4300 digits
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    line.decode("utf-8")
    assert same(decode(line[:-1]), value)


@given(st.one_of(st.integers(-(2**70), 2**70), finite_floats, any_text))
def test_validIdsAreNumbersAndStrings(rid: Any) -> None:
    assert jsonrpc.valid_id(rid)


@given(st.one_of(st.booleans(), st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(), st.integers(), max_size=2)))
def test_otherIdsAreNotValid(rid: Any) -> None:
    assert not jsonrpc.valid_id(rid)


# -- the client session --------------------------------------------------------

ids = st.one_of(st.integers(-(2**70), 2**70), finite_floats, any_text, st.booleans(), st.none(), st.lists(st.integers(), max_size=2))
methods = st.one_of(st.sampled_from(["ping", "tools/list", "tools/call", "initialize", "resources/list"]), any_text, st.integers())
requests = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.one_of(st.just("2.0"), scalars),
        "id": ids,
        "method": methods,
        "params": st.one_of(st.just({"name": "alpha__echo", "arguments": {}}), json_values),
    },
)


class Session:
    """A client session over one fake backend whose calls all succeed."""

    def __init__(self, initialized: bool) -> None:
        self.clock = Clock()
        self.backend = FakeBackend("alpha", ["echo"])
        self.backend._first_discovery_done()
        self.gateway = Gateway([self.backend], "__", self.clock, 5.0)
        self.gateway.start()
        self.out: list[bytes] = []
        self.session = ClientSession(self.gateway, line_caller(self.out.append, "prop"))
        if initialized:
            self.line(encode({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}))
            self.line(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            del self.out[:]

    def line(self, data: bytes) -> list[dict[str, Any]]:
        deliver(self.session, data.rstrip(b"\n"))
        for call in self.backend.calls:
            if not call.deferred.called:
                call.deferred.callback({"content": [{"type": "text", "text": "ok"}]})
        answers = [json.loads(line) for line in self.out]
        assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in self.out)
        del self.out[:]
        return answers


def assert_well_formed(answer: dict[str, Any]) -> None:
    assert answer["jsonrpc"] == "2.0"
    assert ("result" in answer) != ("error" in answer)
    if "error" in answer:
        assert answer["error"]["code"] in DEFINED_CODES, answer
        assert type(answer["error"]["message"]) is str


class DeferredUsingProperties(SynchronousTestCase):
    """
    The properties that fire Deferreds run as trial test cases, which fail
    on an unhandled error in a Deferred.
    """

    @given(json_values)
    def test_peerHandlesAnyValue(self, value: Any) -> None:
        """
        The backend-facing peer takes any decoded value: it handles it or
        raises MessageError (which its caller logs), nothing else.
        """
        clock = Clock()
        peer = jsonrpc.JsonRpcPeer(lambda m: None, clock, lambda m: None, lambda m: None, lambda rid, why: None)
        pending = peer.request("tools/call", {}, timeout=5)
        pending.addErrback(lambda f: None)
        try:
            peer.messageReceived(value)
        except MessageError as e:
            assert e.code == jsonrpc.INVALID_REQUEST
        peer.connectionLost(Exception("done"))
        assert clock.getDelayedCalls() == []


    @given(st.booleans(), st.one_of(requests, json_values))
    @example(True, {"jsonrpc": "2.0", "id": True, "method": "ping"})
    @example(True, {"jsonrpc": "2.0", "id": 1.0, "method": "ping"})
    @example(True, {"jsonrpc": "2.0", "id": "\ud800", "method": "ping"})
    @example(True, {"jsonrpc": "2.0", "id": 2**80, "method": "ping"})
    @example(True, [{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
    def test_sessionAnswersAtMostOnceWithTheSameId(self, initialized: bool, message: Any) -> None:
        """
        Any JSON value sent by a client gets at most one answer, which is a
        result or an error with a defined code.  A request with a string or
        number id is answered with exactly that id (type and value); a bool
        or other id is refused with -32600 and a null id.
        """
        try:
            line = encode(message)
        except ValueError:
            return
        session = Session(initialized)
        answers = session.line(line)
        assert len(answers) <= 1
        for answer in answers:
            assert_well_formed(answer)
        if type(message) is not dict or "id" not in message:
            return
        rid = message["id"]
        if not jsonrpc.valid_id(rid):
            (answer,) = answers
            assert answer["id"] is None
            assert answer["error"]["code"] == jsonrpc.INVALID_REQUEST
        elif message.get("method") is not None or not ("result" in message or "error" in message):
            (answer,) = answers
            assert same(answer["id"], rid)
        assert session.clock.getDelayedCalls() == []


    @given(st.binary(max_size=200))
    @example(b"[" * 100_000)
    @example(b"1" * 5000)
    @example(b"NaN")
    def test_sessionAnswersBadBytesWithAParseError(self, data: bytes) -> None:
        """
        Bytes that are not one JSON value get one -32700 answer with a null id;
        the session keeps serving (a ping afterwards is answered).
        """
        session = Session(True)
        data = data.replace(b"\n", b" ")
        value = decode_or_parse_error(data)
        answers = session.line(data)
        if isinstance(value, MessageError):
            (answer,) = answers
            assert answer["id"] is None and answer["error"]["code"] == jsonrpc.PARSE_ERROR
        (pong,) = session.line(b'{"jsonrpc":"2.0","id":"after","method":"ping"}')
        assert pong == {"jsonrpc": "2.0", "id": "after", "result": {}}
