"""
C{subscriptions/listen} for stateless-era (2026-07-28) clients of the core,
on fake backends and a Clock: the acknowledgment first and only what is
honoured in it, the filter honoured, every notification tagged with the
listen's id, resource subscriptions shared with handshake-era sessions and
dropped when the client cancels, the spec's result when the session ends,
the bound on open listens, and what the policy hides never announced.
"""

from __future__ import annotations

import json
from typing import Any

from twisted_mcp.backends.base import State
from twisted_mcp.dispatch.listens import DEFAULT_MAX_LISTENS, SUBSCRIPTION_ID
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import line_caller

from .test_eras import envelope
from .test_surface_core import CoreTestCase

ACK = "notifications/subscriptions/acknowledged"


class ModernClient:
    """A stateless-era client session over lines."""

    def __init__(self, test: CoreTestCase, label: str = "modern", max_listens: int = DEFAULT_MAX_LISTENS) -> None:
        self.out: list[bytes] = []
        self.session = ClientSession(test.gateway, line_caller(self.out.append, label), 256, max_listens)

    def request(self, rid: Any, method: str, params: dict[str, Any] | None = None) -> None:
        out = dict(params or {})
        out["_meta"] = envelope()
        self.session.message_received({"jsonrpc": "2.0", "id": rid, "method": method, "params": out})

    def listen(self, rid: Any, **notifications: Any) -> None:
        self.request(rid, "subscriptions/listen", {"notifications": notifications})

    def cancel(self, rid: Any) -> None:
        self.session.message_received({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid}})

    def take(self) -> list[Any]:
        messages = [json.loads(line) for line in self.out]
        del self.out[:]
        return messages


