"""
An incremental parser for Server-Sent Events (the HTML living standard's
C{text/event-stream}), linear in the bytes fed and bounded in event size.
"""

from __future__ import annotations

from typing import NamedTuple

from twisted_mcp.wire.framing import first_bytes

#: The standard's byte-order mark, skipped at the start of a stream.
_BOM = b"\xef\xbb\xbf"
_DATA = b"data:"


class Event(NamedTuple):
    event: str
    data: str
    id: str | None


class EventTooLarge(Exception):
    """An event grew past the parser's limit."""


class SSEParser:
    """
    Feed bytes with L{feed}; it returns the events completed so far.

    Lines end with CRLF, LF or CR (a CR at the end of a chunk waits for the
    next chunk to see whether an LF follows).  C{data} lines are joined with
    LF; comments (lines starting with C{:}) are ignored; an event with no
    data is not dispatched, as the standard says.  A byte-order mark at the
    start of the stream is skipped.

    C{max_event} bounds an event's data: the bytes of its C{data} values
    (without their field names) and a newline between two of them, that is
    the data as delivered, counted in the bytes received.  Any other line
    is bounded by C{max_event} on its own.  An unfinished line is counted
    the same way, so where a chunk ends never changes whether an event is
    refused, and the parser never holds much more than C{max_event} bytes.
    """

    def __init__(self, max_event: int) -> None:
        self.max_event = max_event
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._event = ""
        self._data: list[str] = []
        self._data_len = 0
        self._id: str | None = None
        #: The id of the last event completed (the standard's "last event ID
        #: string"): what a client resumes the stream from.  An id whose event
        #: was cut off does not count, since that event was never received.
        self.last_event_id: str | None = None
        #: The reconnection time the server asked for, in milliseconds.
        self.retry: int | None = None
        self._pending_cr = False
        #: The start of the stream while it may still be a byte-order mark.
        self._stream_start: bytes | None = b""

    def continued(self) -> "SSEParser":
        """
        A parser for the next connection of the same stream: it starts
        afresh (no partial line or event is carried over) but keeps the last
        event id and the reconnection time, as the standard's event source
        does when it reconnects.
        """
        parser = SSEParser(self.max_event)
        parser.last_event_id = self.last_event_id
        parser.retry = self.retry
        return parser

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        if self._stream_start is not None:
            chunk = self._skip_bom(chunk)
        if not chunk:
            return events
        if self._pending_cr:
            self._pending_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" in chunk:
            # Normalise CRLF and lone CR to LF; a trailing CR may be half of a CRLF.
            if chunk.endswith(b"\r"):
                self._pending_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            if self._partial:
                self._partial.append(chunk[start:end])
                line = b"".join(self._partial)
                self._partial = []
                self._partial_len = 0
            else:
                line = chunk[start:end]
            start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        if start < len(chunk):
            rest = chunk[start:]
            self._partial.append(rest)
            self._partial_len += len(rest)
            self._refuse_past_limit(self._measure(first_bytes(self._partial, 6), self._partial_len, False))
        return events

    def _skip_bom(self, chunk: bytes) -> bytes:
        """Drop a byte-order mark at the start of the stream, even split across chunks."""
        assert self._stream_start is not None
        start = self._stream_start + chunk
        if len(start) < len(_BOM) and _BOM.startswith(start):
            self._stream_start = start
            return b""
        self._stream_start = None
        return start.removeprefix(_BOM)

    def _measure(self, head: bytes, size: int, complete: bool) -> int:
        """
        What a line counts against C{max_event}, from its first bytes
        (C{head}, at least 6 when it has them) and its length so far: for a
        data line, its event's data with it; for any other line, its own
        bytes.  The start of a line never counts more than the whole line.
        """
        if head.startswith(_DATA) or (complete and head == _DATA[:-1]):
            value = max(0, size - len(_DATA) - head.startswith(b"data: "))
            return self._data_len + (1 if self._data else 0) + value
        if not complete and _DATA.startswith(head):
            return 0  # it may still turn out to be a data line
        return size

    def _refuse_past_limit(self, size: int) -> None:
        if size > self.max_event:
            raise EventTooLarge(f"an event of more than {self.max_event} bytes")

    def _line(self, line: bytes) -> Event | None:
        if not line:
            return self._dispatch()
        measured = self._measure(line[:6], len(line), True)
        self._refuse_past_limit(measured)
        if line[:1] == b":":
            return None
        text = line.decode("utf-8", "replace")
        field, sep, value = text.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_len = measured
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry":
            # Ten digits at most: a longer one is no sane delay, and past 4300
            # digits int() raises instead of converting.
            if value.isascii() and value.isdigit() and len(value) <= 10:
                self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, self._data = self._data, []
        self._data_len = 0
        event, self._event = self._event, ""
        eid, self._id = self._id, None
        if eid is not None:
            self.last_event_id = eid
        if not data:
            return None
        return Event(event or "message", "\n".join(data), eid)
