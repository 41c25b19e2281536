"""The write coalescing of wire/_writer.py: what a Writer says it holds, and a reactor turn as one batch."""

from __future__ import annotations

import os
from typing import Callable

from twisted.internet.abstract import FileDescriptor
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.wire import _writer as _writer_module
from twisted_mcp.wire._writer import EARLY_FLUSH_BYTES, Writer, batch, coalesce_per_turn


class _Pipe(FileDescriptor):
    """A descriptor that is not connected: every write goes to Twisted's buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.connected = 0

    def startWriting(self) -> None:
        pass


class WriterTests(SynchronousTestCase):
    def test_queuedCountsWhatABatchHolds(self) -> None:
        """queued() counts the bytes held in a batch (kept as they come: it
        runs after every write to a socket client); a flush empties it.  (The
        batch's first write goes out at once: to this pipe, which is not
        connected, it is dropped.)"""
        fd = _Pipe()
        writer = Writer(fd)
        seen: list[int] = []

        @batch
        def deliver() -> None:
            for size in (2, 3, 5, 7):
                writer.write(b"x" * size)
                seen.append(writer.queued())

        deliver()
        self.assertEqual(seen, [0, 3, 8, 15])
        self.assertEqual((writer.chunks, writer.held), ([], 0))


class _RealPipe(FileDescriptor):
    """The write end of an OS pipe, connected: a Writer writes to it directly."""

    def __init__(self) -> None:
        super().__init__()
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)
        self.connected = 1

    def fileno(self) -> int:
        return self.write_end

    def startWriting(self) -> None:
        pass

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


class _Reactor:
    """What coalesce_per_turn needs of a reactor: a turn runs the handlers the poll found ready."""

    def __init__(self) -> None:
        self.ready: list[Callable[[], None]] = []

    def doIteration(self, delay: float | None) -> None:
        for handler in self.ready:
            handler()


class TurnTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pipe = _RealPipe()
        self.addCleanup(self.pipe.close)
        self.writer = Writer(self.pipe)
        self.writes: list[int] = []
        real_write = os.write

        def counting_write(fd: int, data: bytes) -> int:
            if fd == self.pipe.write_end:
                self.writes.append(len(data))
            return real_write(fd, data)

        self.patch(_writer_module.os, "write", counting_write)

    def handler(self, data: bytes) -> Callable[[], None]:
        return batch(lambda: self.writer.write(data))

    def test_aTurnIsOneWritePerPeerAfterABusyTurn(self) -> None:
        """
        Once a turn gave a peer several messages, the next turn's messages
        toward it leave in one write(2) at the turn's end, in order.
        """
        reactor = _Reactor()
        reactor.ready = [self.handler(b"a\n"), self.handler(b"b\n")]
        coalesce_per_turn(reactor)
        reactor.doIteration(0)  # a busy turn
        del self.writes[:]
        reactor.ready = [self.handler(b"c\n"), self.handler(b"d\n"), self.handler(b"e\n")]
        reactor.doIteration(0)
        self.assertEqual(self.writes, [6])
        self.assertEqual(os.read(self.pipe.read_end, 100), b"a\nb\nc\nd\ne\n")

    def test_afterAQuietTurnTheFirstMessageLeavesAtOnce(self) -> None:
        """
        After a turn that gave a peer one message (or none yet), the next
        message toward it is likely alone as well: it leaves at once, before
        the turn's other work; others of the same turn wait for its end.
        """
        reactor = _Reactor()
        coalesce_per_turn(reactor)
        sent: list[list[int]] = []
        reactor.ready = [self.handler(b"a\n"), lambda: sent.append(list(self.writes))]
        reactor.doIteration(0)  # the first message ever: at once
        reactor.ready = [self.handler(b"b\n"), lambda: sent.append(list(self.writes)), self.handler(b"c\n"), self.handler(b"d\n")]
        reactor.doIteration(0)  # after a quiet turn: b at once, c and d at the end
        self.assertEqual(sent, [[2], [2, 2]])
        self.assertEqual(self.writes, [2, 2, 4])
        self.assertEqual(os.read(self.pipe.read_end, 100), b"a\nb\nc\nd\n")

    def test_withoutItEachHandlerWrites(self) -> None:
        """The same turn on a reactor left alone: a write per handler (each batch's own)."""
        reactor = _Reactor()
        reactor.ready = [self.handler(b"a\n"), self.handler(b"b\n"), self.handler(b"c\n")]
        reactor.doIteration(0)
        self.assertEqual(self.writes, [2, 2, 2])

    def test_aFailingHandlerStillFlushesTheTurn(self) -> None:
        reactor = _Reactor()

        def broken() -> None:
            raise ZeroDivisionError()

        reactor.ready = [self.handler(b"a\n"), broken]
        coalesce_per_turn(reactor)
        self.assertRaises(ZeroDivisionError, reactor.doIteration, 0)
        self.assertEqual(os.read(self.pipe.read_end, 100), b"a\n")
        self.assertEqual(self.writer.chunks, [])

    def test_aWriteBetweenTurnsGoesOutAtOnce(self) -> None:
        reactor = _Reactor()
        coalesce_per_turn(reactor)
        reactor.doIteration(0)
        self.writer.write(b"timer\n")
        self.assertEqual(self.writes, [6])

    def test_aWriterHoldingEnoughSendsItBeforeTheTurnEnds(self) -> None:
        """
        Once a writer holds EARLY_FLUSH_BYTES it sends them while the turn
        goes on (the peer starts on them); what is written after waits for
        the turn's end.  The bytes arrive in order.
        """
        reactor = _Reactor()
        sent_before_the_end: list[list[int]] = []
        piece = b"x" * (EARLY_FLUSH_BYTES // 4 - 1) + b"\n"

        @batch
        def pipelined() -> None:
            self.writer.write(b"first\n")  # leaves at once, as every turn's first message
            for _ in range(4):
                self.writer.write(piece)
                sent_before_the_end.append(list(self.writes))
            self.writer.write(b"last\n")

        reactor.ready = [pipelined]
        coalesce_per_turn(reactor)
        reactor.doIteration(0)
        self.assertEqual(sent_before_the_end, [[6], [6], [6], [6, 4 * len(piece)]])
        self.assertEqual(self.writes, [6, 4 * len(piece), 5])
        self.assertEqual(os.read(self.pipe.read_end, 2 * EARLY_FLUSH_BYTES), b"first\n" + 4 * piece + b"last\n")
        self.assertEqual((self.writer.chunks, self.writer.held), ([], 0))

    def test_aLargeMessageLeavesAtOnce(self) -> None:
        """A message of EARLY_FLUSH_BYTES or more is not held to the turn's end behind nothing."""
        reactor = _Reactor()
        big = b"y" * EARLY_FLUSH_BYTES + b"\n"
        seen: list[int] = []

        @batch
        def answer() -> None:
            self.writer.write(b"small\n")  # the turn's first: at once
            self.writer.write(big)
            seen.extend(self.writes)

        reactor.ready = [answer]
        coalesce_per_turn(reactor)
        reactor.doIteration(0)
        self.assertEqual(seen, [6, len(big)])
        self.assertEqual(self.writes, [6, len(big)])
