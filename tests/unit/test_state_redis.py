"""
Tests for L{twisted_mcp.state.redis} against a real Redis: the machine's
(C{TWISTED_MCP_TEST_REDIS}; skipped when unreachable unless
C{TWISTED_MCP_REQUIRE_REDIS=1}), and private C{redis-server} processes for
outages and passwords.  Two L{RedisState}s sharing a namespace play two
replicas in one process.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted

# The real reactor pytest-twisted runs: these tests talk to a real Redis, and hand it to the code under test.
from twisted.internet import reactor  # noqa: TID251
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from tests.redis_support import PrivateRedis, _connect, delete_namespace, private_redis, redis_url_or_skip, unique_namespace
from twisted_mcp.state import redis_client
from twisted_mcp.state.base import FLAG_KINDS, BucketSpec, Unavailable
from twisted_mcp.state.config import StateSettings
from twisted_mcp.state.redis import MAX_FLAG_VALUE, MAX_SESSION_BYTES, RedisState, connect

SECRET = "pw-Zq81-never-shown"


def settings(url: str, namespace: str, replica: str, **fields: Any) -> StateSettings:
    return StateSettings(redis=url, namespace=namespace, replica=replica, **fields)


class Replicas:
    """Started L{RedisState}s on one namespace, stopped (and the namespace deleted) by L{close}."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.namespace = unique_namespace("test-state-redis")
        self.states: list[RedisState] = []

    async def start(self, replica: str, **fields: Any) -> RedisState:
        state = connect(settings(self.url, self.namespace, replica, **fields), reactor)
        self.states.append(state)
        await state.start()
        return state

    async def close(self, delete: bool = True) -> None:
        await gatherResults([s.stop() for s in self.states], consumeErrors=True)
        if delete:
            delete_namespace(self.url, self.namespace)


def raw(url: str, *args: str | bytes) -> object:
    """One command, blocking (for what the gateway would never write)."""
    conn = _connect(url)
    try:
        return conn.command(*args)
    finally:
        conn.close()


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def eventually(predicate: Callable[[], bool], within: float) -> float:
    """Seconds until C{predicate()} holds (polled every 5 ms); fails after C{within}."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not true within {within} s")
        await sleep(0.005)
    return time.monotonic() - start


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def texts(events: list[dict[str, Any]]) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(e) + repr(e.get("log_failure", "")) for e in events)


# -- rate buckets -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_take_all_or_nothing() -> None:
    """A request's buckets: one token from each, or none from any."""
    replicas = Replicas(redis_url_or_skip())
    try:
        state = await replicas.start("a")
        wide, narrow = BucketSpec("p\x00alice", 0.0, 5, "principal"), BucketSpec("b\x00github", 0.0, 1, "backend")
        assert await state.rates.take([wide, narrow]) == (0.0, "")
        wait, kind = await state.rates.take([wide, narrow])
        assert (wait, kind) == (float("inf"), "backend")
        # The refused take took nothing from the wide bucket: 4 are left.
        results = [await state.rates.take([wide]) for _ in range(5)]
        assert results[:4] == [(0.0, "")] * 4
        assert results[4] == (float("inf"), "principal")
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_accurate_across_replicas() -> None:
    """100 concurrent takes from two replicas against burst 10, rate 0: exactly 10 pass."""
    replicas = Replicas(redis_url_or_skip())
    try:
        a, b = await replicas.start("a"), await replicas.start("b")
        spec = [BucketSpec("t\x00alice\x000\x00search", 0.0, 10, "tool")]
        results = await gatherResults([(a if i % 2 else b).rates.take(spec) for i in range(100)])
        assert sum(1 for wait, _ in results if wait == 0.0) == 10
        assert all(kind == "tool" for wait, kind in results if wait)
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_wait_and_refill() -> None:
    """At 20 tokens/s a refused take says about 50 ms; after that, a token is there again."""
    replicas = Replicas(redis_url_or_skip())
    try:
        state = await replicas.start("a")
        spec = [BucketSpec("p\x00bob", 20.0, 1, "principal")]
        assert await state.rates.take(spec) == (0.0, "")
        wait, kind = await state.rates.take(spec)
        assert kind == "principal" and 0.0 < wait <= 0.05
        await sleep(wait + 0.02)
        assert await state.rates.take(spec) == (0.0, "")
        # The key expires once the bucket would be full again (plus a margin): no key lives forever.
        ttl = raw(replicas.url, "PTTL", f"{replicas.namespace}:rate:p\x00bob")
        assert isinstance(ttl, int) and 0 < ttl <= 50 + 1000
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_give_back() -> None:
    """A token given back can be taken again; giving back never fills beyond burst."""
    replicas = Replicas(redis_url_or_skip())
    try:
        state = await replicas.start("a")
        spec = [BucketSpec("p\x00carol", 0.0, 2, "principal")]
        assert [(await state.rates.take(spec))[0] for _ in range(3)] == [0.0, 0.0, float("inf")]
        state.rates.give_back(spec)
        assert await state.rates.take(spec) == (0.0, "")
        assert (await state.rates.take(spec))[0] == float("inf")
        for _ in range(5):
            state.rates.give_back(spec)
        assert [(await state.rates.take(spec))[0] for _ in range(3)] == [0.0, 0.0, float("inf")]
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_long_keys_bounded() -> None:
    """A bucket key longer than the bound is stored under its digest (same bucket on every replica)."""
    replicas = Replicas(redis_url_or_skip())
    try:
        a, b = await replicas.start("a"), await replicas.start("b")
        spec = [BucketSpec("t\x00" + "x" * 5000, 0.0, 1, "tool")]
        assert await a.rates.take(spec) == (0.0, "")
        assert (await b.rates.take(spec))[1] == "tool"
        keys = raw(replicas.url, "KEYS", f"{replicas.namespace}:*")
        assert isinstance(keys, list) and len(keys) == 1 and len(keys[0]) < 300
    finally:
        await replicas.close()


