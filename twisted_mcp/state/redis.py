"""
The shared state in Redis: replicas of one deployment share rate buckets,
concurrency leases, flags (kill switch, approvals, quarantine, revoked
tokens), optionally circuit breakers, and HTTP session records.

Keys, all under the namespace C{NS} of C{state.namespace}:

  - C{NS:rate:KEY}: a token bucket (hash C{tokens}, C{ts}), taken by one Lua
    script per request (L{twisted_mcp.state.redis_scripts}), expiring once
    it would be full again;
  - C{NS:lease:KEY}: a sorted set of leases (C{"<replica>:<process>:<n>"}
    -> expiry in ms, Redis time; C{<process>} is random per L{RedisState},
    so that two processes configured with one replica name never take
    each other's leases), renewed by their replica every C{leaseSeconds}/3;
  - C{NS:flags:KIND}: a hash per kind of L{FLAG_KINDS} (name -> value),
    changed together with the news of the change by one script (atomic:
    no C{MULTI} on the shared connection, which a command failing midway
    would leave open).  A kind holds at most L{MAX_FLAGS_PER_KIND} flags:
    a new one beyond is refused (L{FlagLimitReached}).  A C{revoked}
    flag's value is C{"<expires epoch seconds>"} (decimal text): once that
    time has passed the revocation is left out of every snapshot, and the
    periodic resync deletes it (at most every L{PRUNE_INTERVAL} seconds);
  - C{NS:session:SID}: an HTTP session's record (JSON), expiring after its
    idle timeout;
  - C{NS:events}: the pub/sub channel (JSON messages: flags changed, a
    breaker moved, a session ended).

Keys longer than L{MAX_KEY_PART} are replaced by their SHA-256.  Values
written are bounded (L{MAX_FLAG_VALUE}, L{MAX_SESSION_BYTES}); a malformed
value read or message received is logged (once per kind of problem) and
ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Callable, Sequence

from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.state.base import FLAG_KINDS, BucketSpec, FlagLimitReached, SharedState, Unavailable
from twisted_mcp.state.config import StateSettings
from twisted_mcp.state.redis_client import CommandRefused, RedisLink
from twisted_mcp.state.redis_scripts import SCRIPTS, Script

log = Logger()

#: A key part (bucket key, lease key, session id) longer than this is stored as its SHA-256.
MAX_KEY_PART = 200
#: Longest flag name and value written (bytes of UTF-8).
MAX_FLAG_NAME = 512
MAX_FLAG_VALUE = 64 * 1024
#: Largest session record written (bytes of JSON).
MAX_SESSION_BYTES = 256 * 1024
#: Flags of one kind kept at most: a new one beyond is refused (L{FlagLimitReached}); a
#: hash grown beyond it by other writers is cut when read, and logged.
MAX_FLAGS_PER_KIND = 100000
#: Seconds between two deletions of expired revocations (on the periodic resync).
PRUNE_INTERVAL = 60.0
#: Expired revocations deleted per script call.
PRUNE_CHUNK = 1000
#: Largest pub/sub message handled.
MAX_MESSAGE_BYTES = 4096
#: Milliseconds a full bucket's key outlives the time it takes to refill.
BUCKET_MARGIN_MS = 1000
#: Leases renewed per script call (several calls go out together).
RENEW_CHUNK = 500


def _bounded(part: str) -> str:
    if len(part.encode("utf-8", "surrogatepass")) <= MAX_KEY_PART:
        return part
    return "#" + hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest()


def _encodable(text: str) -> bool:
    """Whether C{text} can be sent to Redis (no lone surrogate): checked before a transaction starts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _expiry(value: str) -> float | None:
    """A C{revoked} flag's value (C{"<expires epoch seconds>"}) as a number, or None when it is not one."""
    try:
        expires = float(value)
    except ValueError:
        return None
    return expires if math.isfinite(expires) else None


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else "0"


