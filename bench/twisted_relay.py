#!/usr/bin/env python3
"""
A Twisted relay between a stdio client and one stdio server (a reference
for bench_relay.py: what one Twisted process in between costs).

    python bench/twisted_relay.py --mode bytes|json -- COMMAND [ARG...]

It runs COMMAND as a child (reactor.spawnProcess) and serves its own stdin
and stdout (twisted.internet.stdio.StandardIO), on Twisted's default reactor.

  bytes  copies bytes both ways and understands nothing: the floor of any
         Twisted process in between;
  json   a naive message relay: newline framing (LineReceiver toward the
         client), the standard library's json.loads of every line each way,
         each request's id rewritten to an integer of its own and each
         answer's id restored to the client's, every message encoded again
         with json.dumps(separators=(",", ":")).  No Deferreds, no checks:
         what a gateway must do at least, written plainly.

It exits when the child does (the client closing stdin closes the child's),
once every answer is written out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

from twisted.internet import (
    interfaces,
    protocol,
    reactor,  # noqa: TID251 (a script of its own, not the package)
    stdio,
)
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

#: Lines up to 64 MiB (the 1 MiB answers of bench_relay.py, with room).
MAX_LINE = 1 << 26


class Child(protocol.ProcessProtocol):
    """The server: what it writes goes to the client (as is, or message by message)."""

    def __init__(self, up: protocol.Protocol, on_answer: Callable[[bytes], None] | None) -> None:
        self.up = up
        self.on_answer = on_answer
        self.pending: list[bytes] = []

    def outReceived(self, data: bytes) -> None:
        if self.on_answer is None:
            self.up.transport.write(data)
            return
        if b"\n" not in data:
            self.pending.append(data)
            return
        self.pending.append(data)
        lines = b"".join(self.pending).split(b"\n")
        self.pending = [lines.pop()]
        for line in lines:
            if line.strip():
                self.on_answer(line)

    def processEnded(self, reason: object) -> None:
        self.up.transport.loseConnection()  # once written out: connectionLost stops the reactor


@implementer(interfaces.IHalfCloseableProtocol)
class HalfClose:
    """The client closing its stdin closes the server's; answers still on their way are written."""

    child: Child

    def readConnectionLost(self) -> None:
        self.child.transport.closeStdin()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: object = None) -> None:
        self.child.transport.closeStdin()
        if reactor.running:
            reactor.stop()


class ByteUp(HalfClose, protocol.Protocol):
    """The client, in bytes mode: what it writes goes to the server as is."""

    child: Child

    def dataReceived(self, data: bytes) -> None:
        self.child.transport.write(data)


class JsonUp(HalfClose, LineReceiver):
    """The client, in json mode: each line decoded, its id rewritten, encoded again."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    child: Child

    def __init__(self) -> None:
        self.ids: dict[int, object] = {}
        self.next_id = 0

    def lineReceived(self, line: bytes) -> None:
        if not line.strip():
            return
        message = json.loads(line)
        if isinstance(message, dict) and "id" in message and "method" in message:
            self.next_id += 1
            self.ids[self.next_id] = message["id"]
            message["id"] = self.next_id
        self.child.transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def answer(self, line: bytes) -> None:
        message = json.loads(line)
        if isinstance(message, dict) and "id" in message and "method" not in message:
            message["id"] = self.ids.pop(message["id"], message["id"])
        self.transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("bytes", "json"), required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    up: ByteUp | JsonUp
    if args.mode == "bytes":
        up = ByteUp()
        child = Child(up, None)
    else:
        up = JsonUp()
        child = Child(up, up.answer)
    up.child = child
    stdio.StandardIO(up)
    reactor.spawnProcess(child, command[0], command, env=dict(os.environ), childFDs={0: "w", 1: "r", 2: 2})
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
