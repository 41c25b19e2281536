"""
Tests for L{twisted_mcp.wire.sse.SSEParser}.
"""

from __future__ import annotations

import random
import time

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.wire.sse import Event, EventTooLarge, SSEParser

# Several events: multi-line data, named events, comments, ids, an event
# without data, a multi-byte character and a blank-valued data line.
STREAM = (
    b": a comment, then a retry\n"
    b"retry: 1500\n"
    b"\n"
    b"data: first\n"
    b"\n"
    b"event: progress\n"
    b"id: 7\n"
    b"data: line one\n"
    b"data:line two\n"
    b"data:  two spaces\n"
    b"\n"
    b": only a comment\n"
    b"event: ignored\n"
    b"id: 8\n"
    b"\n"
    b"data: caf\xc3\xa9 \xe2\x9c\x93\n"
    b"data\n"
    b"\n"
    b'data: {"jsonrpc":"2.0","id":1,"result":{}}\n'
    b"\n"
)
EVENTS = [
    Event("message", "first", None),
    Event("progress", "line one\nline two\n two spaces", "7"),
    Event("message", "caf\u00e9 \u2713\n", None),
    Event("message", '{"jsonrpc":"2.0","id":1,"result":{}}', None),
]


def parse(chunks: list[bytes], max_event: int = 1 << 20) -> list[Event]:
    parser = SSEParser(max_event)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    chunks = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 12)
        chunks.append(data[i : i + n])
        i += n
    return chunks


class ChunkingTests(SynchronousTestCase):
    def test_wholeStream(self) -> None:
        self.assertEqual(parse([STREAM]), EVENTS)

    def test_everySplitPoint(self) -> None:
        for i in range(len(STREAM) + 1):
            self.assertEqual(parse([STREAM[:i], STREAM[i:]]), EVENTS, f"split at {i}")

    def test_everyPairOfSplitPoints(self) -> None:
        data = b"data: a\r\ndata: b\r\n\r\nevent: e\rdata: c\r\r: x\n\ndata: d\n\n"
        expected = [Event("message", "a\nb", None), Event("e", "c", None), Event("message", "d", None)]
        self.assertEqual(parse([data]), expected)
        for i in range(len(data) + 1):
            # (An empty middle chunk is test_emptyChunkBetweenCrAndLf.)
            for j in range(i + 1, len(data) + 1):
                self.assertEqual(parse([data[:i], data[i:j], data[j:]]), expected, f"split at {i}, {j}")

    def test_oneByteAtATime(self) -> None:
        self.assertEqual(parse(bytewise(STREAM)), EVENTS)

    def test_randomChunkings(self) -> None:
        rng = random.Random(20251122)
        for _ in range(300):
            self.assertEqual(parse(random_chunks(STREAM, rng)), EVENTS)

    def test_eventsReturnedAsSoonAsComplete(self) -> None:
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"data: a\n"), [])
        self.assertEqual(parser.feed(b"\ndata: b\n\nda"), [Event("message", "a", None), Event("message", "b", None)])
        self.assertEqual(parser.feed(b"ta: c\n"), [])
        self.assertEqual(parser.feed(b"\n"), [Event("message", "c", None)])

    def test_unfinishedEventNotDispatched(self) -> None:
        self.assertEqual(parse([b"data: first\n\ndata: second\n"]), [Event("message", "first", None)])


class LineEndingTests(SynchronousTestCase):
    def check(self, stream: bytes) -> None:
        self.assertEqual(parse([stream]), EVENTS)
        self.assertEqual(parse(bytewise(stream)), EVENTS)
        for i in range(len(stream) + 1):
            self.assertEqual(parse([stream[:i], stream[i:]]), EVENTS, f"split at {i}")
        rng = random.Random(7)
        for _ in range(100):
            self.assertEqual(parse(random_chunks(stream, rng)), EVENTS)

    def test_crlf(self) -> None:
        self.check(STREAM.replace(b"\n", b"\r\n"))

    def test_cr(self) -> None:
        self.check(STREAM.replace(b"\n", b"\r"))

    def test_mixed(self) -> None:
        lines = STREAM.split(b"\n")
        endings = [b"\n", b"\r\n", b"\r"]
        mixed = b"".join(line + endings[i % 3] for i, line in enumerate(lines[:-1]))
        self.check(mixed)

    def test_crlfSplitAcrossChunks(self) -> None:
        """A CR at the end of a chunk and an LF at the start of the next
        are one line ending, not two (which would dispatch early)."""
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"data: a\r"), [])
        self.assertEqual(parser.feed(b"\ndata: b\r"), [])
        self.assertEqual(parser.feed(b"\n\r"), [Event("message", "a\nb", None)])
        self.assertEqual(parser.feed(b"\n"), [])
        self.assertEqual(parser.feed(b"data: c\r\n\r\n"), [Event("message", "c", None)])

    def test_loneCrDispatchesAtOnce(self) -> None:
        """A lone CR ends a line without waiting for the next chunk."""
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"data: a\r\r"), [Event("message", "a", None)])
        self.assertEqual(parser.feed(b"data: b\r\r"), [Event("message", "b", None)])

    def test_crThenCrlf(self) -> None:
        """CR then CRLF are two line endings: the second line is blank."""
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"data: a\r"), [])
        self.assertEqual(parser.feed(b"\r\n"), [Event("message", "a", None)])

    def test_emptyChunkBetweenCrAndLf(self) -> None:
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"data: a\r"), [])
        self.assertEqual(parser.feed(b""), [])
        self.assertEqual(parser.feed(b"\ndata: b\r\n\r\n"), [Event("message", "a\nb", None)])


