"""
Handshake-era HTTP sessions shared by the replicas of one deployment,
through the shared state's L{SessionStore} (C{state: {redis: URL}}).

A session's record (L{SessionRecord}) is what another replica needs to go
on serving it: whose it is (a digest of L{owner_of}'s tuple, never the
identity itself), the path it belongs to (its view), the protocol version
it negotiated, the client's name, version and capabilities, its resource
subscriptions, its log level, and the replica that created it.  It is
saved once C{initialize} was answered, again whenever what it holds
changes (a subscription, a log level), touched on use (at most every
quarter of C{http.sessionIdleTimeout}, its time to live), and deleted
when its client ends the session.

L{SharedSessions} does the talking to the store for one HTTP front: the
lookups of ids unknown here (one per id however many requests wait for
it), saves, touches and deletes, each failure logged once per outage.
Without a session store (the default) none of this runs.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Callable

import attrs
from twisted.internet.defer import CancelledError, Deferred
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
#: Subscriptions a record may name (more: the record is not used).
MAX_SUBSCRIPTIONS = 10000


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
    (L{twisted_mcp.frontends.http_sessions.owner_of}): equal on every
    replica for the same client identity, and naming no one in the store.
    """
    text = json.dumps(_canonical(owner), separators=(",", ":"), sort_keys=True, ensure_ascii=True)
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
        """The record stored as C{data}; L{BadRecord} if it is not one this gateway can use."""
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
        if type(created) is not int and type(created) is not float:
            raise BadRecord("created is not a number")
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
        #: Session ids whose record another identity presented (logged once each; bounded).
        self._foreign: set[str] = set()

    @property
    def state(self) -> SharedState:
        return self._state()

    def store(self) -> SessionStore | None:
        """The session store (None: sessions are not shared); watched for other replicas' deletes from its first use."""
        store = self._state().sessions
        if store is not None and store is not self._watched:
            self._watched = store
            store.watch_ended(self._ended)
        return store

    def _ended(self, sid: str) -> None:
        try:
            self.on_ended(sid)
        except Exception:
            log.failure(
                "HTTP session {ref}: ending the local copy of a session another replica ended failed", ref=session_ref(sid)
            )

    def pending(self) -> int:
        """Lookups under way (for tests)."""
        return len(self._lookups)

    # -- lookups -------------------------------------------------------------

    def lookup(self, store: SessionStore, sid: str) -> Deferred[Any]:
        """
        The record of C{sid}: a L{SessionRecord}, None (no such record, or
        one that cannot be used: logged), or an L{Unavailable}.  Requests
        for one id share one load; cancelling the Deferred withdraws this
        request, and the load is cancelled when no request waits for it.
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
                del self._lookups[lookup.sid]
                if lookup.load is not None:
                    lookup.load.cancel()

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
        if data is not None:
            try:
                outcome = SessionRecord.parse(data)
            except BadRecord as e:
                log.warn(
                    "HTTP session {ref}: its record in the shared state cannot be used ({why}); answered 404, the client must initialize again",
                    ref=session_ref(lookup.sid),
                    why=e,
                )
        self._deliver(lookup, outcome)

    def _failed(self, failure: Failure, lookup: _Lookup) -> None:
        if failure.check(CancelledError):
            if lookup.waiters:  # cancelled by the store itself, not by the waiters leaving
                self._deliver(lookup, Unavailable("the lookup was cancelled"))
            return
        if failure.check(Unavailable):
            self._deliver(lookup, failure.value)
            return
        # The store answered, with something it could not read (not JSON).
        log.warn(
            "HTTP session {ref}: its record in the shared state cannot be read ({why}); answered 404, the client must initialize again",
            ref=session_ref(lookup.sid),
            why=f"{type(failure.value).__name__}: {failure.getErrorMessage()}"[:300],
        )
        self._deliver(lookup, None)

    def cancel_all(self) -> None:
        """The front stops: every lookup under way ends (its requests are answered by the front)."""
        for lookup in list(self._lookups.values()):
            self._deliver(lookup, Unavailable("the gateway is stopping"))
            if lookup.load is not None:
                lookup.load.cancel()

    def foreign(self, sid: str) -> bool:
        """Whether this is the first time another identity presented C{sid} (logged once per id; at most 1000 kept)."""
        if sid in self._foreign or len(self._foreign) >= 1000:
            return False
        self._foreign.add(sid)
        return True

    def once_per_outage(self, kind: str) -> bool:
        """Whether a failure of C{kind} is the first of this outage (then it is logged)."""
        outage = self._state().outages
        if kind in self._logged and self._logged[kind] == outage:
            return False
        self._logged[kind] = outage
        return True

    # -- saves, touches, deletes --------------------------------------------------

    def save(self, store: SessionStore, hs: HttpSession, record: SessionRecord) -> None:
        """Store C{record} for C{hs} (in the background; a failure is logged once per outage)."""
        hs.record = record
        hs.saved = True  # until the store says otherwise: saved again at the next answer then
        hs.touched = self.clock.seconds()
        try:
            d = store.save(hs.id, record.to_json(), self.ttl)
        except Exception as e:
            self._save_failed(Failure(e), hs, record)
            return
        d.addCallbacks(lambda _: self._logged.pop("save", None), self._save_failed, errbackArgs=(hs, record))

    def _save_failed(self, failure: Failure, hs: HttpSession, record: SessionRecord) -> None:
        if hs.record is record:
            hs.saved = False
        if self.once_per_outage("save"):
            log.warn(
                "HTTP client session {client}: its record could not be saved in the shared state ({why}); other replicas "
                "cannot serve it until a later save succeeds (logged once per outage)",
                client=hs.label,
                why=failure.getErrorMessage(),
            )

    def touch(self, store: SessionStore, hs: HttpSession) -> None:
        """C{hs} was used: its record lives C{ttl} from now (told the store at most every quarter of it)."""
        now = self.clock.seconds()
        if now - hs.touched < self.ttl / 4:
            return
        hs.touched = now
        try:
            store.touch(hs.id, self.ttl)
        except Exception:
            log.failure("HTTP client session {client}: touching its record failed", client=hs.label)

    def delete(self, store: SessionStore, sid: str, label: str) -> None:
        """Its client ended session C{sid} (C{label} in logs): forget its record, and have every replica end its copy."""
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