class RedisState(SharedState):
    """
    Every store in Redis (see the module docstring).  L{start} connects
    and takes the first flags snapshot; from then on, every
    C{resyncInterval} seconds it re-reads the flags (or, while Redis is
    unreachable, tries to reconnect and PINGs).
    """

    kind = "redis"

    def __init__(self, settings: StateSettings, reactor: Any) -> None:
        super().__init__(settings.replica, dict(settings.onUnavailable))
        self.settings = settings
        self.reactor = reactor
        self.namespace = settings.namespace
        self.channel = f"{settings.namespace}:events"
        address = settings.address()
        self.link = RedisLink(reactor, address, settings.timeout, on_lost=self._command_lost)
        self.subscriber = RedisLink(
            reactor, address, settings.timeout, subscriber=True, on_message=self._message, on_lost=self._subscriber_lost
        )
        self._logged: set[str] = set()
        self._tick_call: Any = None
        self._renew_call: Any = None
        self._running = False
        #: stop() began: failures from then on are the shutdown's, not outages.
        self._stopped = False
        #: Flags keys Redis refused to read as hashes (WRONGTYPE), reported until they read again.
        self.corrupt: set[str] = set()
        self._pruned_at = -math.inf
        self._ticking: Deferred[None] | None = None
        # Typed as themselves here (the seam's attributes are the Protocols).
        self.redis_rates = RedisRates(self)
        self.redis_leases = RedisLeases(self)
        self.redis_flags = RedisFlags(self)
        self.redis_sessions = RedisSessions(self)
        self.redis_breakers = RedisBreakers(self) if settings.breakers == "shared" else None
        self.rates = self.redis_rates
        self.leases = self.redis_leases
        self.flags = self.redis_flags
        self.sessions = self.redis_sessions
        self.breakers = self.redis_breakers

    # -- keys, logging ------------------------------------------------------------

    def key(self, kind: str, part: str) -> str:
        return f"{self.namespace}:{kind}:{_bounded(part)}"

    def log_once(self, problem: str, message: str, **fields: Any) -> None:
        """Log C{message} the first time a problem of kind C{problem} happens (malformed data, not outages)."""
        if problem in self._logged:
            return
        self._logged.add(problem)
        log.warn(message + " (logged once; later ones are ignored silently)", **fields)

    def describe(self) -> str:
        return f"Redis at {self.settings.describe_url()}, namespace {self.namespace!r}, replica {self.replica!r}"

    # -- availability -------------------------------------------------------------

    def set_available(self, available: bool, problem: str | None = None) -> None:
        """As L{SharedState.set_available}, except once L{stop} began: closing is not an outage."""
        if self._stopped:
            return
        super().set_available(available, problem)

    def failed(self, failure: Failure) -> Failure:
        """Errback for every command: a lost or silent Redis makes the state unavailable (not while stopping)."""
        if self._stopped:
            return failure
        if failure.check(Unavailable) and not failure.check(CommandRefused) and self.link.protocol is None:
            self.set_available(False, str(failure.value))
        return failure

    def _command_lost(self, problem: str) -> None:
        self.set_available(False, problem)

    def _subscriber_lost(self, problem: str) -> None:
        log.info(
            "The Redis pub/sub connection was lost ({problem}); flags are re-read every {interval} s until it is back",
            problem=problem,
            interval=self.settings.resyncInterval,
        )

    def command(self, *args: Any) -> Deferred[Any]:
        return self.link.command(*args).addErrback(self.failed)

    def script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Deferred[Any]:
        """Run C{script} by its SHA-1 (EVALSHA); when Redis does not have it yet (NOSCRIPT), by its source (EVAL, which loads it)."""
        sent = self.link.command("EVALSHA", script.sha, len(keys), *keys, *args)

        def noscript(failure: Failure) -> Any:
            if failure.check(CommandRefused) and failure.value.reply.startswith("NOSCRIPT"):
                return self.link.command("EVAL", script.source, len(keys), *keys, *args)
            return failure

        return sent.addErrback(noscript).addErrback(self.failed)

    # -- start, stop, the resync tick ---------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Connect, subscribe, and take the first flags snapshot (handed to
        the flag watchers).  Fires when done; when Redis cannot be reached,
        after C{state.timeout} (unavailable then: L{problem} says why; each
        later step is bounded by the timeout too).  Never fails.
        """
        self._running = True
        self._stopped = False
        d = Deferred.fromCoroutine(self._start())
        d.addErrback(lambda f: log.failure("Starting the Redis state failed unexpectedly", f))
        return d

    async def _start(self) -> None:
        subscribing = self._subscribe()
        try:
            await self._connect()
        except Unavailable as e:
            self.set_available(False, str(e))
        try:
            await subscribing
        except Unavailable as e:
            log.info(
                "The Redis pub/sub connection is not up yet ({problem}); flags are re-read every {interval} s",
                problem=str(e),
                interval=self.settings.resyncInterval,
            )
        if self.link.protocol is not None:
            try:
                await self.redis_flags.resync()
                self.set_available(True)
            except Unavailable as e:
                self.set_available(False, str(e))
        if self.available:
            log.info("Shared state: {state}", state=self.describe())
        else:
            log.warn("Shared state: {state}; not reachable yet: {problem}", state=self.describe(), problem=self.problem)
        self._schedule_tick()
        self._schedule_renew()

    async def _connect(self) -> None:
        """Connect the command link and load every script (so that a request's first EVALSHA finds it)."""
        await self.link.connect()
        loads = [self.link.command("SCRIPT", "LOAD", script.source) for script in SCRIPTS.values()]
        try:
            await defer.gatherResults(loads, consumeErrors=True)
        except defer.FirstError as e:
            raise e.subFailure.value from None

    def _subscribe(self) -> Deferred[None]:
        d = self.subscriber.connect()
        d.addCallback(lambda _: self.subscriber.command("SUBSCRIBE", self.channel))
        return d.addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        """
        Stop the timers and close both connections.  Commands still in
        flight fail (L{Unavailable}) without counting as an outage.
        """
        self._running = False
        self._stopped = True
        for call in (self._tick_call, self._renew_call):
            if call is not None and call.active():
                call.cancel()
        self._tick_call = self._renew_call = None
        closing = [self.link.close(), self.subscriber.close()]
        return defer.gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)

    def _schedule_tick(self) -> None:
        if self._running:
            self._tick_call = self.reactor.callLater(self.settings.resyncInterval, self._tick)

    def _tick(self) -> None:
        self._tick_call = None
        d = Deferred.fromCoroutine(self._resync_or_reconnect())
        d.addErrback(lambda f: log.failure("The shared state's periodic check failed unexpectedly", f))
        d.addBoth(lambda _: self._schedule_tick())

    async def _resync_or_reconnect(self) -> None:
        if self.link.protocol is None:
            try:
                await self._connect()
                await self.link.command("PING")
            except Unavailable as e:
                self.set_available(False, str(e))
                return
            self.set_available(True)
        if self.subscriber.protocol is None:
            try:
                await self._subscribe()
            except Unavailable:
                pass  # the flags are still re-read below; tried again next tick
        try:
            await self.redis_flags.resync()
        except Unavailable:
            return
        self.set_available(True)
        if self.reactor.seconds() - self._pruned_at >= PRUNE_INTERVAL:
            self._pruned_at = self.reactor.seconds()
            await self.redis_flags.prune()

    def flags_corrupt(self, key: str, kind: str) -> Unavailable:
        """
        Redis holds something else than a hash at flags key C{key}: no flag
        can be read, so the state is unavailable until it reads again
        (logged once per episode).
        """
        problem = (
            f"the Redis key {key} (the {kind} flags) is not a hash (WRONGTYPE): "
            f"no flag can be read until it is deleted or repaired"
        )
        if key not in self.corrupt:
            self.corrupt.add(key)
            log.warn(
                "Shared state: {problem}; every replica reading it treats the flags as unavailable",
                problem=problem,
            )
        self.set_available(False, problem)
        return Unavailable(problem)

    def flags_readable(self) -> None:
        """Every flags key read again: a corrupt one was repaired."""
        if self.corrupt:
            log.info("Shared state: the flags keys {keys} read again", keys=", ".join(sorted(self.corrupt)))
            self.corrupt.clear()
            self.set_available(True)

    def unexpected(self, what: str, reply: Any) -> Unavailable:
        """
        Redis answered C{what} with a reply of the wrong shape: the
        connection cannot be trusted (e.g. left inside a transaction), so it
        is dropped (the next resync reconnects) and the caller gets
        L{Unavailable}, never an empty answer.
        """
        cause = f"Redis answered {what} with something unexpected ({type(reply).__name__} {str(reply)[:40]!r})"
        self.link.abort(cause + "; the connection was reset")
        return Unavailable(f"Redis at {self.link.where()}: {cause}")

    def _schedule_renew(self) -> None:
        if self._running:
            self._renew_call = self.reactor.callLater(self.settings.leaseSeconds / 3, self._renew)

    def _renew(self) -> None:
        self._renew_call = None
        d = self.redis_leases.renew()
        d.addErrback(lambda f: log.failure("Renewing the concurrency leases failed unexpectedly", f))
        d.addBoth(lambda _: self._schedule_renew())

    # -- pub/sub ------------------------------------------------------------------

    def publish(self, message: dict[str, Any]) -> Deferred[Any]:
        return self.command("PUBLISH", self.channel, json.dumps(message, separators=(",", ":")))

    def _message(self, channel: Any, raw: Any) -> None:
        if not isinstance(raw, str) or len(raw) > MAX_MESSAGE_BYTES:
            self.log_once(
                "message", "A message on the Redis channel {channel} is not UTF-8 text or too long: ignored", channel=self.channel
            )
            return
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("t"), str) or not isinstance(message.get("r"), str):
            self.log_once(
                "message", "A message on the Redis channel {channel} is not one the gateway sends: ignored", channel=self.channel
            )
            return
        kind = message["t"]
        if kind == "flags":
            self.redis_flags.changed()
        elif kind == "breaker" and self.redis_breakers is not None:
            self.redis_breakers.received(message)
        elif kind == "session-ended":
            self.redis_sessions.received(message)