# -- leases -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_leases_shared_released_and_renewed() -> None:
    replicas = Replicas(redis_url_or_skip())
    try:
        a, b = await replicas.start("a", leaseSeconds=0.6), await replicas.start("b", leaseSeconds=0.6)
        first = await a.leases.acquire("b\x00github", 2)
        second = await b.leases.acquire("b\x00github", 2)
        assert first is not None and first.startswith("a:") and second is not None and second.startswith("b:")
        assert await b.leases.acquire("b\x00github", 2) is None
        # Held well past leaseSeconds: renewed every leaseSeconds/3, still held.
        await sleep(1.5)
        assert await a.leases.acquire("b\x00github", 2) is None
        # Released (fire and forget; the same replica's next command comes after it): the slot is free.
        b.leases.release("b\x00github", second)
        third = await b.leases.acquire("b\x00github", 2)
        assert third is not None
        assert await a.leases.acquire("b\x00github", 2) is None
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_dead_replicas_leases_expire() -> None:
    """A replica that stops renewing (it died) frees its slots leaseSeconds later, not before."""
    replicas = Replicas(redis_url_or_skip())
    try:
        a, b = await replicas.start("a", leaseSeconds=0.6), await replicas.start("b", leaseSeconds=0.6)
        assert await a.leases.acquire("k", 1) is not None
        await a.stop()
        stopped = time.monotonic()
        assert await b.leases.acquire("k", 1) is None
        lease = None
        while lease is None:
            lease = await b.leases.acquire("k", 1)
            if lease is None:
                await sleep(0.02)
        freed = time.monotonic() - stopped
        assert 0.3 < freed < 1.2
    finally:
        await replicas.close()


