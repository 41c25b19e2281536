"""
Fuzz target: the JSON-RPC layer (L{twisted_mcp.wire.jsonrpc}) and the client
session that applies it (L{twisted_mcp.dispatch.session.ClientSession}).

Input: one message line.  Oracle: decode gives a value or a -32700
MessageError; a value encodes (or raises ValueError) to one ASCII line that
decodes to an equal value; the backend-facing peer takes the value or raises
MessageError; a client session answers the line at most once, with a
defined error code or a result, and with the request's own id.
"""

import json
import sys

import atheris

with atheris.instrument_imports(include=["twisted_mcp"]):
    from twisted.internet.task import Clock

    from twisted_mcp.dispatch.gateway import Gateway
    from twisted_mcp.dispatch.session import ClientSession
    from twisted_mcp.frontends.stream import deliver, line_caller
    from twisted_mcp.mcp import errors
    from twisted_mcp.wire import jsonrpc

DEFINED_CODES = {
    jsonrpc.PARSE_ERROR,
    jsonrpc.INVALID_REQUEST,
    jsonrpc.METHOD_NOT_FOUND,
    jsonrpc.INVALID_PARAMS,
    jsonrpc.INTERNAL_ERROR,
    *errors.GATEWAY_CODES,
}


def check_round_trip(value):
    try:
        line = jsonrpc.encode(value)
    except ValueError:
        return
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError(f"encode gave invalid UTF-8: {line[:200]!r}")
    if line.count(b"\n") != 1 or not line.endswith(b"\n"):
        raise AssertionError(f"encode gave {line[:200]!r}")
    if repr(jsonrpc.decode(line[:-1])) != repr(value):
        raise AssertionError("decode(encode(value)) differs from value")


def check_peer(value):
    clock = Clock()
    peer = jsonrpc.JsonRpcPeer(lambda m: None, clock, lambda m: None, lambda m: None, lambda rid, why: None)
    peer.request("tools/call", {}, timeout=5).addErrback(lambda f: None)
    try:
        peer.messageReceived(value)
    except jsonrpc.MessageError:
        pass
    peer.connectionLost(Exception("done"))


def check_session(line, value):
    out = []
    gateway = Gateway([], "__", Clock(), 5.0)
    gateway.start()
    session = ClientSession(gateway, line_caller(out.append, "fuzz"))
    deliver(session, b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}')
    del out[:]
    deliver(session, line)
    if len(out) > 1:
        raise AssertionError(f"{len(out)} answers to one line")
    for raw in out:
        answer = json.loads(raw)
        if "error" in answer and answer["error"]["code"] not in DEFINED_CODES:
            raise AssertionError(f"undefined error code in {answer}")
        if type(value) is dict and jsonrpc.valid_id(value.get("id")) and type(value.get("method")) is str:
            if repr(answer["id"]) != repr(value["id"]):
                raise AssertionError(f"id {value['id']!r} answered as {answer['id']!r}")


def TestOneInput(data):
    line = data.replace(b"\n", b" ")
    try:
        value = jsonrpc.decode(line)
    except jsonrpc.MessageError as e:
        if e.code != jsonrpc.PARSE_ERROR:
            raise AssertionError(f"decode raised code {e.code}")
        value = None
    else:
        check_round_trip(value)
        check_peer(value)
    check_session(line, value)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