class RedisRates:
    """Token buckets shared by every replica (L{twisted_mcp.state.base.RateStore})."""

    def __init__(self, state: RedisState) -> None:
        self.state = state

    def _call(self, script: Script, specs: Sequence[BucketSpec]) -> Deferred[Any]:
        keys = [self.state.key("rate", spec.key) for spec in specs]
        args: list[str] = []
        for spec in specs:
            args += [_number(spec.rate), _number(spec.burst)]
        args.append(str(BUCKET_MARGIN_MS))
        return self.state.script(script, keys, args)

    def take(self, specs: Sequence[BucketSpec]) -> Deferred[tuple[float, str]]:
        if not specs:
            return succeed((0.0, ""))

        def read(reply: Any) -> tuple[float, str]:
            if reply == "0":
                return (0.0, "")
            try:
                wait_text, index_text = reply.split(" ")
                wait, index = float(wait_text), int(index_text)
                kind = specs[index - 1].kind if index >= 1 else ""
            except (AttributeError, TypeError, ValueError, IndexError) as e:
                raise Unavailable(
                    f"Redis answered the rate-limit script with something unexpected ({type(e).__name__})"
                ) from None
            if not kind:
                raise Unavailable("Redis answered the rate-limit script with something unexpected (bucket 0)")
            return (wait, kind)

        return self._call(SCRIPTS["take"], specs).addCallback(read)

    def give_back(self, specs: Sequence[BucketSpec]) -> None:
        if not specs:
            return
        d = self._call(SCRIPTS["give_back"], specs)
        d.addErrback(lambda f: log.info("A rate-limit token could not be given back: {why}", why=f.getErrorMessage()))


