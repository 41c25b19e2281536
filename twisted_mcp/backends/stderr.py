"""
How much of a backend child's stderr reaches the log: each line cut to a
length, lines rate-limited by a token bucket, and what was suppressed counted
and summarised (the C{gateway.stderr*} settings).
"""

from __future__ import annotations

from typing import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["SUMMARY_INTERVAL", "LineCutter", "StderrLimits", "StderrLog"]


@attrs.frozen
class StderrLimits:
    """
    How much of a backend's stderr reaches the log (the config's
    C{gateway.stderrLineBytes}, C{stderrLinesPerSecond}, C{stderrBurst},
    where the defaults are).
    """

    #: The first bytes of a line that are logged; the rest is counted.
    line_bytes: int
    #: Lines logged per second, on average.
    per_second: int
    #: Lines that may be logged at once after a quiet spell.
    burst: int


#: While a backend's stderr lines are suppressed, one line every this many
#: seconds says how many were.
SUMMARY_INTERVAL = 10.0


class LineCutter:
    """
    Splits a byte stream into lines (at C{"\\n"}) and keeps at most C{limit}
    bytes of each: C{deliver(head, cut)} gets a line's first bytes and the
    number of bytes that were not kept.  Memory stays bounded however long
    a line is; time is linear in the bytes fed.
    """

    def __init__(self, limit: int, deliver: Callable[[bytes, int], None]) -> None:
        self.limit = limit
        self.deliver = deliver
        self._head = bytearray()
        self._cut = 0

    def feed(self, data: bytes) -> None:
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._keep(data, start, end)
            self._end_line()
            start = end + 1
        self._keep(data, start, len(data))

    def finish(self) -> None:
        """The stream ended: deliver the unfinished line, if any."""
        if self._head or self._cut:
            self._end_line()

    def _keep(self, data: bytes, start: int, end: int) -> None:
        take = min(end - start, self.limit - len(self._head))
        self._head += data[start : start + take]
        self._cut += end - start - take

    def _end_line(self) -> None:
        head, cut = bytes(self._head), self._cut
        self._head.clear()
        self._cut = 0
        self.deliver(head, cut)


class StderrLog:
    """
    One backend's stderr lines, to the log as C{"[backend] line"}: blank lines
    are skipped, a line longer than C{limits.line_bytes} is cut with a note
    of how many bytes were cut, and at most C{limits.per_second} lines a
    second are logged, in bursts of up to C{limits.burst} (a token bucket).
    The lines over that rate are counted, not logged: while they are,
    one line every L{SUMMARY_INTERVAL} seconds says how many
    (C{"backend X: N stderr lines suppressed"}), and L{flush} says it at
    once.  Every line is either logged or counted.

    @param log: the logger the lines go to (its namespace is shown).
    @param clock: the reactor's time API; the bucket and the summary read it.
    """

    def __init__(self, backend: str, clock: IReactorTime, limits: StderrLimits, log: Logger) -> None:
        self.backend = backend
        self.clock = clock
        self.limits = limits
        self.log = log
        self._tokens = float(limits.burst)
        self._filled_at = clock.seconds()
        self._suppressed = 0
        self._summary: IDelayedCall | None = None

    def lines(self) -> LineCutter:
        """A line splitter for one stream (one run of the backend's process)."""
        return LineCutter(self.limits.line_bytes, self.line)

    def line(self, head: bytes, cut: int) -> None:
        """Log one line (its first bytes, and how many more it had)."""
        text = head.rstrip(b"\r").decode("utf-8", "replace")
        if not cut and not text.strip():
            return
        if not self._take_token():
            self._suppressed += 1
            if self._summary is None:
                self._summary = self.clock.callLater(SUMMARY_INTERVAL, self._summarise)
            return
        if cut:
            self.log.info("[{backend}] {line}...[{cut} more bytes]", backend=self.backend, line=text, cut=cut)
        else:
            self.log.info("[{backend}] {line}", backend=self.backend, line=text)

    def flush(self) -> None:
        """Say now how many lines were suppressed (the process ended)."""
        if self._summary is not None:
            self._summary.cancel()
            self._summarise()

    def _take_token(self) -> bool:
        now = self.clock.seconds()
        refill = (now - self._filled_at) * self.limits.per_second
        self._tokens = min(float(self.limits.burst), self._tokens + refill)
        self._filled_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _summarise(self) -> None:
        self._summary = None
        count, self._suppressed = self._suppressed, 0
        self.log.warn(
            "backend {backend}: {count} stderr lines suppressed (more than {rate} a second, in bursts of "
            "{burst}: gateway.stderrLinesPerSecond, gateway.stderrBurst)",
            backend=self.backend,
            count=count,
            rate=self.limits.per_second,
            burst=self.limits.burst,
        )
