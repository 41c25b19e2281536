"""
Handshake-era HTTP sessions shared by replicas (L{twisted_mcp.frontends.http_shared}):
two HTTP fronts, each with its own L{Gateway} and backend ("replicas" A and
B in one process), share one in-memory session store whose answers the
test controls (held, unavailable).  A session initialized on A is served on
B; ownership, paths, DELETE, the session limits, lookups shared by
concurrent requests, clients leaving during a lookup, and an unreachable
store, both ways.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable

import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

import twisted_mcp
from twisted_mcp.config import GatewaySettings
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.frontends.http import http_site
from twisted_mcp.frontends.http_config import HttpSettings
from twisted_mcp.frontends.http_sessions import mint_session_id
from twisted_mcp.frontends.http_shared import BadRecord, SessionRecord, owner_digest
from twisted_mcp.mcp import errors
from twisted_mcp.policy.principal import Principal
from twisted_mcp.state.base import SharedState, Unavailable

from .fakes import FakeBackend
from .test_http_front import INIT, Connection, Response, call, modern_call, modern_headers

LISTENER = "http:tcp:8080:interface=127.0.0.1"
#: Where the twisted_mcp under test comes from (for a subprocess).
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(twisted_mcp.__file__)))
PING = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


class FakeSessionStore:
    """
    The session store of a test, in memory, shared by its replicas (each
    uses it through its own L{ReplicaSessions}), behaving as Redis does:
    records kept as JSON text, each expiring C{ttl} seconds (of the test's
    clock) after it was saved or touched; a touch of a missing key does
    nothing (PEXPIRE); a delete tells every replica but the one that
    deleted (its own pub/sub message is ignored).  Loads are answered at
    once or held until L{release}, saves at once or held while
    C{hold_saves}, everything fails with L{Unavailable} while C{down} says why.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.records: dict[str, str] = {}
        self.ttls: dict[str, float] = {}
        self.expires: dict[str, float] = {}
        self.down: str | None = None
        self.hold = False
        self.held: list[tuple[Deferred[Any], str]] = []
        self.hold_saves = False
        self.held_saves: list[Deferred[None]] = []
        self.loads: list[str] = []
        self.saves: list[str] = []
        self.touches: list[str] = []
        self.watchers: list[tuple[str, Callable[[str], None]]] = []

    def _expire(self) -> None:
        now = self.clock.seconds()
        for sid in [sid for sid, until in self.expires.items() if until <= now]:
            self.drop(sid)

    def drop(self, sid: str) -> None:
        """The key goes (expired, evicted, or Redis restarted empty)."""
        self.records.pop(sid, None)
        self.expires.pop(sid, None)

    def save(self, sid: str, record: dict[str, Any], ttl: float) -> Deferred[None]:
        if self.down is not None:
            return fail(Unavailable(self.down))
        self.records[sid] = json.dumps(record)
        self.ttls[sid] = ttl
        self.expires[sid] = self.clock.seconds() + ttl
        self.saves.append(sid)
        if self.hold_saves:
            d: Deferred[None] = Deferred()
            self.held_saves.append(d)
            return d
        return succeed(None)

    def release_saves(self) -> None:
        held, self.held_saves = self.held_saves, []
        for d in held:
            d.callback(None)

    def load(self, sid: str) -> Deferred[Any]:
        self.loads.append(sid)
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.held.append((d, sid))
            return d
        return self._answer(sid)

    def _answer(self, sid: str) -> Deferred[Any]:
        if self.down is not None:
            return fail(Unavailable(self.down))
        self._expire()
        text = self.records.get(sid)
        return succeed(None if text is None else json.loads(text))

    def release(self) -> None:
        held, self.held = self.held, []
        for d, sid in held:
            if not d.called:
                self._answer(sid).chainDeferred(d)

    def touch(self, sid: str, ttl: float) -> None:
        self.touches.append(sid)
        self._expire()
        if self.down is None and sid in self.records:
            self.expires[sid] = self.clock.seconds() + ttl

    def delete(self, sid: str, by: str) -> Deferred[None]:
        if self.down is not None:
            return fail(Unavailable(self.down))
        self.drop(sid)
        for replica, callback in list(self.watchers):
            if replica != by:
                callback(sid)
        return succeed(None)

    def watch_ended(self, replica: str, callback: Callable[[str], None]) -> None:
        self.watchers.append((replica, callback))


class ReplicaSessions:
    """One replica's L{twisted_mcp.state.base.SessionStore}: the shared L{FakeSessionStore}, as that replica."""

    def __init__(self, store: FakeSessionStore, replica: str) -> None:
        self.store = store
        self.replica = replica

    def save(self, sid: str, record: dict[str, Any], ttl: float) -> Deferred[None]:
        return self.store.save(sid, record, ttl)

    def load(self, sid: str) -> Deferred[Any]:
        return self.store.load(sid)

    def touch(self, sid: str, ttl: float) -> None:
        self.store.touch(sid, ttl)

    def delete(self, sid: str) -> Deferred[None]:
        return self.store.delete(sid, self.replica)

    def watch_ended(self, callback: Callable[[str], None]) -> None:
        self.store.watch_ended(self.replica, callback)


