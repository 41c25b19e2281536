"""The C{audit:} section of the config: where the trail goes, its bounds, its key and spill file."""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

import attrs

from twisted_mcp.config._check import _Checker, _describe, _join, _resolve
from twisted_mcp.policy.audit.keys import KEY_SOURCES, load_key
from twisted_mcp.policy.audit.records import _one_line

SINKS = ("file", "sqlite", "postgres", "none")
ON_FAILURE = ("refuse", "allow")
DEFAULT_FILE = "twisted-mcp-audit.jsonl"
DEFAULT_SQLITE = "twisted-mcp-audit.sqlite"
SPILL_SUFFIX = ".spill.jsonl"
#: The spill file of a PostgreSQL trail, beside the config file.
DEFAULT_POSTGRES_SPILL = "twisted-mcp-audit.spill.jsonl"
TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # whole name (fullmatch)
MAX_TABLE_LENGTH = 48  # PostgreSQL names are at most 63 bytes, with room for "_principal"
#: The SQL tables' layout: 2 added the C{protocol} column (L{twisted_mcp.policy.audit.sinks}).
SCHEMA_VERSION = 2
MIN_FIELD_BYTES = 256  # room for a start, "…", the size and the digest
MIN_RECORD_BYTES = 4096  # room for every field, each replaced by its digest


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
    #: The HMAC key of the chain (see L{twisted_mcp.policy.audit.keys}); never shown.
    key: bytes | None = attrs.field(default=None, repr=False)
    #: Where records that could not be written before shutdown are kept
    #: until the next start; None: beside the file or database
    #: (L{spill_path}).
    spillFile: str | None = None
    #: Whether the answer of a call that reached a backend is written to its
    #: client only once the call's audit record is committed by the sink
    #: (L{twisted_mcp.policy.audit.hold}): a gateway that dies after
    #: answering has the call in its trail.
    holdAnswers: bool = False
    #: The longest an answer is held for its record (seconds); then it goes
    #: anyway, logged and counted (L{AuditLog.hold_timeouts}).
    holdTimeout: float = attrs.field(default=10.0, validator=[attrs.validators.instance_of(float), attrs.validators.gt(0)])

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
    "sink", "path", "dsn", "table", "recordArguments", "onFailure", "maxQueue", "maxFieldBytes", "maxRecordBytes", "spillFile",
    "holdAnswers", "holdTimeout",
) + KEY_SOURCES
#: The longest C{holdTimeout} (seconds): an answer held longer is a client timing out.
MAX_HOLD_TIMEOUT = 3600.0


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
    if "holdAnswers" in spec:
        hold = check.boolean(_join(path, "holdAnswers"), spec["holdAnswers"])
        if hold and sink == "none":
            check.problem(_join(path, "holdAnswers"), 'not used with sink "none" (no record is ever committed)')
        fields["holdAnswers"] = hold
    if "holdTimeout" in spec:
        fields["holdTimeout"] = check.number(_join(path, "holdTimeout"), spec["holdTimeout"], 0.001, MAX_HOLD_TIMEOUT)
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
