"""
Properties of L{twisted_mcp.wire.framing.LineFramer}: however a byte stream is
cut into reads, the framer delivers the same messages as when it reads the
stream at once; overlong lines are reported once and their tails never leak;
what it buffers stays within its limit.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from twisted_mcp.wire.framing import LineFramer

from .strategies import stream_and_chunks

LIMITS = st.integers(min_value=1, max_value=64)


class Recorder(LineFramer):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.MAX_LENGTH = limit
        self.lines: list[bytes] = []
        self.overlong: list[tuple[bytes, int]] = []
        self.makeConnection(StringTransport())

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def lineLengthExceeded(self, head: bytes, size: int) -> None:  # type: ignore[override]
        self.overlong.append((head, size))


def framed(limit: int, chunks: list[bytes]) -> Recorder:
    framer = Recorder(limit)
    for chunk in chunks:
        framer.dataReceived(chunk)
        # Memory bound: never more than one line's worth of bytes is kept.
        assert framer.pending_bytes() <= limit
    return framer


def model(stream: bytes, limit: int) -> tuple[list[bytes], list[bytes], int]:
    """What the framer must deliver: (messages, overlong lines, bytes left pending)."""
    *complete, tail = stream.split(b"\n")
    messages, overlong = [], []
    for line in complete:
        if len(line) > limit:
            overlong.append(line)
            continue
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            messages.append(line)
    if len(tail) > limit:
        overlong.append(tail)
        return messages, overlong, 0
    return messages, overlong, len(tail)


def line_streams(limit_max: int = 64) -> st.SearchStrategy[bytes]:
    """Streams of short, blank, CRLF-ended and overlong lines, maybe ending mid-line."""
    short = st.binary(max_size=limit_max).filter(lambda b: b"\n" not in b)
    long = st.binary(min_size=limit_max + 1, max_size=3 * limit_max).map(lambda b: b.replace(b"\n", b"x"))
    line = st.one_of(short, long, st.just(b""), st.just(b" \r"), short.map(lambda b: b + b"\r"))
    return st.tuples(st.lists(line, max_size=12), st.booleans()).map(
        lambda t: b"\n".join(t[0]) + (b"\n" if t[1] else b"")
    )


ANY_STREAM = st.one_of(line_streams(), st.binary(max_size=300))


@given(LIMITS, stream_and_chunks(ANY_STREAM))
def test_chunkingDoesNotChangeTheMessages(limit: int, stream_chunks: tuple[bytes, list[bytes]]) -> None:
    """
    Any split of a stream into reads yields the messages, the overlong
    reports and the pending bytes of the whole stream read at once, and of
    the model: lines split at LF, a trailing CR dropped, blank lines skipped.
    """
    stream, chunks = stream_chunks
    whole = framed(limit, [stream] if stream else [])
    split = framed(limit, chunks)
    messages, overlong, pending = model(stream, limit)
    assert split.lines == whole.lines == messages
    assert len(split.overlong) == len(whole.overlong) == len(overlong)
    assert split.pending_bytes() == whole.pending_bytes() == pending


@given(LIMITS, stream_and_chunks(ANY_STREAM))
def test_overlongReportsDescribeTheirLine(limit: int, stream_chunks: tuple[bytes, list[bytes]]) -> None:
    """
    Each report gives at most 4 KiB of head and a size past the limit;
    nothing of an overlong line is delivered as a message.
    """
    stream, chunks = stream_chunks
    assert b"".join(chunks) == stream
    framer = framed(limit, chunks)
    _, overlong, _ = model(stream, limit)
    for (head, size), line in zip(framer.overlong, overlong, strict=False):
        assert len(head) <= 4096
        assert limit < size <= len(line)
    for message in framer.lines:
        assert len(message) <= limit


@given(LIMITS, stream_and_chunks(ANY_STREAM))
@example(limit=1, stream_chunks=(b"ab\n{}\n", [b"ab\n{}\n"]))
def test_overlongHeadIsAPrefixOfItsLine(limit: int, stream_chunks: tuple[bytes, list[bytes]]) -> None:
    """
    The head given with an overlong report is the start of that line, and
    nothing past its newline.
    """
    stream, chunks = stream_chunks
    framer = framed(limit, chunks)
    _, overlong, _ = model(stream, limit)
    for (head, _), line in zip(framer.overlong, overlong, strict=False):
        assert line.startswith(head)


@given(st.integers(4, 12), st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b))
def test_tailOfOverlongLineNeverLeaks(limit: int, tail: bytes) -> None:
    """
    An overlong line fed one byte at a time is discarded up to its newline:
    none of it (in particular not its tail) comes out as a message, and the
    next line is delivered whole.
    """
    stream = b"x" * (limit + 1) + tail + b"\n" + b"next\n"
    framer = framed(limit, [bytes([b]) for b in stream])
    assert framer.lines == [b"next"]
    assert len(framer.overlong) == 1


@given(st.integers(16, 64), st.integers(1, 15))
@example(limit=16, first_read=1)
def test_overlongHeadIsIndependentOfChunking(limit: int, first_read: int) -> None:
    """
    The head reported for an overlong line that arrived in several reads is
    its first bytes, up to 4 KiB (the line is shorter here), not just its
    first read.
    """
    line = b'{"jsonrpc":"2.0","id":12345,"result":"' + b"x" * (2 * limit) + b'"}'
    split = framed(limit, [line[:first_read], line[first_read:], b"\n"])
    assert split.overlong[0][0] == line[:4096]
