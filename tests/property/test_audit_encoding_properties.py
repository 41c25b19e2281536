"""
An audit record is encoded by orjson when its values allow it
(L{twisted_mcp.policy.audit.records._encode_record}): the bytes must be
exactly those of the canonical encoder, or the hash chain of a trail would
depend on which encoder wrote it, and a verifier would reject the record.
"""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.policy.audit.records import _canonical, _dumps_strict, _encode_record, _fast_canonical, digest_arguments

# Every code point but surrogates (orjson refuses those; the record then takes the old way).
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
scalars = st.one_of(
    texts,
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(texts, max_size=4),
    st.dictionaries(texts, st.integers(), max_size=3),
)
records = st.dictionaries(texts, scalars, max_size=24)


class FastCanonicalProperties(SynchronousTestCase):
    @given(records)
    def test_same_bytes_as_the_canonical_encoder(self, record: dict) -> None:
        """Whenever the fast encoding is used, it is byte for byte the canonical one."""
        fast = _fast_canonical(record)
        if fast is not None:
            self.assertEqual(fast, _dumps_strict(record).encode("utf-8"))

    @given(records)
    def test_encode_record_unchanged(self, record: dict) -> None:
        """What a record is stored as does not depend on the fast path."""
        try:
            expected = _dumps_strict(record).encode("utf-8")
        except (TypeError, ValueError):
            return  # sanitized first: the fast path never takes such a record
        self.assertEqual(_encode_record(record), (expected, record))

    @given(records)
    def test_argument_digest_unchanged(self, arguments: dict) -> None:
        """An argument digest is the SHA-256 of the canonical (lenient) encoding, whichever encoder wrote it."""
        self.assertEqual(digest_arguments(arguments), "sha256:" + hashlib.sha256(_canonical(arguments)).hexdigest())


class FastCanonicalFloats(SynchronousTestCase):
    @given(
        st.floats(min_value=1e-4, max_value=1e16, exclude_max=True)
        | st.floats(min_value=-1e16, max_value=-1e-4, exclude_min=True)
    )
    def test_fixed_notation_range(self, value: float) -> None:
        """The floats taken without comparing their text: orjson writes them as repr does."""
        record = {"v": value}
        self.assertEqual(_fast_canonical(record), _dumps_strict(record).encode("utf-8"))


class FastCanonicalExamples(SynchronousTestCase):
    def test_typical_record_is_fast(self) -> None:
        """A call's record (strings, None, ints, floats in the usual forms, roles) takes the fast path."""
        record = {
            "id": "ab12-7", "time": 1733300000.1234567, "principal": "bench", "roles": ["user", "admin"],
            "method": "tools/call", "reason": None, "error_code": -32602, "latency_ms": 0.123, "result_bytes": 120,
            "seq": 5, "prev": "sha256:" + "0" * 64, "subject": "caf\u00e9 \u2028 \x7f \x00",
        }  # fmt: skip
        self.assertEqual(_fast_canonical(record), _dumps_strict(record).encode("utf-8"))

    def test_what_orjson_writes_differently_is_left_to_the_canonical_encoder(self) -> None:
        """Floats orjson writes in another form (1e-5), NaN, big ints, a lone surrogate, a nested dict, a key not a string: None."""
        for value in (1e-05, 1.5e-07, float("nan"), float("inf"), 1 << 64, -(1 << 63) - 1, "\ud800", {"a": 1}, [1]):
            self.assertIsNone(_fast_canonical({"v": value}), value)
        self.assertIsNone(_fast_canonical({1: "a"}))
