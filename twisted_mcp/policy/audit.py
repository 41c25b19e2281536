"""
The audit trail: one record for every request that reaches policy, written
to a JSON lines file, an SQLite database or a PostgreSQL table, as a hash
chain that C{twisted-mcp audit verify} checks.

The chain.  Each stored record carries C{seq} (1, 2, 3... with no gaps),
C{prev} (the previous record's digest, C{""} for the first) and C{digest},
computed over the record's canonical JSON (keys sorted, no spaces, UTF-8)
with C{seq} and C{prev} but without C{digest}: C{"hmac-sha256:"} and its
HMAC under the trail's key when one is configured (C{audit.keyFile},
C{keyEnv} or C{keyCredential}), else C{"sha256:"} and its SHA-256, as
trails were written before keys existed (those stay verifiable).  Editing,
removing, inserting or reordering records breaks the chain where it
happened; with a key, recomputing the hashes does not repair it.  Records
cut from the I{end} leave no trace in the chain: a signed checkpoint of the
head (C{twisted-mcp audit checkpoint}, kept elsewhere) catches that.  See
L{twisted_mcp.policy.audit_keys} for what the key proves and what not.

What a record holds is bounded: every string field (and every string in
its lists and recorded arguments) to C{maxFieldBytes}, the stored record to
C{maxRecordBytes}; a longer value keeps its start, its size and its SHA-256.

When the chain is computed.  C{seq}, C{prev} and C{digest} are computed
when a record is actually written, from the last record stored.  Each JSON
lines file is its own chain starting at seq 1: a rotated (renamed) file is
noticed and the new file starts a new chain.  In SQLite and PostgreSQL the
last record is read inside the writing transaction, under a lock, so
several gateways may share one table and still form one chain.  A file has
one writer: the gateway takes an exclusive C{flock} on it.  The PostgreSQL
sink needs only INSERT and SELECT: its tables are created beforehand by
C{twisted-mcp audit init-db}, and writers take turns under an advisory
lock.

Threads.  Nothing here blocks the reactor: L{AuditLog.record} only queues;
one dedicated worker thread (a one-thread L{ThreadPool}) encodes, chains
and writes whatever is queued in one batch (one write, flush and fsync for
a file; one transaction for a database) and reports back through the
reactor.  If a write fails, the batch stays queued and is retried every
second; L{AuditLog.healthy} is False meanwhile.  A write that failed
half-way is cleaned up (a file is truncated back; a transaction rolls
back) and, where that is not certain, the records that did land are
recognised by their C{id} on the next attempt, so none is written twice.

Outages.  A record of a call that ran (anything but a refusal or a tool
listing) is never dropped.  Past C{maxQueue} records waiting, the oldest
refusal or listing not being written is dropped instead, counted, and reported once the sink works
again by a gap record (method C{audit/gap}) that C{verify} reports; with
no refusal left to drop the queue grows by the calls still in flight, and
the gate refuses new calls (L{AuditLog.refuses_calls}), whatever
C{onFailure} says: fail closed rather than run calls that cannot be
recorded.  What is still queued when the gateway stops (after
L{AuditLog.STOP_TIMEOUT}) is lost, and logged.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import sqlite3
import stat
import threading
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from twisted_mcp.config._check import _Checker, _describe, _join, _resolve
from twisted_mcp.policy.audit_keys import KEY_SOURCES, KEYED, chain_digest, load_key, read_checkpoint
from twisted_mcp.redaction import is_secret_name

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

_log = Logger()

SINKS = ("file", "sqlite", "postgres", "none")
ON_FAILURE = ("refuse", "allow")
DEFAULT_FILE = "twisted-mcp-audit.jsonl"
DEFAULT_SQLITE = "twisted-mcp-audit.sqlite"
SPILL_SUFFIX = ".spill.jsonl"
#: The spill file of a PostgreSQL trail, beside the config file.
DEFAULT_POSTGRES_SPILL = "twisted-mcp-audit.spill.jsonl"
TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # whole name (fullmatch)
MAX_TABLE_LENGTH = 48  # PostgreSQL names are at most 63 bytes, with room for "_principal"
SCHEMA_VERSION = 1
MIN_FIELD_BYTES = 256  # room for a start, "…", the size and the digest
MIN_RECORD_BYTES = 4096  # room for every field, each replaced by its digest
REDACTED = "[REDACTED]"
_MAX_NODES = 1_000_000  # a bound on copying (and on cycles) in redact()


# -- configuration ------------------------------------------------------------


@attrs.frozen
class AuditConfig:
    """The C{audit:} section of the config file."""

    sink: str = attrs.field(default="file", validator=attrs.validators.in_(SINKS))
    path: str | None = None
    dsn: str | None = attrs.field(default=None, repr=False)  # may hold a password
    # Validated here too: it is written into SQL.
    table: str = attrs.field(
        default="twisted_mcp_audit",
        validator=[attrs.validators.matches_re(TABLE_RE), attrs.validators.max_len(MAX_TABLE_LENGTH)],
    )
    recordArguments: bool = False
    onFailure: str = attrs.field(default="refuse", validator=attrs.validators.in_(ON_FAILURE))
    maxQueue: int = attrs.field(default=10000, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)])
    #: The longest string any field of a record keeps (UTF-8 bytes); longer
    #: ones keep their start, "…" and the size and SHA-256 of the whole.
    maxFieldBytes: int = attrs.field(
        default=1024, validator=[attrs.validators.instance_of(int), attrs.validators.ge(MIN_FIELD_BYTES)]
    )
    #: The most a stored record may take; beyond it its largest fields are
    #: replaced by their size and SHA-256.
    maxRecordBytes: int = attrs.field(
        default=65536, validator=[attrs.validators.instance_of(int), attrs.validators.ge(MIN_RECORD_BYTES)]
    )
    #: Where the chain's key came from ("keyFile /etc/x"), for messages; None: no key.
    keySource: str | None = None
    #: The HMAC key of the chain (see L{twisted_mcp.policy.audit_keys}); never shown.
    key: bytes | None = attrs.field(default=None, repr=False)
    #: Where records that could not be written before shutdown are kept
    #: until the next start; None: beside the file or database
    #: (L{spill_path}).
    spillFile: str | None = None

    def spill_path(self) -> str | None:
        """The spill file: C{spillFile}, else C{<path>.spill.jsonl}."""
        if self.spillFile is not None:
            return self.spillFile
        return f"{self.path}{SPILL_SUFFIX}" if self.path else None

    def describe(self) -> str:
        """Where records go, for logs and messages (never the DSN's password)."""
        if self.sink == "file":
            return f"file {self.path}"
        if self.sink == "sqlite":
            return f"sqlite {self.path} table {self.table}"
        if self.sink == "postgres":
            return f"postgres {_safe_dsn(self.dsn or '')} table {self.table}"
        return "none"


_AUDIT_KEYS = (
    "sink", "path", "dsn", "table", "recordArguments", "onFailure", "maxQueue", "maxFieldBytes", "maxRecordBytes", "spillFile"
) + KEY_SOURCES


def parse_audit(data: Any, path: str, base_dir: str | None, problems: list[str]) -> AuditConfig | None:
    """
    Check the config file's C{audit:} mapping (variables already expanded)
    and build an L{AuditConfig}.  Problems are appended to C{problems},
    each with its key path; returns None if there were any.

    Relative paths resolve against C{base_dir} (the config file's
    directory); the default file is C{twisted-mcp-audit.jsonl} there.
    """
    check = _Checker()
    spec = check.mapping(path, data)
    if spec is None:
        problems.extend(check.problems)
        return None
    check.unknown(path, spec, _AUDIT_KEYS)
    fields: dict[str, Any] = {}
    sink = spec.get("sink", "file")
    if sink not in SINKS:
        check.problem(_join(path, "sink"), f"expected one of {_choices(SINKS)}, got {_describe(sink)}")
        sink = None
    else:
        fields["sink"] = sink
    if "path" in spec:
        where = _join(path, "path")
        value = check.string(where, spec["path"])
        if value is not None:
            if sink in ("postgres", "none"):
                check.problem(where, 'only used with sink "file" or "sqlite"')
            fields["path"] = _resolve(value, base_dir)
    elif sink in ("file", "sqlite"):
        fields["path"] = _resolve(DEFAULT_FILE if sink == "file" else DEFAULT_SQLITE, base_dir)
    if "dsn" in spec:
        where = _join(path, "dsn")
        value = check.string(where, spec["dsn"])
        if value is not None:
            if sink != "postgres" and sink is not None:
                check.problem(where, 'only used with sink "postgres"')
            elif sink == "postgres":
                reason = _check_dsn(value)
                if reason is not None:
                    check.problem(where, reason)
            fields["dsn"] = value
    elif sink == "postgres":
        check.problem(
            _join(path, "dsn"),
            'missing: the PostgreSQL connection string (for example "postgresql://audit@db.example/audit" '
            "or \"host=db.example dbname=audit user=audit\"; put a password in ${VARIABLE} or ~/.pgpass)",
        )
    if "table" in spec:
        where = _join(path, "table")
        value = check.string(where, spec["table"])
        if value is not None:
            if sink in ("file", "none"):
                check.problem(where, 'only used with sink "sqlite" or "postgres"')
            elif not TABLE_RE.fullmatch(value) or len(value) > MAX_TABLE_LENGTH:
                check.problem(
                    where,
                    f"expected a table name of letters, digits and _ (not starting with a digit, "
                    f"at most {MAX_TABLE_LENGTH} characters), got {_describe(value)}",
                )
            else:
                fields["table"] = value
    if "recordArguments" in spec:
        fields["recordArguments"] = check.boolean(_join(path, "recordArguments"), spec["recordArguments"])
    if "onFailure" in spec:
        value = spec["onFailure"]
        if value not in ON_FAILURE:
            check.problem(
                _join(path, "onFailure"),
                f'expected "refuse" (refuse tool calls while the audit trail cannot be written) '
                f'or "allow" (let them pass unaudited), got {_describe(value)}',
            )
        else:
            fields["onFailure"] = value
    if "maxQueue" in spec:
        fields["maxQueue"] = check.integer(_join(path, "maxQueue"), spec["maxQueue"], 1, 10_000_000)
    if "maxFieldBytes" in spec:
        fields["maxFieldBytes"] = check.integer(_join(path, "maxFieldBytes"), spec["maxFieldBytes"], MIN_FIELD_BYTES, 1 << 20)
    if "maxRecordBytes" in spec:
        fields["maxRecordBytes"] = check.integer(_join(path, "maxRecordBytes"), spec["maxRecordBytes"], MIN_RECORD_BYTES, 64 << 20)
    field_max, record_max = fields.get("maxFieldBytes", 1024), fields.get("maxRecordBytes", 65536)
    if field_max is not None and record_max is not None and field_max > record_max:
        check.problem(_join(path, "maxFieldBytes"), f"must not be larger than {_join(path, 'maxRecordBytes')}")
    _parse_spill_file(check, path, spec, base_dir, fields)
    _parse_key(check, path, spec, base_dir, fields)
    if check.problems:
        problems.extend(check.problems)
        return None
    return AuditConfig(**fields)


def _parse_spill_file(check: _Checker, path: str, spec: dict[str, Any], base_dir: str | None, fields: dict[str, Any]) -> None:
    """Where unwritten records wait for the next start: given, or beside the config for PostgreSQL."""
    if "spillFile" in spec:
        where = _join(path, "spillFile")
        value = check.string(where, spec["spillFile"])
        if value is not None:
            if fields.get("sink") == "none":
                check.problem(where, 'not used with sink "none"')
            fields["spillFile"] = _resolve(value, base_dir)
    elif fields.get("sink") == "postgres":
        fields["spillFile"] = _resolve(DEFAULT_POSTGRES_SPILL, base_dir)


def _parse_key(check: _Checker, path: str, spec: dict[str, Any], base_dir: str | None, fields: dict[str, Any]) -> None:
    """At most one of keyFile, keyEnv, keyCredential; the key is read now, so a missing one stops start-up."""
    given = [source for source in KEY_SOURCES if source in spec]
    if len(given) > 1:
        check.problem(_join(path, given[1]), f"only one of {', '.join(KEY_SOURCES)} may be given")
        return
    if not given:
        return
    source = given[0]
    where = _join(path, source)
    value = check.string(where, spec[source])
    if value is None:
        return
    if source == "keyFile":
        value = _resolve(value, base_dir)
    try:
        fields["key"] = load_key(source, value, os.environ)
    except ValueError as e:
        check.problem(where, str(e))
        return
    fields["keySource"] = f"{source} {value}"


def _choices(values: Iterable[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _check_dsn(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return "the postgres sink needs psycopg 3: pip install 'psycopg[binary]'"
    try:
        conninfo_to_dict(dsn)
    except Exception as e:
        return f"not a valid PostgreSQL connection string: {_one_line(e)}"
    return None


def _safe_dsn(dsn: str) -> str:
    """The connection string without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
    except Exception:
        return "(connection string)"
    shown = [f"{k}={params[k]}" for k in ("host", "port", "dbname", "user") if params.get(k)]
    return " ".join(shown) or "(default connection)"


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
    return "sha256:" + hashlib.sha256(_canonical(arguments)).hexdigest()


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


def _encode_record(record: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """
    The canonical, strict JSON of a record to store (no NaN, valid UTF-8),
    and the record it encodes: a sanitized copy if the original could not
    be encoded as it was.
    """
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
            full = dict(record)
            full["seq"] = seq
            full["prev"] = prev
            body, full = self._fit(*_encode_record(full))
            digest = chain_digest(body, self.key)
            out.append(_Sealed(full, body[:-1] + b',"digest":"' + digest.encode("ascii") + b'"}', seq, digest))
            prev = digest
        return out

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


# -- sinks (every method runs in the worker thread) -------------------------------


class _FileSink:
    """JSON lines, appended: one record per line, one fsync per batch."""

    def __init__(self, path: str, chain: _Chain) -> None:
        self.path = path
        self.chain = chain
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._regular = False
        self._seq: int | None = None  # the last record written; None before the first open
        self._digest = ""
        self._landed: set[Any] = set()

    def write(self, batch: list[dict[str, Any]]) -> int:
        if self._fd is not None and self._replaced():
            _log.info("audit file {path} was moved or replaced: continuing in the file now at that path", path=self.path)
            self.close()
        if self._fd is None:
            self._open()
        assert self._fd is not None and self._seq is not None
        skip = 0
        while skip < len(batch) and batch[skip].get("id") in self._landed:
            skip += 1
        self._landed = set()
        if skip == len(batch):
            return skip
        sealed = self.chain.seal(batch[skip:], self._seq, self._digest)
        data = b"".join(s.line + b"\n" for s in sealed)
        fd = self._fd
        before: int | None = None
        try:
            if self._regular:
                before = os.fstat(fd).st_size
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            try:
                os.fsync(fd)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
        except BaseException as e:
            if before is not None:
                try:
                    os.ftruncate(fd, before)
                except OSError:
                    pass  # the next open finds out what landed
            self.close()
            raise _WriteFailed(skip, e) from e
        self._seq, self._digest = sealed[-1].seq, sealed[-1].digest
        return len(batch)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _replaced(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._identity

    def _open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                errno.ENOENT, f"the directory {directory} does not exist (the gateway does not create it)"
            )
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise OSError(
                        errno.EBUSY, f"{self.path} is in use by another process (an audit file has one writer)"
                    ) from None
                except OSError:
                    pass  # no locks on this file system
            st = os.fstat(fd)
            self._regular = stat.S_ISREG(st.st_mode)
            if self._regular:
                self._resync(fd, st.st_size)
            elif self._seq is None:
                self._seq, self._digest = 0, ""
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._identity = (st.st_dev, st.st_ino)

    def _resync(self, fd: int, size: int) -> None:
        """Continue the chain from the file's last record (repairing a cut-off last line)."""
        if size and os.pread(fd, 1, size - 1) != b"\n":
            lines = _tail_lines(fd, size, 1)
            start = size - len(lines[0]) if lines else 0
            partial = os.pread(fd, size - start, start)
            if _parse_record(partial) is not None:
                os.write(fd, b"\n")  # complete, but for its newline
                size += 1
            else:
                _log.warn(
                    "audit file {path} ended with an incomplete record ({bytes} bytes, from an interrupted "
                    "write); removed it",
                    path=self.path,
                    bytes=size - start,
                )
                os.ftruncate(fd, start)
                size = start
        last = _tail_lines(fd, size, 1)
        seq, digest = 0, ""
        if last:
            record = _parse_record(last[0])
            if record is None:
                raise ValueError(
                    f"the last line of {self.path} is not an audit record, so the chain cannot continue: "
                    "check it with `twisted-mcp audit verify` and move the file aside"
                )
            seq, digest = record["seq"], record["digest"]
        if self._seq is not None and seq > self._seq and seq - self._seq <= 1_000_000:
            # A write reported as failed did land (at least in part): find its records.
            landed: set[Any] = set()
            expect, prev = self._seq + 1, self._digest
            for line in _tail_lines(fd, size, seq - self._seq):
                record = _parse_record(line)
                if record is None or record["seq"] != expect or record.get("prev") != prev:
                    landed = set()
                    _log.warn("audit file {path} was changed by another writer; continuing from its last record", path=self.path)
                    break
                landed.add(record.get("id"))
                expect, prev = expect + 1, record["digest"]
            self._landed = landed
        elif self._seq is not None and (seq, digest) != (self._seq, self._digest):
            if seq == 0:
                _log.info("audit file {path} is new: a new chain starts in it at seq 1", path=self.path)
            else:
                _log.warn(
                    "audit file {path} was changed by another writer; continuing from its last record (seq {seq})",
                    path=self.path,
                    seq=seq,
                )
        self._seq, self._digest = seq, digest


def _tail_lines(fd: int, size: int, count: int) -> list[bytes]:
    """The last C{count} lines of the first C{size} bytes (without newlines)."""
    chunk = 65536
    end = size
    if end and os.pread(fd, 1, end - 1) == b"\n":
        end -= 1
    chunks: list[bytes] = []
    newlines = 0
    pos = end
    while pos > 0 and newlines < count:
        step = min(chunk, pos)
        pos -= step
        chunks.append(os.pread(fd, step, pos))
        newlines += chunks[-1].count(b"\n")
    if not chunks:
        return []
    return b"".join(reversed(chunks)).split(b"\n")[-count:]


def _parse_record(line: bytes) -> dict[str, Any] | None:
    """A stored record with an integer seq and string prev and digest, or None."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if (
        not isinstance(record, dict)
        or type(record.get("seq")) is not int
        or not isinstance(record.get("prev"), str)
        or not isinstance(record.get("digest"), str)
    ):
        return None
    return record


#: The columns kept beside the full record, for queries: (name, kind).
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("time", "real"),
    ("principal", "text"),
    ("roles", "json"),
    ("session", "text"),
    ("method", "text"),
    ("tool", "text"),
    ("backend", "text"),
    ("decision", "text"),
    ("reason", "text"),
    ("outcome", "text"),
    ("error_code", "int"),
    ("latency_ms", "real"),
    ("result_bytes", "int"),
    ("arguments_digest", "text"),
)
_COLUMN_NAMES = tuple(name for name, _ in _COLUMNS)


def _columns(record: dict[str, Any]) -> tuple[Any, ...]:
    """The query columns of a record: its field where the type fits, else NULL."""
    out: list[Any] = []
    for name, kind in _COLUMNS:
        value = record.get(name)
        if kind == "text":
            value = value.replace("\x00", "\ufffd") if isinstance(value, str) else None
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
            value = value if ok else None
        elif kind == "real":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            try:
                value = float(value) if ok and math.isfinite(value) else None
            except OverflowError:
                value = None
        else:
            value = _canonical(value).decode("utf-8", "replace") if isinstance(value, list) else None
        out.append(value)
    return tuple(out)


_SQL_TYPES = {
    "sqlite": {"text": "TEXT", "real": "REAL", "int": "INTEGER", "json": "TEXT", "seq": "INTEGER PRIMARY KEY"},
    "postgres": {
        "text": "text",
        "real": "double precision",
        "int": "bigint",
        "json": "text",
        "seq": "bigint PRIMARY KEY",
    },
}


def _schema(dialect: str, table: str) -> list[str]:
    types = _SQL_TYPES[dialect]
    columns = ", ".join([f"seq {types['seq']}"] + [f"{name} {types[kind]}" for name, kind in _COLUMNS])
    return [
        f'CREATE TABLE IF NOT EXISTS "{table}" ({columns}, prev {types["text"]} NOT NULL, '
        f'digest {types["text"]} NOT NULL, record {types["text"]} NOT NULL)',
        f'CREATE INDEX IF NOT EXISTS "{table}_time" ON "{table}" (time)',
        f'CREATE INDEX IF NOT EXISTS "{table}_principal" ON "{table}" (principal, time)',
        f'CREATE INDEX IF NOT EXISTS "{table}_id" ON "{table}" (id)',
        f'CREATE TABLE IF NOT EXISTS "{table}_schema" (version {types["int"]} NOT NULL)',
    ]


#: Migrations from each older schema version to the next (none yet).
_MIGRATIONS: dict[int, list[str]] = {}


def _insert_sql(table: str, mark: str) -> str:
    names = ("seq",) + _COLUMN_NAMES + ("prev", "digest", "record")
    return f'INSERT INTO "{table}" ({", ".join(names)}) VALUES ({", ".join([mark] * len(names))})'


def _row(s: _Sealed) -> tuple[Any, ...]:
    return (s.seq,) + _columns(s.record) + (s.record["prev"], s.digest, s.line.decode("utf-8"))


def _migrate(versions: list[Any], table: str, execute: Callable[[str], Any]) -> bool:
    """Bring the schema to L{SCHEMA_VERSION}; True if the version row must be written."""
    if not versions:
        return True
    version = max(versions)
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"table {table} has schema version {version}, newer than this gateway's ({SCHEMA_VERSION}): upgrade it"
        )
    while version < SCHEMA_VERSION:
        for statement in _MIGRATIONS[version]:
            execute(statement)
        version += 1
    return version != max(versions)


class _DatabaseSink:
    """What the SQLite and PostgreSQL sinks share: batches as transactions."""

    table: str
    chain: _Chain
    _conn: Any = None
    _retry = False

    def write(self, batch: list[dict[str, Any]]) -> int:
        if self._conn is None:
            self._conn = self._connect()
        if not batch:
            return 0
        try:
            self._transaction(batch)
        except BaseException as e:
            # All or nothing: records an earlier, ambiguous failure did store
            # are found again by their ids on the next attempt.
            self._retry = True
            self.close()
            raise _WriteFailed(0, e) from e
        self._retry = False
        return len(batch)

    def _already_stored(self, batch: list[dict[str, Any]], query: Callable[[list[str]], Iterable[Any]]) -> int:
        """After a failure, how many of the batch's first records a failed commit did store."""
        if not self._retry:
            return 0
        ids = [r["id"] for r in batch if isinstance(r.get("id"), str)]
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            found.update(row[0] for row in query(ids[i : i + 500]))
        skip = 0
        while skip < len(batch) and batch[skip].get("id") in found:
            skip += 1
        return skip

    def _connect(self) -> Any:
        raise NotImplementedError

    def _transaction(self, batch: list[dict[str, Any]]) -> int:
        raise NotImplementedError

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


class _SqliteSink(_DatabaseSink):
    def __init__(self, path: str, table: str, chain: _Chain) -> None:
        self.path = path
        self.table = table
        self.chain = chain

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                errno.ENOENT, f"the directory {directory} does not exist (the gateway does not create it)"
            )
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _schema("sqlite", self.table):
                conn.execute(statement)
            versions = [row[0] for row in conn.execute(f'SELECT version FROM "{self.table}_schema"')]
            if _migrate(versions, self.table, conn.execute):
                conn.execute(f'DELETE FROM "{self.table}_schema"')
                conn.execute(f'INSERT INTO "{self.table}_schema" (version) VALUES (?)', (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _transaction(self, batch: list[dict[str, Any]]) -> int:
        conn = self._conn
        table = self.table
        conn.execute("BEGIN IMMEDIATE")
        try:
            skip = self._already_stored(
                batch,
                lambda ids: conn.execute(
                    f'SELECT id FROM "{table}" WHERE id IN ({",".join("?" * len(ids))})', ids
                ).fetchall(),
            )
            last = conn.execute(f'SELECT seq, digest FROM "{table}" ORDER BY seq DESC LIMIT 1').fetchone()
            sealed = self.chain.seal(batch[skip:], *(last or (0, "")))
            conn.executemany(_insert_sql(table, "?"), [_row(s) for s in sealed])
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except Exception:
                pass
            raise
        return skip


def _lock_key(table: str) -> int:
    """A stable 64-bit advisory lock key per table: its writers (and its setup) take turns."""
    digest = hashlib.sha256(f"twisted-mcp-audit:{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


ROLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # whole name (fullmatch): written into SQL


def postgres_setup_sql(table: str, writer: str | None = None) -> list[str]:
    """
    The SQL that creates a trail's tables in PostgreSQL, run once by a role
    that may create tables (C{twisted-mcp audit init-db}).  With C{writer},
    that role (the gateway's) gets INSERT and SELECT on them and nothing
    else: it can add to the trail and read it, never change or erase it.
    """
    return (
        _schema("postgres", table)
        + [f'INSERT INTO "{table}_schema" (version) SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM "{table}_schema")']
        + _grants(table, writer)
    )


def _grants(table: str, writer: str | None) -> list[str]:
    if writer is None:
        return []
    if not ROLE_RE.fullmatch(writer):
        raise ValueError(f"not a role name this command accepts (letters, digits and _): {writer!r}")
    return [
        f'REVOKE ALL ON "{table}", "{table}_schema" FROM "{writer}"',
        f'GRANT SELECT, INSERT ON "{table}", "{table}_schema" TO "{writer}"',
    ]


def init_postgres(dsn: str, table: str, writer: str | None = None) -> None:
    """Create (or migrate) a trail's tables and grant C{writer} INSERT and SELECT (see L{postgres_setup_sql})."""
    import psycopg

    grants = _grants(table, writer)
    with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(table),))
            for statement in _schema("postgres", table):
                conn.execute(statement)
            versions = [row[0] for row in conn.execute(f'SELECT version FROM "{table}_schema"')]
            if _migrate(versions, table, conn.execute):
                conn.execute(f'DELETE FROM "{table}_schema"')
                conn.execute(f'INSERT INTO "{table}_schema" (version) VALUES (%s)', (SCHEMA_VERSION,))
            for statement in grants:
                conn.execute(statement)


class _PostgresSink(_DatabaseSink):
    """
    Needs only INSERT and SELECT on its tables (created beforehand by
    C{twisted-mcp audit init-db}).  Several gateways may write one table:
    they take turns under a transaction-level advisory lock, so the table
    holds one chain.
    """

    def __init__(self, dsn: str, table: str, chain: _Chain) -> None:
        self.dsn = dsn
        self.table = table
        self.chain = chain
        self._lock_key = _lock_key(table)
        self._warned = False

    def _connect(self) -> Any:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(self.dsn)
        # Defaults the connection string may override: bounded connects, and
        # a dead server noticed in about half a minute, not hours.
        defaults = {
            "connect_timeout": 5,
            "application_name": "twisted-mcp-audit",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30000,
        }
        extra: dict[str, Any] = {k: v for k, v in defaults.items() if k not in params}
        conn = psycopg.connect(self.dsn, autocommit=True, **extra)
        try:
            self._check_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_schema(self, conn: Any) -> None:
        """The tables exist at this gateway's schema version (the gateway never creates or alters them)."""
        table = self.table
        setup = "run `twisted-mcp audit init-db --config FILE` once, as a role that may create tables"
        found = conn.execute("SELECT to_regclass(%s), to_regclass(%s)", (f'"{table}"', f'"{table}_schema"')).fetchone()
        if found is None or None in found:
            raise RuntimeError(f"table {table} does not exist in {_safe_dsn(self.dsn)}: {setup}")
        versions = [row[0] for row in conn.execute(f'SELECT version FROM "{table}_schema"')]
        if max(versions, default=None) != SCHEMA_VERSION:
            raise RuntimeError(
                f"table {table} has schema version {max(versions, default='none')}, this gateway writes "
                f"version {SCHEMA_VERSION}: {setup}"
            )
        erasable = conn.execute(
            "SELECT has_table_privilege(%s, 'UPDATE') OR has_table_privilege(%s, 'DELETE') "
            "OR has_table_privilege(%s, 'TRUNCATE')",
            (f'"{table}"',) * 3,
        ).fetchone()
        if erasable and erasable[0] and not self._warned:
            self._warned = True
            _log.warn(
                "the gateway's PostgreSQL role may change or erase the audit table {table}: grant it only INSERT "
                "and SELECT (twisted-mcp audit init-db --grant ROLE)",
                table=table,
            )

    def write(self, batch: list[dict[str, Any]]) -> int:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self.close()
        return super().write(batch)

    def _transaction(self, batch: list[dict[str, Any]]) -> int:
        conn = self._conn
        table = self.table
        with conn.transaction():
            # Writers take turns (readers are not blocked), holding the lock
            # until commit: one chain per table, and no privilege beyond INSERT.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            skip = self._already_stored(
                batch, lambda ids: conn.execute(f'SELECT id FROM "{table}" WHERE id = ANY(%s)', (ids,)).fetchall()
            )
            last = conn.execute(f'SELECT seq, digest FROM "{table}" ORDER BY seq DESC LIMIT 1').fetchone()
            sealed = self.chain.seal(batch[skip:], *(last or (0, "")))
            with conn.cursor() as cursor:
                cursor.executemany(_insert_sql(table, "%s"), [_row(s) for s in sealed])
        return skip


def _make_sink(config: AuditConfig) -> Any:
    chain = _Chain(config.maxRecordBytes, config.key)
    if config.sink == "file":
        return _FileSink(config.path or DEFAULT_FILE, chain)
    if config.sink == "sqlite":
        return _SqliteSink(config.path or DEFAULT_SQLITE, config.table, chain)
    if config.sink == "postgres":
        return _PostgresSink(config.dsn or "", config.table, chain)
    return None


# -- threads ----------------------------------------------------------------------


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    thread = threading.Thread(*args, **kwargs)
    thread.daemon = True  # a write hung on a dead NFS server must not hold up the exit
    return thread


class _AuditThreadPool(ThreadPool):
    threadFactory = staticmethod(_daemon_thread)  # type: ignore[assignment]


class SynchronousThreads:
    """
    A test double for the worker thread and the reactor's C{callFromThread}:
    pass it as C{threadpool_reactor} and L{AuditLog} writes in the calling
    thread, at once.  With C{paused = True}, work waits until L{pump}.
    """

    def __init__(self) -> None:
        self.paused = False
        self.pending: list[tuple[Callable[[bool, Any], object], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._running = False

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], object], f: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        self.pending.append((onResult, f, args, kwargs))
        if not self.paused:
            self.pump()

    def pump(self) -> None:
        """Run the work waiting, in order (and the work it adds)."""
        if self._running:
            return
        self._running = True
        try:
            while self.pending:
                onResult, f, args, kwargs = self.pending.pop(0)
                try:
                    result = f(*args, **kwargs)
                except BaseException:
                    onResult(False, Failure())
                else:
                    onResult(True, result)
        finally:
            self._running = False


# -- the audit log ------------------------------------------------------------------

GAP_METHOD = "audit/gap"


def _must_keep(record: dict[str, Any]) -> bool:
    """
    Whether a queued record may never be dropped: all but refusals and tool
    listings (neither reached a backend; both are counted when dropped).
    """
    return record.get("decision") != "deny" and record.get("method") != "tools/list"


class _Gap:
    """Records dropped while the queue was full, until a gap record reports them."""

    def __init__(self) -> None:
        self.count = 0
        self.first: Any = None
        self.last: Any = None
        self.kinds: dict[str, int] = {}  # a refusal's error code, or "tools/list"

    def add(self, record: dict[str, Any]) -> None:
        self.count += 1
        when = record.get("time")
        if self.first is None:
            self.first = when
        self.last = when
        kind = str(record.get("error_code")) if record.get("decision") == "deny" else str(record.get("method"))
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def record(self, record_id: str, now: float) -> dict[str, Any]:
        return {
            "id": record_id,
            "time": now,
            "method": GAP_METHOD,
            "decision": "gap",
            "reason": f"{self.count} record(s) of refusals and tool listings were dropped while the audit sink could not be written",
            "lost": self.count,
            "lostBy": dict(sorted(self.kinds.items())),
            "firstLostTime": self.first,
            "lastLostTime": self.last,
        }


class AuditLog:
    """
    Queues audit records and writes them, as a hash chain, in one worker
    thread.

    @param clock: for retries and time bounds (and for the records' time
        when a caller leaves it out).
    @param threadpool_reactor: where results come back to (C{callFromThread});
        defaults to C{clock}, which is then the reactor.  An object that
        also has C{callInThreadWithCallback} (L{SynchronousThreads}) is used
        as the worker thread too.
    """

    RETRY_DELAY = 1.0
    #: Records are gathered this long before a batch is written, so that a
    #: steady trickle of calls costs one thread hop and one fsync per
    #: batch, not per call (0: write at once).
    BATCH_DELAY = 0.05
    STOP_TIMEOUT = 5.0
    START_TIMEOUT = 10.0
    #: A write that takes longer than this makes the log unhealthy.
    STALL_AFTER = 10.0

    def __init__(self, config: AuditConfig, clock: IReactorTime, threadpool_reactor: Any = None) -> None:
        self.config = config
        self._clock = clock
        self._threads = threadpool_reactor if threadpool_reactor is not None else clock
        self._sink = _make_sink(config)
        self._where = config.describe()
        self._queue: deque[dict[str, Any]] = deque()
        self._pool: Any = None
        self._started = False
        self._stopping = False
        self._closed = False
        self._busy = False
        self._busy_since = 0.0
        self._inflight = 0
        self._need_open = True
        self._retry_call: IDelayedCall | None = None
        self._batch_call: IDelayedCall | None = None
        self._healthy = True
        self._error: str | None = None
        self._failures = 0
        self._lost = 0  # dropped since the sink last worked, for the recovery message
        self._dropping = False
        #: Queued records that must never be dropped: those of calls that
        #: ran (or of anything but a refusal), and gap records.
        self._kept = 0
        #: No refusal that may be dropped is queued before this index: the
        #: search for one resumes there, so a long outage costs O(1) per record.
        self._scan_from = 0
        self._gap = _Gap()  # refusals dropped, not yet in a gap record
        self._gap_record: dict[str, Any] | None = None  # the gap record being written
        self._dropped = 0
        self._waiters: list[tuple[Callable[[], bool], Deferred[bool]]] = []
        #: Records that could not be written before shutdown wait here for the next start.
        self._spill = config.spill_path() if self._sink is not None else None
        #: Records read back from the spill file that are still queued (the file goes once none is).
        self._replaying = 0

    # -- what the pipeline reads

    @property
    def healthy(self) -> bool:
        """False while records cannot be written (failing, stalled or queue full)."""
        if self._sink is None:
            return True
        if not self._healthy or len(self._queue) >= self.config.maxQueue:
            return False
        return not (self._busy and self._clock.seconds() - self._busy_since > self.STALL_AFTER)

    @property
    def refuses_calls(self) -> bool:
        """
        Whether the gate must refuse new calls: the trail cannot be written
        and C{onFailure} is C{refuse}, or, whatever C{onFailure}, the queue
        holds C{maxQueue} records of calls that ran.  Those are never
        dropped, so a call that could not be recorded is not let through.
        """
        if self._sink is None:
            return False
        if self._kept >= self.config.maxQueue:
            return True
        return self.config.onFailure == "refuse" and not self.healthy

    @property
    def failures(self) -> int:
        """Records that could not be written, since start (they are lost)."""
        return self._failures

    @property
    def dropped(self) -> int:
        """Records of refusals and tool listings dropped while the queue was full, since start."""
        return self._dropped

    @property
    def queue_depth(self) -> int:
        """Records waiting to be written."""
        return len(self._queue)

    # -- life cycle

    def start(self) -> Deferred[None]:
        """
        Open the sink in the worker thread (create or migrate the schema,
        read the last record so the chain continues).  Fires when that first
        attempt is over (at most L{START_TIMEOUT}), whatever its outcome: a
        failure is logged, marks the log unhealthy and is retried.
        """
        if self._sink is None or self._started or self._stopping:
            return succeed(None)
        self._started = True
        self._replay_spill()
        if hasattr(self._threads, "callInThreadWithCallback"):
            self._pool = self._threads
        else:
            self._pool = _AuditThreadPool(1, 1, "twisted-mcp-audit")
            self._pool.start()
        self._flush()
        return self._wait(lambda: True, self.START_TIMEOUT).addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        """
        Write what is queued (retrying failures, for at most
        L{STOP_TIMEOUT} seconds), then close the sink and the worker thread.
        Records still unwritten are counted in L{failures} and logged.
        """
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._sink is None or not self._started:
            self._closed = True
            if self._queue:
                self._failures += len(self._queue)
                _log.error("{count} audit record(s) were never written: the audit log was not started", count=len(self._queue))
                self._queue.clear()
            return
        if self._retry_call is not None:
            self._retry_call.cancel()
            self._retry_call = None
        if self._unwritten():
            self._flush()
        await self._wait(lambda: not self._unwritten(), self.STOP_TIMEOUT)
        if self._retry_call is not None:
            self._retry_call.cancel()
            self._retry_call = None
        if self._unwritten():
            self._spill_unwritten()
            self._queue.clear()
            self._kept = self._scan_from = 0
        self._closed = True
        idle = not self._busy
        if idle:
            closed: Deferred[bool] = Deferred()
            self._submit(self._sink.close).addBoth(lambda _: closed.called or closed.callback(True))
            self._bound(closed, 1.0)
            idle = await closed
        if self._pool is not self._threads:
            if idle:
                self._pool.stop()
            else:
                # A write is stuck: do not wait for it (the thread is a daemon).
                _log.warn("the audit sink {where} did not finish its last write; not waiting for it", where=self._where)
                _daemon_thread(target=self._pool.stop, name="twisted-mcp-audit-stop").start()

    # -- the spill file

    def _spill_unwritten(self) -> None:
        """
        At shutdown, keep what could not be written in the spill file
        (appended, mode 0600; rewritten whole while records read back from
        it are still queued, for they are among these), in order, the gap
        record first: the next start writes them to the trail first.
        """
        records = self._unwritten_records()
        kept = sum(1 for r in records if _must_keep(r))
        path = self._spill
        problem = "no spill file is configured (audit.spillFile)" if path is None else None
        if path is not None:
            try:
                _write_spill(path, records, replace=self._replaying > 0)
            except OSError as e:
                problem = _one_line(e)
        if problem is not None:
            self._failures += len(records)
            _log.error(
                "{count} audit record(s) could not be written to {where} before shutdown ({kept} of them of calls "
                "that ran), nor kept in the spill file {spill}: {error}; they are lost",
                count=len(records),
                kept=kept,
                where=self._where,
                spill=path,
                error=problem,
            )
            return
        _log.error(
            "{count} audit record(s) could not be written to {where} before shutdown ({kept} of them of calls that "
            "ran); kept in the spill file {spill}, written to the trail first at the next start",
            count=len(records),
            kept=kept,
            where=self._where,
            spill=path,
        )

    def _unwritten_records(self) -> list[dict[str, Any]]:
        """Everything not written yet, in the order it would have been: the gap record first."""
        gaps = [self._gap_record] if self._gap_record is not None else []
        if self._gap.count:
            gaps.append(self._gap.record(uuid.uuid4().hex, self._clock.seconds()))
        return gaps + list(self._queue)

    def _replay_spill(self) -> None:
        """At start: queue the records of the spill file before any other, to be written first."""
        path = self._spill
        if path is None:
            return
        try:
            records = _read_spill(path)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            _log.error(
                "the audit spill file {spill} cannot be replayed ({error}); it is left as it is, and records "
                "that cannot be written at the next shutdown are appended to it",
                spill=path,
                error=_one_line(e),
            )
            return
        if not records:
            self._replayed()
            return
        self._queue.extendleft(reversed(records))
        self._kept += sum(1 for r in records if _must_keep(r))
        self._replaying = len(records)
        _log.info(
            "writing {count} audit record(s) kept in the spill file {spill} at the last shutdown to {where} first",
            count=len(records),
            spill=path,
            where=self._where,
        )

    def _replayed(self) -> None:
        """Every record of the spill file is in the trail: the file goes."""
        assert self._spill is not None
        try:
            os.remove(self._spill)
        except FileNotFoundError:
            pass
        except OSError as e:
            _log.error(
                "the audit spill file {spill} was written to the trail but cannot be removed ({error}): remove it, "
                "or its records are written again at the next start",
                spill=self._spill,
                error=_one_line(e),
            )
            return
        _log.info("the audit spill file {spill} is in the trail; removed it", spill=self._spill)

    # -- recording

    def record(self, fields: dict[str, Any]) -> None:
        """
        Queue one record (the pipeline's fields; seq, prev and digest are
        added when it is written).  Never blocks, never raises.  Arguments
        are kept only with C{recordArguments}, and always redacted.
        """
        try:
            if self._sink is None:
                return
            if self._closed:
                self._failures += 1
                _log.warn("audit record after shutdown, not written: {id}", id=fields.get("id"))
                return
            limit = self.config.maxFieldBytes
            record = {}
            for key, value in dict(fields).items():
                # Copy what the caller could change while the worker encodes
                # it, and bound what a client controls (names, messages...).
                if type(key) is str:
                    key = bound_text(key, limit)
                kind = type(value)
                if kind is str:
                    value = bound_text(value, limit)
                elif kind is list and all(type(v) is str and len(v) * 4 <= limit for v in value):
                    value = value[:]  # roles: the common case, cheaply
                elif (kind is list or kind is dict or kind is tuple) and key != "arguments":
                    value = _walk(value, redact=False, sanitize=False, limit=limit)
                record[key] = value
            if "arguments" in record:
                if self.config.recordArguments:
                    try:
                        record["arguments"] = _walk(redact(fields["arguments"]), redact=False, sanitize=False, limit=limit)
                    except ValueError as e:
                        record["arguments"] = f"[not recorded: {e}]"
                else:
                    del record["arguments"]
            if "seq" in record or "prev" in record or "digest" in record:
                for key in ("seq", "prev", "digest"):
                    record.pop(key, None)
            if type(record.get("id")) is not str:
                given = record.get("id")
                record["id"] = uuid.uuid4().hex if given is None else _clean_str(repr(given))
            if "time" not in record:
                record["time"] = self._clock.seconds()
            self._queue.append(record)
            if _must_keep(record):
                self._kept += 1
            if len(self._queue) > self.config.maxQueue:
                self._make_room()
            if not self._busy and self._retry_call is None and self._started and self._batch_call is None:
                if self.BATCH_DELAY:
                    self._batch_call = self._clock.callLater(self.BATCH_DELAY, self._batch_due)
                else:
                    self._flush()
        except Exception:
            self._failures += 1
            _log.failure("an audit record could not be queued")

    def _make_room(self) -> None:
        """
        The queue is over C{maxQueue}: drop a refusal, never the record of a
        call that ran.  The oldest refusal not being written goes (the one
        just queued if it is the only one); with none queued the queue grows
        past its bound by the calls that were in flight, and the gate
        refuses new calls (L{refuses_calls}).
        """
        queue = self._queue
        index = max(self._scan_from, self._inflight if self._busy else 0)
        while index < len(queue) and _must_keep(queue[index]):
            index += 1
        self._scan_from = index
        if index == len(queue):
            return
        self._gap.add(queue[index])
        del queue[index]
        self._failures += 1
        self._lost += 1
        self._dropped += 1
        if not self._dropping:
            self._dropping = True
            _log.error(
                "audit queue is full ({max} records): dropping records of refusals and tool listings (counted, and "
                "written as a gap record) until {where} can be written again; records of calls that ran are kept",
                max=self.config.maxQueue,
                where=self._where,
            )

    # -- writing

    def _submit(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._threads, self._pool, f, *args)

    def _batch_due(self) -> None:
        self._batch_call = None
        self._flush()

    def _flush(self) -> None:
        if self._batch_call is not None:
            self._batch_call.cancel()
            self._batch_call = None
        if self._busy or self._closed or self._retry_call is not None:
            return
        if self._gap_record is None and self._gap.count:
            self._gap_record, self._gap = self._gap.record(uuid.uuid4().hex, self._clock.seconds()), _Gap()
        if not self._queue and not self._need_open and self._gap_record is None:
            return
        # The gap record goes first: it reports refusals dropped before the
        # records now queued could be written.
        batch = ([self._gap_record] if self._gap_record is not None else []) + list(self._queue)
        self._busy = True
        self._busy_since = self._clock.seconds()
        self._inflight = len(self._queue)
        d = self._submit(self._write, batch)
        d.addCallbacks(self._written, self._failed)
        d.addErrback(lambda f: _log.failure("audit bookkeeping failed", f))

    def _write(self, batch: list[dict[str, Any]]) -> int:
        """In the worker thread."""
        try:
            return int(self._sink.write(batch))
        except _WriteFailed:
            raise
        except BaseException as e:
            raise _WriteFailed(0, e) from e

    def _written(self, count: int) -> None:
        self._busy = False
        self._inflight = 0
        if self._closed:
            return
        self._pop_written(count)
        self._need_open = False
        if not self._healthy:
            self._healthy = True
            _log.info(
                "audit sink {where} is writing again; {lost} record(s) of refusals and tool listings were dropped while it was "
                "failing (counted in a gap record)",
                where=self._where,
                lost=self._lost,
            )
        self._lost = 0
        self._error = None
        self._dropping = False
        self._check_waiters()
        if self._unwritten():
            if self.BATCH_DELAY and len(self._queue) < 1000 and not self._stopping:
                # Gather the next batch too: one thread hop and one fsync per
                # BATCH_DELAY under load, not one per call.
                if self._batch_call is None:
                    self._batch_call = self._clock.callLater(self.BATCH_DELAY, self._batch_due)
            else:
                self._flush()

    def _failed(self, failure: Failure) -> None:
        self._busy = False
        self._inflight = 0
        if self._closed:
            return
        problem = failure.value
        cause = problem.cause if isinstance(problem, _WriteFailed) else problem
        stored = problem.stored if isinstance(problem, _WriteFailed) else 0
        self._pop_written(stored)
        self._scan_from = 0  # the refusals of the failed batch may be dropped again
        self._need_open = True
        error = _one_line(cause)
        if self._healthy or error != self._error:
            _log.error(
                "audit sink {where} failed: {error}; {queued} record(s) kept in memory (at most {max}), "
                "retrying every {delay:g} s; tool calls are {policy} meanwhile",
                where=self._where,
                error=error,
                queued=len(self._queue),
                max=self.config.maxQueue,
                delay=self.RETRY_DELAY,
                policy="refused" if self.config.onFailure == "refuse" else "allowed",
            )
        self._healthy = False
        self._error = error
        self._retry_call = self._clock.callLater(self.RETRY_DELAY, self._retry)
        self._check_waiters()

    def _retry(self) -> None:
        self._retry_call = None
        self._flush()

    def _unwritten(self) -> bool:
        return bool(self._queue) or self._gap_record is not None or self._gap.count > 0

    def _pop_written(self, count: int) -> None:
        """The first C{count} records of the batch were stored."""
        if count and self._gap_record is not None:
            self._gap_record = None
            count -= 1
        count = min(count, len(self._queue))
        self._scan_from = max(0, self._scan_from - count)
        for _ in range(count):
            if _must_keep(self._queue.popleft()):
                self._kept -= 1
        if self._replaying:
            self._replaying = max(0, self._replaying - count)
            if not self._replaying:
                self._replayed()

    # -- waiting, bounded

    def _wait(self, done: Callable[[], bool], timeout: float) -> Deferred[bool]:
        """Fires True when no write is under way and C{done()}, or False after C{timeout}."""
        if not self._busy and done():
            return succeed(True)
        d: Deferred[bool] = Deferred()
        self._waiters.append((done, d))
        self._bound(d, timeout)
        return d

    def _bound(self, d: Deferred[bool], timeout: float) -> None:
        call = self._clock.callLater(timeout, lambda: d.called or d.callback(False))
        d.addBoth(lambda result: (call.active() and call.cancel(), result)[1])

    def _check_waiters(self) -> None:
        waiting, self._waiters = self._waiters, []
        for done, d in waiting:
            if d.called:
                continue
            if done():
                d.callback(True)
            else:
                self._waiters.append((done, d))


# -- the spill file -----------------------------------------------------------------


def _write_spill(path: str, records: list[dict[str, Any]], replace: bool) -> None:
    """One JSON record per line, appended (or replacing the file), mode 0600, synced."""
    data = b"".join(_canonical(r) + b"\n" for r in records)
    target = f"{path}.tmp" if replace else path
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if replace else os.O_APPEND)
    fd = os.open(target, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.replace(target, path)


def _read_spill(path: str) -> list[dict[str, Any]]:
    """The records of a spill file, in order; ValueError names a line that is not one."""
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if type(record) is not dict:
            raise ValueError(f"line {number} is not a JSON record")
        records.append(record)
    return records


# -- verification ---------------------------------------------------------------------


@attrs.frozen
class VerifyResult:
    """
    What L{verify} found.  C{first_bad} is the line number for a file, the
    seq for a database; C{records} counts the good records before it.
    """

    ok: bool
    records: int
    first_bad: int | None
    message: str
    #: The trail could not be read at all (no file, database down).
    unavailable: bool = False
    #: Records of refusals and tool listings dropped during outages, as the gap records say.
    lost: int = 0
    #: The last good record: (seq, digest), for a checkpoint.
    head: tuple[int, str] | None = attrs.field(default=None, eq=False)
    #: Records in the spill file, kept at a shutdown and not in the trail yet.
    spilled: int = 0


@attrs.frozen
class _Entry:
    number: int  # line or seq
    label: str  # "line 5" or "seq 5"
    record: dict[str, Any] | None  # with its digest
    error: str | None = None


def verify(config: AuditConfig, checkpoint: bytes | None = None) -> VerifyResult:
    """
    Read every record of the configured sink in order and check each
    record's digest (its HMAC under C{config.key} for a keyed trail), each
    C{prev} link, and that seq goes 1, 2, 3...; with C{checkpoint} (the
    text of one, see L{twisted_mcp.policy.audit_keys}), also that the trail
    still holds the record it vouches for.  Synchronous (for the command
    line).  Reports the first problem.
    """
    if config.sink == "none":
        return VerifyResult(True, 0, None, "no audit trail (sink: none)")
    anchor = None
    if checkpoint is not None:
        if config.key is None:
            return VerifyResult(False, 0, None, "a checkpoint is checked with the trail's key: none is configured")
        try:
            anchor = read_checkpoint(checkpoint, config.key)
        except ValueError as e:
            return VerifyResult(False, 0, None, f"the checkpoint cannot be trusted: {e}")
    result = _verify_trail(config, _ChainCheck(config.key, anchor))
    if not result.ok:
        return result
    return _with_spill(result, config.spill_path())


def _verify_trail(config: AuditConfig, check: "_ChainCheck") -> VerifyResult:
    if config.sink == "file":
        path = config.path or DEFAULT_FILE
        try:
            f = open(path, "rb")
        except OSError as e:
            return VerifyResult(False, 0, None, f"cannot read {path}: {e.strerror}", unavailable=True)
        with f:
            return check.run(_file_entries(f), per_line=True)
    if config.sink == "sqlite":
        return _verify_sqlite(config.path or DEFAULT_SQLITE, config.table, check)
    return _verify_postgres(config.dsn or "", config.table, check)


def _with_spill(result: VerifyResult, path: str | None) -> VerifyResult:
    """Say so when records kept in the spill file at a shutdown are not in the trail yet."""
    if path is None:
        return result
    try:
        with open(path, "rb") as f:
            spilled = sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return result
    except OSError as e:
        return attrs.evolve(result, message=f"{result.message}; the spill file {path} cannot be read: {e.strerror}")
    return attrs.evolve(
        result,
        spilled=spilled,
        message=f"{result.message}; {spilled} record(s) in the spill file {path} are not in the trail yet "
        "(the gateway writes them there at its next start)",
    )


def _file_entries(lines: Iterable[bytes]) -> Iterator[_Entry]:
    for number, raw in enumerate(lines, 1):
        label = f"line {number}"
        complete = raw.endswith(b"\n")
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError) as e:
            if not complete:
                yield _Entry(number, label, None, "incomplete last line (the file was cut short, or a write was interrupted)")
            elif isinstance(e, UnicodeDecodeError):
                yield _Entry(number, label, None, "not valid UTF-8")
            else:
                reason = str(e).splitlines()[0][:120] if str(e) else "nested too deeply"
                yield _Entry(number, label, None, f"not valid JSON ({reason})")
            continue
        yield _Entry(number, label, record)


@attrs.define
class _ChainCheck:
    """One walk along a chain: the key its digests are checked with, and the checkpoint it must reach."""

    key: bytes | None = attrs.field(repr=False)
    #: (seq, digest) a checkpoint vouches for.
    anchor: tuple[int, str] | None = None
    keyed_seen: bool = False
    unkeyed: int = 0

    def digest_problem(self, record: dict[str, Any]) -> str | None:
        """Why a record's digest is not right, or None."""
        content = {k: v for k, v in record.items() if k != "digest"}
        if not record["digest"].startswith(KEYED):
            if self.keyed_seen:
                return "an unkeyed record after keyed ones (records were rewritten by someone without the key)"
            self.unkeyed += 1
            if _record_digest(content) != record["digest"]:
                return "digest does not match its content (the record was modified)"
            return None
        if self.key is None:
            return (
                "the trail is keyed (hmac-sha256) and no key was given: configure audit.keyFile, keyEnv or "
                "keyCredential, or pass --key-file"
            )
        self.keyed_seen = True
        if _record_digest(content, self.key) != record["digest"]:
            return "digest does not match its content (the record was modified, or the key is not the one it was written with)"
        return None

    def run(self, entries: Iterable[_Entry], per_line: bool) -> VerifyResult:
        good = 0
        gaps: list[tuple[int, int]] = []  # (seq, records lost) of each gap record
        last_seq, last_digest = 0, ""
        anchored: str | None = None  # the digest found at the checkpoint's seq
        it = iter(entries)
        current = next(it, None)
        while current is not None:
            following = next(it, None)
            label = current.label

            # Called only in the iteration that defines it, so the loop variables are current.
            def bad(message: str, where: str | None = None) -> VerifyResult:
                return VerifyResult(False, good, current.number, f"{where or label}: {message}")  # noqa: B023

            if current.error is not None:
                return bad(current.error)
            record = current.record
            if (
                not isinstance(record, dict)
                or type(record.get("seq")) is not int
                or not isinstance(record.get("prev"), str)
                or not isinstance(record.get("digest"), str)
            ):
                return bad("not an audit record (expected a JSON object with seq, prev and digest)")
            seq = record["seq"]
            if per_line:
                label = f"{label} (seq {seq})"
            problem = self.digest_problem(record)
            if problem is not None:
                return bad(problem)
            expected = last_seq + 1
            if seq != expected:
                prefix = f"{current.label}: " if per_line else ""
                if seq < expected:
                    return bad(f"seq goes back from {last_seq} to {seq} (a record was duplicated or moved)")
                next_seq = following.record.get("seq") if following is not None and isinstance(following.record, dict) else None
                if next_seq == expected:
                    return bad(f"records out of order (seq {seq} comes before seq {expected})")
                if last_seq == 0:
                    missing = "record 1 is missing" if seq == 2 else f"records 1 to {seq - 1} are missing"
                    return bad(f"the trail starts at seq {seq}: {missing}")
                missing = f"record {expected} is missing" if seq == expected + 1 else f"records {expected} to {seq - 1} are missing"
                return bad(missing, where=f"{prefix}seq {last_seq} -> {seq}")
            if record["prev"] != last_digest:
                return bad("prev does not match the digest of the record before it (a record was replaced)")
            good += 1
            last_seq, last_digest = seq, record["digest"]
            if self.anchor is not None and seq == self.anchor[0]:
                anchored = last_digest
            if record.get("method") == GAP_METHOD and type(record.get("lost")) is int:
                gaps.append((seq, record["lost"]))
            current = following
        cut = self._anchor_problem(last_seq, anchored) or self._unkeyed_problem(last_seq)
        if cut is not None:
            return VerifyResult(False, good, None, cut)
        if good == 0:
            return VerifyResult(True, 0, None, "no records yet")
        return VerifyResult(True, good, None, self._summary(good, last_seq, gaps), lost=sum(n for _, n in gaps), head=(last_seq, last_digest))

    def _anchor_problem(self, last_seq: int, anchored: str | None) -> str | None:
        if self.anchor is None:
            return None
        seq, digest = self.anchor
        if last_seq < seq:
            return (
                f"the trail ends at seq {last_seq}, but the checkpoint vouches for seq {seq}: records were cut "
                "from its end (or the trail was emptied or replaced)"
            )
        if anchored != digest:
            return f"seq {seq} is not the record the checkpoint vouches for (the trail was rewritten)"
        return None

    def _unkeyed_problem(self, last_seq: int) -> str | None:
        """
        With a key, the trail must end in a keyed record: its HMAC covers
        the links to every record before it, the unkeyed ones written
        before the key was configured too.  A trail with no keyed record
        could have been rewritten by anyone.
        """
        if self.key is None or not self.unkeyed or self.keyed_seen:
            return None
        return (
            f"none of the {last_seq} record(s) is keyed, so nothing proves they were not rewritten: either the "
            "trail was rewritten without the key, or the gateway has not written since the key was configured "
            "(verify passes once it has, or without a key)"
        )

    def _summary(self, good: int, last_seq: int, gaps: list[tuple[int, int]]) -> str:
        message = f"{good} record(s), seq 1 to {last_seq}: the hash chain is intact"
        if gaps:
            lost = sum(n for _, n in gaps)
            where = ", ".join(str(seq) for seq, _ in gaps)
            message += (
                f"; {lost} record(s) of refusals and tool listings were dropped while the sink failed "
                f"(gap records at seq {where})"
            )
        if self.anchor is not None:
            message += f"; it still holds seq {self.anchor[0]} as the checkpoint says"
        if self.key is not None and self.unkeyed:
            message += (
                f"; records 1 to {self.unkeyed} were written before the key was configured "
                f"(covered by the keyed link of seq {self.unkeyed + 1})"
            )
        return message


def _row_entries(rows: Iterable[tuple[Any, ...]], key: bytes | None) -> Iterator[_Entry]:
    """Database rows (seq, columns..., prev, digest, record) as entries."""
    for row in rows:
        seq, columns, (prev, digest, text) = row[0], tuple(row[1:-3]), row[-3:]
        label = f"seq {seq}"
        try:
            record = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            yield _Entry(seq, label, None, "the record column is not valid JSON")
            continue
        if not isinstance(record, dict):
            yield _Entry(seq, label, None, "the record column is not a JSON object")
            continue
        mismatch = None
        if record.get("seq") != seq:
            mismatch = "seq"
        elif record.get("prev") != prev:
            mismatch = "prev"
        elif record.get("digest") != digest:
            mismatch = "digest"
        else:
            content = {k: v for k, v in record.items() if k != "digest"}
            for name, stored, derived in zip(_COLUMN_NAMES, columns, _columns(content), strict=False):
                if stored != derived:
                    mismatch = name
                    break
        if mismatch is not None:
            content = {k: v for k, v in record.items() if k != "digest"}
            keyed = str(record.get("digest")).startswith(KEYED)
            if _record_digest(content, key if keyed else None) != record.get("digest"):
                yield _Entry(seq, label, None, "digest does not match its content (the record was modified)")
            else:
                yield _Entry(seq, label, None, f"column {mismatch} does not match the record (the row was modified)")
            continue
        yield _Entry(seq, label, record)


def _select_all(table: str) -> str:
    names = ("seq",) + _COLUMN_NAMES + ("prev", "digest", "record")
    return f'SELECT {", ".join(names)} FROM "{table}" ORDER BY seq'


def _verify_sqlite(path: str, table: str, check: _ChainCheck) -> VerifyResult:
    if not os.path.exists(path):
        return VerifyResult(False, 0, None, f"cannot read {path}: no such file")
    try:
        conn = sqlite3.connect(Path(os.path.abspath(path)).as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as e:
        return VerifyResult(False, 0, None, f"cannot open {path}: {e}")
    try:
        try:
            rows = conn.execute(_select_all(table))
        except sqlite3.Error as e:
            return VerifyResult(False, 0, None, f"cannot read table {table} in {path}: {e}")
        return check.run(_row_entries(rows, check.key), per_line=False)
    finally:
        conn.close()


def _verify_postgres(dsn: str, table: str, check: _ChainCheck) -> VerifyResult:
    import psycopg

    where = _safe_dsn(dsn)
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, autocommit=True)
    except psycopg.Error as e:
        return VerifyResult(False, 0, None, f"cannot connect to {where}: {_one_line(e)}")
    try:
        with conn.transaction():
            exists = conn.execute("SELECT to_regclass(%s)", (f'"{table}"',)).fetchone()
            if exists is None or exists[0] is None:
                return VerifyResult(False, 0, None, f"table {table} does not exist in {where}")
            with conn.cursor(name="twisted_mcp_audit_verify") as cursor:
                cursor.itersize = 2000
                cursor.execute(_select_all(table))
                return check.run(_row_entries(cursor, check.key), per_line=False)
    except psycopg.Error as e:
        return VerifyResult(False, 0, None, f"cannot read table {table} in {where}: {_one_line(e)}")
    finally:
        conn.close()
