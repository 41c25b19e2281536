"""
Fuzz target: L{twisted_mcp.wire.framing.LineFramer}.

Input: one byte for MAX_LENGTH (1..256), one byte that seeds the read
sizes, then the stream.  Oracle: the stream cut into reads gives the same
messages, overlong reports and pending bytes as the stream read at once,
and the framer never buffers more than MAX_LENGTH; an overlong report's
head is the start of its line (never past its newline) and holds more than
MAX_LENGTH bytes of it, however the line arrived.
"""

import random
import sys

import atheris

with atheris.instrument_imports(include=["twisted_mcp"]):
    from twisted.internet.testing import StringTransport

    from twisted_mcp.wire.framing import LineFramer


class Recorder(LineFramer):
    def __init__(self, limit):
        super().__init__()
        self.MAX_LENGTH = limit
        self.lines = []
        self.heads = []
        self.makeConnection(StringTransport())

    def lineReceived(self, line):
        self.lines.append(line)

    def lineLengthExceeded(self, head, size):
        if size <= self.MAX_LENGTH:
            raise AssertionError(f"overlong report of {size} bytes, limit {self.MAX_LENGTH}")
        if b"\n" in head or len(head) <= min(self.MAX_LENGTH, 4095):
            raise AssertionError(f"overlong head {head!r}, limit {self.MAX_LENGTH}")
        self.heads.append(head)


def frame(limit, chunks):
    framer = Recorder(limit)
    for chunk in chunks:
        framer.dataReceived(chunk)
        if framer.pending_bytes() > limit:
            raise AssertionError(f"{framer.pending_bytes()} bytes buffered, limit {limit}")
    return framer


def reads(stream, seed):
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(stream):
        n = rng.randint(1, 64)
        chunks.append(stream[i : i + n])
        i += n
    return chunks


def TestOneInput(data):
    if len(data) < 2:
        return
    limit, seed, stream = data[0] + 1, data[1], data[2:]
    whole = frame(limit, [stream])
    split = frame(limit, reads(stream, seed))
    if (split.lines, len(split.heads), split.pending_bytes()) != (whole.lines, len(whole.heads), whole.pending_bytes()):
        raise AssertionError(f"chunking changed the result: {split.lines!r} != {whole.lines!r}")
    for head, full in zip(split.heads, whole.heads, strict=True):
        if not full.startswith(head):
            raise AssertionError(f"head {head!r} read in chunks is not the start of {full!r}")
    for line in whole.lines:
        if len(line) > limit or b"\n" in line or not line.strip():
            raise AssertionError(f"delivered {line!r} (limit {limit})")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