class FieldTests(SynchronousTestCase):
    def test_multiLineData(self) -> None:
        self.assertEqual(parse([b"data: a\ndata: b\ndata: c\n\n"]), [Event("message", "a\nb\nc", None)])

    def test_emptyDataLinesKept(self) -> None:
        self.assertEqual(parse([b"data:\ndata: x\ndata:\n\n"]), [Event("message", "\nx\n", None)])

    def test_eventName(self) -> None:
        events = parse([b"event: endpoint\ndata: /messages?s=1\n\ndata: plain\n\n"])
        self.assertEqual(events, [Event("endpoint", "/messages?s=1", None), Event("message", "plain", None)])

    def test_eventNameResetAfterDispatch(self) -> None:
        events = parse([b"event: a\ndata: 1\n\ndata: 2\n\n"])
        self.assertEqual([e.event for e in events], ["a", "message"])

    def test_emptyEventNameIsMessage(self) -> None:
        self.assertEqual(parse([b"event:\ndata: x\n\n"]), [Event("message", "x", None)])

    def test_comments(self) -> None:
        events = parse([b": keep-alive\n:data: no\ndata: yes\n: between\n\n:\n\n"])
        self.assertEqual(events, [Event("message", "yes", None)])

    def test_eventWithoutDataNotDispatched(self) -> None:
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"event: ping\nid: 3\n\n"), [])
        # ...and its name and id do not leak into the next event.
        self.assertEqual(parser.feed(b"data: x\n\n"), [Event("message", "x", None)])
        self.assertEqual(parser.last_event_id, "3")

    def test_id(self) -> None:
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"id: 41\ndata: a\n\n"), [Event("message", "a", "41")])
        self.assertEqual(parser.last_event_id, "41")
        self.assertEqual(parser.feed(b"data: b\n\n"), [Event("message", "b", None)])
        self.assertEqual(parser.last_event_id, "41")
        self.assertEqual(parser.feed(b"id:\ndata: c\n\n"), [Event("message", "c", "")])
        self.assertEqual(parser.last_event_id, "")

    def test_idWithNulIgnored(self) -> None:
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"id: 1\ndata: a\n\nid: x\0y\ndata: b\n\n")[1], Event("message", "b", None))
        self.assertEqual(parser.last_event_id, "1")

    def test_retry(self) -> None:
        parser = SSEParser(1024)
        self.assertIsNone(parser.retry)
        self.assertEqual(parser.feed(b"retry: 2500\n\n"), [])
        self.assertEqual(parser.retry, 2500)
        parser.feed(b"retry: soon\nretry: -1\nretry: 1.5\n\n")
        self.assertEqual(parser.retry, 2500)

    def test_retryNonAsciiDigit(self) -> None:
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"retry: \xc2\xb2\ndata: x\n\n"), [Event("message", "x", None)])
        self.assertIsNone(parser.retry)

    def test_retryTooLongIgnored(self) -> None:
        """A retry of more digits than Python converts (4300) is ignored, not
        an error that ends the stream; so is one past any sane delay."""
        parser = SSEParser(1 << 20)
        self.assertEqual(parser.feed(b"retry: " + b"9" * 5000 + b"\ndata: x\n\n"), [Event("message", "x", None)])
        parser.feed(b"retry: 99999999999\n\n")
        self.assertIsNone(parser.retry)

    def test_oneSpaceRemoved(self) -> None:
        events = parse([b"data: one\ndata:  two\ndata:three\ndata:\tfour\n\n"])
        self.assertEqual(events, [Event("message", "one\n two\nthree\n\tfour", None)])
        self.assertEqual(parse([b"event:  spaced\ndata: x\n\n"])[0].event, " spaced")

    def test_colonInValue(self) -> None:
        self.assertEqual(parse([b'data: {"a": "b:c"}\n\n']), [Event("message", '{"a": "b:c"}', None)])

    def test_unknownFieldIgnored(self) -> None:
        self.assertEqual(parse([b"foo: bar\nDATA: no\ndata: yes\n\n"]), [Event("message", "yes", None)])

    def test_invalidUtf8Replaced(self) -> None:
        self.assertEqual(parse([b"data: \xff\n\n"]), [Event("message", "\ufffd", None)])