# -- flags --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_flags_propagate_within_a_second() -> None:
    """A kill switch set on one replica reaches another's watcher by pub/sub (resync far away), measured."""
    replicas = Replicas(redis_url_or_skip())
    try:
        a = await replicas.start("a", resyncInterval=60)
        b = await replicas.start("b", resyncInterval=60)
        seen: list[dict[str, dict[str, str]]] = []
        b.flags.watch(seen.append)
        started = time.monotonic()
        await a.flags.set("kill:tool", "github--delete_repo", "incident 42")
        took = await eventually(lambda: bool(seen) and seen[-1]["kill:tool"].get("github--delete_repo") == "incident 42", 1.0)
        took = time.monotonic() - started
        assert took < 1.0
        print(f"flag propagation: {took * 1000:.1f} ms")
        snapshot = seen[-1]
        assert set(snapshot) == set(FLAG_KINDS)
        await a.flags.set("kill:tool", "github--delete_repo", None)
        await eventually(lambda: seen[-1]["kill:tool"] == {}, 1.0)
        assert (await b.flags.snapshot())["kill:tool"] == {}
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_flags_resync_backstop() -> None:
    """A change nobody announced (no PUBLISH) is still seen at the next resync."""
    replicas = Replicas(redis_url_or_skip())
    try:
        b = await replicas.start("b", resyncInterval=0.2)
        seen: list[dict[str, dict[str, str]]] = []
        b.flags.watch(seen.append)
        raw(replicas.url, "HSET", f"{replicas.namespace}:flags:revoked", "sha256:abc", "4102444800")
        await eventually(lambda: bool(seen) and seen[-1]["revoked"] == {"sha256:abc": "4102444800"}, 1.0)
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_first_snapshot_at_start(logged: list[dict[str, Any]]) -> None:
    """start() hands the first snapshot to the watchers; one that raises is logged and the others still get it."""
    replicas = Replicas(redis_url_or_skip())
    try:
        raw(replicas.url, "HSET", f"{replicas.namespace}:flags:approval", "time--now", '{"sha256": "x"}')
        state = connect(settings(replicas.url, replicas.namespace, "a", resyncInterval=60), reactor)
        replicas.states.append(state)
        seen: list[dict[str, dict[str, str]]] = []
        state.flags.watch(lambda snapshot: 1 / 0)
        state.flags.watch(seen.append)
        await state.start()
        assert state.available and len(seen) == 1
        assert "A flags watcher failed" in texts(logged) and "ZeroDivisionError" in texts(logged)
        assert seen[0]["approval"] == {"time--now": '{"sha256": "x"}'}
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_malformed_data_ignored_and_logged_once(logged: list[dict[str, Any]]) -> None:
    """Bad bytes in a flags hash and garbage on the channel: ignored, logged once, nothing breaks."""
    replicas = Replicas(redis_url_or_skip())
    try:
        a = await replicas.start("a", resyncInterval=60)
        b = await replicas.start("b", resyncInterval=60)
        raw(replicas.url, "HSET", f"{replicas.namespace}:flags:quarantine", "bad", b"\xff\xfe")
        raw(replicas.url, "HSET", f"{replicas.namespace}:flags:quarantine", "good", "drifted")
        for junk in ("not json", "[1,2]", '{"t": 5}', "x" * 10000, b"\xff"):
            raw(replicas.url, "PUBLISH", f"{replicas.namespace}:events", junk)
        assert (await b.flags.snapshot())["quarantine"] == {"good": "drifted"}
        assert (await b.flags.snapshot())["quarantine"] == {"good": "drifted"}
        seen: list[dict[str, dict[str, str]]] = []
        b.flags.watch(seen.append)
        await a.flags.set("kill:backend", "github", "x")
        await eventually(lambda: bool(seen) and seen[-1]["kill:backend"] == {"github": "x"}, 1.0)
        # Each replica's subscriber and re-read run on their own connections: wait for both to have logged.
        await eventually(
            lambda: texts(logged).count("quarantine flag in Redis") >= 2 and texts(logged).count("on the Redis channel") >= 2,
            2.0,
        )
        text = texts(logged)
        # b read the bad flag three times, a once (after its own change): once per replica.
        assert text.count("quarantine flag in Redis") == 2
        # Five junk messages, each received by both: once per replica.
        assert text.count("on the Redis channel") == 2
        assert "Traceback" not in text and "Unhandled" not in text
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_flag_bounds() -> None:
    replicas = Replicas(redis_url_or_skip())
    try:
        state = await replicas.start("a")
        with pytest.raises(ValueError, match="unknown flag kind"):
            await state.flags.set("kill:everything", "x", "y")
        with pytest.raises(ValueError, match="at most"):
            await state.flags.set("approval", "x", "y" * (MAX_FLAG_VALUE + 1))
        with pytest.raises(ValueError, match="name"):
            await state.flags.set("approval", "", "y")
        with pytest.raises(ValueError, match="UTF-8"):
            await state.flags.set("approval", "lone \udc80 surrogate", "y")
        # Non-ASCII text goes through whole.
        await state.flags.set("approval", "outil-é", "✓")
        assert (await state.flags.snapshot())["approval"] == {"outil-é": "✓"}
    finally:
        await replicas.close()


