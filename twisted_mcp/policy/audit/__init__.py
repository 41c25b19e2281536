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
L{twisted_mcp.policy.audit.keys} for what the key proves and what not.

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
lock.  The tables' layout has a version (C{SCHEMA_VERSION}; 2 added the
C{protocol} column): SQLite migrates its own table; a PostgreSQL table of
an older version is written without the columns it lacks until C{init-db}
migrates it (and fills them from the records).  C{verify} reads either.

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

A trail that writes, but more slowly than calls come (a gateway busy on
every core leaves the worker thread waiting for the interpreter's lock):
from the moment half of C{maxQueue} records wait, a new call waits
(L{AuditLog.behind}, L{AuditLog.room}, in L{twisted_mcp.policy.call.Call.dispatch})
until a quarter are left, then the calls that waited go, oldest first, as
many at a time as keep the queue under half; a call that waited is then
judged as any other (refused with -31009 if the trail cannot be written
and C{onFailure} is C{refuse}).  A sink that fails or stalls is not behind:
the calls waiting go as it is found out (a stall: L{AuditLog.STALL_AFTER}
after its write began).  Clients see their calls slow down to what the
trail can write, not refused.  The wait does not count against the
server's request timeout (it has not been sent).  Metric:
C{twisted_mcp_audit_waiting_calls}.

Answers held for their record (C{holdAnswers: true}, off by default).
The answer of a call that reached a backend (its result, or its error,
a cancellation at shutdown included) is written to the client only once
the call's record is committed by the sink (L{AuditLog.hold}: everything
queued up to that record is written; a write starts at once rather than
after the batching delay, and records queued meanwhile make the next
batch), so that a gateway that dies after answering has every answered
call in its trail.  The wait is bounded by C{holdTimeout} seconds (default
10): then the answer goes anyway, counted in L{AuditLog.hold_timeouts}
(metric C{twisted_mcp_audit_hold_timeouts}), with a warning for the first
of an episode and an info line when the sink confirms records again.
Refusals are not held: they carry no result, and their records are the
ones that may be dropped (counted, reported in a gap record) when the
trail cannot be written; a call the client cancelled gets no answer.
While its answer waits, the request stays in flight on its session (its
id cannot be reused, a drain waits for it) but no longer counts toward
its backend.  The result is encoded once, when the call ends (its record
needs the size), and that encoding is what is written later.

Replicas.  Several gateways may write one PostgreSQL table (see "When the
chain is computed" above).  Given a name (C{AuditLog(..., replica=NAME)}
or the C{replica} attribute, which the service sets from C{state.replica}),
a gateway puts it in every record it queues (and in its gap records) as
C{replica}: C{verify} checks one chain over every replica's records.

The modules: C{config} (the C{audit:} section), C{records} (redaction,
bounds, canonical JSON, the chain), C{keys} (the chain's key and signed
checkpoints), C{sinks} (file, SQLite, PostgreSQL), C{log} (L{AuditLog}: the
queue, the worker thread, outages, the spill file) and C{verification}
(C{twisted-mcp audit verify}).
"""

from typing import TYPE_CHECKING

from twisted_mcp.lazy import lazy_exports
from twisted_mcp.policy.audit.config import AuditConfig, parse_audit
from twisted_mcp.policy.audit.records import REDACTED, bound_text, digest_arguments, redact

if TYPE_CHECKING:
    from twisted_mcp.policy.audit.log import GAP_METHOD, AuditLog, SynchronousThreads
    from twisted_mcp.policy.audit.sinks import init_postgres, postgres_setup_sql
    from twisted_mcp.policy.audit.verification import VerifyResult, verify

# The writer, the sinks and verification (sqlite3) load with the first audit trail.
__getattr__ = lazy_exports(
    __name__,
    {
        "GAP_METHOD": "log",
        "AuditLog": "log",
        "SynchronousThreads": "log",
        "init_postgres": "sinks",
        "postgres_setup_sql": "sinks",
        "VerifyResult": "verification",
        "verify": "verification",
    },
)

__all__ = [
    "GAP_METHOD",
    "REDACTED",
    "AuditConfig",
    "AuditLog",
    "SynchronousThreads",
    "VerifyResult",
    "bound_text",
    "digest_arguments",
    "init_postgres",
    "parse_audit",
    "postgres_setup_sql",
    "redact",
    "verify",
]