class RedisLeases:
    """Concurrency slots as leases shared by every replica (L{twisted_mcp.state.base.LeaseStore})."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        #: Random per process: two processes configured with the same replica name hold distinct leases.
        self.token = os.urandom(6).hex()
        self._counter = 0
        #: lease id -> its sorted set's key: the leases this replica holds (renewed).
        self.held: dict[str, str] = {}

    def _ms(self) -> int:
        return max(1, int(self.state.settings.leaseSeconds * 1000))

    def acquire(self, key: str, limit: int) -> Deferred[str | None]:
        self._counter += 1
        lease = f"{self.state.replica}:{self.token}:{self._counter}"
        zkey = self.state.key("lease", key)

        def added(reply: Any) -> str | None:
            if reply == 1:
                self.held[lease] = zkey
                return lease
            if reply == 0:
                return None
            raise self.state.unexpected("the lease script", reply)

        return self.state.script(SCRIPTS["acquire"], [zkey], [lease, str(int(limit)), str(self._ms())]).addCallback(added)

    def release(self, key: str, lease: str) -> None:
        zkey = self.held.pop(lease, None) or self.state.key("lease", key)
        d = self.state.command("ZREM", zkey, lease)
        d.addErrback(
            lambda f: log.info(
                "A concurrency lease could not be released (it expires on its own): {why}", why=f.getErrorMessage()
            )
        )

    def renew(self) -> Deferred[None]:
        """Extend every lease this replica holds (one script call per L{RENEW_CHUNK}, all sent together)."""
        if not self.held:
            return succeed(None)
        items = list(self.held.items())
        calls = []
        for start in range(0, len(items), RENEW_CHUNK):
            chunk = items[start : start + RENEW_CHUNK]
            keys = [zkey for _, zkey in chunk]
            args = [str(self._ms())] + [lease for lease, _ in chunk]
            calls.append(self.state.script(SCRIPTS["renew"], keys, args))
        d = defer.gatherResults(calls, consumeErrors=True)

        def done(result: Any) -> None:
            if isinstance(result, Failure):
                log.info(
                    "Concurrency leases could not be renewed: {why}",
                    why=result.value.subFailure.getErrorMessage()
                    if isinstance(result.value, defer.FirstError)
                    else result.getErrorMessage(),
                )
                return
            if not all(isinstance(n, int) for n in result):
                log.info("Concurrency leases could not be renewed: Redis answered with something unexpected")
                return
            kept = sum(result)
            if kept < len(items):
                log.warn(
                    "{lost} of this replica's {held} concurrency leases had expired before they were renewed (Redis was slow or unreachable for leaseSeconds)",
                    lost=len(items) - kept,
                    held=len(items),
                )

        return d.addBoth(done)


class RedisFlags:
    """Flags every replica applies (L{twisted_mcp.state.base.FlagStore})."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.watchers: list[Callable[[dict[str, dict[str, str]]], None]] = []
        #: Expired revocations the last read left out (deleted by L{prune}).
        self.expired: list[str] = []
        self._resyncing = False
        self._again = False

    def _key(self, kind: str) -> str:
        return f"{self.state.namespace}:flags:{kind}"

    def set(self, kind: str, name: str, value: str | None) -> Deferred[None]:
        if kind not in FLAG_KINDS:
            return fail(ValueError(f"unknown flag kind {kind!r} (expected one of {', '.join(FLAG_KINDS)})"))
        if not isinstance(name, str) or not name or len(name.encode("utf-8", "surrogatepass")) > MAX_FLAG_NAME:
            return fail(ValueError(f"a flag's name must be 1 to {MAX_FLAG_NAME} bytes of text"))
        if value is not None and (not isinstance(value, str) or len(value.encode("utf-8", "surrogatepass")) > MAX_FLAG_VALUE):
            return fail(ValueError(f"a flag's value must be text of at most {MAX_FLAG_VALUE} bytes"))
        if not _encodable(name) or (value is not None and not _encodable(value)):
            return fail(ValueError("a flag's name and value must be text that can be encoded as UTF-8"))
        if kind == "revoked" and value is not None and _expiry(value) is None:
            return fail(
                ValueError(f"a revoked flag's value must be when it may be forgotten, in epoch seconds (got {value[:40]!r})")
            )
        key = self._key(kind)
        message = json.dumps({"t": "flags", "r": self.state.replica, "k": kind}, separators=(",", ":"))
        args = [self.state.channel, message, str(MAX_FLAGS_PER_KIND), name] + ([value] if value is not None else [])

        def check(reply: Any) -> None:
            if reply == 0:
                raise FlagLimitReached(
                    f"the shared state already holds {MAX_FLAGS_PER_KIND} {kind} flags, the most it keeps: "
                    f"{name[:80]!r} was not stored (remove some, or wait for expired revocations to be forgotten)",
                    kind,
                    MAX_FLAGS_PER_KIND,
                )
            if reply != 1:
                raise self.state.unexpected("the flag change", reply)

        # One script: the change and the news of it, atomically.
        return self.state.script(SCRIPTS["set_flag"], [key], args).addCallback(check)

    def _hgetall(self, kind: str) -> Deferred[Any]:
        key = self._key(kind)

        def refused(failure: Failure) -> Any:
            if failure.check(CommandRefused) and failure.value.reply.startswith("WRONGTYPE"):
                raise self.state.flags_corrupt(key, kind)
            return failure

        return self.state.link.command("HGETALL", key).addErrback(refused)

    async def _read(self) -> dict[str, dict[str, str]]:
        replies = (
            await defer.gatherResults([self._hgetall(kind) for kind in FLAG_KINDS], consumeErrors=True)
            .addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
            .addErrback(self.state.failed)
        )
        for kind, reply in zip(FLAG_KINDS, replies, strict=True):
            if not isinstance(reply, list) or len(reply) % 2:
                # Never "no flags": that would release the kill switch on this replica.
                raise self.state.unexpected(f"HGETALL {self._key(kind)}", reply)
        self.state.flags_readable()
        now = self.state.reactor.seconds()
        expired: list[str] = []
        snapshot: dict[str, dict[str, str]] = {}
        for kind, reply in zip(FLAG_KINDS, replies, strict=True):
            flags: dict[str, str] = {}
            items = reply
            if len(items) > 2 * MAX_FLAGS_PER_KIND:
                self.state.log_once(
                    f"flags-count:{kind}",
                    "Redis holds more than {limit} {kind} flags ({key}); only the first {limit} are applied",
                    limit=MAX_FLAGS_PER_KIND,
                    kind=kind,
                    key=self._key(kind),
                )
                items = items[: 2 * MAX_FLAGS_PER_KIND]
            for name, value in zip(items[0::2], items[1::2], strict=False):
                if (
                    not isinstance(name, str)
                    or not isinstance(value, str)
                    or not name
                    or len(name) > MAX_FLAG_NAME
                    or len(value) > MAX_FLAG_VALUE
                ):
                    self.state.log_once(
                        f"flags:{kind}",
                        "A {kind} flag in Redis ({key}) is not text or is too long: ignored",
                        kind=kind,
                        key=self._key(kind),
                    )
                    continue
                if kind == "revoked":
                    expires = _expiry(value)
                    if expires is None:
                        # Kept (a revocation is never dropped for its form), and said once.
                        self.state.log_once(
                            "revoked-value",
                            "A revoked flag in Redis ({key}) has a value that is not an expiry in epoch seconds: kept for good",
                            key=self._key(kind),
                        )
                    elif expires <= now:
                        expired.append(name)
                        continue
                flags[name] = value
            snapshot[kind] = flags
        self.expired = expired
        return snapshot

    def prune(self) -> Deferred[None]:
        """
        Delete the expired revocations the last read found (each checked
        again in Redis: one revoked again meanwhile stays).  Best effort,
        never fails.
        """
        names, self.expired = self.expired, []
        if not names:
            return succeed(None)
        key = self._key("revoked")
        now = _number(self.state.reactor.seconds())
        calls = [
            self.state.script(SCRIPTS["prune_expired"], [key], [now, *names[start : start + PRUNE_CHUNK]])
            for start in range(0, len(names), PRUNE_CHUNK)
        ]

        def done(result: Any) -> None:
            if isinstance(result, Failure):
                failure = result.value.subFailure if isinstance(result.value, defer.FirstError) else result
                log.info("Expired revocations could not be deleted from Redis (tried again later): {why}", why=failure.getErrorMessage())
            else:
                log.debug("Deleted {n} expired revocations from Redis", n=sum(int(n) for n in result if str(n).isdigit()))

        return defer.gatherResults(calls, consumeErrors=True).addBoth(done)

    def snapshot(self) -> Deferred[dict[str, dict[str, str]]]:
        return Deferred.fromCoroutine(self._read())

    def watch(self, callback: Callable[[dict[str, dict[str, str]]], None]) -> None:
        self.watchers.append(callback)

    def resync(self) -> Deferred[None]:
        """
        Read every flag and hand the snapshot to every watcher.  One read at
        a time: called while one is under way, it fires at once and that
        read is followed by another (a change published meanwhile is seen).
        """
        if self._resyncing:
            self._again = True
            return succeed(None)
        self._resyncing = True
        self._again = False

        def deliver(snapshot: dict[str, dict[str, str]]) -> None:
            for callback in list(self.watchers):
                try:
                    callback(snapshot)
                except Exception:
                    log.failure("A flags watcher failed (the flags stay as they were on this replica)")

        def done(result: Any) -> Any:
            self._resyncing = False
            if self._again:
                self.changed()
            return result

        return self.snapshot().addCallback(deliver).addBoth(done)

    def changed(self) -> None:
        """A replica published a change: read the flags now."""
        self.resync().addErrback(lambda f: None)  # unavailable: the tick reports it and tries again

    def marker(self, candidate: str) -> Deferred[str]:
        """
        The store's marker: set to C{candidate} when Redis holds none (a new
        store, or one emptied by a restart without its data), then read.
        Fires with the marker Redis holds; a replica that sees it change
        knows the flags were lost (L{twisted_mcp.ops.shared_state}).
        """
        key = f"{self.state.namespace}:flags-marker"
        sent = [self.state.link.command("SET", key, candidate, "NX"), self.state.link.command("GET", key)]

        def held(results: list[Any]) -> str:
            value = results[-1]
            if not isinstance(value, str):
                raise Unavailable("Redis answered the flags marker with something unexpected")
            return value

        return (
            defer.gatherResults(sent, consumeErrors=True)
            .addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
            .addErrback(self.state.failed)
            .addCallback(held)
        )


