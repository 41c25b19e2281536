"""
An audit record is encoded by orjson when its values allow it
(L{twisted_mcp.policy.audit.records._encode_record}): the bytes must be
exactly those of the canonical encoder, or the hash chain of a trail would
depend on which encoder wrote it, and a verifier would reject the record.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.policy.audit.config import AuditConfig
from twisted_mcp.policy.audit.log import AuditLog, SynchronousThreads
from twisted_mcp.policy.audit.records import (
    _canonical,
    _Chain,
    _dumps_strict,
    _encode_record,
    _fast_canonical,
    _Flat,
    digest_arguments,
    flat_copy,
    flat_scalar,
)

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


# -- a call's record, checked as it is queued (flat_copy) and sealed without a second check --------

long_texts = st.text(st.characters(), max_size=300)  # lone surrogates and strings past the bound too
queued_values = st.one_of(
    long_texts,
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(long_texts, max_size=4),
    st.lists(st.integers(), max_size=2),
    st.tuples(long_texts),
    st.dictionaries(texts, st.integers(), max_size=3),
)
queued_keys = st.one_of(long_texts, st.integers(), st.sampled_from(["arguments", "seq", "prev", "digest", "id", "time"]))
queued = st.dictionaries(queued_keys, queued_values, max_size=20)
#: maxFieldBytes: each value is at most this long once bounded (short = limit // 4 characters skip the check).
limits = st.sampled_from([256, 1024])


def _queued_by(log: AuditLog, record: dict[str, Any]) -> dict[str, Any]:
    log.record(record)
    return log._queue.pop()


class FlatCopyProperties(SynchronousTestCase):
    @given(queued, limits)
    def test_the_same_copy_as_field_by_field(self, fields: dict, limit: int) -> None:
        """Whenever flat_copy takes a record, it copies it as the field-by-field copy does, its lists too."""
        log = AuditLog(AuditConfig(sink="file", path="/nonexistent/audit.jsonl", maxFieldBytes=limit), Clock(), SynchronousThreads())
        copied = flat_copy(fields, limit // 4)
        if copied is None:
            return
        expected = log._bounded(fields, limit, limit // 4)
        self.assertEqual(copied, expected)
        self.assertEqual(list(copied), list(expected))
        for key, value in copied.items():
            if type(value) is list:
                self.assertIsNot(value, fields[key])

    @given(queued, limits, st.integers(min_value=0, max_value=1 << 66), st.sampled_from([None, b"k" * 32]),
           st.sampled_from([200, 65536]))
    def test_sealed_byte_for_byte_as_before(self, fields: dict, limit: int, seq: int, key: bytes | None, max_bytes: int) -> None:
        """A queued record seals to the same line, digest and record whether or not it is a _Flat (fitted too)."""
        log = AuditLog(AuditConfig(sink="file", path="/nonexistent/audit.jsonl", maxFieldBytes=limit), Clock(), SynchronousThreads())
        record = _queued_by(log, fields)
        chain = _Chain(max_bytes, key)
        prev = "sha256:" + "ab" * 32
        self.assertEqual(chain.seal([record], seq, prev), chain.seal([dict(record)], seq, prev))

    @given(st.lists(queued, min_size=1, max_size=4), st.sampled_from([None, b"k" * 32]), st.sampled_from([200, 65536]))
    def test_lines_are_the_sealed_lines(self, batch: list, key: bytes | None, max_bytes: int) -> None:
        """What the file sink writes (lines) is the sealed records' lines, each with its newline, and the chain's head."""
        log = AuditLog(AuditConfig(sink="file", path="/nonexistent/audit.jsonl"), Clock(), SynchronousThreads())
        records = [_queued_by(log, fields) for fields in batch]
        chain = _Chain(max_bytes, key)
        sealed = chain.seal([dict(r) for r in records], 7, "sha256:" + "cd" * 32)
        self.assertEqual(
            chain.lines(records, 7, "sha256:" + "cd" * 32),
            (b"".join(s.line + b"\n" for s in sealed), sealed[-1].seq, sealed[-1].digest),
        )

    @given(st.dictionaries(texts, scalars, max_size=24), st.one_of(scalars, long_texts))
    def test_flat_records_encode_as_the_canonical_encoder(self, fields: dict, added: Any) -> None:
        """A _Flat record, with a scalar flat_scalar admits added, is what orjson encodes as _dumps_strict does."""
        record = flat_copy(fields, 1 << 20)
        if type(record) is not _Flat:
            return
        if flat_scalar(added):
            record["added"] = added
        try:
            expected = _dumps_strict(record).encode("utf-8")
        except (TypeError, ValueError):
            self.assertTrue(any(type(v) is str and _has_surrogate(v) for v in record.values()) or _has_surrogate_key(record))
            return
        try:
            fast = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return  # a lone surrogate: the seal falls back to the canonical encoder
        self.assertEqual(fast, expected)


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _has_surrogate_key(record: dict) -> bool:
    return any(_has_surrogate(k) for k in record) or any(type(v) is list and any(_has_surrogate(i) for i in v) for v in record.values())


class FlatCopyExamples(SynchronousTestCase):
    def test_a_calls_record_is_queued_flat(self) -> None:
        """The pipeline's record of a call is queued as a _Flat: the worker encodes it without checking it again."""
        log = AuditLog(AuditConfig(sink="file", path="/nonexistent/audit.jsonl"), Clock(), SynchronousThreads())
        fields = {
            "id": "ab12-7", "time": 1733300000.1234567, "principal": "bench", "roles": ["user"], "session": "stdio",
            "method": "tools/call", "kind": "tool", "subject": "echo__echo", "tool": "echo__echo", "backend": "echo",
            "decision": "allow", "reason": None, "outcome": "ok", "error_code": None, "latency_ms": 0.675,
            "result_bytes": 83, "arguments_digest": "sha256:" + "0" * 64, "protocol": "2025-11-25",
        }  # fmt: skip
        record = _queued_by(log, fields)
        self.assertIs(type(record), _Flat)
        self.assertEqual(record, fields)
        self.assertIsNot(record["roles"], fields["roles"])

    def test_what_needs_more_than_a_copy_is_not_flat(self) -> None:
        """Long text, nested values, arguments, a key not a string: the field-by-field copy; odd floats: a plain dict."""
        for fields in ({"a": "x" * 300}, {"a": {"b": 1}}, {"a": [1]}, {"arguments": {}}, {1: "a"}, {"a": ("x",)}):
            self.assertIsNone(flat_copy(fields, 256), fields)
        for fields in ({"a": 1e-05}, {"a": float("nan")}, {"a": 1 << 64}):
            copied = flat_copy(fields, 256)
            self.assertIs(type(copied), dict, fields)
            self.assertEqual(copied, fields)

    def test_a_time_added_in_exponent_notation_leaves_it_plain(self) -> None:
        """A record without a time gets the clock's; one orjson would write otherwise makes the record a plain dict."""
        clock = Clock()
        clock.advance(1e-05)
        log = AuditLog(AuditConfig(sink="file", path="/nonexistent/audit.jsonl"), clock, SynchronousThreads())
        self.assertIs(type(_queued_by(log, {"id": "x"})), dict)
        clock.advance(1.0)
        self.assertIs(type(_queued_by(log, {"id": "x"})), _Flat)
