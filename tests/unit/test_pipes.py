"""
Tests for L{twisted_mcp.wire._pipes}: a child's stdout read in large
chunks, on a real pipe.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.main import CONNECTION_DONE
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.wire._pipes import read_in_large_chunks, widen


class Reader:
    """What read_in_large_chunks needs of Twisted's ProcessReader."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def doRead(self) -> Any:
        raise AssertionError("replaced")


class LargeChunkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        self.addCleanup(os.close, self.r)
        self.addCleanup(lambda: os.close(self.w) if self.w >= 0 else None)

    def test_a_large_answer_in_one_wake_up(self) -> None:
        """Twisted's reader takes 8 KiB per wake-up; this one takes all
        that is waiting (the pipe widened to hold it), in order."""
        reader = Reader(self.r)
        read_in_large_chunks(reader)
        data = bytes(range(256)) * 1024  # 256 KiB, more than a default pipe holds
        os.write(self.w, data)
        self.assertIsNone(reader.doRead())
        self.assertEqual(reader.received, [data])

    def test_nothing_waiting_and_the_end(self) -> None:
        reader = Reader(self.r)
        read_in_large_chunks(reader)
        self.assertIsNone(reader.doRead())
        self.assertEqual(reader.received, [])
        os.close(self.w)
        self.w = -1
        self.assertIs(reader.doRead(), CONNECTION_DONE)

    def test_not_a_pipe(self) -> None:
        """Widening what is not a pipe does nothing, and raises nothing."""
        with open(os.devnull, "rb") as f:
            widen(f.fileno())
        reader = Reader(self.r)
        reader.fd = None  # type: ignore[assignment]
        read_in_large_chunks(reader)
        self.assertRaises(AssertionError, reader.doRead)
