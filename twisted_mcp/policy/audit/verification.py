"""Offline verification of an audit trail: its chain, its gaps, and a signed checkpoint of its head."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

import attrs

from twisted_mcp.policy.audit.config import DEFAULT_FILE, DEFAULT_SQLITE, AuditConfig, _safe_dsn
from twisted_mcp.policy.audit.keys import KEYED, read_checkpoint
from twisted_mcp.policy.audit.log import GAP_METHOD
from twisted_mcp.policy.audit.records import _one_line, _record_digest
from twisted_mcp.policy.audit.sinks import _COLUMN_NAMES, _columns

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
    #: Records of refusals and listings dropped during outages, as the gap records say.
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
    text of one, see L{twisted_mcp.policy.audit.keys}), also that the trail
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
                f"; {lost} record(s) of refusals and listings were dropped while the sink failed "
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


def _row_entries(rows: Iterable[tuple[Any, ...]], key: bytes | None, names: tuple[str, ...]) -> Iterator[_Entry]:
    """Database rows (seq, the query columns C{names}..., prev, digest, record) as entries."""
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
            derived = dict(zip(_COLUMN_NAMES, _columns(content), strict=True))
            for name, stored in zip(names, columns, strict=True):
                if stored != derived[name]:
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


def _query_columns(conn: Any, table: str) -> tuple[str, ...]:
    """
    The query columns C{table} has, in our order: a table of an older
    schema (not migrated yet) lacks the newer ones, and still verifies.
    """
    cursor = conn.execute(f'SELECT * FROM "{table}" LIMIT 0')
    present = {column[0] for column in cursor.description}
    return tuple(name for name in _COLUMN_NAMES if name in present)


def _select_all(table: str, columns: tuple[str, ...]) -> str:
    names = ("seq",) + columns + ("prev", "digest", "record")
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
            columns = _query_columns(conn, table)
            rows = conn.execute(_select_all(table, columns))
        except sqlite3.Error as e:
            return VerifyResult(False, 0, None, f"cannot read table {table} in {path}: {e}")
        return check.run(_row_entries(rows, check.key, columns), per_line=False)
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
            columns = _query_columns(conn, table)
            with conn.cursor(name="twisted_mcp_audit_verify") as cursor:
                cursor.itersize = 2000
                cursor.execute(_select_all(table, columns))
                return check.run(_row_entries(cursor, check.key, columns), per_line=False)
    except psycopg.Error as e:
        return VerifyResult(False, 0, None, f"cannot read table {table} in {where}: {_one_line(e)}")
    finally:
        conn.close()
