"""
Write coalescing for pipes and sockets.

A Twisted C{FileDescriptor.write} queues the bytes and registers the
descriptor for writability; the bytes leave on the next reactor iteration,
after a few C{epoll_ctl} calls.  For a gateway that relays small messages
that is most of the cost of a call.

Here, while the reactor delivers one chunk of input (L{batch}), or for a
whole turn of the reactor (L{coalesce_per_turn}), messages written to any
L{Writer} are collected; when the batch is done each writer sends its
messages with one C{write(2)}, straight away when nothing is queued in
Twisted's buffer, falling back to Twisted's buffered write for whatever the
kernel did not take.  Outside a batch a write goes out at once the same
way.  Ordering is kept: nothing is written directly while Twisted still
holds queued bytes for that descriptor.

A writer holding L{EARLY_FLUSH_BYTES} or more sends them without waiting
for the batch to end.  A client pipelining 128 calls has them read in one
turn; held to the turn's end, they reach the backend as one convoy, and
the backend, then the client, waits idle while the gateway works through
the whole batch, so the three processes take turns on a machine with
several cores.  Sent in slices of a few kilobytes, the backend starts on
the first calls while the gateway handles the rest.

A writer whose last batch had one message sends the next batch's first
message at once: at one call in flight every batch has one message toward
each peer, and the work the gateway does after writing it (bookkeeping,
timers, returning through the reactor) is then off the call's path.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

#: Bytes a writer holds in a batch before it sends them at once: some
#: 50 small calls.  Calls/s at 128 in flight through the gateway to a
#: stdio echo backend on 2 cores (bench_relay.py's client and echo, medians
#: of 3 rounds), against holding everything to the turn's end: 2 KiB 1.33x,
#: 4 KiB 1.29x, 8 KiB 1.35x, 16 KiB 0.95x (128 small calls are about
#: 19 KiB).  The CPU per call of the three processes is unchanged at
#: 8 KiB; at 2 KiB the peers wake more often and spend 13% more.
EARLY_FLUSH_BYTES = 8192

_depth = 0
#: Batches begun (a reactor turn, or a handler outside one), counted: how
#: many messages a writer was given in its last one decides whether the
#: next one's first message waits (L{Writer.write}).
_turn = 0
_dirty: list["Writer"] = []

F = TypeVar("F", bound=Callable[..., Any])


def _queued(fd: Any) -> bool:
    try:
        return bool(fd._tempDataLen) or len(fd.dataBuffer) != fd.offset
    except AttributeError:
        return True


def write_now(fd: Any, data: bytes) -> None:
    """Write C{data} to the Twisted C{FileDescriptor} C{fd}, directly when possible."""
    if fd.connected and not fd.disconnecting and not getattr(fd, "_writeDisconnected", False) and not _queued(fd):
        try:
            n = os.write(fd.fileno(), data)
        except BlockingIOError:
            n = 0
        except OSError:
            # Let Twisted see (and report) the error on its own path.
            n = 0
        if n == len(data):
            return
        data = data[n:]
    fd.write(data)


class Writer:
    """Coalesces writes to one Twisted C{FileDescriptor} (see module doc)."""

    __slots__ = ("fd", "chunks", "held", "turn", "written")

    def __init__(self, fd: Any) -> None:
        self.fd = fd
        self.chunks: list[bytes] = []
        #: Bytes in C{chunks}, kept as they come: C{queued} runs after every write.
        self.held = 0
        #: The last batch (L{_turn}) this writer was written to in, and how
        #: many messages it was given then (1 before any: a new peer's first
        #: message leaves at once).
        self.turn = -1
        self.written = 1

    def queued(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        fd = self.fd
        try:
            queued: int = fd._tempDataLen + len(fd.dataBuffer) - fd.offset + self.held
            return queued
        except AttributeError:
            return 0

    def write(self, data: bytes) -> None:
        if _depth:
            if self.turn != _turn:
                self.turn = _turn
                alone = self.written == 1
                self.written = 1
                if alone and not self.chunks:
                    # The last batch gave this peer one message: this one is
                    # likely alone too, and leaves at once.  The peer starts
                    # on it while the rest of the batch's work goes on (with
                    # one call in flight, all of that work is then off the
                    # call's path).  After a batch of several, they wait
                    # for the batch's end, or for EARLY_FLUSH_BYTES.
                    write_now(self.fd, data)
                    return
            else:
                self.written += 1
            if not self.chunks:
                _dirty.append(self)
            self.chunks.append(data)
            self.held += len(data)
            if self.held >= EARLY_FLUSH_BYTES:
                self.flush()
        else:
            write_now(self.fd, data)

    def flush(self) -> None:
        chunks = self.chunks
        if chunks:
            self.chunks = []
            self.held = 0
            write_now(self.fd, chunks[0] if len(chunks) == 1 else b"".join(chunks))


def flush_all() -> None:
    # A writer flushed early and written to again is listed twice: its
    # second flush finds nothing to send.
    global _dirty
    while _dirty:
        dirty, _dirty = _dirty, []
        for i, w in enumerate(dirty):
            try:
                w.flush()
            except BaseException:
                # Keep the others' bytes for the next flush.
                _dirty.extend(x for x in dirty[i + 1 :] if x.chunks)
                raise


def batch(method: F) -> F:
    """Decorate a C{dataReceived}-like method: writes made while it runs
    leave together when it returns (or when the reactor's turn ends, see
    L{coalesce_per_turn})."""

    def wrapper(*args: Any) -> Any:
        global _depth, _turn
        if not _depth:
            _turn += 1
        _depth += 1
        try:
            return method(*args)
        finally:
            _depth -= 1
            if not _depth:
                flush_all()

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper  # type: ignore[return-value]


def coalesce_per_turn(reactor: Any) -> None:
    """
    Make each turn of C{reactor} (one poll and the handling of every
    descriptor it found ready) a batch: what the handlers write toward any
    peer leaves in one C{write(2)} per peer when the turn ends, not one per
    handler (fifty clients' requests read in one turn reach their backend
    together).  Timed calls run between turns, outside it, as before.  A
    reactor without C{doIteration} is left as it is.
    """
    iterate = getattr(reactor, "doIteration", None)
    if iterate is None:
        return

    def doIteration(delay: float | None) -> None:
        global _depth, _turn
        if not _depth:
            _turn += 1
        _depth += 1
        try:
            iterate(delay)
        finally:
            _depth -= 1
            if not _depth:
                flush_all()

    reactor.doIteration = doIteration


def writer_for(transport: Any) -> Any:
    """
    A L{Writer} for a Twisted transport: the descriptor of a L{StandardIO}
    or a TCP/Unix connection; anything else (a test's C{StringTransport})
    is returned as it is.
    """
    from twisted.internet.abstract import FileDescriptor

    fd = getattr(transport, "_writer", None)
    if isinstance(fd, FileDescriptor):
        return Writer(fd)
    if isinstance(transport, FileDescriptor):
        return Writer(transport)
    return transport