class FakeState(SharedState):
    kind = "fake"

    def __init__(self, replica: str, store: FakeSessionStore, sessions: str = "local") -> None:
        super().__init__(replica, {"sessions": sessions})
        self.sessions = ReplicaSessions(store, replica)


class Replica:
    """One gateway and its HTTP front, sharing C{store} with the other replicas."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        store: FakeSessionStore | None,
        settings: HttpSettings,
        sessions: str = "local",
        resources: list[str] | None = None,
        gateway_settings: GatewaySettings | None = None,
    ) -> None:
        self.backend = FakeBackend("alpha", ["echo"], resources=resources or ["alpha://doc"])
        self.backend.capabilities = {"tools": {}, "resources": {"subscribe": True}, "logging": {}}
        self.backend._first_discovery_done()
        self.gateway = Gateway([self.backend], "__", clock, 5.0)
        if store is not None:
            self.gateway.state = FakeState(name, store, sessions)
        self.gateway.start()
        self.settings = settings
        self.site = http_site(self.gateway, clock, gateway_settings or GatewaySettings(), settings, LISTENER)
        self.resource = self.site.resource_

    def exchange(self, body: Any = None, sid: str | None = None, method: str = "POST", site: Any = None) -> Response:
        c = self.send(body, sid, method, site)
        return c.response()

    def send(self, body: Any = None, sid: str | None = None, method: str = "POST", site: Any = None) -> Connection:
        c = Connection(site or self.site)
        headers: dict[str, str | None] = {"mcp-session-id": sid}
        if method != "POST":
            headers["content-type"] = None
        c.send(method, body, headers)
        return c

    def calls(self, method: str = "tools/call") -> list[Any]:
        return [c for c in self.backend.calls if c.method == method]


class SharedCase(SynchronousTestCase):
    sessions = "local"

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = FakeSessionStore(self.clock)
        self.settings = HttpSettings(sessionIdleTimeout=60.0, maxSessions=4, maxSessionsPerPrincipal=3)
        self.a = Replica("replica-a", self.clock, self.store, self.settings, self.sessions)
        self.b = Replica("replica-b", self.clock, self.store, self.settings, self.sessions)

    def initialize(self, on: Replica | None = None, capabilities: dict[str, Any] | None = None) -> str:
        init = json.loads(json.dumps(INIT))
        init["params"]["capabilities"] = capabilities if capabilities is not None else {"roots": {"listChanged": True}}
        init["params"]["clientInfo"] = {"name": "agent", "version": "1.2"}
        r = (on or self.a).exchange(init)
        self.assertEqual(r.status, 200)
        return r.headers["mcp-session-id"]

    def record(self, sid: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.store.records[sid])
        return data


class ServedElsewhereTests(SharedCase):
    def test_aSessionInitializedOnAIsServedOnB(self) -> None:
        """
        tools/list and tools/call with A's session id on B: answered there,
        under the same id and negotiated version, with no new initialize;
        the call goes to B's own backend.
        """
        sid = self.initialize()
        self.assertEqual(self.store.saves, [sid])
        r = self.b.exchange(LIST, sid)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["mcp-session-id"], sid)
        self.assertEqual([t["name"] for t in r.json()["result"]["tools"]], ["alpha__echo"])
        hs = self.b.resource.table.sessions[sid]
        caller = hs.core.caller
        self.assertTrue(hs.core.initialized)
        self.assertEqual((caller.era, caller.version), ("legacy", "2025-06-18"))
        self.assertEqual(caller.capabilities, {"roots": {"listChanged": True}})
        self.assertEqual(caller.info, {"name": "agent", "version": "1.2"})
        c = self.b.send(call(3, "from b"), sid)
        (backend_call,) = self.b.calls()
        self.assertEqual(self.a.calls(), [])
        backend_call.deferred.callback({"content": [{"type": "text", "text": "from b"}]})
        self.assertEqual(
            c.response().json(), {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "from b"}]}}
        )
        # Once here, no more lookups.
        self.assertEqual(self.store.loads, [sid])
        self.assertEqual(self.b.exchange(PING, sid).status, 200)
        self.assertEqual(self.store.loads, [sid])

    def test_theRecordHoldsWhatAnotherReplicaNeedsAndNoIdentity(self) -> None:
        sid = self.initialize()
        record = self.record(sid)
        self.assertEqual(record["protocolVersion"], "2025-06-18")
        self.assertEqual(record["replica"], "replica-a")
        self.assertEqual(record["owner"], owner_digest(self.a.resource.table.sessions[sid].owner))
        self.assertEqual(self.store.ttls[sid], 60.0)
        self.assertNotIn(LISTENER, json.dumps(record))

    def test_anotherIdentityPresentingTheIdOnBGets404(self) -> None:
        """A client of another identity (here: a bearer token's principal) with A's session id: 404, logged once, nothing rebuilt."""
        sid = self.initialize()
        other = http_site(self.b.gateway, self.clock, GatewaySettings(), self.settings, LISTENER, None, principal_of)
        with capturedLogs() as events:
            first = bearer_post(other, LIST, "mallory.dev", sid)
            second = bearer_post(other, LIST, "mallory.dev", sid)
        self.assertEqual((first.status, second.status), (404, 404))
        self.assertEqual(first.json()["error"]["code"], -32001)
        warned = [formatEvent(e) for e in events if "another client identity" in formatEvent(e)]
        self.assertEqual(len(warned), 1)
        self.assertNotIn(sid, warned[0])
        self.assertEqual(len(other.resource_.table), 0)
        self.assertEqual(self.b.gateway.sessions, set())
        # Its owner still gets it on B.
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)

    def test_anotherPathGets404(self) -> None:
        """A record made on the default path is not served on a profile's path: its view must match too."""
        sid = self.initialize()
        data = self.record(sid)
        data["view"] = "other"
        self.store.records[sid] = json.dumps(data)
        self.assertEqual(self.b.exchange(LIST, sid).status, 404)
        self.assertEqual(len(self.b.resource.table), 0)

    def test_anUnknownIdIsStill404(self) -> None:
        self.assertEqual(self.b.exchange(LIST, mint_session_id()).status, 404)
        self.assertEqual(len(self.b.resource.table), 0)

    def test_aRecordThatDoesNotParseIs404AndOneLogLine(self) -> None:
        sid = self.initialize()
        self.store.records[sid] = json.dumps({"v": 1, "owner": "nope"})
        with capturedLogs() as events:
            r = self.b.exchange(LIST, sid)
        self.assertEqual(r.status, 404)
        lines = [formatEvent(e) for e in events if "cannot be used" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertIn("owner is not a SHA-256", lines[0])
        self.assertEqual(len(self.b.resource.table), 0)

    def test_aRecordTheStoreCannotReadIs404AndOneLogLine(self) -> None:
        """The store fails with something other than Unavailable (a value that is not JSON): 404, logged."""
        sid = self.initialize()
        self.store.load = lambda sid: fail(ValueError("Expecting value: line 1 column 1 (char 0)"))  # type: ignore[method-assign]
        with capturedLogs() as events:
            r = self.b.exchange(LIST, sid)
        self.assertEqual(r.status, 404)
        lines = [formatEvent(e) for e in events if "cannot be read" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertNotIn(sid, lines[0])

    def test_aNotificationAndAGetStreamWork(self) -> None:
        """A notification (202) and the session's GET stream on B are served from the record too."""
        sid = self.initialize()
        self.assertEqual(self.b.exchange({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid).status, 202)
        other = Replica("replica-c", self.clock, self.store, self.settings)
        c = Connection(other.site)
        c.send("GET", None, {"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        r = c.response()
        self.assertEqual((r.status, r.headers["content-type"]), (200, "text/event-stream"))
        self.assertFalse(r.finished)
        c.close()


def bearer_post(site: Any, body: Any, token: str, sid: str | None = None) -> Response:
    c = Connection(site)
    c.send("POST", body, {"mcp-session-id": sid, "authorization": f"Bearer {token}"})
    return c.response()


def principal_of(token: str) -> Principal:
    """A bearer token "<name>.<role>[.<n>]" names principal <name> with role <role> (n: a fresh token of the same)."""
    name, role, *_ = token.split(".")
    return Principal(name=name, roles=(role,), source="jwt")


class BearerOwnerTests(SharedCase):
    """With bearer tokens, a session belongs to the token's principal on every replica."""

    def setUp(self) -> None:
        super().setUp()
        for replica in (self.a, self.b):
            replica.site = http_site(replica.gateway, self.clock, GatewaySettings(), self.settings, LISTENER, None, principal_of)
            replica.resource = replica.site.resource_

    def post(self, replica: Replica, body: Any, token: str, sid: str | None = None) -> Response:
        c = Connection(replica.site)
        c.send("POST", body, {"mcp-session-id": sid, "authorization": f"Bearer {token}"})
        return c.response()

    def test_anotherPrincipalsTokenGets404OnB(self) -> None:
        r = self.post(self.a, INIT, "alice.dev")
        self.assertEqual(r.status, 200)
        sid = r.headers["mcp-session-id"]
        self.assertEqual(self.post(self.b, LIST, "bob.dev", sid).status, 404)
        self.assertEqual(self.post(self.b, LIST, "alice.admin", sid).status, 404)  # same name, other roles
        self.assertEqual(len(self.b.resource.table), 0)
        self.assertEqual(self.post(self.b, LIST, "alice.dev.2", sid).status, 200)  # a fresh token of alice's
        self.assertEqual(self.b.resource.table.sessions[sid].core.peer.principal.name, "alice")


class StatelessEraTests(SharedCase):
    def test_statelessRequestsShareNothing(self) -> None:
        """A 2026-07-28 request on A with the store configured: answered, nothing saved, looked up or touched."""
        c = Connection(self.a.site)
        c.send(body=modern_call("x"), headers=modern_headers())
        (backend_call,) = self.a.calls()
        backend_call.deferred.callback({"content": []})
        self.assertEqual(c.response().status, 200)
        self.assertEqual((self.store.saves, self.store.loads, self.store.touches), ([], [], []))


class LifetimeTests(SharedCase):
    def test_deleteOnAEndsTheCopyOnB(self) -> None:
        """DELETE on A: the record goes, B's copy ends (its call cancelled), and B answers 404 after."""
        sid = self.initialize()
        self.b.send(call(3), sid)
        (backend_call,) = self.b.calls()
        self.assertEqual(self.a.exchange(None, sid, "DELETE").status, 204)
        self.assertNotIn(sid, self.store.records)
        self.assertTrue(backend_call.cancelled)
        self.assertEqual(len(self.b.resource.table), 0)
        self.assertEqual(self.b.gateway.sessions, set())
        self.assertEqual(self.b.exchange(LIST, sid).status, 404)
        self.assertEqual(self.a.exchange(LIST, sid).status, 404)

    def test_deleteOnBEndsTheSessionOnA(self) -> None:
        sid = self.initialize()
        self.assertEqual(self.b.exchange(None, sid, "DELETE").status, 204)
        self.assertEqual((len(self.a.resource.table), len(self.b.resource.table)), (0, 0))
        self.assertNotIn(sid, self.store.records)
        self.assertEqual(self.b.resource.table.count, 0)  # not rebuilt just to be ended
        self.assertEqual(self.a.gateway.sessions, set())
        self.assertEqual(self.b.exchange(None, sid, "DELETE").status, 404)

    def test_deleteByAnotherIdentityIs404AndKeepsTheSession(self) -> None:
        sid = self.initialize()
        other = http_site(self.b.gateway, self.clock, GatewaySettings(), self.settings, LISTENER, None, principal_of)
        c = Connection(other)
        c.send("DELETE", None, {"mcp-session-id": sid, "authorization": "Bearer mallory.dev", "content-type": None})
        self.assertEqual(c.response().status, 404)
        self.assertIn(sid, self.store.records)
        self.assertEqual(len(self.a.resource.table), 1)

    def test_aLocalExpiryKeepsTheRecord(self) -> None:
        """B's copy idles out: only B forgets it; the record stays and B serves it again from the record."""
        sid = self.initialize()
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)
        self.clock.advance(30)
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.clock.advance(31)
        self.assertEqual(len(self.b.resource.table), 0)
        self.assertIn(sid, self.store.records)
        self.assertEqual(len(self.a.resource.table), 1)
        loads = len(self.store.loads)
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)
        self.assertEqual(len(self.store.loads), loads + 1)

    def test_touchedAtMostEveryQuarterOfItsTimeToLive(self) -> None:
        sid = self.initialize()
        for _ in range(5):
            self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertEqual(self.store.touches, [])  # saved just now
        self.clock.advance(15)
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertEqual(self.store.touches, [sid])
        self.assertEqual(self.store.expires[sid], 75.0)
        self.assertEqual(self.b.exchange(PING, sid).status, 200)  # rebuilt: touched at once
        self.assertEqual(self.store.touches, [sid, sid])

    def test_subscriptionsAndLogLevelAreSavedAndMadeAgain(self) -> None:
        """resources/subscribe and logging/setLevel on A change the record; B makes the subscription again at its own backend, quietly."""
        sid = self.initialize()
        c = self.a.send({"jsonrpc": "2.0", "id": 4, "method": "resources/subscribe", "params": {"uri": "alpha://doc"}}, sid)
        (subscribe,) = self.a.calls("resources/subscribe")
        subscribe.deferred.callback({})
        self.assertEqual(c.response().json()["result"], {})
        self.assertEqual(self.record(sid)["subscriptions"], ["alpha://doc"])
        self.assertEqual(
            self.a.exchange({"jsonrpc": "2.0", "id": 5, "method": "logging/setLevel", "params": {"level": "debug"}}, sid).status,
            200,
        )
        self.assertEqual(self.record(sid)["logLevel"], "debug")
        saves = len(self.store.saves)
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertEqual(len(self.store.saves), saves)  # nothing changed: not saved again
        r = self.b.exchange(LIST, sid)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["id"], 2)  # its own answer, not the subscription's
        (again,) = self.b.calls("resources/subscribe")
        self.assertEqual(again.params, {"uri": "alpha://doc"})
        again.deferred.callback({})
        core = self.b.resource.table.sessions[sid].core
        self.assertEqual(self.b.gateway.subscriptions.uris_of(core), ["alpha://doc"])
        self.assertEqual(core.caller.log_level, "debug")
        self.assertEqual(core.in_flight, {})
        self.assertEqual(len(self.store.saves), saves)
        # An update at B's backend reaches the client's stream on B.
        g = Connection(self.b.site)
        g.send("GET", None, {"mcp-session-id": sid, "accept": "text/event-stream", "content-type": None})
        self.b.gateway.reverse.server_notification(
            self.b.backend, "notifications/resources/updated", {"uri": "alpha://doc"}, None
        )
        self.assertEqual(g.response().events()[-1]["method"], "notifications/resources/updated")
        g.close()
        # Unsubscribing on B is saved too.
        self.assertEqual(
            self.b.exchange(
                {"jsonrpc": "2.0", "id": 6, "method": "resources/unsubscribe", "params": {"uri": "alpha://doc"}}, sid
            ).status,
            200,
        )
        self.assertEqual(self.record(sid)["subscriptions"], [])
        self.assertEqual(self.record(sid)["replica"], "replica-a")

    def test_rebuiltSessionsCountAgainstTheLimits(self) -> None:
        """http.maxSessionsPerPrincipal on B counts the sessions it serves from records: one over is 429."""
        b = Replica(
            "replica-b", self.clock, self.store, HttpSettings(sessionIdleTimeout=60.0, maxSessions=4, maxSessionsPerPrincipal=1)
        )
        sid = self.initialize()
        self.initialize(b)
        r = b.exchange(LIST, sid)
        self.assertEqual(r.status, 429)
        self.assertEqual(r.json()["error"]["data"], {"limit": "http.maxSessionsPerPrincipal", "value": 1})
        self.assertEqual(len(b.resource.table), 1)


class LookupTests(SharedCase):
    def test_concurrentRequestsShareOneLookupAndOneRebuild(self) -> None:
        sid = self.initialize()
        self.store.hold = True
        first = self.b.send(LIST, sid)
        second = self.b.send(PING, sid)
        self.assertEqual((first.transport.value(), second.transport.value()), (b"", b""))
        self.assertEqual(self.store.loads, [sid])
        self.assertEqual(self.b.resource.shared.pending(), 1)
        self.store.release()
        self.assertEqual(first.response().status, 200)
        self.assertEqual(second.response().json(), {"jsonrpc": "2.0", "id": 7, "result": {}})
        self.assertEqual(self.b.resource.table.count, 1)
        self.assertEqual(len(self.b.gateway.sessions), 1)
        self.assertEqual(self.b.resource.shared.pending(), 0)

    def test_aClientGoneDuringTheLookupLeavesNothing(self) -> None:
        """
        The only waiting client closes its request: the store's load is
        not cancelled (the Redis client takes a cancel for a lost
        connection), its answer is ignored: nothing is built, nothing is answered.
        """
        sid = self.initialize()
        self.store.hold = True
        c = self.b.send(LIST, sid)
        c.close()
        self.assertEqual(self.b.resource.shared.pending(), 0)
        ((load, _),) = self.store.held
        self.assertFalse(load.called)  # not cancelled
        self.store.release()
        self.assertEqual(len(self.b.resource.table), 0)
        self.assertEqual(self.b.gateway.sessions, set())
        self.assertEqual(c.transport.value(), b"")

    def test_oneClientGoneTheOtherIsServed(self) -> None:
        sid = self.initialize()
        self.store.hold = True
        gone = self.b.send(LIST, sid)
        stays = self.b.send(PING, sid)
        gone.close()
        self.assertEqual(self.b.resource.shared.pending(), 1)
        self.store.release()
        self.assertEqual(stays.response().status, 200)
        self.assertEqual(gone.transport.value(), b"")
        self.assertEqual(len(self.b.resource.table), 1)

    def test_stoppingAnswersTheWaitingRequests(self) -> None:
        sid = self.initialize()
        self.store.hold = True
        c = self.b.send(LIST, sid)
        self.b.resource.stop(0)
        ((load, _),) = self.store.held
        self.assertFalse(load.called)  # not cancelled: only not waited for
        r = c.response()
        self.assertEqual(r.status, 503)
        self.assertEqual(r.json()["error"]["code"], errors.GATEWAY_SHUTTING_DOWN)
        self.assertEqual(self.b.resource.shared.pending(), 0)
        self.assertEqual(len(self.b.resource.table), 0)


class UnavailableLocalTests(SharedCase):
    sessions = "local"

    def test_aMissIs404LoggedOncePerOutage(self) -> None:
        sid = self.initialize()
        self.store.down = "Redis at 127.0.0.1:6379 unreachable: connection refused"
        with capturedLogs() as events:
            first = self.b.exchange(LIST, sid)
            second = self.b.exchange(LIST, sid)
        self.assertEqual((first.status, second.status), (404, 404))
        lines = [formatEvent(e) for e in events if "shared state (Redis) unreachable" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertIn("answered 404", lines[0])
        # A's own session goes on while the store is down.
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.store.down = None
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)
        # The next outage is logged again.
        self.store.down = "Redis at 127.0.0.1:6379 unreachable: timeout"
        with capturedLogs() as events:
            self.assertEqual(self.b.exchange(LIST, mint_session_id()).status, 404)
        self.assertEqual(len([e for e in events if "shared state (Redis) unreachable" in formatEvent(e)]), 1)


class UnavailableRefuseTests(SharedCase):
    sessions = "refuse"

    def test_aMissIs503WithRetryAfter(self) -> None:
        sid = self.initialize()
        self.store.down = "Redis at 127.0.0.1:6379 unreachable: connection refused"
        r = self.b.exchange(LIST, sid)
        self.assertEqual(r.status, 503)
        self.assertEqual(r.headers["retry-after"], "1")
        error = r.json()["error"]
        self.assertEqual(error["code"], errors.STATE_UNAVAILABLE)
        self.assertIn("shared state (Redis) cannot be reached", error["message"])
        self.assertEqual(len(self.b.resource.table), 0)
        self.store.down = None
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)

    def test_aSaveThatFailsIsLoggedAndTheSessionWorksHere(self) -> None:
        self.store.down = "Redis at 127.0.0.1:6379 unreachable: timeout"
        with capturedLogs() as events:
            sid = self.initialize()
        self.assertTrue(any("could not be saved" in formatEvent(e) for e in events))
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertNotIn(sid, self.store.records)
        # Back: the next answer saves it, and B serves it.
        self.store.down = None
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertIn(sid, self.store.records)
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)


class ReviewTests(SharedCase):
    """What a review of the shared sessions found, each kept from coming back."""

    def test_replicasListeningOnOtherPortsShareASession(self) -> None:
        """
        Replicas started with other --listen strings (8080 and 8081) serve
        one another's sessions; another principal still gets 404.
        """
        sites = [
            http_site(replica.gateway, self.clock, GatewaySettings(), self.settings, listener, None, principal_of)
            for replica, listener in ((self.a, LISTENER), (self.b, "http:tcp:8081:interface=127.0.0.1"))
        ]
        r = bearer_post(sites[0], INIT, "alice.dev")
        self.assertEqual(r.status, 200)
        sid = r.headers["mcp-session-id"]
        self.assertEqual(bearer_post(sites[1], LIST, "bob.dev", sid).status, 404)
        self.assertEqual(bearer_post(sites[1], LIST, "alice.dev", sid).status, 200)

    def test_aRecordLostFromTheStoreIsSavedAgain(self) -> None:
        """
        The record expires during a long call (and, later, Redis restarts
        empty): the next use (at most every quarter of its time to live)
        saves it again, and B can serve it.
        """
        sid = self.initialize()
        c = self.a.send(call(3, "slow"), sid)
        self.clock.advance(61)  # no request meanwhile: the key expired
        self.a.calls()[0].deferred.callback({"content": []})
        self.assertEqual(c.response().status, 200)
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertIn(sid, self.store.records)
        self.store.drop(sid)  # Redis restarted empty
        self.clock.advance(15)
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertIn(sid, self.store.records)
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)

    def test_aDeleteAndARequestWaitingOnOneLookup(self) -> None:
        """A DELETE and a POST wait on B for the same lookup: the DELETE wins, nothing is rebuilt, nothing saved after."""
        sid = self.initialize()
        self.store.hold = True
        d = self.b.send(None, sid, "DELETE")
        p = self.b.send(PING, sid)
        self.store.release()
        self.assertEqual((d.response().status, p.response().status), (204, 404))
        self.assertEqual(len(self.b.resource.table), 0)
        self.assertNotIn(sid, self.store.records)
        # Later requests on B: 404 without asking the store.
        loads = len(self.store.loads)
        self.assertEqual(self.b.exchange(PING, sid).status, 404)
        self.assertEqual(len(self.store.loads), loads)

    def test_nothingIsSavedForASessionItsClientEnded(self) -> None:
        sid = self.initialize()
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)
        hs = self.b.resource.table.sessions[sid]
        self.assertEqual(self.a.exchange(None, sid, "DELETE").status, 204)
        saves = len(self.store.saves)
        shared = self.b.resource.shared
        shared.save(self.b.gateway.state.sessions, hs, SessionRecord.parse(self.any_record()))
        self.assertEqual(len(self.store.saves), saves)
        self.assertNotIn(sid, self.store.records)

    def any_record(self) -> dict[str, Any]:
        return {
            "v": 1, "owner": "a" * 64, "view": None, "protocolVersion": "2025-06-18", "clientInfo": {},
            "capabilities": {}, "subscriptions": [], "logLevel": None, "replica": "r", "created": 0,
        }

    def test_aRecordThatBreaksTheParserAnswersEveryWaiter(self) -> None:
        """created: 10**400 (float overflow): 404 for both waiting requests, no lookup left, logged."""
        sid = self.initialize()
        data = self.record(sid)
        data["created"] = 10**400
        self.store.records[sid] = json.dumps(data)
        self.store.hold = True
        first = self.b.send(LIST, sid)
        second = self.b.send(PING, sid)
        with capturedLogs() as events:
            self.store.release()
        self.assertEqual((first.response().status, second.response().status), (404, 404))
        self.assertEqual(self.b.resource.shared.pending(), 0)
        self.assertTrue(any("cannot be used" in formatEvent(e) for e in events))
        for bad in (10**400, float("inf")):
            with self.assertRaises(BadRecord):
                SessionRecord.parse({**self.any_record(), "created": bad})

    def test_aFailedResubscriptionKeepsTheRecordsSubscriptions(self) -> None:
        sid = self.initialize()
        data = self.record(sid)
        data["subscriptions"] = ["alpha://doc", "alpha://gone"]
        self.store.records[sid] = json.dumps(data)
        with capturedLogs() as events:
            self.assertEqual(self.b.exchange(LIST, sid).status, 200)
            for c in self.b.calls("resources/subscribe"):
                c.deferred.callback({})
            for c in self.b.calls("resources/subscribe"):
                if not c.deferred.called:
                    c.deferred.errback(Exception("no such resource"))
            self.assertEqual(self.b.exchange(PING, sid).status, 200)
            self.assertEqual(
                self.b.exchange({"jsonrpc": "2.0", "id": 5, "method": "logging/setLevel", "params": {"level": "debug"}}, sid).status,
                200,
            )
        self.assertTrue(any("could not be made again" in formatEvent(e) for e in events))
        self.assertEqual(self.record(sid)["subscriptions"], ["alpha://doc", "alpha://gone"])

    def test_resubscriptionsStayWithinTheInFlightLimit(self) -> None:
        """With gateway.maxCallsInFlight 2, three subscriptions are made again one at a time, and the client's request gets in."""
        uris = ["alpha://a", "alpha://b", "alpha://c"]
        self.b = Replica("replica-b", self.clock, self.store, self.settings, resources=uris, gateway_settings=GatewaySettings(maxCallsInFlight=2))
        sid = self.initialize()
        data = self.record(sid)
        data["subscriptions"] = ["alpha://a", "alpha://b", "alpha://c"]
        self.store.records[sid] = json.dumps(data)
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)
        made: list[Any] = []
        while len(pending := [c for c in self.b.calls("resources/subscribe") if not c.deferred.called]) == 1:
            made.append(pending[0].params["uri"])
            pending[0].deferred.callback({})
        self.assertEqual(pending, [])
        self.assertEqual(sorted(made), ["alpha://a", "alpha://b", "alpha://c"])
        core = self.b.resource.table.sessions[sid].core
        self.assertEqual(self.b.gateway.subscriptions.uris_of(core), ["alpha://a", "alpha://b", "alpha://c"])
        self.assertEqual(self.record(sid)["subscriptions"], ["alpha://a", "alpha://b", "alpha://c"])

    def test_aRecordTheStoreRefusesIsNotRetried(self) -> None:
        """A record too large (checked here) or refused by the store for good: one attempt, one log line, served here only."""
        big = {"x": {f"k{i}": "v" * 100 for i in range(3000)}}
        with capturedLogs() as events:
            sid = self.initialize(capabilities=big)
            for _ in range(3):
                self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertEqual(self.store.saves, [])
        self.assertEqual(len([e for e in events if "cannot be kept in the shared state" in formatEvent(e)]), 1)
        self.store.save = lambda sid, record, ttl: fail(ValueError("refused"))  # type: ignore[method-assign]
        with capturedLogs() as events:
            other = self.initialize()
            for _ in range(3):
                self.assertEqual(self.a.exchange(PING, other).status, 200)
        self.assertEqual(len([e for e in events if "cannot be kept in the shared state" in formatEvent(e)]), 1)

    def test_aClientIdLikeTheGatewaysOwnIsRefused(self) -> None:
        sid = self.initialize()
        r = self.a.exchange({"jsonrpc": "2.0", "id": "twisted-mcp/resubscribe/1", "method": "ping"}, sid)
        self.assertEqual(r.status, 400)
        self.assertIn("the gateway's own", r.json()["error"]["message"])

    def test_theLogLevelCountsOnRebuildAsAfterInitialize(self) -> None:
        """B's backend is at "error" for B's own session; a rebuilt session with no level counts as info there."""
        local = self.initialize(self.b)
        self.b.exchange({"jsonrpc": "2.0", "id": 5, "method": "logging/setLevel", "params": {"level": "error"}}, local)
        self.assertEqual([c.params for c in self.b.calls("logging/setLevel")], [{"level": "error"}])
        sid = self.initialize()
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)
        self.assertEqual([c.params for c in self.b.calls("logging/setLevel")], [{"level": "error"}, {"level": "info"}])

    def test_theInitializeAnswerWaitsForItsRecord(self) -> None:
        init = json.loads(json.dumps(INIT))
        self.store.hold_saves = True
        c = self.a.send(init)
        self.assertEqual(c.transport.value(), b"")
        self.store.release_saves()
        self.assertEqual(c.response().status, 200)
        # A save that does not answer: the answer goes after the state's timeout.
        c = self.a.send(init)
        self.assertEqual(c.transport.value(), b"")
        self.clock.advance(1)
        self.assertEqual(c.response().status, 200)
        self.store.release_saves()

    def test_foreignWarningsAreBoundedNotSilenced(self) -> None:
        shared = self.b.resource.shared
        for n in range(1000):
            self.assertTrue(shared.foreign(f"id{n}"))
        self.assertFalse(shared.foreign("id999"))
        self.assertTrue(shared.foreign("new"))
        self.assertTrue(shared.foreign("id0"))  # the oldest was forgotten
        self.assertLessEqual(len(shared._foreign), 1000)


