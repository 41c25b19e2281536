"""
Newline-delimited framing that stays linear-time for large messages.

Twisted's stock L{LineReceiver.dataReceived} re-scans and re-copies its whole
buffer on every chunk, so a 32 MiB line arriving in 64 KiB reads costs
seconds of reactor time.  L{LineFramer} keeps the chunks of an unfinished
line in a list, searches only the newly arrived bytes for the delimiter, and
joins once per line.

An overlong line is reported once through L{LineFramer.lineLengthExceeded}
and the rest of it, up to the next newline, is discarded: its tail is never
delivered as a message of its own.  Its last bytes are handed to
L{LineFramer.overlongLineEnded} when it ends (some peers write a response's
C{id} after its C{result}).
"""

from __future__ import annotations

from typing import Any

from twisted.protocols.basic import LineReceiver

DEFAULT_MAX_LENGTH = 16 * 1024 * 1024
#: How many of the first bytes of an overlong line L{LineFramer.lineLengthExceeded} gets.
HEAD_LENGTH = 4096
#: How many of the last bytes of an overlong line L{LineFramer.overlongLineEnded} gets.
TAIL_LENGTH = 256
#: What C{bytes.strip} removes.
_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")


def first_bytes(chunks: list[bytes], n: int) -> bytes:
    """The first C{n} bytes of C{chunks}, joining only as many as needed."""
    needed, end = 0, 0
    while end < len(chunks) and needed < n:
        needed += len(chunks[end])
        end += 1
    return b"".join(chunks[:end])[:n]


def _last_bytes(chunks: list[bytes]) -> bytes:
    """The last C{TAIL_LENGTH} bytes of C{chunks}, joining only as many as needed."""
    needed, start = 0, len(chunks)
    while start and needed < TAIL_LENGTH:
        start -= 1
        needed += len(chunks[start])
    return b"".join(chunks[start:])[-TAIL_LENGTH:]


class LineFramer(LineReceiver):
    """
    A L{LineReceiver} for newline-delimited JSON: linear-time framing, a
    configurable maximum line length, and clean recovery from overlong lines.

    Subclasses implement L{lineReceived} and may override
    L{lineLengthExceeded}, which receives the first bytes of the overlong
    line (at most C{HEAD_LENGTH}, enough to find an id; whatever the reads,
    all of it that had arrived when it went past C{MAX_LENGTH}) and its
    length so far.
    A trailing C{\\r} is stripped; blank lines are ignored.
    """

    #: A connected transport (process pipes, sockets, StringTransport): all
    #: of them have C{disconnecting}, which L{ITransport} does not declare.
    transport: Any

    delimiter = b"\n"
    MAX_LENGTH = DEFAULT_MAX_LENGTH

    _chunks: list[bytes]
    _buffered = 0
    _discarding = False
    #: The last bytes of the overlong line being discarded.
    _tail = b""

    def __init__(self) -> None:
        self._chunks = []

    def dataReceived(self, data: bytes) -> None:
        if self._discarding:
            end = data.find(b"\n")
            if end < 0:
                self._tail = (self._tail + data[-TAIL_LENGTH:])[-TAIL_LENGTH:]
                return
            self._discarding = False
            self.overlongLineEnded((self._tail + data[max(0, end - TAIL_LENGTH) : end])[-TAIL_LENGTH:])
            self._tail = b""
            data = data[end + 1 :]
        if self._chunks:
            end = data.find(b"\n")
            if end < 0:
                self._chunks.append(data)
                self._buffered += len(data)
                if self._buffered > self.MAX_LENGTH:
                    self._overflow()
                return
            self._chunks.append(data[:end])
            line = b"".join(self._chunks)
            self._chunks = []
            self._buffered = 0
            data = data[end + 1 :]
            if len(line) > self.MAX_LENGTH:
                self._report_overlong(line[:HEAD_LENGTH], len(line))
                self.overlongLineEnded(line[-TAIL_LENGTH:])
            else:
                self._deliver(line)
        start = 0
        find = data.find
        while True:
            if self.transport is not None and self.transport.disconnecting:
                return
            end = find(b"\n", start)
            if end < 0:
                break
            # Read for every line: a message may change it (a session's
            # limit grows once its initialize is answered).
            limit = self.MAX_LENGTH
            if end - start > limit:
                # The head stops at its own newline, never in the next message.
                self._report_overlong(data[start : min(end, start + HEAD_LENGTH)], end - start)
                self.overlongLineEnded(data[max(start, end - TAIL_LENGTH) : end])
            else:
                self._deliver(data[start:end])
            start = end + 1
        if start < len(data):
            rest = data[start:] if start else data
            self._chunks = [rest]
            self._buffered = len(rest)
            if self._buffered > self.MAX_LENGTH:
                self._overflow()

    def _deliver(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        # A message begins with its first byte: only a line that begins with
        # whitespace is copied to tell whether it is blank.
        if not line or (line[0] in _WHITESPACE and not line.strip()):
            return
        self.lineReceived(line)

    def _overflow(self) -> None:
        # Every read so far, not just the first: a short first read would
        # hide the id the stdio backend looks for.
        head = first_bytes(self._chunks, HEAD_LENGTH)
        size = self._buffered
        self._tail = _last_bytes(self._chunks)
        self._chunks = []
        self._buffered = 0
        self._discarding = True
        self._report_overlong(head, size)

    def _report_overlong(self, head: bytes, size: int) -> None:
        self.lineLengthExceeded(head, size)

    def lineLengthExceeded(self, head: bytes, size: int) -> None:  # type: ignore[override]
        """
        A message longer than C{MAX_LENGTH} arrived; it has been discarded.

        @param head: its first bytes (at most C{HEAD_LENGTH}), never past its newline.
        @param size: how many bytes of it had arrived (at least C{MAX_LENGTH} + 1).
        """

    def overlongLineEnded(self, tail: bytes) -> None:
        """
        The overlong line reported by L{lineLengthExceeded} ended here.

        @param tail: its last bytes (at most C{TAIL_LENGTH}, without the newline).
        """

    def lineReceived(self, line: bytes) -> None:
        raise NotImplementedError()

    def pending_bytes(self) -> int:
        """How many bytes of an unfinished message are buffered."""
        return self._buffered

    def unfinished(self) -> bool:
        """Whether a message has begun and not ended (kept, or being discarded)."""
        return bool(self._buffered) or self._discarding
