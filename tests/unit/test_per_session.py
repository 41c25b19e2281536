"""
Tests for per-session backend instances in L{twisted_mcp.dispatch.gateway}: their
caps (per backend, per principal) and their idle stop, over fake backends.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE

from .fakes import FakeBackend

ECHO = {"name": "echo", "inputSchema": {"type": "object"}}
CALL = {"name": "own__echo", "arguments": {}}


class Instance(FakeBackend):
    def stopService(self) -> Deferred[None]:
        super().stopService()
        return succeed(None)


class PerSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.template = FakeBackend("own", [ECHO])
        self.template.per_session = True
        self.template.max_instances = 2
        self.template.max_instances_per_principal = 2
        self.template.idle_timeout = 60.0
        self.started: list[FakeBackend] = []
        self.gateway = Gateway([self.template], "__", self.clock, 5.0, spawn=self.spawn)
        self.template._first_discovery_done()
        self.gateway.start()
        self.out: dict[str, list[Any]] = {}

    def spawn(self, template: Backend) -> Backend:
        instance = Instance(template.name, [ECHO])
        instance.idle_timeout = template.idle_timeout
        instance.startService()
        self.started.append(instance)
        return instance

    def session(self, label: str, principal: str = "local") -> ClientSession:
        out = self.out[label] = []
        session = ClientSession(self.gateway, line_caller(lambda line: out.append(json.loads(line)), label, principal))
        deliver(session, json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": {"name": label}}}).encode())
        out.clear()
        return session

    def call(self, session: ClientSession, rid: int = 1) -> None:
        deliver(session, json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": CALL}).encode())

    def answer(self, instance: FakeBackend) -> None:
        for call in instance.calls:
            if not call.deferred.called:
                call.deferred.callback({"content": []})

    def release(self, *sessions: ClientSession) -> None:
        for session in sessions:
            self.successResultOf(session.release_backends())

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_capPerBackend(self) -> None:
        a, b, c = self.session("a", "alice"), self.session("b", "bob"), self.session("c", "carol")
        self.patch(self.gateway.policy, "principal", lambda peer: SimpleNamespace(name=peer))
        self.call(a)
        self.call(b)
        self.call(c)
        self.assertEqual(len(self.started), 2)
        (refused,) = self.out["c"]
        self.assertEqual(refused["error"]["code"], errors.BUSY)
        self.assertEqual(refused["error"]["data"], {"backend": "own", "limit": 2, "cap": "maxInstances"})
        self.assertIn("'own'", refused["error"]["message"])
        self.assertIn("maxInstances", refused["error"]["message"])
        for instance in self.started:
            self.answer(instance)
        self.release(a)
        self.call(c, 2)
        self.assertEqual(len(self.started), 3)
        self.answer(self.started[-1])
        self.assertEqual(self.out["c"][-1]["result"], {"content": []})
        self.release(b, c)

    def test_capPerPrincipal(self) -> None:
        self.template.max_instances_per_principal = 1
        self.patch(self.gateway.policy, "principal", lambda peer: SimpleNamespace(name=peer))
        a, a2, b = self.session("a", "alice"), self.session("a2", "alice"), self.session("b", "bob")
        self.call(a)
        self.call(a2)
        self.call(b)
        self.assertEqual(len(self.started), 2)
        (refused,) = self.out["a2"]
        self.assertEqual(refused["error"]["code"], errors.BUSY)
        self.assertEqual(refused["error"]["data"], {"backend": "own", "limit": 1, "cap": "maxInstancesPerPrincipal"})
        self.assertIn("alice", refused["error"]["message"])
        for instance in self.started:
            self.answer(instance)
        self.release(a, a2, b)

    def test_idleInstanceStopsAndTheNextCallStartsAnother(self) -> None:
        a = self.session("a")
        self.call(a)
        (first,) = self.started
        self.clock.advance(120.0)  # a call in flight keeps it
        self.assertTrue(first.running)
        self.answer(first)
        self.clock.advance(59.0)
        self.assertEqual(a.own, {"own": first})
        self.clock.advance(1.0)
        self.assertFalse(first.running)
        self.assertEqual((a.own, self.gateway.instances), ({}, set()))
        self.assertIn(a, self.gateway.sessions)  # the session stays
        self.call(a, 2)
        self.assertEqual(len(self.started), 2)
        self.answer(self.started[-1])
        self.assertEqual(self.out["a"][-1], {"jsonrpc": "2.0", "id": 2, "result": {"content": []}})
        self.release(a)
        self.assertFalse(self.started[-1].running)

    def test_aNewCallCancelsTheIdleStop(self) -> None:
        a = self.session("a")
        self.call(a)
        self.answer(self.started[0])
        self.clock.advance(50.0)
        self.call(a, 2)
        self.clock.advance(50.0)
        self.assertTrue(self.started[0].running)
        self.answer(self.started[0])
        self.clock.advance(60.0)
        self.assertFalse(self.started[0].running)
        self.assertEqual(len(self.started), 1)
        self.release(a)