class WithoutStoreTests(SynchronousTestCase):
    def test_noStoreNoLookupNoRecord(self) -> None:
        """The default state (no session store): an unknown id is 404 at once, and sessions are not shared."""
        clock = Clock()
        settings = HttpSettings(sessionIdleTimeout=60.0)
        a = Replica("a", clock, None, settings)
        self.assertIsNone(a.gateway.state.sessions)
        r = a.exchange(LIST, mint_session_id())
        self.assertEqual(r.status, 404)
        r = a.exchange(INIT)
        sid = r.headers["mcp-session-id"]
        self.assertIsNone(a.resource.table.sessions[sid].record)
        self.assertEqual(a.resource.shared.pending(), 0)


class RecordTests(SynchronousTestCase):
    def test_ownerDigestIsStableAndTellsOwnersApart(self) -> None:
        """Equal in another process (another PYTHONHASHSEED: set order differs) and for another listener; not for another principal."""
        one = ("tcp", "http:tcp:8080", None, None, None, None, ("jwt", "alice", ("admin", "ops"), frozenset({"a", "b", "c", "d"})))
        self.assertEqual(owner_digest(one), owner_digest(tuple(list(one))))
        self.assertEqual(len(owner_digest(one)), 64)
        self.assertEqual(owner_digest(one), owner_digest(("tcp", "http:tcp:9090") + one[2:]))
        script = (
            "from twisted_mcp.frontends.http_shared import owner_digest; "
            "print(owner_digest(('tcp', 'http:tcp:8081', None, None, None, None, "
            "('jwt', 'alice', ('admin', 'ops'), frozenset({'d', 'c', 'b', 'a'})))))"
        )
        for seed in ("1", "2"):
            out = subprocess.run(
                [sys.executable, "-c", script],
                env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": SOURCE_ROOT},
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual(out.stdout.strip(), owner_digest(one), out.stderr)
        other = ("tcp", "http:tcp:8080", None, None, None, None, ("jwt", "alice", ("admin",)))
        self.assertNotEqual(owner_digest(one), owner_digest(other))
        self.assertNotEqual(owner_digest(one), owner_digest(one[:6] + (None,)))

    def test_parseRefusesWhatItCannotUse(self) -> None:
        good = {
            "v": 1,
            "owner": "a" * 64,
            "view": None,
            "protocolVersion": "2025-06-18",
            "clientInfo": {"name": "x"},
            "capabilities": {},
            "subscriptions": [],
            "logLevel": None,
            "replica": "r",
            "created": 0,
        }
        self.assertEqual(SessionRecord.parse(good).to_json(), {**good, "created": 0.0})
        for key, value in [
            ("v", 2),
            ("protocolVersion", "2026-07-28"),
            ("capabilities", []),
            ("subscriptions", [1]),
            ("logLevel", "loud"),
            ("view", 3),
            ("created", "now"),
        ]:
            with self.assertRaises(BadRecord):
                SessionRecord.parse({**good, key: value})
        with self.assertRaises(BadRecord):
            SessionRecord.parse([good])


def answered(c: Connection) -> bool:
    return c.transport.value() != b"" and c.response().finished


@pytest_twisted.ensureDeferred
async def test_twoFrontsShareASessionThroughRedis() -> None:
    """
    With the machine's Redis: the answer to initialize on A comes once the
    record is in Redis; B serves the session; a client leaving during a
    lookup on B leaves B's Redis connection up; a DELETE on B ends A's copy.
    """
    from twisted.internet import reactor  # noqa: TID251

    from tests.redis_support import redis_url_or_skip

    from .test_state_redis import Replicas, eventually, raw, sleep

    replicas = Replicas(redis_url_or_skip())
    fronts: list[Replica] = []
    try:
        settings = HttpSettings(sessionIdleTimeout=60.0)
        for name in ("replica-a", "replica-b"):
            state = await replicas.start(name)
            replica = Replica(name, reactor, None, settings)  # type: ignore[arg-type]
            replica.gateway.state = state
            fronts.append(replica)
        a, b = fronts
        init = a.send(INIT)
        await eventually(lambda: answered(init), 5)
        sid = init.response().headers["mcp-session-id"]
        # Answered only once saved: the record is there already.
        assert raw(replicas.url, "EXISTS", a.gateway.state.key("session", sid)) == 1  # type: ignore[attr-defined]
        listed = b.send(LIST, sid)
        await eventually(lambda: answered(listed), 5)
        assert listed.response().status == 200
        gone = b.send(LIST, mint_session_id())
        gone.close()
        await sleep(0.2)
        assert b.gateway.state.available, b.gateway.state.problem
        assert b.resource.shared.pending() == 0
        pinged = b.send(PING, sid)
        await eventually(lambda: answered(pinged), 5)
        assert pinged.response().status == 200
        deleted = b.send(None, sid, "DELETE")
        await eventually(lambda: answered(deleted), 5)
        assert deleted.response().status == 204
        await eventually(lambda: len(a.resource.table) == 0, 2)
        assert raw(replicas.url, "EXISTS", a.gateway.state.key("session", sid)) == 0  # type: ignore[attr-defined]
    finally:
        for replica in fronts:
            replica.resource.stop(0)
        await replicas.close()
