"""What goes in an audit record and how it is sealed: redaction, bounded fields, canonical JSON, the hash chain."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable, NamedTuple
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import attrs
import orjson

from twisted_mcp.policy.audit.keys import chain_digest
from twisted_mcp.redaction import is_secret_name

REDACTED = "[REDACTED]"
_MAX_NODES = 1_000_000  # a bound on copying (and on cycles) in redact()


# -- redaction and digests -----------------------------------------------------


def redact(arguments: Any) -> Any:
    """
    A deep copy of C{arguments} in which every value under a key that
    L{is_secret_name} names a secret (the log's rule too) is
    C{"[REDACTED]"}, at any depth, inside lists too.

    @raise ValueError: more than a million values (or a cycle).
    """
    return _walk(arguments, redact=True, sanitize=False)


def digest_arguments(arguments: Any) -> str:
    """
    C{"sha256:<hex>"} of the canonical JSON of C{arguments} (keys sorted,
    separators C{","} and C{":"}, not ASCII-escaped, UTF-8): the same
    arguments give the same digest whatever their key order.  Never raises
    for values that came from JSON, however deeply nested.
    """
    data = _fast_canonical(arguments) if type(arguments) is dict else None  # a flat object: the same bytes, sooner
    return "sha256:" + hashlib.sha256(_canonical(arguments) if data is None else data).hexdigest()


def redact_uri(uri: str) -> str:
    """
    C{uri} as an audit record keeps it: the password of its userinfo and
    the values of query parameters whose names L{is_secret_name} calls
    secret (C{?token=...}) are C{"[REDACTED]"}; everything else, the path
    included, is kept, so the record still says which resource it was.
    A URI with nothing to hide is returned unchanged.
    """
    if "@" not in uri and "=" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    netloc, query = parts.netloc, parts.query
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    if query:
        pairs = []
        for pair in query.split("&"):
            name, eq, _ = pair.partition("=")
            pairs.append(f"{name}={REDACTED}" if eq and is_secret_name(unquote_plus(name)) else pair)
        query = "&".join(pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return uri
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def bound_text(text: str, limit: int) -> str:
    """
    C{text} if its UTF-8 takes at most C{limit} bytes; otherwise as much of
    its start as fits, C{"…"}, and the size and SHA-256 of the whole, so a
    long value costs C{limit} bytes and can still be matched against the
    original.
    """
    if len(text) * 4 <= limit:  # no need to encode: it fits whatever it holds
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    tail = f"…[{len(data)} bytes, sha256:{hashlib.sha256(data).hexdigest()}]"
    keep = max(0, limit - len(tail.encode("utf-8")))
    return data[:keep].decode("utf-8", "ignore") + tail


def _walk(value: Any, redact: bool, sanitize: bool, limit: int | None = None) -> Any:
    """
    Copy JSON-like data without recursion (arguments may nest as deeply as
    the JSON parser allowed).  C{redact}: hide values under secret keys.
    C{sanitize}: make every value encodable as strict JSON in UTF-8 (text
    for non-finite numbers, lone surrogates and other types).  C{limit}:
    bound every string, keys too (L{bound_text}).
    """
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    nodes = 0
    while stack:
        container, key, item = stack.pop()
        nodes += 1
        if nodes > _MAX_NODES:
            raise ValueError(f"more than {_MAX_NODES} values (or a reference cycle)")
        if isinstance(item, dict):
            new: dict[Any, Any] = {}
            container[key] = new
            for k, v in item.items():
                if sanitize:
                    k = _clean_key(k)
                secret = redact and isinstance(k, str) and is_secret_name(k)
                if limit is not None and type(k) is str:
                    k = bound_text(k, limit)
                if secret:
                    new[k] = REDACTED
                else:
                    new[k] = None
                    stack.append((new, k, v))
        elif isinstance(item, (list, tuple)):
            items: list[Any] = [None] * len(item)
            container[key] = items
            for i, v in enumerate(item):
                stack.append((items, i, v))
        else:
            if sanitize:
                item = _clean_scalar(item)
            if limit is not None and type(item) is str:
                item = bound_text(item, limit)
            container[key] = item
    return root[0]


def _clean_key(key: Any) -> str:
    if isinstance(key, str):
        return _clean_str(key)
    if key is None or isinstance(key, (bool, int, float)):
        return _clean_str(json.dumps(key))
    return _clean_str(repr(key))


def _clean_str(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean_scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, int):
        try:
            str(value)
        except ValueError:
            return "[integer too large]"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return _clean_str(repr(value))


def _no_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encoder(allow_nan: bool) -> Callable[[Any], str]:
    """
    Canonical JSON text: keys sorted, no spaces, not ASCII-escaped.  One C
    encoder, built once (C{json.dumps} builds one per call).  It has no
    cycle check: a cycle ends in RecursionError, which callers handle.
    """
    if _make_encoder is None:  # pragma: no cover - pure-Python json
        return json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan).encode
    encode = _make_encoder(
        None, _no_default, json.encoder.encode_basestring, None, ":", ",", True, False, allow_nan  # type: ignore[attr-defined]
    )
    return lambda value: "".join(encode(value, 0))


try:
    from _json import make_encoder as _make_encoder
except ImportError:  # pragma: no cover
    _make_encoder = None


_dumps_lenient = _encoder(True)
_dumps_strict = _encoder(False)


def _canonical(value: Any) -> bytes:
    """
    Canonical JSON, lenient (for argument digests and for checking
    records): never raises.  Too deep for the C encoder: the iterative one
    (same text).  Not JSON at all: the sanitized value's text.
    """
    try:
        text = _dumps_lenient(value)
    except (TypeError, ValueError, RecursionError):
        try:
            text = _dumps_iterative(value)
        except (TypeError, ValueError):
            try:
                text = _dumps_iterative(_walk(value, redact=False, sanitize=True))
            except ValueError:
                text = json.dumps(f"[unencodable {type(value).__name__}]")
    return text.encode("utf-8", "surrogatepass")


#: The ints orjson encodes (64 bits, signed or not); it refuses others.
_ORJSON_INTS = range(-(1 << 63), 1 << 64)


def _fast_canonical(record: dict[str, Any]) -> bytes | None:
    """
    The canonical JSON of a flat record, as L{_dumps_strict} writes it, by
    orjson (a seventh of the time, in the worker thread that holds the
    GIL): only when every value is one whose text the two encoders agree
    on, byte for byte: strings (every code point is escaped the same; a
    lone surrogate makes orjson refuse), None, booleans, 64-bit ints, floats
    whose repr orjson writes alike (not C{1e-05}, say), lists of strings.
    None for anything else: the caller encodes it as before.
    """
    for value in record.values():
        kind = type(value)
        if kind is str or value is None or kind is bool:
            continue
        if kind is int:
            if value in _ORJSON_INTS:
                continue
            return None
        if kind is float:
            # Between 1e-4 and 1e16 both write the shortest round-trip digits
            # in fixed notation (checked over millions of values); elsewhere
            # each float is compared (repr costs as much as the whole record).
            if 1e-4 <= abs(value) < 1e16 or value == 0.0:
                continue
            if math.isfinite(value) and orjson.dumps(value) == float.__repr__(value).encode("ascii"):
                continue
            return None
        if kind is list and all(type(v) is str for v in value):
            continue
        return None
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: a key not a string, a lone surrogate
        return None


class _Flat(dict):  # type: ignore[type-arg]
    """
    A record as L{flat_copy} copied it: every key a string, every value a
    string, None, a boolean, a 64-bit int, a float in fixed notation (the
    rules of L{_fast_canonical}) or a list of strings.  Its values were
    checked as they were copied, on the reactor, and the copy is the audit
    log's own (nothing changes its values), so the worker encodes it with
    orjson at once, without checking them again (L{_Chain.seal}).
    """

    __slots__ = ()


#: The field names of records flat_copy took, in order, that need no check
#: again: strings of at most _SHORT_NAME characters, C{arguments} not among
#: them (a handful in practice, the pipeline's kinds of record; bounded).
_FLAT_NAMES: set[tuple[str, ...]] = set()
#: At most the C{short} of any C{maxFieldBytes} (at least 256 bytes).
_SHORT_NAME = 64


def flat_copy(fields: dict[str, Any], short: int) -> dict[str, Any] | None:
    """
    A copy of C{fields} (its lists copied too) when nothing in it needs
    bounding or a deep copy: every key a string and every string of at most
    C{short} characters, every value a string, None, a boolean, an int, a
    float or a list of strings, and no C{arguments}.  A L{_Flat} when its
    values are also ones orjson encodes as the canonical encoder does; a
    plain dict when not (a float in exponent notation, a huge int).  None
    for anything else: the caller copies it field by field.
    """
    record = _Flat(fields)
    names = tuple(record)
    if short < _SHORT_NAME or names not in _FLAT_NAMES:
        for key in names:
            if type(key) is not str or len(key) > short:
                return None
        if "arguments" in record:
            return None
        if len(_FLAT_NAMES) < 256 and max(map(len, names), default=0) <= _SHORT_NAME:
            _FLAT_NAMES.add(names)
    flat = True
    for key, value in record.items():
        kind = type(value)
        if kind is str:
            if len(value) > short:
                return None
        elif value is None:
            pass
        elif kind is float:
            if not (1e-4 <= abs(value) < 1e16 or value == 0.0):
                flat = False
        elif kind is list:
            for item in value:
                if type(item) is not str or len(item) > short:
                    return None
            record[key] = value[:]  # the roles: a copy the caller cannot change
        elif kind is int:
            if value not in _ORJSON_INTS:
                flat = False
        elif kind is not bool:
            return None
    return record if flat else dict(record)


def flat_scalar(value: Any) -> bool:
    """Whether a L{_Flat} record stays one with C{value} added: a string, or a scalar L{flat_copy} leaves flat."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return value in _ORJSON_INTS
    if kind is float:
        return 1e-4 <= abs(value) < 1e16 or value == 0.0
    return False


def _encode_record(record: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """
    The canonical, strict JSON of a record to store (no NaN, valid UTF-8),
    and the record it encodes: a sanitized copy if the original could not
    be encoded as it was.
    """
    fast = _fast_canonical(record)
    if fast is not None:
        return fast, record
    try:
        return _dumps_strict(record).encode("utf-8"), record
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        clean = _walk(record, redact=False, sanitize=True)
        try:
            return _dumps_strict(clean).encode("utf-8"), clean
        except RecursionError:
            return _dumps_iterative(clean).encode("utf-8"), clean
    except (TypeError, ValueError) as e:
        minimal = {
            "id": _clean_scalar(record.get("id")),
            "time": _clean_scalar(record.get("time")),
            "seq": record["seq"],
            "prev": record["prev"],
            "note": f"the record could not be encoded: {_one_line(e)}",
        }
        return _dumps_strict(minimal).encode("utf-8"), minimal


def _dumps_iterative(value: Any) -> str:
    """
    The same text as the canonical encoder, without recursion: for values
    nested deeper than the C encoder's recursion limit.
    """
    encode_str = json.encoder.encode_basestring  # type: ignore[attr-defined]
    parts: list[str] = []
    stack: list[tuple[bool, Any]] = [(False, value)]
    nodes = 0
    while stack:
        literal, item = stack.pop()
        if literal:
            parts.append(item)
            continue
        nodes += 1
        if nodes > _MAX_NODES:
            raise ValueError(f"more than {_MAX_NODES} values (or a reference cycle)")
        if isinstance(item, str):
            parts.append(encode_str(item))
        elif item is None:
            parts.append("null")
        elif item is True:
            parts.append("true")
        elif item is False:
            parts.append("false")
        elif isinstance(item, int):
            parts.append(int.__repr__(item))
        elif isinstance(item, float):
            if item != item:
                parts.append("NaN")
            elif math.isinf(item):
                parts.append("Infinity" if item > 0 else "-Infinity")
            else:
                parts.append(float.__repr__(item))
        elif isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                raise TypeError("keys must be strings")
            entries = sorted(item.items())
            parts.append("{")
            stack.append((True, "}"))
            for i in range(len(entries) - 1, -1, -1):
                k, v = entries[i]
                stack.append((False, v))
                stack.append((True, encode_str(k) + ":"))
                if i:
                    stack.append((True, ","))
        elif isinstance(item, (list, tuple)):
            parts.append("[")
            stack.append((True, "]"))
            for i in range(len(item) - 1, -1, -1):
                stack.append((False, item[i]))
                if i:
                    stack.append((True, ","))
        else:
            raise TypeError(f"{type(item).__name__} is not JSON serializable")
    return "".join(parts)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
        if e.filename:
            text += f": {e.filename}"
    else:
        text = str(e) or type(e).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


# -- the chain ------------------------------------------------------------------


class _Sealed(NamedTuple):
    record: dict[str, Any]  # as stored, with seq and prev, without digest
    line: bytes  # the stored JSON (with digest), no newline
    seq: int
    digest: str


#: Fields a record always keeps whole: they are small and say where it belongs.
_CORE_FIELDS = frozenset(("id", "time", "seq", "prev"))


@attrs.frozen
class _Chain:
    """How records are sealed into the chain (in the worker thread)."""

    max_record_bytes: int = 65536
    key: bytes | None = attrs.field(default=None, repr=False)

    def seal(self, records: list[dict[str, Any]], seq: int, prev: str) -> list[_Sealed]:
        """Give each record its place in the chain after (C{seq}, C{prev})."""
        out = []
        for record in records:
            seq += 1
            full, line, prev = self._seal_one(record, seq, prev)
            out.append(_Sealed(full, line, seq, prev))
        return out

    def lines(self, records: list[dict[str, Any]], seq: int, prev: str) -> tuple[bytes, int, str]:
        """
        What L{seal} stores of C{records}, as a JSON lines file does: their
        lines, each ending in a newline; and the last one's seq and digest.
        Nothing of a record outlives its line (a batch of records sealed at
        once is a batch of objects for the garbage collector to look at).
        """
        lines = []
        for record in records:
            seq += 1
            _, line, prev = self._seal_one(record, seq, prev)
            lines.append(line)
        lines.append(b"")
        return b"\n".join(lines), seq, prev

    def _seal_one(self, record: dict[str, Any], seq: int, prev: str) -> tuple[dict[str, Any], bytes, str]:
        """C{record} at C{seq} after C{prev}: the record as stored (without its digest), its line and its digest."""
        full = dict(record)
        full["seq"] = seq
        full["prev"] = prev
        body = None
        if type(record) is _Flat:
            # Its values were checked when it was queued; seq is an int and
            # prev a string: what _fast_canonical would pass.
            try:
                body = orjson.dumps(full, option=orjson.OPT_SORT_KEYS)
            except TypeError:  # a lone surrogate, a seq past 64 bits: the canonical encoder decides
                pass
        if body is None or len(body) > self.max_record_bytes:
            body, full = self._fit(*(_encode_record(full) if body is None else (body, full)))
        digest = chain_digest(body, self.key)
        return full, b'%s,"digest":"%s"}' % (body[:-1], digest.encode("ascii")), digest

    def _fit(self, body: bytes, record: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """
        Within C{max_record_bytes}: the largest fields (recorded arguments,
        a long list of roles...) give way to their size and digest first.
        """
        if len(body) <= self.max_record_bytes:
            return body, record
        sizes = sorted(((len(_canonical(v)), k) for k, v in record.items() if k not in _CORE_FIELDS), reverse=True)
        fitted = dict(record)
        excess = len(body) - self.max_record_bytes
        for size, key in sizes:
            if excess <= 0:
                break
            fitted[key] = _omitted(_canonical(record[key]))
            excess -= size - len(fitted[key])
        return _dumps_strict(fitted).encode("utf-8"), fitted


def _omitted(data: bytes) -> str:
    return f"[omitted: {len(data)} bytes, sha256:{hashlib.sha256(data).hexdigest()}]"


def _record_digest(record: dict[str, Any], key: bytes | None = None) -> str:
    """The digest a record should carry (C{record} without its digest)."""
    return chain_digest(_canonical(record), key)


class _WriteFailed(Exception):
    """A batch was not (entirely) written; its first C{stored} records were."""

    def __init__(self, stored: int, cause: BaseException) -> None:
        super().__init__(stored, cause)
        self.stored = stored
        self.cause = cause