class RedisBreakers:
    """Circuit breakers' transitions, shared (L{twisted_mcp.state.base.BreakerStore}; only with C{breakers: shared})."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.watchers: list[Callable[[str, str, float], None]] = []

    def publish(self, backend: str, state: str, until: float) -> None:
        if len(backend) > MAX_FLAG_NAME or state not in ("open", "closed", "half-open"):
            log.warn("A breaker change was not published: backend name too long or state {state!r} unknown", state=state)
            return
        message = {"t": "breaker", "r": self.state.replica, "b": backend, "s": state, "u": until if math.isfinite(until) else 0.0}
        d = self.state.publish(message)
        d.addErrback(
            lambda f: log.info(
                "A circuit breaker change could not be shared with the other replicas: {why}", why=f.getErrorMessage()
            )
        )

    def watch(self, callback: Callable[[str, str, float], None]) -> None:
        self.watchers.append(callback)

    def received(self, message: dict[str, Any]) -> None:
        if message["r"] == self.state.replica:
            return
        backend, state, until = message.get("b"), message.get("s"), message.get("u")
        if (
            not isinstance(backend, str)
            or state not in ("open", "closed", "half-open")
            or isinstance(until, bool)
            or not isinstance(until, (int, float))
        ):
            self.state.log_once("breaker", "A circuit breaker message on the Redis channel is malformed: ignored")
            return
        for callback in list(self.watchers):
            try:
                callback(backend, str(state), float(until))
            except Exception:
                log.failure("A circuit breaker watcher failed")


class RedisSessions:
    """Records of handshake-era HTTP sessions (L{twisted_mcp.state.base.SessionStore})."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.watchers: list[Callable[[str], None]] = []

    def _key(self, sid: str) -> str:
        return self.state.key("session", sid)

    @staticmethod
    def _ms(ttl: float) -> int:
        return max(1, int(ttl * 1000))

    def save(self, sid: str, record: dict[str, Any], ttl: float) -> Deferred[None]:
        try:
            text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            return fail(ValueError(f"an HTTP session record cannot be stored as JSON: {e}"))
        if len(text.encode("utf-8", "surrogatepass")) > MAX_SESSION_BYTES:
            return fail(ValueError(f"an HTTP session record is larger than {MAX_SESSION_BYTES} bytes"))
        return self.state.command("SET", self._key(sid), text, "PX", self._ms(ttl)).addCallback(lambda _: None)

    def load(self, sid: str) -> Deferred[dict[str, Any] | None]:
        def read(reply: Any) -> dict[str, Any] | None:
            if reply is None:
                return None
            try:
                record = json.loads(reply) if isinstance(reply, str) else None
            except (ValueError, RecursionError):
                record = None
            if not isinstance(record, dict):
                self.state.log_once("session", "An HTTP session record in Redis is not a JSON object: treated as absent")
                return None
            return record

        return self.state.command("GET", self._key(sid)).addCallback(read)

    def touch(self, sid: str, ttl: float) -> None:
        d = self.state.command("PEXPIRE", self._key(sid), self._ms(ttl))
        d.addErrback(lambda f: log.debug("An HTTP session's expiry could not be extended: {why}", why=f.getErrorMessage()))

    def delete(self, sid: str) -> Deferred[None]:
        if not _encodable(sid):
            return fail(ValueError("an HTTP session id must be text that can be encoded as UTF-8"))
        message = json.dumps({"t": "session-ended", "r": self.state.replica, "sid": sid}, separators=(",", ":"))
        if len(message) > MAX_MESSAGE_BYTES:
            return fail(ValueError("an HTTP session id is too long"))

        def check(reply: Any) -> None:
            if reply != 1:
                raise self.state.unexpected("the session deletion", reply)

        # One script: the deletion and the news of it, atomically.
        return self.state.script(SCRIPTS["delete_and_publish"], [self._key(sid)], [self.state.channel, message]).addCallback(check)

    def watch_ended(self, callback: Callable[[str], None]) -> None:
        self.watchers.append(callback)

    def received(self, message: dict[str, Any]) -> None:
        if message["r"] == self.state.replica:
            return
        sid = message.get("sid")
        if not isinstance(sid, str) or not sid:
            self.state.log_once("session-ended", "A session-ended message on the Redis channel is malformed: ignored")
            return
        for callback in list(self.watchers):
            try:
                callback(sid)
            except Exception:
                log.failure("A session-ended watcher failed")


def connect(settings: StateSettings, reactor: Any) -> RedisState:
    """The Redis state for C{settings}, not yet started (call L{RedisState.start})."""
    return RedisState(settings, reactor)


__all__ = ["RedisState", "connect"]
