"""
Fuzz target: L{twisted_mcp.wire.sse.SSEParser}.

Input: one byte that seeds the chunk sizes, then the stream.  Oracle: the
chunked stream gives the events, retry and last event id of the stream fed
at once; with a small limit the parser only ever raises EventTooLarge.
"""

import random
import sys

import atheris

with atheris.instrument_imports(include=["twisted_mcp"]):
    from twisted_mcp.wire.sse import EventTooLarge, SSEParser


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


def TestOneInput(data):
    if not data:
        return
    seed, stream = data[0], data[1:]
    whole = parse([stream], 1 << 30)
    split = parse(chunked(stream, seed), 1 << 30)
    if whole != split:
        raise AssertionError(f"chunking changed the events: {split!r} != {whole!r}")
    try:
        parse(chunked(stream, seed), 32)
    except EventTooLarge:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