class ListenTests(CoreTestCase):
    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def updated(self, uri: str) -> None:
        self.gateway.reverse.server_notification(self.alpha, "notifications/resources/updated", {"uri": uri}, None)

    def test_theAcknowledgmentComesFirstWithWhatIsHonoured(self) -> None:
        self.beta.capabilities = self.alpha.capabilities = {"tools": {}, "resources": {"subscribe": True}}  # no prompts
        m = ModernClient(self)
        m.listen("L1", toolsListChanged=True, promptsListChanged=True, resourcesListChanged=False, resourceSubscriptions=["alpha://only", "nowhere://x"])
        self.assertEqual(m.take(), [], "nothing before the upstream subscription is made")
        self.assertEqual(self.alpha.methods(), ["resources/subscribe"])
        self.assertEqual(self.alpha.sent[0].params, {"uri": "alpha://only"})
        self.gateway._changed(frozenset({"tools"}))  # a change while the subscription is being made
        self.alpha.sent[0].deferred.callback({})
        ack, change = m.take()
        self.assertEqual(
            ack,
            {
                "jsonrpc": "2.0",
                "method": ACK,
                "params": {"notifications": {"toolsListChanged": True, "resourceSubscriptions": ["alpha://only"]}, "_meta": {SUBSCRIPTION_ID: "L1"}},
            },
        )
        self.assertEqual(change["method"], "notifications/tools/list_changed")
        self.assertEqual(change["params"]["_meta"], {SUBSCRIPTION_ID: "L1"})
        m.cancel("L1")

    def test_onlyWhatWasAskedForIsSentAndEachIsTagged(self) -> None:
        m = ModernClient(self)
        m.listen(7, promptsListChanged=True)
        (ack,) = m.take()
        self.assertEqual(ack["params"]["notifications"], {"promptsListChanged": True})
        self.assertEqual(ack["params"]["_meta"][SUBSCRIPTION_ID], 7)
        self.gateway._changed(frozenset({"tools", "resources"}))
        self.assertEqual(m.take(), [], "tools and resources were not asked for")
        self.gateway._changed(frozenset({"prompts"}))
        (change,) = m.take()
        self.assertEqual(change, {"jsonrpc": "2.0", "method": "notifications/prompts/list_changed", "params": {"_meta": {SUBSCRIPTION_ID: 7}}})
        self.updated("alpha://only")
        self.assertEqual(m.take(), [])
        m.cancel(7)

    def test_twoListensEachGetTheirOwnTag(self) -> None:
        m = ModernClient(self)
        m.listen("a", toolsListChanged=True)
        m.listen("b", toolsListChanged=True)
        m.take()
        self.gateway._changed(frozenset({"tools"}))
        self.assertEqual(sorted(c["params"]["_meta"][SUBSCRIPTION_ID] for c in m.take()), ["a", "b"])
        m.cancel("a")
        m.cancel("b")

    def test_resourceUpdatesReachTheListenThatSubscribedSharingTheUpstreamSubscription(self) -> None:
        legacy = self.client("legacy")
        legacy.request(1, "resources/subscribe", {"uri": "alpha://only"})
        self.alpha.sent[0].deferred.callback({})
        legacy.take()
        m = ModernClient(self)
        m.listen("L", resourceSubscriptions=["alpha://only"])
        self.assertEqual(self.alpha.methods(), ["resources/subscribe"], "one upstream subscription for both")
        (ack,) = m.take()
        self.assertEqual(ack["params"]["notifications"], {"resourceSubscriptions": ["alpha://only"]})
        self.updated("alpha://only")
        (update,) = m.take()
        self.assertEqual(update["params"], {"uri": "alpha://only", "_meta": {SUBSCRIPTION_ID: "L"}})
        self.assertEqual(legacy.take()[0]["params"], {"uri": "alpha://only"})
        # The client cancels: no answer, and the legacy session still holds the URI.
        m.cancel("L")
        self.assertEqual(m.take(), [])
        self.assertEqual(self.alpha.methods(), ["resources/subscribe"])
        legacy.request(2, "resources/unsubscribe", {"uri": "alpha://only"})
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/unsubscribe"])

    def test_cancellingUnsubscribesAndIsNotAnswered(self) -> None:
        m = ModernClient(self)
        m.listen("L", resourceSubscriptions=["alpha://item/3"])
        self.alpha.sent[0].deferred.callback({})
        m.take()
        m.cancel("L")
        self.assertEqual(m.take(), [])
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/unsubscribe"])
        self.assertEqual(self.alpha.sent[1].params, {"uri": "alpha://item/3"})
        self.updated("alpha://item/3")
        self.gateway._changed(frozenset({"tools"}))
        self.assertEqual(m.take(), [])
        self.assertEqual(m.session.in_flight, {})
        self.assertEqual(self.gateway.requests.get(("subscriptions/listen", "cancelled", "")), 1)

    def test_cancelledBeforeTheBackendAnsweredLeavesNoSubscription(self) -> None:
        m = ModernClient(self)
        m.listen("L", resourceSubscriptions=["alpha://only"])
        m.cancel("L")
        self.alpha.sent[0].deferred.callback({})
        self.assertEqual(m.take(), [], "no acknowledgment after the cancel")
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/unsubscribe"])
        self.assertEqual(self.gateway.subscriptions.count(), 0)

    def test_aRefusedSubscriptionIsNotHonoured(self) -> None:
        m = ModernClient(self)
        m.listen("L", toolsListChanged=True, resourceSubscriptions=["alpha://only"])
        from twisted_mcp.wire.jsonrpc import JsonRpcError

        self.alpha.sent[0].deferred.errback(JsonRpcError(-32601, "no"))
        (ack,) = m.take()
        self.assertEqual(ack["params"]["notifications"], {"toolsListChanged": True})
        m.cancel("L")

    def test_aBackendWithoutSubscribeIsNotAskedAndItsUrisNotHonoured(self) -> None:
        self.alpha.capabilities = {"tools": {}, "resources": {}}
        m = ModernClient(self)
        m.listen("L", resourceSubscriptions=["alpha://only"])
        self.assertEqual(self.alpha.methods(), [])
        self.assertEqual(m.take()[0]["params"]["notifications"], {})
        m.cancel("L")

    def test_theSessionEndingAnswersEachListenWithTheSpecResult(self) -> None:
        m = ModernClient(self)
        m.listen("L", resourceSubscriptions=["alpha://only"])
        self.alpha.sent[0].deferred.callback({})
        m.take()
        d = m.session.drain(10, self.clock)
        (result,) = m.take()
        self.assertEqual(result["id"], "L")
        self.assertEqual(result["result"]["resultType"], "complete")
        self.assertEqual(result["result"]["_meta"][SUBSCRIPTION_ID], "L")
        self.assertIn("io.modelcontextprotocol/serverInfo", result["result"]["_meta"])
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/unsubscribe"])
        self.assertEqual(self.successResultOf(d), None)  # no grace period waited for: nothing else in flight

    def test_theBoundOnOpenListens(self) -> None:
        m = ModernClient(self)
        for i in range(DEFAULT_MAX_LISTENS):
            m.listen(i, toolsListChanged=True)
        m.listen("one-more", toolsListChanged=True)
        messages = m.take()
        self.assertEqual([x["method"] for x in messages[:-1]], [ACK] * DEFAULT_MAX_LISTENS)
        error = messages[-1]
        self.assertEqual(error["id"], "one-more")
        self.assertEqual(error["error"]["code"], -32603)
        self.assertIn("maxListensPerSession", error["error"]["message"])
        m.cancel(0)
        m.listen("now-fits", toolsListChanged=True)
        self.assertEqual(m.take()[0]["method"], ACK)
        m.session.drain(0, self.clock)

    def test_theBoundIsTheSessionsSetting(self) -> None:
        """gateway.maxListensPerSession, as the fronts pass it to each session."""
        from twisted_mcp.config.loader import build

        self.assertEqual(build({"gateway": {"maxListensPerSession": 2}, "mcpServers": {}}, "test").gateway.maxListensPerSession, 2)
        m = ModernClient(self, max_listens=2)
        for rid in (1, 2, 3):
            m.listen(rid, toolsListChanged=True)
        self.assertEqual(m.take()[-1]["error"]["data"], {"limit": 2})
        m.session.drain(0, self.clock)

    def test_aMalformedFilterIsInvalidParams(self) -> None:
        m = ModernClient(self)
        m.request(1, "subscriptions/listen", {})
        m.listen(2, toolsListChanged="yes")
        m.listen(3, resourceSubscriptions="alpha://only")
        errors = m.take()
        self.assertEqual([(e["id"], e["error"]["code"]) for e in errors], [(1, -32602), (2, -32602), (3, -32602)])
        self.assertIn("notifications", errors[0]["error"]["message"])
        self.assertIn("toolsListChanged", errors[1]["error"]["message"])
        self.assertIn("resourceSubscriptions", errors[2]["error"]["message"])

    def test_aHandshakeEraClientCannotListen(self) -> None:
        c = self.client()
        c.request(1, "subscriptions/listen", {"notifications": {"toolsListChanged": True}})
        self.assertEqual(c.take()[0]["error"]["code"], -32602)

    def test_whatThePolicyHidesIsNeverAnnounced(self) -> None:
        from twisted_mcp.policy.pipeline import Policy
        from twisted_mcp.policy.rules import PolicyConfig

        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        policy.catalog_changed(self.gateway.catalog.entries)
        policy.set_kill("backend", "alpha", True)
        m = ModernClient(self)
        m.listen("L", resourceSubscriptions=["alpha://only"])
        self.assertEqual(self.alpha.methods(), [], "a URI the caller may not see is not subscribed")
        self.assertEqual(m.take()[0]["params"]["notifications"], {})
        m.cancel("L")

    def test_updatesFollowThePolicyInForce(self) -> None:
        from twisted_mcp.policy.pipeline import Policy
        from twisted_mcp.policy.rules import PolicyConfig

        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        policy.catalog_changed(self.gateway.catalog.entries)
        m = ModernClient(self)
        m.listen("L", resourceSubscriptions=["alpha://only"])
        self.alpha.sent[0].deferred.callback({})
        m.take()
        policy.set_kill("backend", "alpha", True)
        self.updated("alpha://only")
        self.assertEqual(m.take(), [])
        m.cancel("L")

    def test_aRestartedBackendIsSubscribedAgain(self) -> None:
        m = ModernClient(self)
        m.listen("L", resourceSubscriptions=["alpha://only"])
        self.alpha.sent[0].deferred.callback({})
        m.take()
        self.alpha.state = State.DOWN
        self.alpha._changed()
        self.alpha.state = State.UP
        self.alpha._changed()
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/subscribe"])
        m.cancel("L")


