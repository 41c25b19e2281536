"""
The fast codec reads every message exactly as the standard library does.

L{twisted_mcp.wire.jsonrpc.decode} reads with orjson and falls back to the
standard library where orjson refuses or would read differently.  These
properties compare it with the standard library's reading alone
(L{jsonrpc._decode_exactly}, the decoder before orjson): the same value,
types told apart, key order kept, or the same parse error, word for word.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from twisted_mcp.wire import jsonrpc
from twisted_mcp.wire.jsonrpc import MessageError, decode

from .test_jsonrpc_properties import any_text, finite_floats, json_values


def same(a: object, b: object) -> bool:
    """Equal in JSON terms, types told apart (1, 1.0, True differ; -0.0 is not 0.0), key order
    kept; iterative, for values nested deeper than the recursion limit."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if type(x) is list:
            if len(x) != len(y):  # type: ignore[arg-type]
                return False
            pending.extend(zip(x, y, strict=True))  # type: ignore[call-overload]
        elif type(x) is dict:
            if list(x) != list(y):  # type: ignore[call-overload]
                return False
            pending.extend((x[k], y[k]) for k in x)  # type: ignore[index]
        elif type(x) is float:
            if x != y or math.copysign(1, x) != math.copysign(1, y):  # type: ignore[arg-type]
                return False
        elif x != y:
            return False
    return True


def reading(read: object, data: bytes) -> tuple[str, object]:
    try:
        return "value", read(data)  # type: ignore[operator]
    except MessageError as e:
        return "error", (e.code, e.message)


def same_reading(data: bytes) -> None:
    fast, exact = reading(decode, data), reading(jsonrpc._decode_exactly, data)
    assert fast[0] == exact[0], (data[:200], fast[0], exact[0])
    if fast[0] == "error":
        assert fast == exact
    else:
        assert same(fast[1], exact[1]), (data[:200], fast, exact)


#: Numbers at the edges of what a C library keeps exactly: 64-bit integers, doubles.
edge_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19, -(10**19), 0]),
    finite_floats,
)


@given(json_values)
def test_encodedValuesReadTheSame(value: object) -> None:
    # ASCII escapes (lone surrogates as \\udXXX) and raw UTF-8 both.
    same_reading(json.dumps(value).encode())
    try:
        raw = json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return  # a lone surrogate has no UTF-8 form
    same_reading(raw)


@given(edge_numbers, st.sampled_from(["%s", "[%s]", '{"id":%s,"x":1}', "-%s", "%s.0", "%se3", "%sE-400", "%se400"]))
def test_numbersReadTheSame(number: object, shape: str) -> None:
    same_reading((shape % json.dumps(number)).encode())


@given(st.binary(max_size=120))
@example(b'{"a":1,"b":2,"a":3}')
@example(b'"\\ude00\\ud83d"')
@example(b"[1e1000]")
@example(b"18446744073709551616")
@example(b"-9223372036854775809")
@example(b"[" * 1100 + b"]" * 1100)
@example(b"\xef\xbb\xbf{}")
@example(b'"\\u0000"')
@example(b"   ")
@example(b"-0")
def test_anyBytesReadTheSame(data: bytes) -> None:
    same_reading(data)


@given(st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b'"a"', b":", b",", b"1", b"-", b"e", b".", b"0", b" ", b"\\u", b"null", b'"\\ud800"', b"9" * 19]), max_size=30))
def test_jsonLikeBytesReadTheSame(parts: list[bytes]) -> None:
    same_reading(b"".join(parts))


@given(any_text)
def test_stringsReadTheSame(text: str) -> None:
    same_reading(json.dumps({"text": text}).encode())


@given(json_values, edge_numbers, st.integers(min_value=0, max_value=3))
def test_longMessagesReadTheSame(value: object, number: object, where: int) -> None:
    # Past the length where the decoded value is looked into, not the bytes scanned.
    padding = "p" * (jsonrpc._WALK_FROM + 10)
    shapes = [[padding, value, number], {"a": padding, "n": number}, [number, padding], {"deep": [[{"x": [number]}]], "p": padding}]
    same_reading(json.dumps(shapes[where]).encode())


@given(st.lists(edge_numbers, min_size=1, max_size=3))
def test_manyValuesBeyondTheWalkReadTheSame(numbers: list[object]) -> None:
    # More values than the walk looks at: the digit runs decide.
    same_reading(json.dumps(numbers + [0] * jsonrpc._WALK_BUDGET).encode())  # the walk takes the last first


def nested(depth: int, kind: str, padded: bool) -> bytes:
    opener = {"list": ["["], "object": ['{"a":'], "mixed": ["[", '{"a":']}[kind]
    head = "".join(opener[i % len(opener)] for i in range(depth))
    tail = "".join("]" if opener[i % len(opener)] == "[" else "}" for i in reversed(range(depth)))
    core = '"' + "p" * jsonrpc._WALK_FROM + '"' if padded else "1"
    return (head + core + tail).encode()


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kind", ["list", "object", "mixed"])
def test_deepNestingReadsTheSame(kind: str, padded: bool) -> None:
    # Around the standard library's limit (the recursion limit less the stack in use) and
    # orjson's (1,024), with the interpreter's own limit (Hypothesis raises it while it runs).
    assert sys.getrecursionlimit() == 1000
    for depth in [*range(jsonrpc._DEPTH_SAFE - 3, jsonrpc._DEPTH_SAFE + 4), *range(900, 1031, 3)]:
        same_reading(nested(depth, kind, padded))


@given(st.integers(min_value=1, max_value=3))
def test_manyShallowContainersAreStillReadByOrjson(width: int) -> None:
    # More openers than the safe depth, but shallow: a long line is looked into, not counted.
    line = json.dumps([[{"k": i}] * width for i in range(jsonrpc._DEPTH_SAFE)]).encode()
    assert len(line) >= jsonrpc._WALK_FROM
    assert not jsonrpc._may_read_differently(line, json.loads(line))
    same_reading(line)
