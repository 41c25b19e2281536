"""Where audit records are written: a JSON lines file, an SQLite or a PostgreSQL table (every method runs in the worker thread)."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import sqlite3
import stat
from typing import Any, Callable, Iterable

from twisted.logger import Logger

from twisted_mcp.policy.audit.config import DEFAULT_FILE, DEFAULT_SQLITE, SCHEMA_VERSION, AuditConfig, _safe_dsn
from twisted_mcp.policy.audit.records import _canonical, _Chain, _Sealed, _WriteFailed

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

_log = Logger()


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
        data, seq, digest = self.chain.lines(batch[skip:], self._seq, self._digest)
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
        self._seq, self._digest = seq, digest
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
    ("protocol", "text"),
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


#: The query columns each schema version added to the one before (version 1
#: had the others); rows stored before a column was added hold NULL in it,
#: as do records without that field.
_ADDED_COLUMNS: dict[int, tuple[str, ...]] = {2: ("protocol",)}


def _migration(dialect: str, table: str, version: int) -> list[str]:
    """
    The statements that bring a table from schema C{version} to the next:
    its new columns.  In PostgreSQL they are filled from the records too,
    for gateways may have written records that have the field to a table
    of the older schema (L{_PostgresSink} does, until the table is
    migrated); a SQLite sink migrates its table before it writes.  (Every
    column added so far is text.)
    """
    types = _SQL_TYPES[dialect]
    kinds = dict(_COLUMNS)
    statements = []
    for name in _ADDED_COLUMNS[version + 1]:
        if dialect == "sqlite":  # no IF NOT EXISTS there
            statements.append(f'ALTER TABLE "{table}" ADD COLUMN {name} {types[kinds[name]]}')
            continue
        statements += [
            f'ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS {name} {types[kinds[name]]}',
            f'UPDATE "{table}" SET {name} = record::json ->> \'{name}\' '
            f'WHERE {name} IS NULL AND record LIKE \'%"{name}":"%\'',
        ]
    return statements


def _columns_at(version: int) -> tuple[str, ...]:
    """The query columns of a table at schema C{version} (those added later left out)."""
    later = {name for added, names in _ADDED_COLUMNS.items() if added > version for name in names}
    return tuple(name for name in _COLUMN_NAMES if name not in later)


def _insert_sql(table: str, mark: str, columns: tuple[str, ...] = _COLUMN_NAMES) -> str:
    names = ("seq",) + columns + ("prev", "digest", "record")
    return f'INSERT INTO "{table}" ({", ".join(names)}) VALUES ({", ".join([mark] * len(names))})'


def _row(s: _Sealed, columns: tuple[str, ...] = _COLUMN_NAMES) -> tuple[Any, ...]:
    values = _columns(s.record)
    if columns is not _COLUMN_NAMES:  # a table of an older schema: only the columns it has
        values = tuple(value for name, value in zip(_COLUMN_NAMES, values, strict=True) if name in columns)
    return (s.seq,) + values + (s.record["prev"], s.digest, s.line.decode("utf-8"))


def _migrate(versions: list[Any], dialect: str, table: str, execute: Callable[[str], Any]) -> bool:
    """Bring the schema to L{SCHEMA_VERSION}; True if the version row must be written."""
    if not versions:
        return True
    version = max(versions)
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"table {table} has schema version {version}, newer than this gateway's ({SCHEMA_VERSION}): upgrade it"
        )
    while version < SCHEMA_VERSION:
        for statement in _migration(dialect, table, version):
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
            if _migrate(versions, "sqlite", self.table, conn.execute):
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
    that may create tables (C{twisted-mcp audit init-db}), or again to
    migrate tables an older gateway created.  With C{writer}, that role
    (the gateway's) gets INSERT and SELECT on them and nothing else: it can
    add to the trail and read it, never change or erase it.
    """
    migrations = [statement for version in range(1, SCHEMA_VERSION) for statement in _migration("postgres", table, version)]
    return (
        _schema("postgres", table)
        + [f'INSERT INTO "{table}_schema" (version) SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM "{table}_schema")']
        + migrations
        + [f'UPDATE "{table}_schema" SET version = {SCHEMA_VERSION} WHERE version < {SCHEMA_VERSION}']
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
            if _migrate(versions, "postgres", table, conn.execute):
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
        #: The query columns the table has: all of them, but for a table of an older schema.
        self._columns = _COLUMN_NAMES
        self._warned_schema = False

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
        version = max(versions, default=None)
        if type(version) is not int or not 1 <= version <= SCHEMA_VERSION:
            raise RuntimeError(
                f"table {table} has schema version {'none' if version is None else version}, this gateway writes "
                f"version {SCHEMA_VERSION}: {setup}"
            )
        self._columns = _COLUMN_NAMES if version == SCHEMA_VERSION else _columns_at(version)
        if version < SCHEMA_VERSION and not self._warned_schema:
            self._warned_schema = True
            missing = ", ".join(name for name in _COLUMN_NAMES if name not in self._columns)
            _log.warn(
                "audit table {table} has schema version {version}, older than this gateway's ({current}): records are "
                "written whole, but without the query columns it lacks ({missing}); {setup} to add them",
                table=table,
                version=version,
                current=SCHEMA_VERSION,
                missing=missing,
                setup="run `twisted-mcp audit init-db --config FILE` once, as the role that created it",
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

    def _recheck_schema(self, conn: Any) -> None:
        """
        Writing to a table of an older schema: has it been migrated since?
        Asked under the lock that C{audit init-db} takes too, so no record
        is written without a column the table has (nor after its backfill).
        """
        versions = [row[0] for row in conn.execute(f'SELECT version FROM "{self.table}_schema"')]
        if max(versions, default=None) == SCHEMA_VERSION:
            self._columns = _COLUMN_NAMES
            _log.info("audit table {table} is at schema version {version} now: writing every column", table=self.table,
                      version=SCHEMA_VERSION)

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
            if self._columns is not _COLUMN_NAMES:
                self._recheck_schema(conn)
            skip = self._already_stored(
                batch, lambda ids: conn.execute(f'SELECT id FROM "{table}" WHERE id = ANY(%s)', (ids,)).fetchall()
            )
            last = conn.execute(f'SELECT seq, digest FROM "{table}" ORDER BY seq DESC LIMIT 1').fetchone()
            sealed = self.chain.seal(batch[skip:], *(last or (0, "")))
            with conn.cursor() as cursor:
                columns = self._columns
                cursor.executemany(_insert_sql(table, "%s", columns), [_row(s, columns) for s in sealed])
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
