"""
The shaped catalog through a client session (design §2.1, §8.2
"Dispatch"): renamed tools called by their new name reach the server under
its own; a filtered tool is an unknown tool; a rename does not escape a
deny rule written against the tool's own name; a URI the resources filter
removes cannot be read, subscribed to or completed, however it is named.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config.models import Shaping
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.principal import Principal
from twisted_mcp.policy.rules import parse_policy
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS

from .fakes import FakeBackend

ECHO = {"name": "echo", "description": "echoes", "inputSchema": {"type": "object"}}


class ShapedSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.alpha = FakeBackend(
            "alpha",
            [ECHO, "delete_all"],
            resources=["repo://readme", "repo://private/keys"],
            resource_templates=["repo://{path}", "secret://{id}"],
            prompts=["greet"],
        )
        self.alpha.capabilities = {"tools": {}, "resources": {"subscribe": True}, "prompts": {}, "completions": {}}
        self.alpha.shaping = MappingProxyType(
            {
                "tools": Shaping(deny=("delete_*",), rename={"echo": "say"}, overrides={"echo": {"title": "Say"}}),
                "resources": Shaping(deny=("repo://private/*", "secret://*")),
            }
        )
        self.gateway = Gateway([self.alpha], "__", self.clock, 5.0)
        self.alpha._first_discovery_done()
        self.gateway.start()
        self.out: list[bytes] = []
        self.session = ClientSession(self.gateway, line_caller(self.out.append, "test"))
        self.request(0, "initialize", {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "c"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.take()

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def send(self, message: Any) -> None:
        deliver(self.session, json.dumps(message).encode())

    def request(self, id: int, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "id": id, "method": method, "params": params})

    def take(self) -> list[Any]:
        messages = [json.loads(line) for line in self.out]
        del self.out[:]
        return messages

    def test_listAndCallByTheNewName(self) -> None:
        self.request(1, "tools/list", {})
        (listing,) = self.take()
        self.assertEqual(listing["result"]["tools"], [{**ECHO, "name": "alpha__say", "title": "Say"}])
        self.request(2, "tools/call", {"name": "alpha__say", "arguments": {"text": "hi"}})
        (call,) = self.alpha.calls
        self.assertEqual((call.method, call.params["name"]), ("tools/call", "echo"))
        call.deferred.callback({"content": []})
        (answer,) = self.take()
        self.assertEqual(answer["result"], {"content": []})

    def test_filteredOrOldNameIsUnknown(self) -> None:
        for i, name in enumerate(("alpha__delete_all", "alpha__echo")):
            self.request(3 + i, "tools/call", {"name": name, "arguments": {}})
            (answer,) = self.take()
            self.assertEqual(answer["error"]["code"], INVALID_PARAMS)
            self.assertIn("Unknown tool", answer["error"]["message"])
        self.assertEqual(self.alpha.calls, [])

    def test_renameDoesNotEscapeADenyOnItsOwnName(self) -> None:
        problems: list[str] = []
        rules = parse_policy({"roles": {"dev": {"allow": ["*"], "deny": ["alpha__echo"]}}}, None, problems, {"alpha"})
        self.assertEqual(problems, [])
        self.gateway.policy = Policy(rules, "__", self.clock, lambda peer: Principal(name="dev", roles=("dev",), source="config"))
        self.gateway.policy.catalog_changed(self.gateway.catalog.entries)
        self.request(5, "tools/call", {"name": "alpha__say", "arguments": {}})
        (answer,) = self.take()
        self.assertEqual(answer["error"]["code"], errors.ACCESS_DENIED)
        self.assertEqual(self.alpha.calls, [])

    def test_filteredResourcesAreNotReadable(self) -> None:
        self.request(6, "resources/list", {})
        (listing,) = self.take()
        self.assertEqual([r["uri"] for r in listing["result"]["resources"]], ["repo://readme"])
        for i, uri in enumerate(("repo://private/keys", "twisted-mcp://alpha/repo://private/keys", "secret://x", "repo://private/other")):
            for method in ("resources/read", "resources/subscribe"):
                self.request(10 + i, method, {"uri": uri})
                (answer,) = self.take()
                self.assertEqual(answer["error"]["code"], errors.RESOURCE_NOT_FOUND, (method, uri))
                self.assertIn("Resource not found", answer["error"]["message"])
        self.assertEqual(self.alpha.calls, [])
        self.request(20, "resources/read", {"uri": "repo://a/b"})
        (call,) = self.alpha.calls
        self.assertEqual(call.params["uri"], "repo://a/b")
        call.deferred.callback({"contents": []})
        self.take()

    def test_filteredTemplateIsNotCompleted(self) -> None:
        argument = {"name": "id", "value": "x"}
        self.request(21, "completion/complete", {"ref": {"type": "ref/resource", "uri": "secret://{id}"}, "argument": argument})
        (answer,) = self.take()
        self.assertEqual(answer["result"], {"completion": {"values": [], "hasMore": False}})
        self.assertEqual(self.alpha.calls, [])
        self.request(22, "completion/complete", {"ref": {"type": "ref/resource", "uri": "repo://{path}"}, "argument": argument})
        (call,) = self.alpha.calls
        self.assertEqual(call.params["ref"]["uri"], "repo://{path}")
        call.deferred.callback({"completion": {"values": ["a"]}})
        self.take()

    def test_aSubscriptionTheFilterNowRemovesEnds(self) -> None:
        """A reload's new filter removes a subscribed URI: no more updates, the backend is unsubscribed, unsubscribe is accepted."""
        self.request(30, "resources/subscribe", {"uri": "repo://readme"})
        (call,) = self.alpha.calls
        call.deferred.callback({})
        self.take()
        del self.alpha.calls[:]
        self.alpha.shaping = MappingProxyType({"resources": Shaping(deny=("repo://readme",))})
        self.gateway._rebuild()
        self.assertEqual(self.gateway.subscriptions.drop_unreachable(self.gateway.catalog.reachable), 1)
        (call,) = self.alpha.calls
        self.assertEqual((call.method, call.params), ("resources/unsubscribe", {"uri": "repo://readme"}))
        call.deferred.callback({})
        self.take()
        self.gateway.subscriptions.updated(self.alpha, {"uri": "repo://readme"})
        self.assertEqual(self.take(), [])
        self.request(31, "resources/unsubscribe", {"uri": "repo://readme"})
        self.assertEqual(self.take(), [{"jsonrpc": "2.0", "id": 31, "result": {}}])
        self.assertEqual(self.gateway.subscriptions.count(), 0)