# -- breakers -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_breakers_shared() -> None:
    replicas = Replicas(redis_url_or_skip())
    try:
        a = await replicas.start("a", breakers="shared")
        b = await replicas.start("b", breakers="shared")
        local = await replicas.start("c")
        assert local.breakers is None
        on_a: list[tuple[str, str, float]] = []
        on_b: list[tuple[str, str, float]] = []
        a.breakers.watch(lambda *args: on_a.append(args))
        b.breakers.watch(lambda *args: on_b.append(args))
        a.breakers.publish("github", "open", 1700000030.5)
        await eventually(lambda: bool(on_b), 1.0)
        assert on_b == [("github", "open", 1700000030.5)]
        await sleep(0.05)
        assert on_a == []
    finally:
        await replicas.close()


# -- sessions -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sessions() -> None:
    replicas = Replicas(redis_url_or_skip())
    try:
        a, b = await replicas.start("a"), await replicas.start("b")
        ended_a: list[str] = []
        ended_b: list[str] = []
        a.sessions.watch_ended(ended_a.append)
        b.sessions.watch_ended(ended_b.append)
        record = {"owner": "ab12", "version": "2025-06-18", "capabilities": {"sampling": {}}, "subscriptions": ["file:///x"]}
        await a.sessions.save("sid-1", record, 0.3)
        assert await b.sessions.load("sid-1") == record
        assert await b.sessions.load("sid-unknown") is None
        # Touched before it expires: lives on.
        await sleep(0.2)
        b.sessions.touch("sid-1", 0.3)
        await sleep(0.2)
        assert await a.sessions.load("sid-1") == record
        # Not touched: gone.
        await sleep(0.35)
        assert await a.sessions.load("sid-1") is None
        await a.sessions.save("sid-2", record, 30)
        await a.sessions.delete("sid-2")
        assert await b.sessions.load("sid-2") is None
        await eventually(lambda: ended_b == ["sid-2"], 1.0)
        assert ended_a == []
        with pytest.raises(ValueError, match="larger than"):
            await a.sessions.save("sid-3", {"x": "y" * MAX_SESSION_BYTES}, 30)
        raw(replicas.url, "SET", f"{replicas.namespace}:session:sid-4", "[not an object]")
        assert await a.sessions.load("sid-4") is None
    finally:
        await replicas.close()


# -- outages ------------------------------------------------------------------------


def private_or_skip(password: str | None = None, unix_socket: str | None = None) -> Any:
    redis_url_or_skip()  # the same skip/require rule for the redis-server binary's tests
    return private_redis(password, unix_socket)


