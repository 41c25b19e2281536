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
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

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
PING = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


class FakeSessionStore:
    """
    A L{twisted_mcp.state.base.SessionStore} in memory, shared by the
    replicas of a test: records kept as JSON text (as Redis would), loads
    answered at once or held until L{release}, everything failing with
    L{Unavailable} while C{down} says why.
    """

    def __init__(self) -> None:
        self.records: dict[str, str] = {}
        self.ttls: dict[str, float] = {}
        self.down: str | None = None
        self.hold = False
        self.held: list[tuple[Deferred[Any], str]] = []
        self.loads: list[str] = []
        self.saves: list[str] = []
        self.touches: list[str] = []
        self.watchers: list[Callable[[str], None]] = []

    def save(self, sid: str, record: dict[str, Any], ttl: float) -> Deferred[None]:
        if self.down is not None:
            return fail(Unavailable(self.down))
        self.records[sid] = json.dumps(record)
        self.ttls[sid] = ttl
        self.saves.append(sid)
        return succeed(None)

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
        text = self.records.get(sid)
        return succeed(None if text is None else json.loads(text))

    def release(self) -> None:
        held, self.held = self.held, []
        for d, sid in held:
            if not d.called:
                self._answer(sid).chainDeferred(d)

    def touch(self, sid: str, ttl: float) -> None:
        self.touches.append(sid)

    def delete(self, sid: str) -> Deferred[None]:
        if self.down is not None:
            return fail(Unavailable(self.down))
        self.records.pop(sid, None)
        for callback in list(self.watchers):
            callback(sid)
        return succeed(None)

    def watch_ended(self, callback: Callable[[str], None]) -> None:
        self.watchers.append(callback)


class FakeState(SharedState):
    kind = "fake"

    def __init__(self, replica: str, store: FakeSessionStore, sessions: str = "local") -> None:
        super().__init__(replica, {"sessions": sessions})
        self.sessions = store


class Replica:
    """One gateway and its HTTP front, sharing C{store} with the other replicas."""

    def __init__(
        self, name: str, clock: Clock, store: FakeSessionStore | None, settings: HttpSettings, sessions: str = "local"
    ) -> None:
        self.backend = FakeBackend("alpha", ["echo"], resources=["alpha://doc"])
        self.backend.capabilities = {"tools": {}, "resources": {"subscribe": True}, "logging": {}}
        self.backend._first_discovery_done()
        self.gateway = Gateway([self.backend], "__", clock, 5.0)
        if store is not None:
            self.gateway.state = FakeState(name, store, sessions)
        self.gateway.start()
        self.settings = settings
        self.site = http_site(self.gateway, clock, GatewaySettings(), settings, LISTENER)
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
        self.store = FakeSessionStore()
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
        """A client of another identity (here: another listener of B) with A's session id: 404, logged once, nothing rebuilt."""
        sid = self.initialize()
        other = http_site(self.b.gateway, self.clock, GatewaySettings(), self.settings, "http:tcp:9090:interface=127.0.0.1")
        with capturedLogs() as events:
            first = self.b.exchange(LIST, sid, site=other)
            second = self.b.exchange(LIST, sid, site=other)
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
        other = http_site(self.b.gateway, self.clock, GatewaySettings(), self.settings, "http:tcp:9090:interface=127.0.0.1")
        self.assertEqual(self.b.exchange(None, sid, "DELETE", site=other).status, 404)
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
        self.assertEqual(self.b.exchange(LIST, sid).status, 200)
        self.assertEqual(self.store.loads, [sid, sid])

    def test_touchedAtMostEveryQuarterOfItsTimeToLive(self) -> None:
        sid = self.initialize()
        for _ in range(5):
            self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertEqual(self.store.touches, [])  # saved just now
        self.clock.advance(15)
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertEqual(self.a.exchange(PING, sid).status, 200)
        self.assertEqual(self.store.touches, [sid])
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
        """The only waiting client closes its request: the lookup is cancelled, nothing is built, nothing is answered."""
        sid = self.initialize()
        self.store.hold = True
        c = self.b.send(LIST, sid)
        c.close()
        self.assertEqual(self.b.resource.shared.pending(), 0)
        ((load, _),) = self.store.held
        self.assertTrue(load.called)  # cancelled
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
        one = ("tcp", "http:tcp:8080", None, None, None, None, ("jwt", "alice", ("admin", "ops")))
        self.assertEqual(owner_digest(one), owner_digest(tuple(list(one))))
        self.assertEqual(len(owner_digest(one)), 64)
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