class ByteOrderMarkTests(SynchronousTestCase):
    BOM = b"\xef\xbb\xbf"

    def test_leadingByteOrderMarkSkipped(self) -> None:
        """A byte-order mark at the start is skipped, even split across chunks."""
        stream = self.BOM + b"data: first\n\n"
        for cut in range(len(stream)):
            self.assertEqual(parse([stream[:cut], stream[cut:]]), [Event("message", "first", None)], cut)

    def test_onlyAtTheStart(self) -> None:
        """Later, the same bytes are part of a field name, as the standard says."""
        self.assertEqual(parse([b"data: a\n\n" + self.BOM + b"data: b\n\n"]), [Event("message", "a", None)])


class SizeTests(SynchronousTestCase):
    def test_atTheLimit(self) -> None:
        # The limit counts the data as delivered: its bytes, a newline between lines.
        self.assertEqual(parse([b"data: " + b"x" * 99 + b"\n\n"], max_event=100), [Event("message", "x" * 99, None)])

    def test_tooLargeInOneChunk(self) -> None:
        parser = SSEParser(100)
        self.assertRaises(EventTooLarge, parser.feed, b"data: " + b"x" * 200 + b"\n\n")

    def test_tooLargeOverManyLines(self) -> None:
        parser = SSEParser(95)
        for _ in range(9):
            self.assertEqual(parser.feed(b"data: " + b"x" * 9 + b"\n"), [])
        self.assertRaises(EventTooLarge, parser.feed, b"data: " + b"x" * 9 + b"\n")

    def test_tooLargeInSmallChunksWithoutNewline(self) -> None:
        """A line that never ends is refused as soon as it is too long,
        not when (or if) its newline comes."""
        parser = SSEParser(1000)
        parser.feed(b"data: ")
        fed = 6
        with self.assertRaises(EventTooLarge):
            while fed < 100_000:
                parser.feed(b"x" * 10)
                fed += 10
        self.assertLessEqual(fed, 1020)

    def test_limitIsTheDataAsDelivered(self) -> None:
        """
        An event whose data is exactly the limit passes, one byte more is
        refused, wherever the chunks end (inside the field name, the value
        or the newline).
        """
        fits = b"data: " + b"x" * 6 + b"\ndata:" + b"y" * 3 + b"\n\n"  # "xxxxxx\nyyy": 10 bytes
        over = fits.replace(b"yyy", b"yyyy")
        for cut in range(1, len(fits)):
            self.assertEqual(parse([fits[:cut], fits[cut:]], max_event=10), [Event("message", "xxxxxx\nyyy", None)], cut)
            self.assertRaises(EventTooLarge, parse, [over[:cut], over[cut:]], max_event=10)

    def test_limitCountsBytesNotCharacters(self) -> None:
        data = "\u00e9" * 5  # ten bytes of UTF-8
        stream = f"data: {data}\n\n".encode()
        self.assertEqual(parse(bytewise(stream), max_event=10), [Event("message", data, None)])
        self.assertRaises(EventTooLarge, parse, bytewise(stream), max_event=9)

    def test_otherLinesBoundedOnTheirOwn(self) -> None:
        """A line that is not data (a comment, an id) longer than the limit is refused, in one chunk or many."""
        for line in (b": " + b"c" * 20, b"id: " + b"i" * 20):
            self.assertRaises(EventTooLarge, parse, [line + b"\n"], max_event=16)
            self.assertRaises(EventTooLarge, parse, bytewise(line), max_event=16)

    def test_sizeResetsAfterEachEvent(self) -> None:
        parser = SSEParser(100)
        for _ in range(50):
            self.assertEqual(len(parser.feed(b"data: " + b"x" * 90 + b"\n\n")), 1)

    def test_linearTime(self) -> None:
        """A 16 MiB event in 64 KiB chunks: no re-scan of the buffer."""
        size = 16 << 20
        parser = SSEParser(size + 1024)
        payload = b"x" * (64 << 10)
        start = time.perf_counter()
        self.assertEqual(parser.feed(b"data: "), [])
        for _ in range(size // len(payload)):
            self.assertEqual(parser.feed(payload), [])
        (event,) = parser.feed(b"\n\n")
        elapsed = time.perf_counter() - start
        self.assertEqual(len(event.data), size)
        self.assertLess(elapsed, 2.0)


class LastEventIdTests(SynchronousTestCase):
    """What a client resumes from: only the ids of events it received whole."""

    def test_idOfAnEventCutOffDoesNotCount(self) -> None:
        parser = SSEParser(1024)
        parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
        # The stream breaks here: event 2 was never dispatched.
        self.assertEqual(parser.last_event_id, "1")
        self.assertEqual(parser.feed(b"\n"), [Event("message", "b", "2")])
        self.assertEqual(parser.last_event_id, "2")

    def test_idLineAloneNotYetCounted(self) -> None:
        parser = SSEParser(1024)
        parser.feed(b"id: 7\n")
        self.assertIsNone(parser.last_event_id)

    def test_primingEvent(self) -> None:
        """The event a Streamable HTTP server sends first: an id, a retry and empty data."""
        parser = SSEParser(1024)
        self.assertEqual(parser.feed(b"id: event-1\nretry: 500\ndata: \n\n"), [Event("message", "", "event-1")])
        self.assertEqual((parser.last_event_id, parser.retry), ("event-1", 500))