@pytest_twisted.ensureDeferred
async def test_unavailable_within_timeout_and_recovery(logged: list[dict[str, Any]]) -> None:
    """Redis killed: every store fails within the timeout naming host:port; restarted: back, and told."""
    with private_or_skip(SECRET) as server:
        replicas = Replicas(server.url)
        try:
            state = await replicas.start("a", timeout=0.3, resyncInterval=0.1)
            changes: list[tuple[bool, str | None]] = []
            state.add_listener(lambda available, problem: changes.append((available, problem)))
            spec = [BucketSpec("p\x00x", 0.0, 100, "principal")]
            assert state.available and await state.rates.take(spec) == (0.0, "")
            server.stop()
            await eventually(lambda: not state.available, 2.0)
            for call in (
                lambda: state.rates.take(spec),
                lambda: state.leases.acquire("k", 1),
                lambda: state.flags.set("kill:tool", "x", "y"),
                lambda: state.flags.snapshot(),
                lambda: state.sessions.load("s"),
                lambda: state.sessions.save("s", {}, 1),
                lambda: state.sessions.delete("s"),
            ):
                started = time.monotonic()
                with pytest.raises(Unavailable) as caught:
                    await call()
                assert time.monotonic() - started < 0.3
                assert f"127.0.0.1:{server.port}" in str(caught.value)
                assert SECRET not in str(caught.value)
            state.rates.give_back(spec)
            state.leases.release("k", "a:1")
            state.sessions.touch("s", 1)
            assert changes[0][0] is False and f"Redis at 127.0.0.1:{server.port} unreachable" in (changes[0][1] or "")
            assert state.outages == 1
            server.start()
            await eventually(lambda: state.available, 5.0)
            assert changes[-1] == (True, None)
            assert await state.rates.take(spec) == (0.0, "")
            # Pub/sub is back too: another replica's change arrives without waiting for a resync.
            await eventually(lambda: state.subscriber.protocol is not None, 2.0)
            assert SECRET not in texts(logged)
        finally:
            await replicas.close(delete=False)


@pytest_twisted.ensureDeferred
async def test_silent_redis_times_out() -> None:
    """A Redis that stops answering (SIGSTOP): the command fails after the timeout, not later."""
    with private_or_skip() as server:
        replicas = Replicas(server.url)
        try:
            state = await replicas.start("a", timeout=0.2, resyncInterval=60)
            spec = [BucketSpec("p\x00x", 0.0, 100, "principal")]
            assert await state.rates.take(spec) == (0.0, "")
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(Unavailable, match="no answer to EVALSHA within 0.2 s"):
                    await state.rates.take(spec)
                took = time.monotonic() - started
                assert 0.15 < took < 0.4
                assert not state.available
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
        finally:
            await replicas.close(delete=False)


@pytest_twisted.ensureDeferred
async def test_start_without_redis() -> None:
    """start() never hangs: with nothing listening it fires within the timeout, unavailable, and says where."""
    server = PrivateRedis()  # a free port, never started
    replicas = Replicas(server.url)
    try:
        started = time.monotonic()
        state = await replicas.start("a", timeout=0.3, resyncInterval=60)
        assert time.monotonic() - started < 1.0
        assert not state.available
        assert f"Redis at 127.0.0.1:{server.port} unreachable" in (state.problem or "")
    finally:
        await replicas.close(delete=False)


@pytest_twisted.ensureDeferred
async def test_wrong_password_never_shown(logged: list[dict[str, Any]]) -> None:
    with private_or_skip(SECRET) as server:
        wrong = "wrong-" + SECRET
        replicas = Replicas(server.url.replace(SECRET, wrong))
        try:
            state = await replicas.start("a", timeout=0.5, resyncInterval=60)
            assert not state.available
            assert "auth" in (state.problem or "").lower()
            with pytest.raises(Unavailable) as caught:
                await state.rates.take([BucketSpec("p", 1, 1, "principal")])
            for text in (str(caught.value), state.problem or "", state.describe(), texts(logged)):
                assert SECRET not in text and wrong not in text
        finally:
            await replicas.close(delete=False)


