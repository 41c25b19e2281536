"""The connect subcommand: stdin/stdout bridged to a running gateway's socket listener."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted_mcp.cli._common import (
    EX_OK,
    EX_UNAVAILABLE,
)


def connect(args: argparse.Namespace) -> int:
    """Bridge stdin/stdout to a running gateway's socket."""
    from twisted.internet import stdio, task
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import clientFromString
    from twisted.internet.interfaces import IHalfCloseableProtocol
    from twisted.internet.protocol import Protocol
    from zope.interface import implementer

    outcome: dict[str, Any] = {"code": EX_OK}

    class Remote(Protocol):
        def __init__(self, done: Deferred[None]) -> None:
            self.done = done

        def dataReceived(self, data: bytes) -> None:
            local.transport.write(data)

        def connectionLost(self, reason: Any = None) -> None:
            local.transport.loseConnection()
            if not self.done.called:
                self.done.callback(None)

    @implementer(IHalfCloseableProtocol)
    class Local(Protocol):
        remote: Any = None

        def dataReceived(self, data: bytes) -> None:
            self.remote.transport.write(data)

        def readConnectionLost(self) -> None:
            # The client is done sending: tell the gateway, which answers
            # what is in flight, then closes.
            try:
                self.remote.transport.loseWriteConnection()
            except AttributeError:
                self.remote.transport.loseConnection()

        def writeConnectionLost(self) -> None:
            self.remote.transport.loseConnection()

        def connectionLost(self, reason: Any = None) -> None:
            pass

    local = Local()

    async def run(reactor: Any) -> None:
        done: Deferred[None] = Deferred()
        factory = __import__("twisted.internet.protocol", fromlist=["Factory"]).Factory.forProtocol(lambda: Remote(done))
        try:
            remote = await clientFromString(reactor, args.endpoint).connect(factory)
        except Exception as e:
            sys.stderr.write(f"twisted-mcp connect: cannot connect to {args.endpoint}: {e}\n")
            outcome["code"] = EX_UNAVAILABLE
            return
        local.remote = remote
        stdio.StandardIO(local, reactor=reactor)
        await done

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit:
        pass
    return int(outcome["code"])
