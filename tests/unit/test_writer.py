"""The write coalescing of wire/_writer.py: what a Writer says it holds."""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.wire._writer import Writer, batch


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
        runs after every write to a socket client); a flush empties it."""
        fd = _Pipe()
        writer = Writer(fd)
        seen: list[int] = []

        @batch
        def deliver() -> None:
            for size in (3, 5, 7):
                writer.write(b"x" * size)
                seen.append(writer.queued())

        deliver()
        self.assertEqual(seen, [3, 8, 15])
        self.assertEqual((writer.chunks, writer.held), ([], 0))