@pytest_twisted.ensureDeferred
async def test_script_reloaded_after_flush() -> None:
    """Redis lost its scripts (restart, SCRIPT FLUSH): NOSCRIPT makes the take load it, and it still counts."""
    with private_or_skip() as server:
        replicas = Replicas(server.url)
        try:
            state = await replicas.start("a")
            spec = [BucketSpec("p", 0.0, 2, "principal")]
            assert await state.rates.take(spec) == (0.0, "")
            raw(server.url, "SCRIPT", "FLUSH")
            assert await state.rates.take(spec) == (0.0, "")
            assert (await state.rates.take(spec))[0] == float("inf")
        finally:
            await replicas.close(delete=False)


@pytest_twisted.ensureDeferred
async def test_stop_closes_everything() -> None:
    replicas = Replicas(redis_url_or_skip())
    try:
        state = await replicas.start("a", resyncInterval=0.05)
        await state.stop()
        assert state.link.protocol is None and state.subscriber.protocol is None
        await sleep(0.15)
        assert not [c for c in reactor.getDelayedCalls() if "RedisState" in repr(c)]
        payload = json.dumps({"stopped": True})
        assert payload
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_unix_socket_and_database(tmp_path: Any) -> None:
    """unix:///path?db=N: the socket, and the database the URL names (SELECT)."""
    path = str(tmp_path / "redis.sock")
    with private_or_skip(SECRET, unix_socket=path) as server:
        namespace = unique_namespace("test-state-redis")
        state = connect(settings(f"unix://:{SECRET}@{path}?db=3", namespace, "a", resyncInterval=60), reactor)
        try:
            await state.start()
            assert state.available, state.problem
            await state.sessions.save("sid", {"x": 1}, 30)
            assert raw(server.url.replace("/0", "/3"), "EXISTS", f"{namespace}:session:sid") == 1
            assert raw(server.url, "EXISTS", f"{namespace}:session:sid") == 0
            server.stop()
            with pytest.raises(Unavailable) as caught:
                await state.sessions.load("sid")
            assert f"unix:{path}" in str(caught.value) and SECRET not in str(caught.value)
        finally:
            await state.stop()


