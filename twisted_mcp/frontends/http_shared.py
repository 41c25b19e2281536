"""
Handshake-era HTTP sessions shared by the replicas of one deployment,
through the shared state's L{SessionStore} (C{state: {redis: URL}}).

A session's record (L{SessionRecord}) is what another replica needs to go
on serving it: whose it is (a digest of L{owner_of}'s tuple without the
listener, never the identity itself), the path it belongs to (its view),
the protocol version it negotiated, the client's name, version and
capabilities, its resource subscriptions, its log level, and the replica
that created it.  It is saved before the answer to C{initialize} goes
(bounded by the state's timeout), again whenever what it holds changes (a
subscription, a log level), touched on use (at most every quarter of
C{http.sessionIdleTimeout}, its time to live: saved again if the store
lost it meanwhile), and deleted when its client ends the session.  A
replica remembers the ids of sessions their clients ended for that long,
and neither rebuilds nor saves them meanwhile.

L{SharedSessions} does the talking to the store for one HTTP front: the
lookups of ids unknown here (one per id however many requests wait for
it; a store's Deferred is never cancelled), saves, touches and deletes,
each failure logged once per outage.  Without a session store (the
default) none of this runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.dispatch.caller import LOG_LEVELS
from twisted_mcp.mcp.versions import HANDSHAKE_VERSIONS
from twisted_mcp.state.base import SessionStore, SharedState, Unavailable

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession
    from twisted_mcp.frontends.http_sessions import HttpSession

log = Logger()

#: The version of the record's layout; a record of another is not used.
RECORD_VERSION = 1
#: Characters of a client's name and of its version a record keeps (as the session does).
_CLIENT_INFO_CHARS = 256
#: Subscriptions a record may name (more: the record is not used, nor saved).
MAX_SUBSCRIPTIONS = 10000
#: The largest record saved, as JSON text in bytes (the Redis store's own limit).
MAX_RECORD_BYTES = 256 * 1024
#: Ids of sessions ended by their clients that a replica remembers (the oldest forgotten first).
MAX_ENDED = 10000
#: Ids presented by another client identity whose warning a replica remembers (the oldest forgotten first).
MAX_FOREIGN = 1000
#: How long the answer to C{initialize} waits for its record to be saved when
#: the state does not say (its C{settings.timeout}).
DEFAULT_HOLD = 1.0


class BadRecord(ValueError):
    """A stored session record that cannot be used; the message says what is wrong with it."""


def _canonical(value: Any) -> Any:
    """C{value} as plain JSON: tuples and lists as arrays, sets sorted."""
    if value is None or type(value) in (str, int, bool):
        return value
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return f"{type(value).__name__}:{value}"


def session_ref(sid: str) -> str:
    """
    How logs name a session known only by its id (no local label yet): the
    start of the id's SHA-256, which does not disclose the id (a bearer of
    the session).
    """
    return "ref:" + hashlib.sha256(sid.encode("utf-8")).hexdigest()[:12]


def owner_digest(owner: tuple[Any, ...]) -> str:
    """
    The SHA-256 (hex) of the canonical JSON of an owner tuple
    (L{twisted_mcp.frontends.http_sessions.owner_of}) without its listener
    (its second field): equal on every replica for the same client
    identity, whatever C{--listen} string each replica was started with
    (the path a session belongs to is checked apart, by its view), and
    naming no one in the store.
    """
    shared = owner[:1] + owner[2:]
    text = json.dumps(_canonical(shared), separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@attrs.frozen
class SessionRecord:
    """What a replica needs to serve a handshake-era HTTP session another created."""

    owner: str
    view: str | None
    version: str
    client_info: dict[str, str]
    capabilities: dict[str, Any]
    subscriptions: tuple[str, ...]
    log_level: str | None
    replica: str
    created: float

    def changing(self) -> tuple[Any, ...]:
        """What may change during the session (a new save when it does)."""
        return (self.log_level, self.subscriptions)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": RECORD_VERSION,
            "owner": self.owner,
            "view": self.view,
            "protocolVersion": self.version,
            "clientInfo": dict(self.client_info),
            "capabilities": self.capabilities,
            "subscriptions": list(self.subscriptions),
            "logLevel": self.log_level,
            "replica": self.replica,
            "created": self.created,
        }

    @classmethod
    def parse(cls, data: Any) -> "SessionRecord":
        """The record stored as C{data}; L{BadRecord} if it is not one this gateway can use (whatever is wrong with it)."""
        try:
            return cls._parse(data)
        except BadRecord:
            raise
        except Exception as e:
            raise BadRecord(f"{type(e).__name__}: {e}"[:300]) from e

    @classmethod
    def _parse(cls, data: Any) -> "SessionRecord":
        if type(data) is not dict:
            raise BadRecord("not a JSON object")
        if data.get("v") != RECORD_VERSION:
            raise BadRecord(f"record layout {data.get('v')!r}, this gateway reads {RECORD_VERSION}")
        owner = data.get("owner")
        if type(owner) is not str or len(owner) != 64 or any(c not in "0123456789abcdef" for c in owner):
            raise BadRecord("owner is not a SHA-256 hex digest")
        view = data.get("view")
        if view is not None and type(view) is not str:
            raise BadRecord("view is neither null nor a string")
        version = data.get("protocolVersion")
        if version not in HANDSHAKE_VERSIONS:
            raise BadRecord(f"protocolVersion {str(version)[:40]!r} is not a handshake-era version this gateway speaks")
        info = data.get("clientInfo")
        if type(info) is not dict or any(type(k) is not str or type(v) is not str for k, v in info.items()):
            raise BadRecord("clientInfo is not an object of strings")
        capabilities = data.get("capabilities")
        if type(capabilities) is not dict:
            raise BadRecord("capabilities is not an object")
        subscriptions = data.get("subscriptions")
        if type(subscriptions) is not list or any(type(s) is not str for s in subscriptions):
            raise BadRecord("subscriptions is not an array of strings")
        if len(subscriptions) > MAX_SUBSCRIPTIONS:
            raise BadRecord(f"more than {MAX_SUBSCRIPTIONS} subscriptions")
        level = data.get("logLevel")
        if level is not None and level not in LOG_LEVELS:
            raise BadRecord(f"logLevel {str(level)[:40]!r} is not a log level")
        replica = data.get("replica")
        if type(replica) is not str:
            raise BadRecord("replica is not a string")
        created = data.get("created")
        if (type(created) is not int and type(created) is not float) or not math.isfinite(float(created)):
            raise BadRecord("created is not a finite number")
        return cls(
            owner=owner,
            view=view,
            version=version,
            client_info={k: info[k][:_CLIENT_INFO_CHARS] for k in ("name", "version") if k in info},
            capabilities=capabilities,
            subscriptions=tuple(subscriptions),
            log_level=level,
            replica=replica,
            created=float(created),
        )


def record_of(hs: HttpSession, replica: str, subscriptions: list[str], created: float) -> SessionRecord:
    """The record of the live, initialized session C{hs} (C{subscriptions}: the URIs it is subscribed to)."""
    caller = hs.core.caller
    return SessionRecord(
        owner=owner_digest(hs.owner),
        view=hs.view,
        version=caller.version,
        client_info=dict(caller.info),
        capabilities=caller.capabilities,
        subscriptions=tuple(sorted(subscriptions)),
        log_level=caller.log_level,
        replica=replica,
        created=created,
    )


def restore(record: SessionRecord, core: ClientSession) -> None:
    """
    Make the new core session C{core} what C{initialize} made of the
    session on the replica that created it: the era, the negotiated
    version, the client's name, version and capabilities, its log level,
    initialized.  Its subscriptions are made again by the front (they go
    through the core, and the policy, like a client's own).
    """
    caller = core.caller
    caller.era = "legacy"
    caller.version = record.version
    caller.info = dict(record.client_info)
    caller.capabilities = record.capabilities
    caller.log_level = record.log_level
    core.initialized = True


# -- talking to the store ----------------------------------------------------------


class _Lookup:
    """One load of a record from the store, and the requests waiting for it."""

    __slots__ = ("sid", "load", "waiters")

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.load: Deferred[Any] | None = None
        self.waiters: list[Deferred[Any]] = []


class SharedSessions:
    """
    The session store as one HTTP front uses it.

    A store's Deferred is never cancelled here: a request that leaves (or a
    front that stops) only stops waiting for it, and its answer is ignored
    (the store counts a cancelled command as a lost connection).

    @param state: the gateway's shared state, read when used (the service
        may replace it after the front is made).
    @param on_ended: called with the id of a session another replica ended
        (its client's DELETE): the front ends its own copy.
    """

    def __init__(
        self, state: Callable[[], SharedState], clock: IReactorTime, ttl: float, on_ended: Callable[[str], None]
    ) -> None:
        self._state = state
        self.clock = clock
        self.ttl = ttl
        self.on_ended = on_ended
        self._watched: SessionStore | None = None
        self._lookups: dict[str, _Lookup] = {}
        #: The outage (L{SharedState.outages}) already logged, per kind of failure.
        self._logged: dict[str, int | None] = {}
        #: Session ids whose record another identity presented, warned about once each (the latest L{MAX_FOREIGN}).
        self._foreign: OrderedDict[str, None] = OrderedDict()
        #: Sessions their clients ended (here or on another replica), until when
        #: they are remembered: never rebuilt nor saved here again meanwhile.
        self._ended: OrderedDict[str, float] = OrderedDict()

    @property
    def state(self) -> SharedState:
        return self._state()

    def store(self) -> SessionStore | None:
        """The session store (None: sessions are not shared); watched for other replicas' deletes from its first use."""
        store = self._state().sessions
        if store is not None and store is not self._watched:
            self._watched = store
            store.watch_ended(self._ended_elsewhere)
        return store

    def hold_limit(self) -> float:
        """How long the answer to C{initialize} may wait for its record to be saved: the state's timeout."""
        timeout: Any = getattr(getattr(self._state(), "settings", None), "timeout", None)
        return float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else DEFAULT_HOLD

    def _ended_elsewhere(self, sid: str) -> None:
        self.mark_ended(sid)
        try:
            self.on_ended(sid)
        except Exception:
            log.failure(
                "HTTP session {ref}: ending the local copy of a session another replica ended failed", ref=session_ref(sid)
            )

    # -- sessions their clients ended ----------------------------------------------

    def mark_ended(self, sid: str) -> None:
        """
        Session C{sid} was ended by its client: for C{ttl} seconds (the
        life of a record nobody touches), no request rebuilds it here and
        nothing saves its record from here.  At most L{MAX_ENDED} ids are
        kept, the oldest forgotten first.
        """
        self._ended.pop(sid, None)
        self._ended[sid] = self.clock.seconds() + self.ttl
        while len(self._ended) > MAX_ENDED:
            self._ended.popitem(last=False)

    def is_ended(self, sid: str) -> bool:
        """Whether C{sid} was ended by its client lately (L{mark_ended})."""
        now = self.clock.seconds()
        while self._ended:
            oldest, until = next(iter(self._ended.items()))
            if until > now:
                break
            del self._ended[oldest]
        return sid in self._ended

    def pending(self) -> int:
        """Lookups under way (for tests)."""
        return len(self._lookups)

    # -- lookups -------------------------------------------------------------

    def lookup(self, store: SessionStore, sid: str) -> Deferred[Any]:
        """
        The record of C{sid}: a L{SessionRecord}, None (no such record, or
        one that cannot be used: logged), or an L{Unavailable}.  Requests
        for one id share one load; cancelling the Deferred withdraws this
        request (the load goes on, its answer unused when nobody waits).
        """
        lookup = self._lookups.get(sid)
        if lookup is None:
            lookup = self._lookups[sid] = _Lookup(sid)
            lookup.waiters.append(waiter := self._waiter(lookup))
            try:
                load = store.load(sid)
            except Exception as e:
                load = Deferred()
                load.errback(Unavailable(str(e)) if not isinstance(e, Unavailable) else e)
            lookup.load = load
            load.addCallbacks(self._loaded, self._failed, callbackArgs=(lookup,), errbackArgs=(lookup,))
            return waiter
        waiter = self._waiter(lookup)
        lookup.waiters.append(waiter)
        return waiter

    def _waiter(self, lookup: _Lookup) -> Deferred[Any]:
        def withdraw(d: Deferred[Any]) -> None:
            if d in lookup.waiters:
                lookup.waiters.remove(d)
            if not lookup.waiters and self._lookups.get(lookup.sid) is lookup:
                del self._lookups[lookup.sid]  # a later request loads it afresh

        return Deferred(withdraw)

    def _deliver(self, lookup: _Lookup, outcome: Any) -> None:
        if self._lookups.get(lookup.sid) is lookup:
            del self._lookups[lookup.sid]
        waiters, lookup.waiters = lookup.waiters, []
        for waiter in waiters:
            waiter.callback(outcome)

    def _loaded(self, data: Any, lookup: _Lookup) -> None:
        self._logged.pop("lookup", None)  # answered: a later failure is another outage
        outcome: SessionRecord | None = None
        try:
            if data is not None:
                try:
                    outcome = SessionRecord.parse(data)
                except BadRecord as e:
                    log.warn(
                        "HTTP session {ref}: its record in the shared state cannot be used ({why}); answered 404, the client must initialize again",
                        ref=session_ref(lookup.sid),
                        why=e,
                    )
        finally:
            self._deliver(lookup, outcome)

    def _failed(self, failure: Failure, lookup: _Lookup) -> None:
        if failure.check(CancelledError):
            self._deliver(lookup, Unavailable("the lookup was cancelled"))
            return
        if failure.check(Unavailable):
            self._deliver(lookup, failure.value)
            return
        # The store answered, with something it could not read (not JSON).
        try:
            log.warn(
                "HTTP session {ref}: its record in the shared state cannot be read ({why}); answered 404, the client must initialize again",
                ref=session_ref(lookup.sid),
                why=f"{type(failure.value).__name__}: {failure.getErrorMessage()}"[:300],
            )
        finally:
            self._deliver(lookup, None)

    def cancel_all(self) -> None:
        """The front stops: every lookup under way ends (its requests are answered by the front; the loads' answers are ignored)."""
        for lookup in list(self._lookups.values()):
            self._deliver(lookup, Unavailable("the gateway is stopping"))

    def foreign(self, sid: str) -> bool:
        """Whether another identity presenting C{sid} is to be logged: once per id among the latest L{MAX_FOREIGN}."""
        if sid in self._foreign:
            self._foreign.move_to_end(sid)
            return False
        self._foreign[sid] = None
        while len(self._foreign) > MAX_FOREIGN:
            self._foreign.popitem(last=False)
        return True

    def once_per_outage(self, kind: str) -> bool:
        """Whether a failure of C{kind} is the first of this outage (then it is logged)."""
        outage = self._state().outages
        if kind in self._logged and self._logged[kind] == outage:
            return False
        self._logged[kind] = outage
        return True

    # -- saves, touches, deletes --------------------------------------------------

    def save(self, store: SessionStore, hs: HttpSession, record: SessionRecord) -> Deferred[None]:
        """
        Store C{record} for C{hs} (in the background; a failure is logged).
        The Deferred fires once the store answered, never with a failure.
        Nothing is saved for a session its client ended (L{mark_ended}) or
        whose record the store cannot take (too large: the session is then
        served by this replica only).
        """
        if hs.ended or self.is_ended(hs.id) or not hs.shareable:
            return succeed(None)
        hs.record = record
        hs.saved = True  # until the store says otherwise: saved again at the next answer then
        hs.touched = self.clock.seconds()
        try:
            data = record.to_json()
            problem = self._too_large(record, data)
            if problem is not None:
                raise BadRecord(problem)
            d = store.save(hs.id, data, self.ttl)
        except Exception as e:
            self._save_failed(Failure(e), hs, record)
            return succeed(None)
        d.addCallbacks(lambda _: self._logged.pop("save", None), self._save_failed, errbackArgs=(hs, record))
        return d.addCallback(lambda _: None)

    @staticmethod
    def _too_large(record: SessionRecord, data: dict[str, Any]) -> str | None:
        if len(record.subscriptions) > MAX_SUBSCRIPTIONS:
            return f"it names more than {MAX_SUBSCRIPTIONS} subscriptions"
        size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if size > MAX_RECORD_BYTES:
            return f"it is {size} bytes of JSON, more than {MAX_RECORD_BYTES}"
        return None

    def _save_failed(self, failure: Failure, hs: HttpSession, record: SessionRecord) -> None:
        if not failure.check(Unavailable):
            # The store cannot take this record (too large, not JSON): retrying cannot help.
            hs.shareable = False
            hs.saved = False
            log.warn(
                "HTTP client session {client}: its record cannot be kept in the shared state ({why}); it is served by this "
                "replica only (another replica answers 404 and its client must initialize again)",
                client=hs.label,
                why=failure.getErrorMessage()[:300],
            )
            return
        if hs.record is record:
            hs.saved = False
        if self.once_per_outage("save"):
            log.warn(
                "HTTP client session {client}: its record could not be saved in the shared state ({why}); other replicas "
                "cannot serve it until a later save succeeds (logged once per outage)",
                client=hs.label,
                why=failure.getErrorMessage(),
            )

    def touch(self, store: SessionStore, hs: HttpSession, present: bool = False) -> None:
        """
        C{hs} was used: its record lives C{ttl} from now (told the store at
        most every quarter of it).  A record the store lost meanwhile
        (expired during a long call, evicted, Redis restarted) is saved
        again; one that is there only has its expiry moved, so that a newer
        record another replica saved is kept.  C{present}: the store just
        answered with the record (it is not read again).
        """
        now = self.clock.seconds()
        if now - hs.touched < self.ttl / 4 or hs.record is None or not hs.shareable:
            return
        hs.touched = now
        try:
            d = succeed({}) if present else store.load(hs.id)
        except Exception as e:
            d = fail(e)

        def answered(data: Any) -> None:
            if data is None:
                record = hs.record
                if record is not None:
                    self.save(store, hs, record)
                return
            try:
                store.touch(hs.id, self.ttl)
            except Exception:
                log.failure("HTTP client session {client}: touching its record failed", client=hs.label)

        def failed(failure: Failure) -> None:
            if failure.check(Unavailable):
                hs.saved = False  # saved again at the next answer
                return
            log.failure("HTTP client session {client}: touching its record failed", failure, client=hs.label)

        d.addCallbacks(answered, failed)

    def delete(self, store: SessionStore, sid: str, label: str) -> None:
        """Its client ended session C{sid} (C{label} in logs): forget its record, and have every replica end its copy."""
        self.mark_ended(sid)
        try:
            d = store.delete(sid)
        except Exception as e:
            self._delete_failed(Failure(e), label)
            return
        d.addErrback(self._delete_failed, label)

    def _delete_failed(self, failure: Failure, label: str) -> None:
        log.warn(
            "HTTP client session {client}: ended, but its record could not be deleted from the shared state ({why}); "
            "other replicas serve it until it expires (http.sessionIdleTimeout)",
            client=label,
            why=failure.getErrorMessage(),
        )


__all__ = ["BadRecord", "SessionRecord", "SharedSessions", "owner_digest", "record_of", "restore", "session_ref"]
