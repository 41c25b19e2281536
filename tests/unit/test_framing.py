"""
Tests for L{twisted_mcp.wire.framing.LineFramer}.
"""

from __future__ import annotations

import time

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.wire.framing import DEFAULT_MAX_LENGTH, TAIL_LENGTH, LineFramer


class Recorder(LineFramer):
    """A framer that records what it delivers and what it rejects."""

    def __init__(self, max_length: int | None = None) -> None:
        super().__init__()
        if max_length is not None:
            self.MAX_LENGTH = max_length
        self.lines: list[bytes] = []
        self.overlong: list[tuple[bytes, int]] = []
        self.tails: list[bytes] = []

    def overlongLineEnded(self, tail: bytes) -> None:
        self.tails.append(tail)

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def lineLengthExceeded(self, head: bytes, size: int) -> None:  # type: ignore[override]
        self.overlong.append((head, size))


def connected(max_length: int | None = None) -> Recorder:
    framer = Recorder(max_length)
    framer.makeConnection(StringTransport())
    return framer


def feed(framer: LineFramer, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        framer.dataReceived(data[i : i + size])


class SplittingTests(SynchronousTestCase):
    def test_defaultMaxLengthIsMebibytes(self) -> None:
        """
        The default limit is in MiBs, not LineReceiver's 16 KiB.
        """
        self.assertEqual(Recorder().MAX_LENGTH, DEFAULT_MAX_LENGTH)
        self.assertGreaterEqual(DEFAULT_MAX_LENGTH, 1024 * 1024)

    def test_lineSplitAcrossChunks(self) -> None:
        framer = connected()
        framer.dataReceived(b'{"jsonrpc":')
        framer.dataReceived(b'"2.0",')
        self.assertEqual(framer.lines, [])
        self.assertEqual(framer.pending_bytes(), len(b'{"jsonrpc":"2.0",'))
        framer.dataReceived(b'"id":1}\n')
        self.assertEqual(framer.lines, [b'{"jsonrpc":"2.0","id":1}'])
        self.assertEqual(framer.pending_bytes(), 0)

    def test_severalLinesPerChunk(self) -> None:
        framer = connected()
        framer.dataReceived(b"one\ntwo\nthr")
        self.assertEqual(framer.lines, [b"one", b"two"])
        framer.dataReceived(b"ee\nfour\nfive\n")
        self.assertEqual(framer.lines, [b"one", b"two", b"three", b"four", b"five"])

    def test_byteAtATime(self) -> None:
        framer = connected()
        feed(framer, b"alpha\nbeta\r\ngamma\n", 1)
        self.assertEqual(framer.lines, [b"alpha", b"beta", b"gamma"])

    def test_crlf(self) -> None:
        """
        A trailing carriage return is stripped, also when the CR and the LF
        arrive in different chunks; a CR inside a line is kept.
        """
        framer = connected()
        framer.dataReceived(b"one\r\ntwo\r")
        framer.dataReceived(b"\nthree\rx\r\n")
        self.assertEqual(framer.lines, [b"one", b"two", b"three\rx"])

    def test_blankLinesIgnored(self) -> None:
        framer = connected()
        framer.dataReceived(b"\n\r\n   \n\t\r\none\n\n")
        framer.dataReceived(b"\n")
        framer.dataReceived(b"\r")
        framer.dataReceived(b"\ntwo\n")
        self.assertEqual(framer.lines, [b"one", b"two"])

    def test_noDelimiterNoDelivery(self) -> None:
        framer = connected()
        framer.dataReceived(b'{"id":1}')
        self.assertEqual(framer.lines, [])
        self.assertEqual(framer.pending_bytes(), 8)


class LengthLimitTests(SynchronousTestCase):
    LIMIT = 64

    def test_exactlyAtLimitDelivered(self) -> None:
        framer = connected(self.LIMIT)
        line = b"x" * self.LIMIT
        framer.dataReceived(line + b"\n")
        self.assertEqual(framer.lines, [line])
        self.assertEqual(framer.overlong, [])

    def test_exactlyAtLimitAcrossChunksDelivered(self) -> None:
        framer = connected(self.LIMIT)
        line = b"y" * self.LIMIT
        framer.dataReceived(line[:10])
        framer.dataReceived(line[10:])
        framer.dataReceived(b"\n")
        self.assertEqual(framer.lines, [line])
        self.assertEqual(framer.overlong, [])

    def test_oneByteOverRejected(self) -> None:
        """
        A complete line one byte over the limit is reported once and not
        delivered; the line after it is.
        """
        framer = connected(self.LIMIT)
        framer.dataReceived(b"z" * (self.LIMIT + 1) + b"\nnext\n")
        self.assertEqual(framer.lines, [b"next"])
        self.assertEqual(len(framer.overlong), 1)
        head, size = framer.overlong[0]
        self.assertEqual(size, self.LIMIT + 1)
        self.assertTrue(head.startswith(b"zzz"))

    def test_overlongTailNotDelivered(self) -> None:
        """
        Once an unfinished line passes the limit it is reported at once;
        the rest of it, arriving in later chunks, is discarded up to the
        newline and never delivered as a message of its own.
        """
        framer = connected(self.LIMIT)
        framer.dataReceived(b"a" * (self.LIMIT + 1))
        self.assertEqual(len(framer.overlong), 1)
        self.assertEqual(framer.overlong[0][1], self.LIMIT + 1)
        self.assertEqual(framer.pending_bytes(), 0)
        framer.dataReceived(b'{"jsonrpc":"2.0","id":9,"method":"tail"}')
        framer.dataReceived(b"more tail")
        framer.dataReceived(b'still tail\n{"next":true}\n')
        self.assertEqual(framer.lines, [b'{"next":true}'])
        self.assertEqual(len(framer.overlong), 1)

    def test_overLimitReachedByLaterChunk(self) -> None:
        """
        A line at exactly the limit, then one more byte without a newline,
        is overlong.
        """
        framer = connected(self.LIMIT)
        framer.dataReceived(b"b" * self.LIMIT)
        self.assertEqual(framer.overlong, [])
        framer.dataReceived(b"b")
        self.assertEqual(len(framer.overlong), 1)
        framer.dataReceived(b"bbb\nok\n")
        self.assertEqual(framer.lines, [b"ok"])

    def test_overLimitFinishedByChunkWithNewline(self) -> None:
        """
        A buffered line under the limit finished by a chunk that takes it
        over the limit is rejected, and the lines after it in that chunk
        are delivered.
        """
        framer = connected(self.LIMIT)
        framer.dataReceived(b"c" * (self.LIMIT - 2))
        framer.dataReceived(b"cccc\nafter\n")
        self.assertEqual(len(framer.overlong), 1)
        self.assertEqual(framer.overlong[0][1], self.LIMIT + 2)
        self.assertEqual(framer.lines, [b"after"])

    def test_overlongInManySmallChunks(self) -> None:
        framer = connected(self.LIMIT)
        feed(framer, b"before\n" + b"q" * (self.LIMIT * 20), 7)
        feed(framer, b"q" * 100 + b"\nafter\n", 3)
        self.assertEqual(framer.lines, [b"before", b"after"])
        self.assertEqual(len(framer.overlong), 1)
        head, size = framer.overlong[0]
        self.assertGreater(size, self.LIMIT)
        self.assertEqual(set(head), {ord("q")})

    def test_headIsBounded(self) -> None:
        """
        The head handed to lineLengthExceeded is at most 4 KiB, and it is
        the start of the line (so an id can be found in it).
        """
        framer = connected(8192)
        line = b'{"id":7,' + b"x" * 20000
        framer.dataReceived(line + b"\n")
        self.assertEqual(len(framer.overlong), 1)
        head, size = framer.overlong[0]
        self.assertEqual(head, line[:4096])
        self.assertEqual(size, len(line))

    def test_headStopsAtItsNewline(self) -> None:
        """
        An overlong line shorter than 4 KiB that arrives whole, with the next
        messages in the same read, is reported with a head that ends at its
        own newline: nothing of the next messages.
        """
        framer = connected(self.LIMIT)
        line = b"h" * (self.LIMIT + 1)
        framer.dataReceived(line + b'\n{"id":1}\n')
        self.assertEqual(framer.overlong, [(line, len(line))])
        self.assertEqual(framer.lines, [b'{"id":1}'])

    def test_headSpansEveryRead(self) -> None:
        """
        When an overlong line's first read is short, its head is still all of
        the line that had arrived (up to 4 KiB), not only the first read, so
        the stdio backend finds the response's id in it.
        """
        line = b'{"jsonrpc":"2.0","id":12345,"result":"' + b"x" * 5000 + b'"}'
        for first in (1, 10, self.LIMIT - 1):
            framer = connected(self.LIMIT)
            framer.dataReceived(line[:first])
            framer.dataReceived(line[first:])
            self.assertEqual(framer.overlong[0][0], line[:4096], first)

    def test_headOfLineOverflowingInSmallReads(self) -> None:
        """With small reads, the head is every byte up to the overflow (a prefix of the line)."""
        framer = connected(self.LIMIT)
        line = b'{"id":3,' + b"s" * 200
        feed(framer, line + b"\n", 5)
        head, _ = framer.overlong[0]
        self.assertEqual(head, line[: len(head)])
        self.assertGreater(len(head), self.LIMIT)

    def test_tailOfOverlongLine(self) -> None:
        """
        When an overlong line ends, its last bytes (at most TAIL_LENGTH, without
        the newline) are handed over, however the line arrived: whole in one
        chunk, completed in the chunk that overflows, or discarded over many.
        """
        for line in (b"{" + b"r" * (self.LIMIT * 3) + b'"id":42}', b"{" + b"r" * 5000 + b'"id":42}'):
            self.check_tail(line)

    def check_tail(self, line: bytes) -> None:
        for size in (len(line) + 1, self.LIMIT - 1, 7, 1):
            framer = connected(self.LIMIT)
            feed(framer, line + b"\nafter\n", size)
            self.assertEqual(framer.tails, [line[-TAIL_LENGTH:]], size)
            self.assertEqual(framer.lines, [b"after"])

    def test_tailWhenTheLineEndsWhereItOverflows(self) -> None:
        framer = connected(1024)
        framer.dataReceived(b"x" * 1000)
        framer.dataReceived(b"y" * 1000 + b"\n")
        self.assertEqual(framer.tails, [b"y" * TAIL_LENGTH])

    def test_severalOverlongLines(self) -> None:
        framer = connected(self.LIMIT)
        big = b"w" * (self.LIMIT * 2)
        framer.dataReceived(big + b"\n" + b"ok1\n" + big)
        framer.dataReceived(b"\nok2\n")
        self.assertEqual(framer.lines, [b"ok1", b"ok2"])
        self.assertEqual(len(framer.overlong), 2)


class LinearTimeTests(SynchronousTestCase):
    def test_bigLineIsLinear(self) -> None:
        """
        A 32 MiB line in 64 KiB chunks is framed in well under a second
        (stock LineReceiver re-scans its buffer on every chunk: ~11 s).
        """
        framer = connected(64 * 1024 * 1024)
        chunk = b"x" * (64 * 1024)
        count = (32 * 1024 * 1024) // len(chunk)
        start = time.perf_counter()
        for _ in range(count):
            framer.dataReceived(chunk)
        framer.dataReceived(b"\n")
        elapsed = time.perf_counter() - start
        self.assertEqual(len(framer.lines), 1)
        self.assertEqual(len(framer.lines[0]), 32 * 1024 * 1024)
        self.assertLess(elapsed, 2.0)

    def test_bigOverlongLineIsLinear(self) -> None:
        """
        Discarding a 32 MiB overlong line is linear too.
        """
        framer = connected(1024 * 1024)
        chunk = b"x" * (64 * 1024)
        start = time.perf_counter()
        for _ in range(512):
            framer.dataReceived(chunk)
        framer.dataReceived(b"\nnext\n")
        elapsed = time.perf_counter() - start
        self.assertEqual(framer.lines, [b"next"])
        self.assertEqual(len(framer.overlong), 1)
        self.assertLess(elapsed, 2.0)