@pytest_twisted.ensureDeferred
async def test_nothing_queues_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis that does not answer: beyond MAX_IN_FLIGHT waiting commands, a command fails at once."""
    with private_or_skip() as server:
        replicas = Replicas(server.url)
        try:
            state = await replicas.start("a", timeout=0.5, resyncInterval=60)
            assert state.available and state.link._in_flight == 0
            monkeypatch.setattr(redis_client, "MAX_IN_FLIGHT", 2)
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                waiting = [state.sessions.load(f"s{i}") for i in range(2)]
                started = time.monotonic()
                with pytest.raises(Unavailable, match="too slow: 2 commands wait"):
                    await state.sessions.load("s3")
                assert time.monotonic() - started < 0.05
                for d in waiting:
                    with pytest.raises(Unavailable, match="no answer to GET within 0.5 s"):
                        await d
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
        finally:
            await replicas.close(delete=False)


# -- review fixes ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_flag_change_at_in_flight_limit_leaves_link_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A flag change issued when the link is one command short of its in-flight
    limit: it is done whole or not at all, and the link stays usable (it was
    left inside MULTI: every later flag read came back empty, releasing the
    kill switch on that replica).
    """
    replicas = Replicas(redis_url_or_skip())
    try:
        a = await replicas.start("a", resyncInterval=60)
        b = await replicas.start("b", resyncInterval=60)
        await b.flags.set("kill:tool", "evil__tool", "1")
        monkeypatch.setattr(redis_client, "MAX_IN_FLIGHT", a.link._in_flight + 2)
        ping = a.link.command("PING")
        change = a.flags.set("kill:tool", "other", "1")
        await ping
        monkeypatch.setattr(redis_client, "MAX_IN_FLIGHT", 10000)
        try:
            await change
        except Unavailable:
            pass
        snapshot = await a.flags.snapshot()
        assert "evil__tool" in snapshot["kill:tool"]
        assert await a.rates.take([BucketSpec("p\x00x", 1.0, 5, "principal")]) == (0.0, "")
        assert a.available
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_unexpected_flags_reply_is_unavailable_never_empty() -> None:
    """A link answering HGETALL with something else than a list (stuck in MULTI): Unavailable, reset, recovered."""
    replicas = Replicas(redis_url_or_skip())
    try:
        a = await replicas.start("a", resyncInterval=0.1)
        await a.flags.set("kill:tool", "evil__tool", "1")
        assert await a.link.command("MULTI") == "OK"
        with pytest.raises(Unavailable, match="unexpected"):
            await a.flags.snapshot()
        assert not a.available and "unexpected" in (a.problem or "")
        await eventually(lambda: a.available, 2.0)
        assert (await a.flags.snapshot())["kill:tool"] == {"evil__tool": "1"}
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_same_replica_name_distinct_leases() -> None:
    """Two processes configured with one replica name: their leases are distinct (neither takes nor frees the other's)."""
    replicas = Replicas(redis_url_or_skip())
    try:
        one = await replicas.start("same", resyncInterval=60)
        two = await replicas.start("same", resyncInterval=60)
        first = await one.leases.acquire("slot", 1)
        assert first is not None
        assert await two.leases.acquire("slot", 1) is None
        second = await two.leases.acquire("wide", 2)
        third = await one.leases.acquire("wide", 2)
        assert second is not None and third is not None and second != third
        zkey = f"{replicas.namespace}:lease:wide"
        assert raw(replicas.url, "ZCARD", zkey) == 2
        one.leases.release("wide", third)
        await sleep(0.05)
        assert raw(replicas.url, "ZRANGE", zkey, "0", "-1") == [second.encode()]
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_corrupt_flags_key_reported_and_recovered(logged: list[dict[str, Any]]) -> None:
    """A flags key of the wrong type: unavailable (naming the key), logged once, available again once repaired."""
    replicas = Replicas(redis_url_or_skip())
    try:
        a = await replicas.start("a", resyncInterval=0.05)
        changes: list[tuple[bool, str | None]] = []
        a.add_listener(lambda available, problem: changes.append((available, problem)))
        key = f"{replicas.namespace}:flags:approval"
        raw(replicas.url, "SET", key, "not a hash")
        await eventually(lambda: not a.available, 1.0)
        assert key in (a.problem or "") and "WRONGTYPE" in (a.problem or "")
        with pytest.raises(Unavailable, match="WRONGTYPE"):
            await a.flags.snapshot()
        await sleep(0.3)  # several more resyncs
        assert texts(logged).count(f"the Redis key {key}") == 1
        assert [available for available, _ in changes] == [False]
        raw(replicas.url, "DEL", key)
        await eventually(lambda: a.available, 1.0)
        assert [available for available, _ in changes] == [False, True]
        assert (await a.flags.snapshot())["approval"] == {}
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_stop_is_not_an_outage(logged: list[dict[str, Any]]) -> None:
    """A command still in flight when stop() closes the link fails, but the state does not turn unavailable."""
    replicas = Replicas(redis_url_or_skip())
    try:
        a = await replicas.start("a", resyncInterval=60, timeout=5.0)
        changes: list[tuple[bool, str | None]] = []
        a.add_listener(lambda available, problem: changes.append((available, problem)))
        waiting = a.command("BLPOP", f"{replicas.namespace}:nothing", "3")
        await sleep(0.05)
        await a.stop()
        with pytest.raises(Unavailable):
            await waiting
        assert a.available and changes == []
        assert "unreachable" not in texts(logged)
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_revocations_expire_and_are_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    """An expired revocation is left out of every snapshot and deleted on a resync, at most once per PRUNE_INTERVAL."""
    from twisted_mcp.state import redis as redis_state

    replicas = Replicas(redis_url_or_skip())
    try:
        monkeypatch.setattr(redis_state, "PRUNE_INTERVAL", 0.5)
        a = await replicas.start("a", resyncInterval=0.05)
        key = f"{replicas.namespace}:flags:revoked"
        now = int(time.time())
        await a.flags.set("revoked", "old", str(now - 1))
        await a.flags.set("revoked", "new", str(now + 3600))
        raw(replicas.url, "HSET", key, "odd", "not a time")
        with pytest.raises(ValueError, match="epoch seconds"):
            await a.flags.set("revoked", "bad", "soon")
        assert (await a.flags.snapshot())["revoked"] == {"new": str(now + 3600), "odd": "not a time"}
        await eventually(lambda: raw(replicas.url, "HEXISTS", key, "old") == 0, 1.0)
        pruned_at = time.monotonic()
        raw(replicas.url, "HSET", key, "old2", str(now - 1))
        assert "old2" not in (await a.flags.snapshot())["revoked"]
        await eventually(lambda: raw(replicas.url, "HEXISTS", key, "old2") == 0, 2.0)
        assert time.monotonic() - pruned_at >= 0.4  # not before the interval
        assert sorted(raw(replicas.url, "HKEYS", key)) == [b"new", b"odd"]  # type: ignore[type-var]
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_flag_cap_refuses_instead_of_dropping(monkeypatch: pytest.MonkeyPatch) -> None:
    """At MAX_FLAGS_PER_KIND a new flag is refused with FlagLimitReached; changing or removing one still works."""
    from twisted_mcp.state import redis as redis_state
    from twisted_mcp.state.base import FlagLimitReached

    replicas = Replicas(redis_url_or_skip())
    try:
        monkeypatch.setattr(redis_state, "MAX_FLAGS_PER_KIND", 3)
        a = await replicas.start("a", resyncInterval=60)
        later = str(int(time.time()) + 3600)
        for name in ("j1", "j2", "j3"):
            await a.flags.set("revoked", name, later)
        with pytest.raises(FlagLimitReached, match="already holds 3 revoked flags") as caught:
            await a.flags.set("revoked", "j4", later)
        assert (caught.value.kind, caught.value.limit) == ("revoked", 3)
        assert a.available
        await a.flags.set("revoked", "j1", str(int(later) + 1))
        await a.flags.set("revoked", "j2", None)
        await a.flags.set("revoked", "j4", later)
        assert sorted((await a.flags.snapshot())["revoked"]) == ["j1", "j3", "j4"]
    finally:
        await replicas.close()


