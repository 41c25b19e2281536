"""
Where OAuth state is kept (C{docs/design/oauth.md} §6.2, §6.6): the records,
the L{RecordStore} interface an engine implements (it moves sealed bytes only
and knows nothing of OAuth), L{MemoryStore}, and the typed facades
L{TokenStore}, L{ClientStore} and L{PendingStore} that seal and open records
with a L{KeyRing}.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Generic, Iterable, Literal, Protocol, Tuple, TypeVar, cast, runtime_checkable

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_mcp.backends.oauth.sealing import KeyRing, Tampered, UnknownKey, UnknownVersion, key_digest

log = Logger()

Kind = Literal["token", "client", "pending"]
Key = Tuple[str, ...]
TokenKey = Tuple[str, str, str]
"""(principal, issuer, resource)"""
ClientKey = Tuple[str, str]
"""(issuer, redirect-set digest)"""

#: The version of the record formats inside the envelopes.
RECORD_VERSION = 1
#: The kinds L{TokenStore.errors} and the others count.
ERROR_KINDS = ("tampered", "permissions", "version", "io")


class Conflict(Exception):
    """A compare-and-set lost: the record changed (or appeared) since it was read."""


class StoreUnusable(Exception):
    """The store cannot be used (e.g. its directory's permissions); the message says how to fix it."""


class Unreadable(Exception):
    """
    An engine holds a record it cannot hand over (a file with loose
    permissions, an I/O error, a malformed file). The record counts as
    absent from then on: the principal authorizes again and a new record
    replaces it.

    @ivar kind: one of L{ERROR_KINDS}.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------- records


def _loads_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise ValueError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    if value.get("v") != RECORD_VERSION or isinstance(value.get("v"), bool):
        raise ValueError(f"{what} has an unknown format version")
    return value


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _str(obj: dict[str, Any], name: str, what: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{what}: {name} is not a string")
    return value


def _optional_str(obj: dict[str, Any], name: str, what: str) -> str | None:
    return None if obj.get(name) is None else _str(obj, name, what)


def _number(obj: dict[str, Any], name: str, what: str) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what}: {name} is not a number")
    return float(value)


def _optional_number(obj: dict[str, Any], name: str, what: str) -> float | None:
    return None if obj.get(name) is None else _number(obj, name, what)


def _strings(obj: dict[str, Any], name: str, what: str) -> tuple[str, ...]:
    value = obj.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{what}: {name} is not a list of strings")
    return tuple(value)


@define
class TokenRecord:
    """
    The tokens one principal holds for one (issuer, resource). Secrets are
    kept out of the repr.
    """

    access_token: str = field(repr=False)
    expires_at: float | None
    refresh_token: str | None = field(repr=False)
    scope: tuple[str, ...]
    granted_at: float
    client_id: str
    backend: str
    token_type: str = "Bearer"
    refreshed_at: float | None = None
    rotation: int = 0
    last_error: str | None = None

    def to_json(self) -> bytes:
        """The record's JSON (format version 1), to be sealed."""
        return _dumps(
            {
                "v": RECORD_VERSION,
                "access_token": self.access_token,
                "token_type": self.token_type,
                "expires_at": self.expires_at,
                "refresh_token": self.refresh_token,
                "scope": list(self.scope),
                "granted_at": self.granted_at,
                "refreshed_at": self.refreshed_at,
                "client_id": self.client_id,
                "backend": self.backend,
                "rotation": self.rotation,
                "last_error": self.last_error,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> TokenRecord:
        """
        The record in C{data}.

        @raise ValueError: not a version 1 token record (the message names the
            field, never its value).
        """
        what = "token record"
        obj = _loads_object(data, what)
        rotation = obj.get("rotation", 0)
        if isinstance(rotation, bool) or not isinstance(rotation, int):
            raise ValueError(f"{what}: rotation is not an integer")
        return cls(
            access_token=_str(obj, "access_token", what),
            expires_at=_optional_number(obj, "expires_at", what),
            refresh_token=_optional_str(obj, "refresh_token", what),
            scope=_strings(obj, "scope", what),
            granted_at=_number(obj, "granted_at", what),
            client_id=_str(obj, "client_id", what),
            backend=_str(obj, "backend", what),
            token_type=_str(obj, "token_type", what),
            refreshed_at=_optional_number(obj, "refreshed_at", what),
            rotation=rotation,
            last_error=_optional_str(obj, "last_error", what),
        )


@define
class ClientRecord:
    """The gateway's client identity at one authorization server; the secret is kept out of the repr."""

    client_id: str
    client_secret: str | None = field(repr=False)
    auth_method: str
    registered_at: float
    kind: str
    redirect_uris: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """The record's JSON (format version 1), to be sealed."""
        return _dumps(
            {
                "v": RECORD_VERSION,
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "auth_method": self.auth_method,
                "registered_at": self.registered_at,
                "kind": self.kind,
                "redirect_uris": list(self.redirect_uris),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ClientRecord:
        """
        The record in C{data}.

        @raise ValueError: not a version 1 client record.
        """
        what = "client record"
        obj = _loads_object(data, what)
        return cls(
            client_id=_str(obj, "client_id", what),
            client_secret=_optional_str(obj, "client_secret", what),
            auth_method=_str(obj, "auth_method", what),
            registered_at=_number(obj, "registered_at", what),
            kind=_str(obj, "kind", what),
            redirect_uris=_strings(obj, "redirect_uris", what),
        )


# ---------------------------------------------------------------- engines


class RecordStore(Protocol):
    """
    What a storage engine implements (design §6.6): sealed bytes in, sealed
    bytes out, with a version per record for compare-and-set, and leases.
    """

    def get(self, kind: Kind, key: Key) -> Deferred[tuple[bytes, int] | None]:
        """The sealed record and its version, or C{None}; may fail with L{Unreadable}."""

    def put(self, kind: Kind, key: Key, sealed: bytes, expect: int | None) -> Deferred[int]:
        """Store C{sealed} if the version is C{expect} (C{None}: absent); the new version, or L{Conflict}."""

    def delete(self, kind: Kind, key: Key, expect: int | None = None) -> Deferred[bool]:
        """Remove the record (only at version C{expect} when given); whether there was one."""

    def take(self, kind: Kind, key: Key) -> Deferred[bytes | None]:
        """Get and delete, atomically."""

    def keys(self, kind: Kind, first: str | None = None) -> Deferred[list[Key]]:
        """The keys held of C{kind}, those whose first part is C{first} when given."""

    def lease(self, kind: Kind, key: Key, holder: str, seconds: float) -> Deferred[bool]:
        """Hold C{key} for C{seconds} unless another holder does; whether C{holder} has it."""

    def release(self, kind: Kind, key: Key, holder: str) -> Deferred[None]:
        """Give up C{holder}'s lease on C{key}."""

    def watch(self, callback: Callable[[Kind, Key], None]) -> None:
        """Call C{callback} when a record is changed elsewhere (another replica)."""


@runtime_checkable
class SetsAside(Protocol):
    """An engine that keeps a record that failed to open for inspection instead of deleting it."""

    def set_aside(self, kind: Kind, key: Key, version: int) -> Deferred[None]:
        """Move the record at C{version} out of its slot; the slot is then empty."""


@define
class Slot:
    """
    One record as an engine holds it in memory: C{sealed} is C{None} when
    absent (the last version is kept so versions never repeat in a process);
    C{problem} is a one-time L{Unreadable} kind reported by the next C{get}.
    """

    sealed: bytes | None = field(repr=False)
    version: int
    problem: tuple[str, str] | None = None


SlotId = Tuple[str, Key]


def _describe(kind: str, key: Key) -> str:
    return f"{kind} record {key_digest(key)}"


class MemoryStore:
    """
    L{RecordStore} in this process's memory: the store of tests, of
    C{pending} records, and the base the file store keeps its authoritative
    copy in. Leases expire on the injected clock; L{watch} never fires.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._slots: dict[SlotId, Slot] = {}
        self._leases: dict[SlotId, tuple[str, float]] = {}
        self._watchers: list[Callable[[Kind, Key], None]] = []

    # What a persistent subclass overrides.

    def _load(self, kind: Kind, key: Key) -> Slot:
        """The slot of a record not yet in memory."""
        return Slot(None, 0)

    def _persist(self, kind: Kind, key: Key, slot: Slot) -> Deferred[None]:
        """Make C{slot} (the new state of the record) durable."""
        return succeed(None)

    def _discover(self, kind: Kind) -> Iterable[Key]:
        """Keys held outside memory (loaded into it by the time this returns)."""
        return ()

    # The interface.

    def _slot(self, kind: Kind, key: Key) -> Slot:
        slot = self._slots.get((kind, key))
        if slot is None:
            slot = self._slots[(kind, key)] = self._load(kind, key)
        return slot

    def _replace(self, kind: Kind, key: Key, slot: Slot) -> Deferred[None]:
        self._slots[(kind, key)] = slot
        return self._persist(kind, key, slot)

    def get(self, kind: Kind, key: Key) -> Deferred[tuple[bytes, int] | None]:
        key = tuple(key)
        slot = self._slot(kind, key)
        if slot.problem is not None:
            problem, message = slot.problem
            slot.problem = None
            return fail(Unreadable(problem, message))
        if slot.sealed is None:
            return succeed(None)
        return succeed((slot.sealed, slot.version))

    def put(self, kind: Kind, key: Key, sealed: bytes, expect: int | None) -> Deferred[int]:
        key = tuple(key)
        slot = self._slot(kind, key)
        current = None if slot.sealed is None else slot.version
        if current != expect:
            return fail(Conflict(f"{_describe(kind, key)} is at version {current}, not {expect}"))
        new = Slot(sealed, slot.version + 1)
        return self._replace(kind, key, new).addCallback(lambda _: new.version)

    def delete(self, kind: Kind, key: Key, expect: int | None = None) -> Deferred[bool]:
        key = tuple(key)
        slot = self._slot(kind, key)
        slot.problem = None
        if slot.sealed is None:
            return succeed(False)
        if expect is not None and expect != slot.version:
            return fail(Conflict(f"{_describe(kind, key)} is at version {slot.version}, not {expect}"))
        return self._replace(kind, key, Slot(None, slot.version)).addCallback(lambda _: True)

    def take(self, kind: Kind, key: Key) -> Deferred[bytes | None]:
        key = tuple(key)
        if kind == "pending":
            # Single use, never compared-and-set: nothing is kept of a pending
            # record once taken, nor of a state looked up in vain (a forged one).
            gone = self._slots.pop((kind, key), None)
            return succeed(gone.sealed if gone is not None else None)
        slot = self._slot(kind, key)
        slot.problem = None
        sealed = slot.sealed
        if sealed is None:
            return succeed(None)
        return self._replace(kind, key, Slot(None, slot.version)).addCallback(lambda _: sealed)

    def keys(self, kind: Kind, first: str | None = None) -> Deferred[list[Key]]:
        try:
            list(self._discover(kind))
        except Exception as e:
            return fail(e)
        found = [
            key
            for (slot_kind, key), slot in self._slots.items()
            if slot_kind == kind and slot.sealed is not None and (first is None or key[:1] == (first,))
        ]
        return succeed(sorted(found))

    def lease(self, kind: Kind, key: Key, holder: str, seconds: float) -> Deferred[bool]:
        slot_id = (kind, tuple(key))
        now = self.clock.seconds()
        held = self._leases.get(slot_id)
        if held is not None and held[0] != holder and held[1] > now:
            return succeed(False)
        self._leases[slot_id] = (holder, now + seconds)
        return succeed(True)

    def release(self, kind: Kind, key: Key, holder: str) -> Deferred[None]:
        slot_id = (kind, tuple(key))
        held = self._leases.get(slot_id)
        if held is not None and held[0] == holder:
            del self._leases[slot_id]
        return succeed(None)

    def watch(self, callback: Callable[[Kind, Key], None]) -> None:
        # Nothing else writes to this process's memory: it never fires.
        self._watchers.append(callback)

    def set_aside(self, kind: Kind, key: Key, version: int) -> Deferred[None]:
        """A record that does not open is of no use in memory: it is dropped."""
        key = tuple(key)
        slot = self._slot(kind, key)
        if slot.sealed is None or slot.version != version:
            return succeed(None)
        return self._replace(kind, key, Slot(None, slot.version))


# ---------------------------------------------------------------- facades

RecordT = TypeVar("RecordT", TokenRecord, ClientRecord)


class _SealedStore(Generic[RecordT]):
    """Seal, open and count what went wrong, for one kind of record."""

    kind: Kind
    parse: Callable[[bytes], RecordT]
    key_length: int

    #: Whether the records are meant to outlive the process (a store on disk,
    #: even one that could not be opened), not memory only.
    durable = False

    def __init__(self, records: RecordStore, ring: KeyRing) -> None:
        self._records = records
        self._ring = ring
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        # Records held but not usable (unknown envelope or record version, a
        # key not configured, when the engine cannot set them aside): the
        # version to overwrite when the principal authorizes again.
        self._unusable: dict[Key, int] = {}
        self._told: set[tuple[str, Key]] = set()

    def _count(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def _once(self, what: str, key: Key) -> bool:
        if (what, key) in self._told:
            return False
        self._told.add((what, key))
        return True

    async def _get(self, key: Key) -> tuple[RecordT, int] | None:
        try:
            found = await self._records.get(self.kind, key)
        except Unreadable as e:
            self._count(e.kind)
            return None
        if found is None:
            self._unusable.pop(key, None)
            return None
        sealed, version = found
        digest = key_digest(key)
        try:
            plaintext, _old = self._ring.open(self.kind, key, sealed)
        except (Tampered, UnknownKey):
            self._count("tampered")
            log.error(
                "{kind} record {digest} failed authentication (tampered, or written under a key not configured): "
                "the principal must authorize again",
                kind=self.kind,
                digest=digest,
            )
            if isinstance(self._records, SetsAside):
                await self._records.set_aside(self.kind, key, version)
            else:
                self._unusable[key] = version
            return None
        except UnknownVersion:
            self._count("version")
            if self._once("version", key):
                log.error("{kind} record {digest} was written by a newer twisted-mcp: not used", kind=self.kind, digest=digest)
            self._unusable[key] = version
            return None
        try:
            record = self.parse(plaintext)
        except ValueError as e:
            self._count("version")
            if self._once("format", key):
                log.error("{kind} record {digest} is not usable: {problem}", kind=self.kind, digest=digest, problem=str(e))
            self._unusable[key] = version
            return None
        self._unusable.pop(key, None)
        return record, version

    async def _put(self, key: Key, record: RecordT, expect: int | None) -> int:
        if expect is None and key in self._unusable:
            expect = self._unusable[key]
        sealed = self._ring.seal(self.kind, key, record.to_json())
        try:
            version = await self._records.put(self.kind, key, sealed, expect)
        except OSError as e:
            self._count("io")
            log.error(
                "{kind} record {digest} could not be written: {problem}",
                kind=self.kind,
                digest=key_digest(key),
                problem=e.strerror or type(e).__name__,
            )
            raise
        self._unusable.pop(key, None)
        return version

    async def _delete(self, key: Key) -> bool:
        self._unusable.pop(key, None)
        return await self._records.delete(self.kind, key)

    async def _keys(self, first: str | None) -> list[Key]:
        found = await self._records.keys(self.kind, first)
        return [tuple(key) for key in found if len(key) == self.key_length]


class TokenStore(_SealedStore[TokenRecord]):
    """Token records keyed by (principal, issuer, resource), sealed."""

    kind: Kind = "token"
    parse = staticmethod(TokenRecord.from_json)
    key_length = 3

    def get(self, key: TokenKey) -> Deferred[tuple[TokenRecord, int] | None]:
        """
        The record and its version; C{None} when there is none or it does not
        open (logged, counted in L{errors}).
        """
        return Deferred.fromCoroutine(self._get(tuple(key)))

    def put(self, key: TokenKey, record: TokenRecord, expect: int | None) -> Deferred[int]:
        """Seal and store C{record} if the version is still C{expect}; the new version, or L{Conflict}."""
        return Deferred.fromCoroutine(self._put(tuple(key), record, expect))

    def delete(self, key: TokenKey) -> Deferred[bool]:
        """Remove the record; whether there was one."""
        return Deferred.fromCoroutine(self._delete(tuple(key)))

    def keys(self, principal: str | None = None) -> Deferred[list[TokenKey]]:
        """The keys held, of C{principal} when given."""
        return cast("Deferred[list[TokenKey]]", Deferred.fromCoroutine(self._keys(principal)))


class ClientStore(_SealedStore[ClientRecord]):
    """Client records keyed by (issuer, redirect-set digest), sealed."""

    kind: Kind = "client"
    parse = staticmethod(ClientRecord.from_json)
    key_length = 2

    def get(self, key: ClientKey) -> Deferred[tuple[ClientRecord, int] | None]:
        """The record and its version; C{None} when there is none or it does not open."""
        return Deferred.fromCoroutine(self._get(tuple(key)))

    def put(self, key: ClientKey, record: ClientRecord, expect: int | None) -> Deferred[int]:
        """Seal and store C{record} if the version is still C{expect}; the new version, or L{Conflict}."""
        return Deferred.fromCoroutine(self._put(tuple(key), record, expect))

    def delete(self, key: ClientKey) -> Deferred[bool]:
        """Remove the record; whether there was one."""
        return Deferred.fromCoroutine(self._delete(tuple(key)))

    def keys(self, issuer: str | None = None) -> Deferred[list[ClientKey]]:
        """The keys held, of C{issuer} when given."""
        return cast("Deferred[list[ClientKey]]", Deferred.fromCoroutine(self._keys(issuer)))


class PendingStore:
    """
    Started authorizations keyed by C{state}, sealed (they hold the PKCE
    verifier), each taken once. A record whose C{data["expires"]} (POSIX
    seconds) has passed on the clock is not returned.
    """

    kind: Kind = "pending"

    def __init__(self, records: RecordStore, ring: KeyRing, clock: IReactorTime | None = None) -> None:
        """
        @param clock: what decides expiry; by default the engine's own
            C{clock} (L{MemoryStore} and the file store have one).
        @raise TypeError: no clock given and the engine has none.
        """
        if clock is None:
            clock = getattr(records, "clock", None)
        if clock is None:
            raise TypeError("PendingStore needs a clock: the record store has none, pass clock=")
        self._records = records
        self._ring = ring
        self._clock: IReactorTime = clock
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        # state -> expiry, to drop abandoned records on later puts.
        self._expiry: dict[str, float] = {}

    def put(self, state: str, data: dict[str, Any]) -> Deferred[None]:
        """Seal and store C{data} (JSON-able) under C{state}; L{Conflict} if C{state} is taken."""
        return Deferred.fromCoroutine(self._put(state, data))

    def take(self, state: str) -> Deferred[dict[str, Any] | None]:
        """The data stored under C{state}, removed; C{None} if absent, expired or unusable."""
        return Deferred.fromCoroutine(self._take(state))

    async def _put(self, state: str, data: dict[str, Any]) -> None:
        await self._sweep()
        plaintext = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
        await self._records.put(self.kind, (state,), self._ring.seal(self.kind, (state,), plaintext), None)
        expires = data.get("expires")
        if isinstance(expires, (int, float)) and not isinstance(expires, bool):
            self._expiry[state] = float(expires)

    async def _sweep(self) -> None:
        now = self._clock.seconds()
        for state in [state for state, expires in self._expiry.items() if expires <= now]:
            del self._expiry[state]
            await self._records.delete(self.kind, (state,))

    async def _take(self, state: str) -> dict[str, Any] | None:
        self._expiry.pop(state, None)
        try:
            sealed = await self._records.take(self.kind, (state,))
        except Unreadable as e:
            self._count(e.kind)
            return None
        if sealed is None:
            return None
        try:
            plaintext, _old = self._ring.open(self.kind, (state,), sealed)
        except (Tampered, UnknownKey):
            self._count("tampered")
            log.error("pending record {digest} failed authentication", digest=key_digest((state,)))
            return None
        except UnknownVersion:
            self._count("version")
            return None
        try:
            data = json.loads(plaintext)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            self._count("version")
            return None
        expires = data.get("expires")
        if isinstance(expires, (int, float)) and not isinstance(expires, bool) and expires <= self._clock.seconds():
            return None
        return data

    def _count(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


__all__ = [
    "ClientKey",
    "ClientRecord",
    "ClientStore",
    "Conflict",
    "ERROR_KINDS",
    "Key",
    "Kind",
    "MemoryStore",
    "PendingStore",
    "RecordStore",
    "SetsAside",
    "Slot",
    "StoreUnusable",
    "TokenKey",
    "TokenRecord",
    "TokenStore",
    "Unreadable",
]
