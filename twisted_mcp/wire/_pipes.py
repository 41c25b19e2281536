"""
Pipes sized for large messages.

Twisted's process reader takes 8 KiB per wake-up, and a pipe holds 64 KiB,
so a one-megabyte answer costs 128 trips through the reactor to read and
16 to write.  L{widen} makes a pipe hold up to 1 MiB (Linux
C{F_SETPIPE_SZ}, best effort), and L{read_in_large_chunks} has a reader
take up to that much at once: the same bytes, in the same order, in a
handful of wake-ups.
"""

from __future__ import annotations

import errno
import fcntl
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


def read_in_large_chunks(reader: Any, chunk: int = CHUNK) -> None:
    """
    Have Twisted's C{ProcessReader} C{reader} read up to C{chunk} bytes per
    wake-up (its C{doRead} replaced on this instance only).
    """
    fd = getattr(reader, "fd", None)
    if type(fd) is not int:
        return
    widen(fd, chunk)

    def doRead() -> Any:
        try:
            data = os.read(fd, chunk)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return None
            return CONNECTION_LOST
        if not data:
            return CONNECTION_DONE
        reader.dataReceived(data)
        return None

    reader.doRead = doRead


__all__ = ["CHUNK", "read_in_large_chunks", "widen"]
