"""
Pipes sized for large messages.

Twisted's process reader takes 8 KiB per wake-up, and a pipe holds 64 KiB,
so a one-megabyte answer from a backend costs 128 trips through the
reactor.  L{widen} makes a pipe hold up to 1 MiB (Linux C{F_SETPIPE_SZ},
best effort), and L{read_in_large_chunks} has a reader take up to that
much at once: the same bytes, in the same order, in a handful of wake-ups.
(Only toward the gateway: a wider pipe toward a client that stops reading
would let more requests in before the gateway pauses its input.)  The
gateway's own stdin keeps its size and is read whole per wake-up too:
a client pipelining requests gets them read, handled and sent on to each
backend in one batch, not in 8 KiB pieces.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from typing import Any

from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST

#: Bytes one read may take, and the pipe size asked for.
CHUNK = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def widen(fd: int, size: int = CHUNK) -> None:
    """Ask for a pipe of C{size} bytes (nothing happens for what is not a pipe, or off Linux)."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except (OSError, ValueError):
        pass  # not a pipe, not Linux, or above /proc/sys/fs/pipe-max-size: the default size


#: Read buffers by size, shared by every reader: a read's bytes are copied
#: out before anything else runs (one reactor thread).
_buffers: dict[int, tuple[mmap.mmap, memoryview]] = {}


def _read_buffer(size: int) -> tuple[mmap.mmap, memoryview]:
    """
    The buffer reads of up to C{size} bytes go into.  Reading into one kept
    buffer costs what the read brings: C{os.read(fd, 1 MiB)} allocates (and
    maps, and unmaps) a megabyte on every call, some ten microseconds even for
    a 100-byte message.  Anonymous memory: only the pages a read reached count.
    """
    kept = _buffers.get(size)
    if kept is None:
        buffer = mmap.mmap(-1, size)
        kept = _buffers[size] = (buffer, memoryview(buffer))
    return kept


def read_in_large_chunks(reader: Any, chunk: int = CHUNK, widen_pipe: bool = True) -> None:
    """
    Have Twisted's C{ProcessReader} C{reader} read up to C{chunk} bytes per
    wake-up (its C{doRead} replaced on this instance only), and widen its
    pipe unless told not to (a client's pipe keeps the size the client
    gave it: only the reads get larger).
    """
    fd = getattr(reader, "fd", None)
    if type(fd) is not int:
        return
    if widen_pipe:
        widen(fd, chunk)

    buffer, view = _read_buffer(chunk)

    def doRead() -> Any:
        try:
            n = os.readv(fd, (buffer,))
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return None
            return CONNECTION_LOST
        if not n:
            return CONNECTION_DONE
        reader.dataReceived(view[:n].tobytes())
        return None

    reader.doRead = doRead


__all__ = ["CHUNK", "read_in_large_chunks", "widen"]
