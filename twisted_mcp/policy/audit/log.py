"""The audit log: records queued on the reactor, written by one worker thread, gaps and outages handled, the spill file at shutdown."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import deque
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from twisted_mcp.policy.audit.config import AuditConfig
from twisted_mcp.policy.audit.records import (
    _canonical,
    _clean_str,
    _one_line,
    _walk,
    _WriteFailed,
    bound_text,
    flat_copy,
    flat_scalar,
    redact,
)
from twisted_mcp.policy.audit.sinks import _make_sink

_log = Logger()


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


#: The listing methods: their records may be dropped (and counted) when the sink fails.
LISTING_METHODS = frozenset(("tools/list", "prompts/list", "resources/list", "resources/templates/list"))


def _must_keep(record: dict[str, Any]) -> bool:
    """
    Whether a queued record may never be dropped: all but refusals and
    listings (none reached a backend; all are counted when dropped).
    """
    return record.get("decision") != "deny" and record.get("method") not in LISTING_METHODS


class _Gap:
    """Records dropped while the queue was full, until a gap record reports them."""

    def __init__(self) -> None:
        self.count = 0
        self.first: Any = None
        self.last: Any = None
        self.kinds: dict[str, int] = {}  # a refusal's error code, or the listing's method

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
            "reason": f"{self.count} record(s) of refusals and listings were dropped while the audit sink could not be written",
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

    def __init__(
        self, config: AuditConfig, clock: IReactorTime, threadpool_reactor: Any = None, replica: str | None = None
    ) -> None:
        self.config = config
        #: The name of this gateway process among the replicas writing one
        #: trail (C{state.replica}): every record it queues from now on
        #: carries it as C{replica}.  None: records carry no such field.
        self.replica = replica
        #: Answers sent before their audit record was committed, because the
        #: sink did not confirm it within C{audit.holdTimeout} (C{holdAnswers}).
        self.hold_timeouts = 0
        #: Those of the current episode of unconfirmed answers (0: none; the
        #: episode ends, with a log line, at the next commit).
        self._unconfirmed = 0
        #: Who waits for which queued record to be written: by the record's
        #: C{id()}, the record itself (which keeps that id valid) and the
        #: Deferreds (L{written_through}).
        self._watch: dict[int, tuple[dict[str, Any], list[Deferred[bool]]]] = {}
        #: Fired once the current batch's bookkeeping is done.
        self._confirmed: list[Deferred[bool]] = []
        self._clock = clock
        self._threads = threadpool_reactor if threadpool_reactor is not None else clock
        self._sink = _make_sink(config)
        self._where = config.describe()
        self._queue: deque[dict[str, Any]] = deque()
        #: New calls wait (L{behind}) from this many queued records until there are this few.
        self._behind_at = max(1, config.maxQueue // 2)
        self._caught_up_at = config.maxQueue // 4
        self._holding = False
        #: The calls waiting (L{room}), oldest first.
        self._room_waiters: deque[Deferred[bool]] = deque()
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
    def holds_answers(self) -> bool:
        """Whether answers wait for their record (C{audit.holdAnswers}, with a sink to write it)."""
        return self._sink is not None and self.config.holdAnswers

    @property
    def failures(self) -> int:
        """Records that could not be written, since start (they are lost)."""
        return self._failures

    @property
    def dropped(self) -> int:
        """Records of refusals and listings dropped while the queue was full, since start."""
        return self._dropped

    @property
    def queue_depth(self) -> int:
        """Records waiting to be written."""
        return len(self._queue)

    @property
    def behind(self) -> bool:
        """
        Whether a new call must wait (L{room}) before it runs: from the
        moment the queue holds half of C{maxQueue} while the sink writes,
        until it is down to a quarter and every call that waited has gone,
        in the order they came.  Calls that wait make no records meanwhile,
        so the trail catches up instead of filling its queue, which would
        refuse every call.  (A gateway busy on every core writes records
        more slowly than its calls make them: the worker thread waits for
        the interpreter's lock.)  A sink that fails or stalls is not
        behind: C{onFailure} applies.
        """
        if not self._holding:
            if len(self._queue) < self._behind_at or self._sink is None or not self.healthy:
                return False
            self._holding = True
            return True
        if self.healthy:
            return True
        self._release_room()
        return False

    @property
    def waiting_calls(self) -> int:
        """Calls waiting for the trail to catch up (L{behind})."""
        return sum(1 for d in self._room_waiters if not d.called)

    def room(self) -> Deferred[bool]:
        """
        Fires True when this call may go (the trail caught up, or the sink
        failed: the caller then applies C{onFailure}), False if the write
        under way stalled first (bounded by L{STALL_AFTER}).
        """
        d: Deferred[bool] = Deferred()
        self._room_waiters.append(d)
        timeout = self.STALL_AFTER
        if self._busy:
            # Let go as the stall is declared (just after), not a whole STALL_AFTER later.
            timeout = max(0.0, self._busy_since + self.STALL_AFTER - self._clock.seconds()) + 0.001
        self._bound(d, timeout)
        return d

    def _release_room(self) -> None:
        """
        After a write (or a failure): once caught up, the waiting calls go,
        oldest first, as many as stay under the mark where calls wait (their
        records come when they end); those left hold new calls back still.
        """
        waiters = self._room_waiters
        if not self._holding and not waiters:
            return
        healthy = self.healthy
        if healthy and self._holding and len(self._queue) > self._caught_up_at:
            return
        self._holding = False
        room = self._behind_at - len(self._queue)
        while waiters and (room > 0 or not healthy):
            d = waiters.popleft()
            if not d.called:
                room -= 1
                d.callback(True)
        if waiters:
            self._holding = True

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
            self._abandon_watchers()
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
        self._abandon_watchers()
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
            # Text of at most this many characters fits whatever it holds
            # (bound_text's own first test): most keys and values skip the
            # call, some thirty a record.
            short = limit // 4
            # Copy what the caller could change while the worker encodes it,
            # and bound what a client controls (names, messages...): a
            # call's record needs neither bounds nor deep copies, and is
            # checked for the worker's fast encoding as it is copied.
            record = flat_copy(fields, short)
            if record is None:
                record = self._bounded(fields, limit, short)
            if "seq" in record or "prev" in record or "digest" in record:
                for key in ("seq", "prev", "digest"):
                    record.pop(key, None)
            if type(record.get("id")) is not str:
                given = record.get("id")
                record["id"] = uuid.uuid4().hex if given is None else _clean_str(repr(given))
            if "time" not in record:
                record["time"] = self._clock.seconds()
                if not flat_scalar(record["time"]):
                    record = dict(record)  # not a _Flat any more: the worker checks it
            if self.replica is not None and "replica" not in record:
                record["replica"] = self.replica
                if not flat_scalar(self.replica):
                    record = dict(record)
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

    def _bounded(self, fields: dict[str, Any], limit: int, short: int) -> dict[str, Any]:
        """L{record}'s copy of C{fields}, field by field: strings bounded, containers copied deeply, arguments redacted."""
        record = {}
        for key, value in dict(fields).items():
            # Copy what the caller could change while the worker encodes
            # it, and bound what a client controls (names, messages...).
            if type(key) is str and len(key) > short:
                key = bound_text(key, limit)
            kind = type(value)
            if kind is str:
                if len(value) > short:
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
        return record

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
        if self._watch:
            self._unwatch(queue[index], queue[index - 1] if index else None)
        del queue[index]
        self._failures += 1
        self._lost += 1
        self._dropped += 1
        if not self._dropping:
            self._dropping = True
            _log.error(
                "audit queue is full ({max} records): dropping records of refusals and listings (counted, and "
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
            if self.replica is not None:
                self._gap_record["replica"] = self.replica
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
                "audit sink {where} is writing again; {lost} record(s) of refusals and listings were dropped while it was "
                "failing (counted in a gap record)",
                where=self._where,
                lost=self._lost,
            )
        self._lost = 0
        self._error = None
        self._dropping = False
        self._check_waiters()
        self._release_room()
        if self._unwritten():
            if self.BATCH_DELAY and len(self._queue) < 1000 and not self._stopping and not self._watch:
                # Gather the next batch too: one thread hop and one fsync per
                # BATCH_DELAY under load, not one per call.
                if self._batch_call is None:
                    self._batch_call = self._clock.callLater(self.BATCH_DELAY, self._batch_due)
            else:
                self._flush()
        self._confirm()

    def _failed(self, failure: Failure) -> None:
        self._busy = False
        self._inflight = 0
        if self._closed:
            return
        problem = failure.value
        cause = problem.cause if isinstance(problem, _WriteFailed) else problem
        stored = problem.stored if isinstance(problem, _WriteFailed) else 0
        self._pop_written(stored)
        # The answers held for the records that did land go now, not at the next good write.
        self._confirm(committed=False)
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
        self._release_room()

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
        watch = self._watch
        for _ in range(count):
            record = self._queue.popleft()
            if _must_keep(record):
                self._kept -= 1
            if watch:
                entry = watch.pop(id(record), None)
                if entry is not None:
                    self._confirmed += entry[1]
        if self._replaying:
            self._replaying = max(0, self._replaying - count)
            if not self._replaying:
                self._replayed()

    # -- holding answers until their record is committed (audit.holdAnswers)

    def written_through(self) -> Deferred[bool]:
        """
        Fires True once every record queued so far is committed by the sink
        (the last of them written, so every one before it too; a refusal or
        listing dropped meanwhile hands its place to the record before it),
        or False when they will not be (the log stopped first: unwritten
        records went to the spill file).  Never fails, and has no bound of
        its own (L{hold} has).  A write is started at once rather than
        after L{BATCH_DELAY}: someone waits for it (records queued while it
        is under way make the next batch).
        """
        if self._sink is None:
            return succeed(True)
        if self._closed:
            return succeed(False)
        if not self._queue:
            return succeed(True)
        last = self._queue[-1]
        entry = self._watch.get(id(last))
        if entry is None:
            entry = self._watch[id(last)] = (last, [])
        d: Deferred[bool] = Deferred()
        entry[1].append(d)
        if self._batch_call is not None:
            self._flush()
        return d

    def hold(self) -> Deferred[bool]:
        """
        L{written_through}, bounded by C{audit.holdTimeout}: what an answer
        held for its record waits for.  Fires True when the records are
        committed, False when they are not in time (or will not be): the
        answer goes anyway, counted in L{hold_timeouts}, and the first of
        an episode is logged (a warning; the next commit ends the episode
        with an info line saying how many went unconfirmed).  An expired
        hold keeps nothing of its answer: its callbacks have run.
        """
        d = self.written_through()
        call: IDelayedCall | None = None
        if not d.called:
            watched = id(self._queue[-1])

            def expired() -> None:
                self._forget(d, watched)
                d.callback(False)

            call = self._clock.callLater(self.config.holdTimeout, expired)

        def done(written: bool) -> bool:
            if call is not None and call.active():
                call.cancel()
            if not written:
                self._unconfirmed_answer()
            return written

        return d.addCallback(done)

    def _unconfirmed_answer(self) -> None:
        self.hold_timeouts += 1
        self._unconfirmed += 1
        if self._unconfirmed == 1:
            _log.warn(
                "an answer went to its client before its audit record was committed: the audit sink {where} did not "
                "confirm it within {timeout:g} s (audit.holdTimeout); until it does, answers are sent unconfirmed after "
                "that long (counted in the twisted_mcp_audit_hold_timeouts metric)",
                where=self._where,
                timeout=self.config.holdTimeout,
            )

    def _confirm(self, committed: bool = True) -> None:
        """After a commit: the answers held for its records go (in the order of the records)."""
        if committed and self._unconfirmed:
            _log.info(
                "the audit sink {where} confirms records again; {count} answer(s) were sent before their record was "
                "committed meanwhile",
                where=self._where,
                count=self._unconfirmed,
            )
            self._unconfirmed = 0
        confirmed, self._confirmed = self._confirmed, []
        for d in confirmed:
            if not d.called:
                d.callback(True)

    def _unwatch(self, dropped: dict[str, Any], before: dict[str, Any] | None) -> None:
        """A record others wait for is dropped: they wait for the one queued before it, or for nothing."""
        entry = self._watch.pop(id(dropped), None)
        if entry is None:
            return
        if before is None:
            # Nothing queued before it: every record they waited for is written.
            self._confirmed += entry[1]
            self._clock.callLater(0, self._confirm, False)
            return
        target = self._watch.get(id(before))
        if target is None:
            self._watch[id(before)] = (before, entry[1])
        else:
            target[1].extend(entry[1])

    def _forget(self, d: Deferred[bool], watched: int) -> None:
        """
        A hold that expired stops waiting: its Deferred leaves the record it
        waited for (or, if that one was dropped, the one it waits for now).
        """
        entry = self._watch.get(watched)
        if entry is None or d not in entry[1]:
            entry = next((e for e in self._watch.values() if d in e[1]), None)  # moved by a drop: rare
            if entry is None:
                return
        entry[1].remove(d)
        if not entry[1]:
            del self._watch[id(entry[0])]

    def _abandon_watchers(self) -> None:
        """Stopped: records not written will not be (they are in the spill file, or lost); no call waits any more."""
        self._holding = False
        waiters, self._room_waiters = self._room_waiters, deque()
        for d in waiters:
            if not d.called:
                d.callback(False)
        watch, self._watch = self._watch, {}
        confirmed, self._confirmed = self._confirmed, []
        for d in confirmed:
            if not d.called:
                d.callback(True)
        for _, waiting in watch.values():
            for d in waiting:
                if not d.called:
                    d.callback(False)

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
