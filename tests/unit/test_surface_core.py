"""
Tests for the message-level core over the whole MCP surface, on fake
backends and Twisted's Clock: prompts, resources and their URIs,
subscriptions counted per backend, completion, logging levels, and the
routing of server-to-client requests to the right client.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import State
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.pages import page
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import line_caller
from twisted_mcp.mcp.versions import LATEST_HANDSHAKE
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

from .fakes import FakeBackend

ALL_CAPABILITIES = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}


@attrs.define
class SentCall:
    method: str
    params: Any
    on_progress: Any
    context: Any
    deferred: Deferred[Any]
    cancelled: bool = False


class SurfaceBackend(FakeBackend):
    """A fake backend with every kind of listing, that records its calls
    (with their context) and the notifications sent to it."""

    def __init__(self, name: str, *, tools: list[Any] = (), prompts: list[Any] = (), resources: list[Any] = (),
                 templates: list[Any] = (), capabilities: dict[str, Any] | None = None) -> None:
        super().__init__(name, list(tools))
        self.prompts = [p if isinstance(p, dict) else {"name": p} for p in prompts]
        self.resources = [r if isinstance(r, dict) else {"uri": r, "name": r} for r in resources]
        self.resource_templates = [t if isinstance(t, dict) else {"uriTemplate": t, "name": t} for t in templates]
        self.capabilities = capabilities if capabilities is not None else {
            "tools": {}, "prompts": {}, "resources": {"subscribe": True}, "completions": {}, "logging": {}
        }
        self.sent: list[SentCall] = []
        self.notified: list[tuple[str, Any]] = []

    def call(self, method: str, params: Any, on_progress: Any = None, timeout: Any = None, context: Any = None) -> Deferred[Any]:
        if self.state is not State.UP:
            raise self.unavailable()
        record: list[SentCall] = []
        d: Deferred[Any] = Deferred(lambda _: setattr(record[0], "cancelled", True))
        record.append(SentCall(method, params, on_progress, context, d))
        self.sent.append(record[0])
        return d

    def notify(self, method: str, params: Any = None) -> None:
        self.notified.append((method, params))

    def methods(self) -> list[str]:
        return [c.method for c in self.sent]


class Client:
    """One client session, over lines."""

    def __init__(self, gateway: Gateway, label: str, capabilities: dict[str, Any] | None = None) -> None:
        self.out: list[bytes] = []
        self.session = ClientSession(gateway, line_caller(self.out.append, label))
        self.request(0, "initialize", {"protocolVersion": LATEST_HANDSHAKE, "capabilities": capabilities or {}, "clientInfo": {"name": label}})
        self.initialize = self.take()[0]

    def request(self, rid: Any, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        self.session.message_received(message)

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.session.message_received(message)

    def respond(self, rid: Any, result: Any) -> None:
        self.session.message_received({"jsonrpc": "2.0", "id": rid, "result": result})

    def take(self) -> list[Any]:
        messages = [json.loads(line) for line in self.out]
        del self.out[:]
        return messages


class CoreTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.alpha = SurfaceBackend(
            "alpha",
            tools=["echo"],
            prompts=[{"name": "greet", "arguments": [{"name": "who"}]}],
            resources=["file:///shared.txt", "alpha://only"],
            templates=["alpha://item/{id}"],
        )
        self.beta = SurfaceBackend("beta", tools=["time"], prompts=["greet"], resources=["file:///shared.txt"])
        self.gateway = Gateway([self.alpha, self.beta], "__", self.clock, 5.0)
        for b in (self.alpha, self.beta):
            b._first_discovery_done()
        self.gateway.start()

    def client(self, label: str = "c1", capabilities: dict[str, Any] | None = None) -> Client:
        return Client(self.gateway, label, capabilities)


class InitializeTests(CoreTestCase):
    def test_capabilities_are_what_the_backends_offer(self) -> None:
        caps = self.client().initialize["result"]["capabilities"]
        self.assertEqual(
            caps,
            {
                "tools": {"listChanged": True},
                "prompts": {"listChanged": True},
                "resources": {"listChanged": True, "subscribe": True},
                "completions": {},
                "logging": {},
            },
        )

    def test_no_backend_offers_prompts_or_subscribe(self) -> None:
        self.alpha.capabilities = {"tools": {}, "resources": {}}
        self.beta.capabilities = {"tools": {}}
        caps = self.client().initialize["result"]["capabilities"]
        self.assertEqual(caps, {"tools": {"listChanged": True}, "resources": {"listChanged": True}})

    def test_instructions_combined_under_each_backends_name(self) -> None:
        self.alpha.instructions = "Use echo."
        self.beta.instructions = "Ask for the time."
        text = self.client().initialize["result"]["instructions"]
        self.assertEqual(text, "## alpha\n\nUse echo.\n\n## beta\n\nAsk for the time.")

    def test_the_answer_waits_for_discovery(self) -> None:
        late = SurfaceBackend("late", prompts=["p"])
        late.state = State.STARTING
        gateway = Gateway([late], "__", self.clock, 5.0)
        gateway.start()
        out: list[bytes] = []
        session = ClientSession(gateway, line_caller(out.append, "early"))
        session.message_received({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}}})
        self.assertEqual(out, [])
        self.assertTrue(session.initialized)
        late.state = State.UP
        late._first_discovery_done()
        (answer,) = [json.loads(line) for line in out]
        self.assertIn("prompts", answer["result"]["capabilities"])


class PromptTests(CoreTestCase):
    def test_prompts_listed_under_namespaced_names(self) -> None:
        c = self.client()
        c.request(1, "prompts/list")
        (answer,) = c.take()
        self.assertEqual([p["name"] for p in answer["result"]["prompts"]], ["alpha__greet", "beta__greet"])
        self.assertNotIn("nextCursor", answer["result"])

    def test_get_routed_with_arguments_and_original_name(self) -> None:
        c = self.client()
        c.request(1, "prompts/get", {"name": "beta__greet", "arguments": {"who": "you"}})
        (sent,) = self.beta.sent
        self.assertEqual((sent.method, sent.params), ("prompts/get", {"name": "greet", "arguments": {"who": "you"}}))
        self.assertEqual(self.alpha.sent, [])
        sent.deferred.callback({"messages": [{"role": "user", "content": {"type": "text", "text": "hi you"}}]})
        (answer,) = c.take()
        self.assertEqual(answer["result"]["messages"][0]["content"]["text"], "hi you")

    def test_unknown_prompt(self) -> None:
        c = self.client()
        c.request(1, "prompts/get", {"name": "nope"})
        (answer,) = c.take()
        self.assertEqual(answer["error"]["code"], INVALID_PARAMS)
        self.assertIn("Unknown prompt", answer["error"]["message"])


class ResourceTests(CoreTestCase):
    def test_unique_uri_routed_as_given(self) -> None:
        c = self.client()
        c.request(1, "resources/read", {"uri": "alpha://only"})
        (sent,) = self.alpha.sent
        self.assertEqual(sent.params["uri"], "alpha://only")

    def test_shared_uri_made_unique_and_mapped_back(self) -> None:
        c = self.client()
        c.request(1, "resources/list")
        (answer,) = c.take()
        uris = [r["uri"] for r in answer["result"]["resources"]]
        self.assertNotIn("file:///shared.txt", uris)
        beta_uri = [u for u in uris if "beta" in u]
        self.assertEqual(len(beta_uri), 1)
        c.request(2, "resources/read", {"uri": beta_uri[0]})
        (sent,) = self.beta.sent
        self.assertEqual(sent.params["uri"], "file:///shared.txt")
        sent.deferred.callback({"contents": [{"uri": "file:///shared.txt", "text": "b"}]})
        (answer,) = c.take()
        self.assertEqual(answer["result"]["contents"][0]["uri"], beta_uri[0])

    def test_template_uri_routed(self) -> None:
        c = self.client()
        c.request(1, "resources/read", {"uri": "alpha://item/42"})
        (sent,) = self.alpha.sent
        self.assertEqual(sent.params["uri"], "alpha://item/42")

    def test_unknown_uri_is_resource_not_found(self) -> None:
        c = self.client()
        c.request(1, "resources/read", {"uri": "gamma://x"})
        (answer,) = c.take()
        self.assertEqual(answer["error"]["code"], -32002)
        self.assertEqual(answer["error"]["data"], {"uri": "gamma://x"})

    def test_pages(self) -> None:
        self.alpha.resources = [{"uri": f"alpha://r/{i:03}", "name": str(i)} for i in range(250)]
        self.alpha._changed()
        c = self.client()
        seen: list[str] = []
        cursor = None
        for rid in range(1, 10):
            c.request(rid, "resources/list", {"cursor": cursor} if cursor else None)
            (answer,) = c.take()
            seen += [r["uri"] for r in answer["result"]["resources"]]
            cursor = answer["result"].get("nextCursor")
            if cursor is None:
                break
        # alpha's 250 and beta's one (no longer shared with alpha)
        self.assertEqual(len(seen), 251)
        self.assertEqual(len(set(seen)), 251)

    def test_forged_cursor(self) -> None:
        c = self.client()
        good = page("prompts", [{"name": str(i)} for i in range(300)], None)["nextCursor"]
        for bad in ["x", good, 5, "A" * 100]:
            c.request(1, "resources/list", {"cursor": bad})
            (answer,) = c.take()
            self.assertEqual(answer["error"]["code"], INVALID_PARAMS, bad)
            self.assertIn("unknown cursor", answer["error"]["message"])


class SubscriptionTests(CoreTestCase):
    def subscribe(self, c: Client, rid: int, uri: str) -> None:
        c.request(rid, "resources/subscribe", {"uri": uri})

    def test_one_upstream_subscription_for_two_clients(self) -> None:
        c1, c2 = self.client("c1"), self.client("c2")
        self.subscribe(c1, 1, "alpha://only")
        self.subscribe(c2, 1, "alpha://only")
        self.assertEqual(self.alpha.methods(), ["resources/subscribe"])
        self.alpha.sent[0].deferred.callback({})
        self.assertEqual(c1.take(), [{"jsonrpc": "2.0", "id": 1, "result": {}}])
        self.assertEqual(c2.take(), [{"jsonrpc": "2.0", "id": 1, "result": {}}])
        c1.request(2, "resources/unsubscribe", {"uri": "alpha://only"})
        self.assertEqual(self.alpha.methods(), ["resources/subscribe"])
        c2.request(2, "resources/unsubscribe", {"uri": "alpha://only"})
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/unsubscribe"])

    def test_updates_only_to_the_sessions_subscribed(self) -> None:
        c1, c2 = self.client("c1"), self.client("c2")
        self.subscribe(c1, 1, "alpha://only")
        self.subscribe(c2, 1, "alpha://item/7")
        for sent in self.alpha.sent:
            sent.deferred.callback({})
        c1.take(), c2.take()
        self.gateway.reverse.server_notification(self.alpha, "notifications/resources/updated", {"uri": "alpha://item/7"}, None)
        self.assertEqual(c1.take(), [])
        self.assertEqual(c2.take(), [{"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "alpha://item/7"}}])

    def test_shared_uri_update_carries_the_exposed_uri(self) -> None:
        c = self.client()
        c.request(1, "resources/list")
        (answer,) = c.take()
        beta_uri = [r["uri"] for r in answer["result"]["resources"] if "beta" in r["uri"]][0]
        self.subscribe(c, 2, beta_uri)
        self.beta.sent[0].deferred.callback({})
        c.take()
        self.gateway.reverse.server_notification(self.beta, "notifications/resources/updated", {"uri": "file:///shared.txt"}, None)
        self.assertEqual(c.take()[0]["params"]["uri"], beta_uri)

    def test_made_again_after_a_restart(self) -> None:
        c = self.client()
        self.subscribe(c, 1, "alpha://only")
        self.alpha.sent[0].deferred.callback({})
        self.alpha.state = State.DOWN
        self.alpha._changed()
        self.alpha.state = State.UP
        self.alpha._changed()
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/subscribe"])
        self.assertEqual(self.alpha.sent[1].params, {"uri": "alpha://only"})

    def test_session_end_releases_its_subscriptions(self) -> None:
        c = self.client()
        self.subscribe(c, 1, "alpha://only")
        self.alpha.sent[0].deferred.callback({})
        c.session.drain(1.0, self.clock)
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/unsubscribe"])
        self.assertEqual(self.gateway.subscriptions.count(), 0)

    def test_a_refused_subscription_is_not_counted(self) -> None:
        c = self.client()
        self.subscribe(c, 1, "alpha://only")
        self.alpha.sent[0].deferred.errback(JsonRpcError(-32602, "no such resource"))
        self.assertEqual(c.take()[0]["error"]["code"], -32602)
        self.subscribe(c, 2, "alpha://only")
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/subscribe"])


class CompletionTests(CoreTestCase):
    def test_prompt_argument_routed(self) -> None:
        c = self.client()
        c.request(1, "completion/complete", {"ref": {"type": "ref/prompt", "name": "alpha__greet"}, "argument": {"name": "who", "value": "w"}})
        (sent,) = self.alpha.sent
        self.assertEqual(sent.params["ref"], {"type": "ref/prompt", "name": "greet"})

    def test_template_variable_routed(self) -> None:
        c = self.client()
        c.request(1, "completion/complete", {"ref": {"type": "ref/resource", "uri": "alpha://item/{id}"}, "argument": {"name": "id", "value": "4"}})
        (sent,) = self.alpha.sent
        self.assertEqual(sent.params["ref"]["uri"], "alpha://item/{id}")

    def test_unknown_reference_answered_empty(self) -> None:
        c = self.client()
        c.request(1, "completion/complete", {"ref": {"type": "ref/prompt", "name": "nope"}, "argument": {"name": "a", "value": ""}})
        self.assertEqual(c.take()[0]["result"], {"completion": {"values": [], "hasMore": False}})
        self.assertEqual(self.alpha.sent + self.beta.sent, [])


class LoggingTests(CoreTestCase):
    def test_backend_set_to_the_most_verbose_level_asked(self) -> None:
        c1, c2 = self.client("c1"), self.client("c2")
        c1.request(1, "logging/setLevel", {"level": "error"})
        self.assertEqual([(s.method, s.params) for s in self.alpha.sent], [("logging/setLevel", {"level": "info"})])
        c2.request(1, "logging/setLevel", {"level": "debug"})
        self.assertEqual(self.alpha.sent[-1].params, {"level": "debug"})

    def test_messages_filtered_by_each_sessions_level(self) -> None:
        c1, c2 = self.client("c1"), self.client("c2")
        c1.request(1, "logging/setLevel", {"level": "error"})
        c2.request(1, "logging/setLevel", {"level": "debug"})
        c1.take(), c2.take()
        self.gateway.reverse.server_notification(self.alpha, "notifications/message", {"level": "info", "logger": "db", "data": "hello"}, None)
        self.assertEqual(c1.take(), [])
        (message,) = c2.take()
        self.assertEqual(message["params"], {"level": "info", "logger": "alpha/db", "data": "hello"})

    def test_bad_level(self) -> None:
        c = self.client()
        c.request(1, "logging/setLevel", {"level": "loud"})
        self.assertEqual(c.take()[0]["error"]["code"], INVALID_PARAMS)


class ReverseTests(CoreTestCase):
    def call(self, c: Client, rid: Any = 1, tool: str = "alpha__echo") -> Any:
        c.request(rid, "tools/call", {"name": tool, "arguments": {}})
        return self.alpha.sent[-1]

    def test_request_tied_to_a_call_goes_to_its_client_with_our_id(self) -> None:
        c1, c2 = self.client("c1", ALL_CAPABILITIES), self.client("c2", ALL_CAPABILITIES)
        self.call(c1, "a")
        sent = self.call(c2, "b")
        d = self.gateway.reverse.server_request(self.alpha, "sampling/createMessage", {"messages": [], "maxTokens": 5}, sent.context)
        self.assertEqual(c1.take(), [])
        (asked,) = c2.take()
        self.assertEqual(asked["method"], "sampling/createMessage")
        results: list[Any] = []
        d.addCallback(results.append)
        c2.respond(asked["id"], {"role": "assistant", "content": {"type": "text", "text": "ok"}, "model": "m"})
        self.assertEqual(results[0]["model"], "m")

    def test_stdio_style_request_goes_to_the_only_session_calling(self) -> None:
        c1, c2 = self.client("c1", ALL_CAPABILITIES), self.client("c2", ALL_CAPABILITIES)
        self.call(c2)
        self.gateway.reverse.server_request(self.alpha, "roots/list", {}, None)
        self.assertEqual(c1.take(), [])
        self.assertEqual(c2.take()[0]["method"], "roots/list")

    def test_ambiguous_request_refused(self) -> None:
        c1, c2 = self.client("c1", ALL_CAPABILITIES), self.client("c2", ALL_CAPABILITIES)
        self.call(c1)
        self.call(c2)
        with self.assertRaises(JsonRpcError) as e:
            self.gateway.reverse.server_request(self.alpha, "sampling/createMessage", {}, None)
        self.assertIn("2 clients have calls in flight", e.exception.message)
        self.assertEqual(c1.take() + c2.take(), [])

    def test_no_call_in_flight_refused(self) -> None:
        self.client("c1", ALL_CAPABILITIES)
        with self.assertRaises(JsonRpcError) as e:
            self.gateway.reverse.server_request(self.alpha, "roots/list", {}, None)
        self.assertIn("no client has a call in flight", e.exception.message)

    def test_client_without_the_capability_is_never_asked(self) -> None:
        c = self.client("c1", {})
        sent = self.call(c)
        with self.assertRaises(JsonRpcError) as e:
            self.gateway.reverse.server_request(self.alpha, "sampling/createMessage", {}, sent.context)
        self.assertIn("sampling capability", e.exception.message)
        self.assertEqual(c.take(), [])

    def test_url_elicitation_needs_the_url_mode(self) -> None:
        c = self.client("c1", {"elicitation": {}})
        sent = self.call(c)
        with self.assertRaises(JsonRpcError) as e:
            self.gateway.reverse.server_request(self.alpha, "elicitation/create", {"mode": "url", "url": "https://x", "message": "m", "elicitationId": "1"}, sent.context)
        self.assertIn("URL-mode", e.exception.message)
        d = self.gateway.reverse.server_request(self.alpha, "elicitation/create", {"message": "m", "requestedSchema": {"type": "object", "properties": {}}}, sent.context)
        self.assertEqual(c.take()[-1]["method"], "elicitation/create")
        d.addErrback(lambda f: None)
        d.cancel()

    def test_cancelled_by_the_backend(self) -> None:
        c = self.client("c1", ALL_CAPABILITIES)
        sent = self.call(c)
        d = self.gateway.reverse.server_request(self.alpha, "sampling/createMessage", {}, sent.context)
        (asked,) = c.take()
        d.addErrback(lambda f: None)
        d.cancel()
        self.assertEqual(c.take(), [{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": asked["id"], "reason": "the server cancelled it"}}])
        self.assertEqual(len(c.session.client_requests), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_progress_both_ways(self) -> None:
        c = self.client("c1", ALL_CAPABILITIES)
        sent = self.call(c)
        d = self.gateway.reverse.server_request(self.alpha, "elicitation/create", {"message": "m", "_meta": {"progressToken": "backend-token"}}, sent.context)
        (asked,) = c.take()
        ours = asked["params"]["_meta"]["progressToken"]
        self.assertNotEqual(ours, "backend-token")
        c.notify("notifications/progress", {"progressToken": ours, "progress": 1})
        self.assertEqual(self.alpha.notified, [("notifications/progress", {"progressToken": "backend-token", "progress": 1})])
        d.addErrback(lambda f: None)
        d.cancel()

    def test_timeout(self) -> None:
        c = self.client("c1", ALL_CAPABILITIES)
        sent = self.call(c)
        d = self.gateway.reverse.server_request(self.alpha, "roots/list", {}, sent.context)
        failures: list[Any] = []
        d.addErrback(failures.append)
        (asked,) = c.take()
        self.clock.advance(600)
        self.assertIn("did not answer roots/list", failures[0].value.message)
        self.assertEqual(c.take()[0]["method"], "notifications/cancelled")
        c.respond(asked["id"], {"roots": []})  # too late: dropped

    def test_session_end_fails_what_it_was_asked(self) -> None:
        c = self.client("c1", ALL_CAPABILITIES)
        sent = self.call(c)
        d = self.gateway.reverse.server_request(self.alpha, "roots/list", {}, sent.context)
        failures: list[Any] = []
        d.addErrback(failures.append)
        c.session.drain(0, self.clock)
        self.clock.advance(0)
        self.assertIn("went away", failures[0].value.message)

    def test_roots_changed_reaches_the_backends_used(self) -> None:
        c = self.client("c1", ALL_CAPABILITIES)
        self.call(c)
        c.notify("notifications/roots/list_changed")
        self.assertEqual(self.alpha.notified, [("notifications/roots/list_changed", None)])
        self.assertEqual(self.beta.notified, [])


class ProgressAndCancelTests(CoreTestCase):
    def test_progress_for_a_resource_read(self) -> None:
        c = self.client()
        c.request(1, "resources/read", {"uri": "alpha://only", "_meta": {"progressToken": "t"}})
        (sent,) = self.alpha.sent
        sent.on_progress({"progressToken": 99, "progress": 0.5})
        self.assertEqual(c.take(), [{"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t", "progress": 0.5}}])

    def test_cancel_a_prompt_get(self) -> None:
        c = self.client()
        c.request(1, "prompts/get", {"name": "alpha__greet"})
        (sent,) = self.alpha.sent
        c.notify("notifications/cancelled", {"requestId": 1})
        self.assertTrue(sent.cancelled)
        self.assertEqual(c.take(), [])
        self.assertEqual(c.session.backend_calls, {})


class LogVisibilityTests(CoreTestCase):
    def test_a_backend_killed_at_run_time_no_longer_logs_to_anyone(self) -> None:
        """Who may see a backend's log messages is cached, and the cache
        follows the policy: the run-time kill switch applies at once."""
        from twisted_mcp.policy.pipeline import Policy
        from twisted_mcp.policy.rules import PolicyConfig

        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        policy.catalog_changed(self.gateway.catalog.entries)
        c = self.client()
        message = {"level": "error", "data": "disk full"}
        self.gateway.reverse.server_notification(self.alpha, "notifications/message", message, None)
        self.assertEqual([m["params"]["data"] for m in c.take()], ["disk full"])
        policy.set_kill("backend", "alpha", True)
        self.gateway.reverse.server_notification(self.alpha, "notifications/message", message, None)
        self.assertEqual(c.take(), [])
        self.gateway.reverse.server_notification(self.beta, "notifications/message", message, None)
        self.assertEqual([m["params"]["logger"] for m in c.take()], ["beta"])


class RefusedBeforeSendingTests(CoreTestCase):
    """A call refused on the way (backend down, breaker open...) is not left
    counted as in flight to its backend: the count decides which client a
    stdio backend's request is for."""

    def test_a_call_to_a_down_backend_is_not_counted_in_flight(self) -> None:
        c1, c2 = self.client("c1", ALL_CAPABILITIES), self.client("c2", ALL_CAPABILITIES)
        self.alpha.state = State.DOWN
        c1.request(1, "tools/call", {"name": "alpha__echo", "arguments": {}})
        (answer,) = c1.take()
        self.assertIn("error", answer)
        self.assertEqual(c1.session.backend_calls, {})
        self.alpha.state = State.UP
        c2.request(1, "tools/call", {"name": "alpha__echo", "arguments": {}})
        self.gateway.reverse.server_request(self.alpha, "roots/list", {}, None)
        self.assertEqual(c1.take(), [])
        self.assertEqual(c2.take()[0]["method"], "roots/list")


