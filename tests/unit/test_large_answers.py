"""
Large answers keep their result's bytes: the gateway restores the client's
id around them instead of encoding the whole result again
(L{twisted_mcp.wire.jsonrpc._response_keeping_result}, L{encode}).
"""

from __future__ import annotations

import json

import orjson
import pytest

from twisted_mcp.wire import _writer, jsonrpc
from twisted_mcp.wire.jsonrpc import MessageError, decode, encode

TEXT = "x" * (jsonrpc.KEEP_RESULT_BYTES + 100)


@pytest.fixture(autouse=True)
def nothing_kept() -> None:
    jsonrpc.forget_kept_results()
    yield
    jsonrpc.forget_kept_results()


def answer(rid: int = 7, spaced: bool = True) -> bytes:
    """A large answer whose result has spacing orjson would never write (so its bytes can be told apart)."""
    result = b'{"content" : [{"type":"text","text":"%s"}], "isError": false}' % TEXT.encode()
    if not spaced:
        result = orjson.dumps(orjson.loads(result))
    return b'{"jsonrpc":"2.0","id":%d,"result":%s}' % (rid, result)


def test_theResultIsSentWithItsOwnBytesUnderTheClientsId() -> None:
    message = decode(answer())
    assert message == {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": TEXT}], "isError": False}}
    line = encode({"jsonrpc": "2.0", "id": "client-1", "result": message["result"]})
    assert line.startswith(b'{"jsonrpc":"2.0","id":"client-1","result":{"content" : [')
    assert line.endswith(b', "isError": false}}\n')
    assert json.loads(line) == {"jsonrpc": "2.0", "id": "client-1", "result": message["result"]}


@pytest.mark.parametrize("rid", [0, 2**70, 1.5, "ü\ud800"])
def test_anyClientIdIsWrittenAsEncodeWritesIt(rid: object) -> None:
    message = decode(answer())
    line = encode({"jsonrpc": "2.0", "id": rid, "result": message["result"]})
    assert json.loads(line)["id"] == rid


def test_eachKeptResultIsWrittenOnce() -> None:
    result = decode(answer())["result"]
    first = encode({"jsonrpc": "2.0", "id": 1, "result": result})
    second = encode({"jsonrpc": "2.0", "id": 1, "result": result})
    assert b'"content" :' in first
    assert b'"content" :' not in second  # encoded again, by orjson
    assert json.loads(first) == json.loads(second)


def test_aChangedMessageIsEncodedAsAnyOther() -> None:
    result = decode(answer())["result"]
    # A copy (as the stateless era's answer makes), or other members: the result's bytes are not used.
    for message in (
        {"jsonrpc": "2.0", "id": 1, "result": dict(result)},
        {"jsonrpc": "2.0", "id": 1, "result": result, "extra": 1},
        {"id": 1, "jsonrpc": "2.0", "result": result},
    ):
        line = encode(message)
        assert b'"content" :' not in line
        assert json.loads(line) == message


def test_smallAndOtherShapedAnswersKeepNothing() -> None:
    small = b'{"jsonrpc":"2.0","id":1,"result":{"content" : []}}'
    id_last = b'{"jsonrpc":"2.0","result":{"t":"%s"},"id":1}' % TEXT.encode()
    spaced_head = b'{"jsonrpc": "2.0", "id": 1, "result": {"t":"%s"}}' % TEXT.encode()
    request = b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"t":"%s"}}' % TEXT.encode()
    for line in (small, id_last, spaced_head, request):
        assert decode(line) == json.loads(line)
        assert not jsonrpc.kept_results


def test_aSecondIdAfterTheResultIsReadAsTheStandardLibraryReadsIt() -> None:
    # Duplicate members: the last wins, as before; the result's bytes are not kept.
    line = answer(rid=7, spaced=False)[:-1] + b',"id":8}'
    assert decode(line)["id"] == 8
    assert not jsonrpc.kept_results


def test_aMalformedLargeAnswerHasTheWholeLinesError() -> None:
    line = answer()[:-1] + b"]"
    with pytest.raises(MessageError) as caught:
        decode(line)
    with pytest.raises(MessageError) as exact:
        jsonrpc._decode_exactly(line)
    assert caught.value.message == exact.value.message


def test_keptResultsAreBounded() -> None:
    for rid in range(jsonrpc.KEPT_RESULTS * 3):
        decode(answer(rid))
    assert len(jsonrpc.kept_results) == jsonrpc.KEPT_RESULTS
    assert jsonrpc._kept_bytes == sum(len(raw) for _, raw in jsonrpc.kept_results.values())


def test_theEndOfABatchForgetsWhatWasNotSentOn() -> None:
    @_writer.batch
    def read() -> None:
        decode(answer())
        assert jsonrpc.kept_results

    read()
    assert not jsonrpc.kept_results
    assert jsonrpc._kept_bytes == 0
