"""
What the gateway keeps of a per-session backend instance once it is
stopped (its session ended, or it went idle): nothing, and whatever the
stopping process still says reaches no client.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import Backend, State
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import line_caller
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE
from twisted_mcp.wire.jsonrpc import JsonRpcError

from .fakes import FakeBackend

ECHO = {"name": "echo", "inputSchema": {"type": "object"}}
LOGGING = {"tools": {}, "logging": {}, "resources": {"subscribe": True}}
EVERYTHING = {"sampling": {}, "elicitation": {}, "roots": {}}


class Instance(FakeBackend):
    """A per-session instance whose stop goes through the states a real one does."""

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.state = State.STOPPED
        self._changed()
        return succeed(None)


class InstanceEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.template = FakeBackend("own", [ECHO])
        self.template.per_session = True
        self.template.idle_timeout = 60.0
        self.template.capabilities = LOGGING
        self.template.resources = [{"uri": "own://r", "name": "r"}]
        self.shared = FakeBackend("shared", [ECHO])
        self.started: list[Instance] = []
        self.gateway = Gateway([self.template, self.shared], "__", self.clock, 5.0, spawn=self.spawn)
        self.template._first_discovery_done()
        self.shared._first_discovery_done()
        self.gateway.start()
        self.out: dict[str, list[Any]] = {}

    def spawn(self, template: Backend) -> Backend:
        instance = Instance(template.name, [ECHO])
        instance.per_session = True
        instance.idle_timeout = template.idle_timeout
        instance.capabilities = LOGGING
        instance.startService()
        self.started.append(instance)
        return instance

    def session(self, label: str) -> ClientSession:
        out = self.out[label] = []
        session = ClientSession(self.gateway, line_caller(lambda line: out.append(json.loads(line)), label))
        self.request(session, 0, "initialize", {"protocolVersion": LATEST_HANDSHAKE, "capabilities": EVERYTHING})
        out.clear()
        return session

    def request(self, session: ClientSession, rid: int, method: str, params: dict[str, Any]) -> None:
        session.message_received({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})

    def call_own(self, session: ClientSession, rid: int = 1) -> Instance:
        self.request(session, rid, "tools/call", {"name": "own__echo", "arguments": {}})
        instance = self.started[-1]
        instance.calls[-1].deferred.callback({"content": []})
        return instance

    def test_an_idle_stopped_instance_leaves_nothing_behind(self) -> None:
        a = self.session("a")
        self.request(a, 1, "logging/setLevel", {"level": "debug"})
        instance = self.call_own(a, 2)
        self.clock.advance(60.0)
        self.assertEqual(instance.state, State.STOPPED)
        self.assertNotIn(instance, self.gateway._states)
        self.assertNotIn(instance, self.gateway.logs._sent)
        self.assertNotIn(instance, self.gateway.instance_owners)

    def test_a_released_instance_leaves_nothing_behind(self) -> None:
        a = self.session("a")
        self.request(a, 1, "logging/setLevel", {"level": "debug"})
        instance = self.call_own(a, 2)
        self.successResultOf(a.drain(1.0, self.clock))
        self.assertEqual(instance.state, State.STOPPED)
        self.assertNotIn(instance, self.gateway._states)
        self.assertNotIn(instance, self.gateway.logs._sent)

    def test_a_stopped_instances_log_messages_reach_no_other_client(self) -> None:
        a = self.session("a")
        self.session("b")
        instance = self.call_own(a)
        self.out["a"].clear()
        self.clock.advance(60.0)  # idle: stopped
        instance._server_notification("notifications/message", {"level": "error", "data": "a's secret path"}, None)
        self.assertEqual(self.out["b"], [])
        self.successResultOf(a.drain(1.0, self.clock))

    def test_a_stopped_instances_request_reaches_no_other_client(self) -> None:
        a, b = self.session("a"), self.session("b")
        instance = self.call_own(a)
        self.clock.advance(60.0)  # idle: stopped
        self.out["a"].clear()
        # b calls its own instance of the same backend meanwhile.
        self.request(b, 1, "tools/call", {"name": "own__echo", "arguments": {}})
        with self.assertRaises(JsonRpcError):
            instance._server_request("roots/list", {}, None)
        self.assertEqual([m.get("method") for m in self.out["b"]], [])
        self.started[-1].calls[-1].deferred.callback({"content": []})
        self.successResultOf(a.drain(1.0, self.clock))
        self.successResultOf(b.drain(1.0, self.clock))

    def test_a_subscription_keeps_its_instance_past_the_idle_timeout(self) -> None:
        """A client subscribed to a resource of its own instance keeps
        receiving its updates: the instance is not idle while it holds a
        subscription, and stops one idle period after the last goes."""
        a = self.session("a")
        self.request(a, 1, "resources/subscribe", {"uri": "own://r"})
        (instance,) = self.started
        instance.calls[-1].deferred.callback({})
        self.assertEqual(self.out["a"], [{"jsonrpc": "2.0", "id": 1, "result": {}}])
        self.clock.advance(600.0)
        self.assertEqual(instance.state, State.UP)
        instance._server_notification("notifications/resources/updated", {"uri": "own://r"}, None)
        self.assertEqual(self.out["a"][-1]["method"], "notifications/resources/updated")
        self.request(a, 2, "resources/unsubscribe", {"uri": "own://r"})
        self.assertEqual(instance.calls[-1].method, "resources/unsubscribe")
        self.clock.advance(60.0)
        self.assertEqual(instance.state, State.STOPPED)
        self.assertEqual(self.gateway.subscriptions.count(), 0)
        self.successResultOf(a.drain(1.0, self.clock))
