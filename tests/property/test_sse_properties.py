"""
Properties of L{twisted_mcp.wire.sse.SSEParser}: however an event stream is cut
into chunks, it yields the events that the HTML standard's
C{text/event-stream} rules give for the whole stream (CR, LF and CRLF line
ends, comments, C{event}, C{id}, C{retry}, multi-line C{data}, unknown
fields), and the same C{retry} and last event id.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from twisted_mcp.wire.sse import Event, EventTooLarge, SSEParser

from .strategies import chunkings, stream_and_chunks

BIG = 1 << 20
BOM = "\ufeff".encode()

# Field values: any text without line ends (a NUL is allowed: an id with one is ignored).
values = st.text(st.characters(exclude_characters="\r\n", codec="utf-8"), max_size=12)
line_ends = st.sampled_from(["\n", "\r", "\r\n"])
fields = st.one_of(
    st.tuples(st.sampled_from(["data", "event", "id", "retry", "other", "dat"]), values),
    st.tuples(st.just("retry"), st.integers(0, 10**6).map(str)),
)


@st.composite
def sse_lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["field", "field", "field", "blank", "comment", "bare"]))
    if kind == "blank":
        line = ""
    elif kind == "comment":
        line = ":" + draw(values)
    elif kind == "bare":  # a field name without a colon: its value is empty
        line = draw(st.sampled_from(["data", "event", "id", "retry"]))
    else:
        name, value = draw(fields)
        line = name + draw(st.sampled_from([":", ": ", ":  "])) + value
    return line + draw(line_ends)


streams = st.lists(sse_lines(), max_size=20).map(lambda lines: "".join(lines).encode())


def model(stream: bytes) -> tuple[list[Event], int | None, str | None]:
    """The standard's parsing rules, applied to the whole stream at once:
    (events dispatched, last retry, last event id).  The last event id is
    set when an event is dispatched (a blank line), from the id buffer: an
    id whose event was never completed does not count."""
    text = stream.decode("utf-8", "replace")
    *lines, _unfinished = re.split(r"\r\n|\r|\n", text)
    events: list[Event] = []
    data: list[str] = []
    event_type, event_id, retry, last_id = "", None, None, None
    for line in lines:
        if not line:
            if data:
                events.append(Event(event_type or "message", "\n".join(data), event_id))
            if event_id is not None:
                last_id = event_id
            data, event_type, event_id = [], "", None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    return events, retry, last_id


def parse(chunks: list[bytes], max_event: int = BIG) -> tuple[list[Event], SSEParser]:
    parser = SSEParser(max_event)
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events, parser


@given(stream_and_chunks(streams))
@example((b"data: a\r", [b"data: a\r"]))
@example((b"data: a\r\n\r\n", [b"data: a\r", b"\n\r", b"\n"]))
@example((b"data:x\rdata\r\r", [b"data:x\r", b"data\r\r"]))
def test_chunkingDoesNotChangeTheEvents(stream_chunks: tuple[bytes, list[bytes]]) -> None:
    """
    Any chunking of a stream gives the events, retry and last event id the
    standard's rules give for the whole stream.
    """
    stream, chunks = stream_chunks
    events, parser = parse(chunks)
    expected, retry, last_id = model(stream)
    assert events == expected
    assert parser.retry == retry
    assert parser.last_event_id == last_id


@given(st.binary(max_size=300).flatmap(lambda b: st.tuples(st.just(b), chunkings(b))))
def test_anyBytesGiveEventsOrTooLarge(stream_chunks: tuple[bytes, list[bytes]]) -> None:
    """
    Arbitrary bytes (invalid UTF-8, NULs, stray CRs) give the model's
    events, whatever the chunking; a small limit only ever raises
    EventTooLarge.
    """
    stream, chunks = stream_chunks
    assert parse(chunks)[0] == model(stream)[0]
    try:
        parse(chunks, max_event=16)
    except EventTooLarge:
        pass


@given(st.lists(st.text(max_size=30), min_size=1, max_size=5), line_ends)
def test_multiLineDataIsJoinedWithLF(parts: list[str], end: str) -> None:
    clean = [p.replace("\r", "").replace("\n", "") for p in parts]
    stream = "".join(f"data: {p}{end}" for p in clean) + end
    events, _ = parse([stream.encode()])
    assert events == [Event("message", "\n".join(clean), None)]


@given(streams)
def test_eventsPastTheLimitRaise(stream: bytes) -> None:
    """An event whose data exceeds the limit raises EventTooLarge rather than growing."""
    payload = b"data: " + b"x" * 100 + b"\n\n"
    with pytest.raises(EventTooLarge):
        parse([stream + b"\n\n" + payload], max_event=50)


@given(stream_and_chunks(streams.map(lambda s: BOM + b"data: first\n\n" + s)))
def test_leadingByteOrderMarkIsIgnored(stream_chunks: tuple[bytes, list[bytes]]) -> None:
    stream, chunks = stream_chunks
    events, _ = parse(chunks)
    assert events == model(stream[len(BOM) :])[0]


@given(st.integers(8, 64), st.integers(1, 5))
@example(max_event=10, cut=1)
def test_limitDoesNotDependOnChunking(max_event: int, cut: int) -> None:
    stream = b"data: " + b"x" * (max_event - 1) + b"\n\n"
    assert parse([stream], max_event)[0] == [Event("message", "x" * (max_event - 1), None)]
    split = len(stream) - 2 - cut
    assert parse([stream[:split], stream[split:]], max_event)[0] == [Event("message", "x" * (max_event - 1), None)]
