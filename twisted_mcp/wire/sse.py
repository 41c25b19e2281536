"""
An incremental parser for Server-Sent Events (the HTML living standard's
C{text/event-stream}), linear in the bytes fed and bounded in event size.
"""

from __future__ import annotations

from typing import NamedTuple


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
    data is not dispatched, as the standard says.
    """

    def __init__(self, max_event: int) -> None:
        self.max_event = max_event
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._event = ""
        self._data: list[str] = []
        self._data_len = 0
        self._id: str | None = None
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
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
            if self._partial_len + self._data_len > self.max_event:
                raise EventTooLarge(f"an event of more than {self.max_event} bytes")
        return events

    def _line(self, line: bytes) -> Event | None:
        if not line:
            return self._dispatch()
        if line[:1] == b":":
            return None
        text = line.decode("utf-8", "replace")
        field, sep, value = text.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_len += len(value) + 1
            if self._data_len > self.max_event:
                raise EventTooLarge(f"an event of more than {self.max_event} bytes")
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
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
        if not data:
            return None
        return Event(event or "message", "\n".join(data), eid)