class EarlyListenTests(CoreTestCase):
    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from twisted_mcp.dispatch.gateway import Gateway

        from .test_surface_core import SurfaceBackend

        self.clock = Clock()
        self.alpha = SurfaceBackend("alpha", tools=["echo"], prompts=["greet"], resources=["alpha://only"])
        self.gateway = Gateway([self.alpha], "__", self.clock, 5.0)
        self.gateway.start()

    def test_aFirstListenWaitsForTheFirstDiscoveryToKnowWhatItMayHave(self) -> None:
        m = ModernClient(self)
        m.listen("L", promptsListChanged=True, resourceSubscriptions=["alpha://only"])
        self.assertEqual(m.take(), [])
        self.alpha._first_discovery_done()
        self.alpha.sent[0].deferred.callback({})
        (ack,) = m.take()
        self.assertEqual(ack["params"]["notifications"], {"promptsListChanged": True, "resourceSubscriptions": ["alpha://only"]})
        m.cancel("L")
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/unsubscribe"])

    def test_aListenStillWaitingWhenTheSessionEndsIsClosedAtOnce(self) -> None:
        m = ModernClient(self)
        m.listen("L", toolsListChanged=True)
        d = m.session.drain(10, self.clock)
        self.alpha._first_discovery_done()
        (result,) = m.take()
        self.assertEqual((result["id"], result["result"]["_meta"][SUBSCRIPTION_ID]), ("L", "L"))
        self.successResultOf(d)
