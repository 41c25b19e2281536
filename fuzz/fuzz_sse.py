"""
Fuzz target: L{twisted_mcp.wire.sse.SSEParser}.

Input: one byte that seeds the chunk sizes, then the stream.  Oracle: the
chunked stream gives the events, retry and last event id of the stream fed
at once, and so does the stream after a byte-order mark; with a small limit
the parser only ever raises EventTooLarge, and refuses the chunked stream
exactly when it refuses the stream fed at once.
"""

import random
import sys

import atheris

with atheris.instrument_imports(include=["twisted_mcp"]):
    from twisted_mcp.wire.sse import EventTooLarge, SSEParser

BOM = b"\xef\xbb\xbf"
SMALL = 32


def parse(chunks, limit):
    parser = SSEParser(limit)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events, parser.retry, parser.last_event_id


def chunked(stream, seed):
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(stream):
        n = rng.randint(1, 32)
        chunks.append(stream[i : i + n])
        i += n
    return chunks


def outcome(chunks, limit):
    try:
        return parse(chunks, limit)
    except EventTooLarge:
        return "refused"


def TestOneInput(data):
    if not data:
        return
    seed, stream = data[0], data[1:]
    whole = parse([stream], 1 << 30)
    split = parse(chunked(stream, seed), 1 << 30)
    if whole != split:
        raise AssertionError(f"chunking changed the events: {split!r} != {whole!r}")
    if not stream.startswith(BOM) and parse(chunked(BOM + stream, seed), 1 << 30) != whole:
        raise AssertionError("a leading byte-order mark changed the events")
    small = outcome(chunked(stream, seed), SMALL)
    if small != outcome([stream], SMALL):
        raise AssertionError(f"chunking changed the outcome under a limit of {SMALL}: {small!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
