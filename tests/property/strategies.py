"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """C{data} cut into consecutive non-empty chunks at arbitrary points."""
    cuts = draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=min(len(data), 40)))
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def stream_and_chunks(streams: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[bytes, list[bytes]]]:
    return streams.flatmap(lambda data: st.tuples(st.just(data), chunkings(data)))