class SubscriptionsOfGoneBackendsTests(CoreTestCase):
    def test_a_backend_removed_by_a_reload_takes_its_subscriptions_with_it(self) -> None:
        c = self.client()
        c.request(1, "resources/subscribe", {"uri": "alpha://only"})
        self.alpha.sent[0].deferred.callback({})
        self.assertEqual(self.gateway.subscriptions.count(), 1)
        self.gateway.remove_backend(self.alpha)
        self.assertEqual(self.gateway.subscriptions.count(), 0)
        self.assertEqual(self.gateway.subscriptions._of_session, {})
        self.assertEqual(self.alpha.methods()[-1], "resources/unsubscribe")
        c.request(2, "resources/unsubscribe", {"uri": "alpha://only"})
        self.assertEqual(c.take()[-1], {"jsonrpc": "2.0", "id": 2, "result": {}})


class UpdateVisibilityTests(CoreTestCase):
    def test_updates_follow_the_policy_in_force(self) -> None:
        """A subscription was checked when it was made; its updates follow
        the policy in force when they arrive, as log messages do: the
        run-time kill switch stops them at once, and releasing it lets
        them through again."""
        from twisted_mcp.policy.pipeline import Policy
        from twisted_mcp.policy.rules import PolicyConfig

        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        policy.catalog_changed(self.gateway.catalog.entries)
        c = self.client()
        c.request(1, "resources/subscribe", {"uri": "alpha://only"})
        self.alpha.sent[0].deferred.callback({})
        self.assertEqual(c.take(), [{"jsonrpc": "2.0", "id": 1, "result": {}}])
        update = {"uri": "alpha://only"}
        self.gateway.reverse.server_notification(self.alpha, "notifications/resources/updated", update, None)
        self.assertEqual([m["method"] for m in c.take()], ["notifications/resources/updated"])
        policy.set_kill("backend", "alpha", True)
        self.gateway.reverse.server_notification(self.alpha, "notifications/resources/updated", update, None)
        self.assertEqual(c.take(), [])
        policy.set_kill("backend", "alpha", False)
        self.gateway.reverse.server_notification(self.alpha, "notifications/resources/updated", update, None)
        self.assertEqual([m["method"] for m in c.take()], ["notifications/resources/updated"])