@pytest_twisted.ensureDeferred
async def test_a_caller_giving_up_is_not_an_outage() -> None:
    """A command whose caller cancels it (an HTTP client left during a session lookup) keeps the link: no outage."""
    replicas = Replicas(redis_url_or_skip())
    try:
        state = await replicas.start("a")
        changes: list[bool] = []
        state.add_listener(lambda available, problem: changes.append(available))
        pending = state.sessions.load("gone-before-the-answer")
        pending.addErrback(lambda f: None)
        pending.cancel()
        await sleep(0.05)
        assert state.available and changes == []
        assert await state.rates.take([BucketSpec("p\x00y", 0.0, 5, "principal")]) == (0.0, "")
    finally:
        await replicas.close()


def test_redis_error_replies_are_refusals() -> None:
    """An error reply from Redis is a L{Refused}: a flag write that got one is not retried forever."""
    from twisted_mcp.state.base import Refused
    from twisted_mcp.state.redis_client import CommandRefused

    assert issubclass(CommandRefused, Refused) and issubclass(CommandRefused, Unavailable)


def test_an_address_is_connected_to_without_name_resolution() -> None:
    """127.0.0.1 or ::1 in the URL: a plain TCP endpoint (a resolver may not be ready while the gateway starts); a name: resolved."""
    from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
    from twisted.internet.testing import MemoryReactorClock

    from twisted_mcp.state.config import RedisAddress
    from twisted_mcp.state.redis_client import RedisLink

    def endpoint(host: str) -> object:
        return RedisLink(MemoryReactorClock(), RedisAddress(host=host, port=6379, path=None, db=0), 0.5)._endpoint()

    assert type(endpoint("127.0.0.1")) is TCP4ClientEndpoint
    assert type(endpoint("::1")) is TCP6ClientEndpoint
    assert type(endpoint("redis.example")) is HostnameEndpoint
