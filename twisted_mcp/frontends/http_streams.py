"""
The SSE streams of the Streamable HTTP front, and what makes them resumable.

A logical stream (L{SseStream}) is one POST's answer stream or a session's
GET stream.  Each of its events carries an id, C{p<stream>.<seq>} for a
POST's stream and C{g<stream>.<seq>} for a GET stream, unique within the
session, and is kept in a bounded L{ReplayLog}: a client whose connection
dropped comes back with C{GET} and C{Last-Event-ID} and gets what it missed,
on that stream only (MCP 2025-11-25, "Resumability and Redelivery").

The connection carrying a stream now is its sink (L{EventStream}).  A client
that does not read gets at most C{http.maxStreamBufferBytes} written to it
before its connection is cut; what the stream carries afterwards goes to
its log only, for a resume.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.web.http import Request
from zope.interface import implementer

log = Logger()

#: The SSE C{retry} (milliseconds) sent with a stream's priming event: how
#: long a client waits before it reconnects after its connection dropped.
RETRY_MILLISECONDS = 1000
_EVENT_ID = re.compile(r"^([pg])([0-9]{1,9})\.([0-9]{1,12})$")


def parse_event_id(text: str) -> tuple[str, int, int] | None:
    """C{(kind, stream, seq)} of an event id this front wrote (C{p3.17}); None for anything else."""
    match = _EVENT_ID.match(text)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3))


@implementer(IPushProducer)
class EventStream:
    """
    One HTTP response carrying SSE events.  While the client does not read
    (the connection paused us), at most C{limit} bytes are written; beyond
    that the connection is aborted rather than the events held in the
    gateway's memory.
    """

    def __init__(self, request: Request, limit: int, label: str) -> None:
        self.request = request
        self.limit = limit
        self.label = label
        self.paused = False
        #: Bytes written since the client stopped reading.
        self.unread = 0
        self.cut = False
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")  # proxies must not hold events back
        request.registerProducer(self, True)

    @property
    def open(self) -> bool:
        return not self.cut and not self.request.finished and self.request.channel is not None

    def write(self, event: bytes) -> bool:
        """One whole SSE event; False when the connection is cut or the response finished."""
        if not self.open:
            return False
        if self.paused:
            self.unread += len(event)
            if self.unread > self.limit:
                self._cut()
                return False
        self.request.write(event)
        return True

    def comment(self, text: bytes) -> None:
        """An SSE comment (sends the headers at once; keeps proxies from timing out)."""
        if self.open:
            self.request.write(b": " + text + b"\n\n")

    def finish(self) -> None:
        if not self.open:
            return
        self.request.unregisterProducer()
        self.request.finish()

    def _cut(self) -> None:
        self.cut = True
        log.warn(
            "HTTP client {client} does not read its stream: more than {limit} bytes waiting "
            "(http.maxStreamBufferBytes); cutting the connection",
            client=self.label,
            limit=self.limit,
        )
        transport: Any = self.request.channel.transport if self.request.channel is not None else None
        if transport is not None:
            transport.abortConnection()

    # IPushProducer: the connection's buffer toward the client is full, or drained.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.unread = 0

    def stopProducing(self) -> None:
        pass


class ReplayLog:
    """
    The newest events of one stream, at most C{limit} bytes of them (the
    newest event is always kept, whatever its size, so that an answer can
    be delivered again).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.events: deque[tuple[int, bytes]] = deque()
        self.size = 0
        #: The newest event dropped to stay within the limit (0: none).
        self.dropped_through = 0

    def add(self, seq: int, event: bytes) -> None:
        self.events.append((seq, event))
        self.size += len(event)
        while self.size > self.limit and len(self.events) > 1:
            old_seq, old = self.events.popleft()
            self.size -= len(old)
            self.dropped_through = old_seq

    def since(self, seq: int) -> tuple[list[bytes], int]:
        """The events kept after C{seq}, and how many after it were dropped."""
        return [event for s, event in self.events if s > seq], max(0, self.dropped_through - seq)


class SseStream:
    """
    One logical SSE stream of a session: a POST's answer stream (C{rid} is
    its request's id) or the session's GET stream (C{rid} None).

    @ivar sink: the connection carrying it now, or None while its client is
        away.
    @ivar ended: its last event was sent (a POST stream's answer, or the end
        of the session).
    @ivar timer: while its client is away, when it stops being resumable.
    """

    def __init__(self, number: int, rid: Any, replay_limit: int, label: str, ids: bool = True) -> None:
        self.number = number
        #: Whether its events carry ids (not for 2026-07-28 clients: that era has no resumption).
        self.ids = ids
        self.rid = rid
        self.kind = b"g" if rid is None else b"p"
        self.label = label
        self.seq = 0
        #: None: this stream is not resumable (C{http.resumeWindow} is 0).
        self.log = ReplayLog(replay_limit) if replay_limit > 0 else None
        self.sink: EventStream | None = None
        self.ended = False
        self.timer: IDelayedCall | None = None

    @property
    def posts(self) -> bool:
        return self.rid is not None

    def event_id(self) -> bytes:
        return b"%s%d.%d" % (self.kind, self.number, self.seq)

    def attach(self, request: Request, limit: int, prime: bool) -> EventStream:
        """
        Carry this stream on C{request} from now on.  With C{prime}, the
        first event is a priming event (an id and empty data, with the
        C{retry} delay), so the client can resume from here.
        """
        self.stop_timer()
        sink = EventStream(request, limit, self.label)
        self.sink = sink
        if prime and self.log is not None:
            sink.write(b"id: %s\nretry: %d\ndata:\n\n" % (self.event_id(), RETRY_MILLISECONDS))
        return sink

    def send(self, data: bytes) -> None:
        """One JSON-RPC message (encoded); kept for a resume, and written to the client if it is there."""
        self.seq += 1
        if self.ids:
            event = b"id: %s\nevent: message\ndata: %s\n\n" % (self.event_id(), data.rstrip(b"\n"))
        else:
            event = b"event: message\ndata: %s\n\n" % data.rstrip(b"\n")
        if self.log is not None:
            self.log.add(self.seq, event)
        if self.sink is not None:
            self.sink.write(event)

    def replay(self, events: list[bytes]) -> None:
        """Write events sent before (from L{ReplayLog.since}) again, to the sink."""
        if self.sink is not None:
            for event in events:
                self.sink.write(event)

    def end(self) -> None:
        """Its last event was sent: the response ends."""
        self.ended = True
        if self.sink is not None:
            self.sink.finish()
            self.sink = None

    def stop_timer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None


__all__ = ["RETRY_MILLISECONDS", "EventStream", "ReplayLog", "SseStream", "parse_event_id"]