class LevelOfLateSessionsTests(CoreTestCase):
    def test_a_session_that_connects_later_counts_as_info(self) -> None:
        """A shared backend is set to the most verbose level of its
        sessions, one that never set a level counting as info: a client
        connecting after another asked for "error" gets info messages."""
        c1 = self.client("c1")
        c1.request(1, "logging/setLevel", {"level": "error"})
        self.assertEqual(self.alpha.sent[-1].params, {"level": "error"})
        c2 = self.client("c2")
        self.assertEqual(self.alpha.sent[-1].params, {"level": "info"})
        c2.session.drain(0, self.clock)
        self.assertEqual(self.alpha.sent[-1].params, {"level": "error"})
        c1.take()


class UnsubscribeWhileSubscribingTests(CoreTestCase):
    def test_an_unsubscribe_before_the_backend_answered_wins(self) -> None:
        """A client that unsubscribes while its subscribe still waits for
        the backend is not subscribed once the backend accepts: no update
        reaches it and the upstream subscription is ended."""
        c = self.client()
        c.request(1, "resources/subscribe", {"uri": "alpha://only"})
        c.request(2, "resources/unsubscribe", {"uri": "alpha://only"})
        self.assertEqual(c.take(), [{"jsonrpc": "2.0", "id": 2, "result": {}}])
        self.alpha.sent[0].deferred.callback({})
        self.assertEqual(c.take(), [{"jsonrpc": "2.0", "id": 1, "result": {}}])
        self.gateway.reverse.server_notification(self.alpha, "notifications/resources/updated", {"uri": "alpha://only"}, None)
        self.assertEqual(c.take(), [])
        self.assertEqual(self.alpha.methods(), ["resources/subscribe", "resources/unsubscribe"])
        self.assertEqual(self.gateway.subscriptions.count(), 0)


class CapabilitiesPerCallerTests(CoreTestCase):
    def test_a_caller_sees_only_what_the_backends_it_may_see_offer(self) -> None:
        """With alpha killed for everyone, a client is offered what beta
        offers (no subscribe, no logging) and only beta's instructions."""
        from twisted_mcp.policy.pipeline import Policy
        from twisted_mcp.policy.rules import PolicyConfig

        self.alpha.instructions = "alpha's secret workflow"
        self.beta.instructions = "Ask for the time."
        self.beta.capabilities = {"tools": {}, "prompts": {}, "resources": {}}
        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        policy.catalog_changed(self.gateway.catalog.entries)
        policy.set_kill("backend", "alpha", True)
        result = self.client().initialize["result"]
        self.assertEqual(
            result["capabilities"],
            {"tools": {"listChanged": True}, "prompts": {"listChanged": True}, "resources": {"listChanged": True}},
        )
        self.assertEqual(result["instructions"], "## beta\n\nAsk for the time.")
