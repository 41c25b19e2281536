"""
Rounds: a stateless-era (2026-07-28) backend answers a handshake-era
client's call with an InputRequiredResult; the gateway asks the client with
real requests, all at once, and retries the backend with the answers and
its requestState, round after round (at most gateway.maxInputRounds).
Driven by a Clock, with a fake modern backend and a session on a line
caller.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import deliver, line_caller

from .fakes import FakeBackend

MODERN = "2026-07-28"
ALL_CAPS = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}}
SAMPLE = {"messages": [{"role": "user", "content": {"type": "text", "text": "capital?"}}], "maxTokens": 5}
FORM = {"mode": "form", "message": "name?", "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}}
URL = {"mode": "url", "message": "sign in", "url": "https://example.com/login"}
ROOTS: dict[str, Any] = {"method": "roots/list", "params": {}}


def asking(requests: dict[str, Any] | None = None, state: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"resultType": "input_required"}
    if requests is not None:
        result["inputRequests"] = requests
    if state is not None:
        result["requestState"] = state
    return result


class RoundsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.alpha = FakeBackend("alpha", ["ask"], prompts=["greet"], resources=["alpha://doc"])
        self.alpha.era, self.alpha.protocol_version = "modern", MODERN
        self.gateway = Gateway([self.alpha], "__", self.clock, 5.0)
        self.alpha._first_discovery_done()
        self.gateway.start()
        self.out: list[bytes] = []
        self.session = ClientSession(self.gateway, line_caller(self.out.append, "test"))

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.session.client_requests), 0)
        self.assertEqual(self.session.in_flight, {})

    def take(self) -> list[Any]:
        import json

        messages = [json.loads(line) for line in self.out]
        del self.out[:]
        return messages

    def send(self, message: dict[str, Any]) -> None:
        import json

        deliver(self.session, json.dumps(message).encode())

    def initialize(self, capabilities: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "c"}}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.take()

    def call_tool(self, rid: Any, **meta: Any) -> None:
        params: dict[str, Any] = {"name": "alpha__ask", "arguments": {"q": 1}}
        if meta:
            params["_meta"] = meta
        self.send({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})

    def answer(self, request: dict[str, Any], result: Any = None, error: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if error is not None:
            message["error"] = error
        else:
            message["result"] = result
        self.send(message)


class RoundTests(RoundsTestCase):
    def test_everyQuestionGoesToTheClientAtOnceAndTheBackendIsRetriedWithTheAnswers(self) -> None:
        self.initialize(ALL_CAPS)
        self.call_tool(1, progressToken="tok")
        first = self.alpha.calls[0]
        first.deferred.callback(
            asking(
                {
                    "llm": {"method": "sampling/createMessage", "params": SAMPLE},
                    "login": {"method": "elicitation/create", "params": URL},
                    "where": ROOTS,
                },
                state="opaque-1",
            )
        )
        asked = self.take()
        self.assertEqual([m["method"] for m in asked], ["sampling/createMessage", "elicitation/create", "roots/list"])
        self.assertEqual(asked[0]["params"], SAMPLE)
        # A URL-mode elicitation gets the elicitationId 2025-11-25 requires; nothing else changes.
        login = asked[1]["params"]
        self.assertEqual({k: v for k, v in login.items() if k != "elicitationId"}, URL)
        self.assertEqual(len(login["elicitationId"]), 36)
        self.assertEqual(len(self.alpha.calls), 1)  # not before every answer is in
        sampled = {"role": "assistant", "content": {"type": "text", "text": "Paris"}, "model": "m"}
        self.answer(asked[2], {"roots": [{"uri": "file:///w"}]})
        self.answer(asked[0], sampled)
        self.assertEqual(len(self.alpha.calls), 1)
        self.answer(asked[1], {"action": "accept"})
        retry = self.alpha.calls[1]
        self.assertEqual(retry.method, "tools/call")
        self.assertEqual(retry.params["name"], "ask")
        self.assertEqual(retry.params["arguments"], {"q": 1})
        self.assertEqual(retry.params["requestState"], "opaque-1")
        self.assertEqual(retry.params["inputResponses"], {"llm": sampled, "login": {"action": "accept"}, "where": {"roots": [{"uri": "file:///w"}]}})
        self.assertEqual(retry.params["_meta"]["io.modelcontextprotocol/clientCapabilities"], ALL_CAPS)
        self.assertIs(retry.context, first.context)
        # The backend's progress during the retry reaches the client's token.
        assert retry.on_progress is not None
        retry.on_progress({"progress": 1, "total": 2})
        retry.deferred.callback({"content": [{"type": "text", "text": "done"}], "resultType": "complete", "ttlMs": 0})
        progress, final = self.take()
        self.assertEqual(progress["params"], {"progress": 1, "total": 2, "progressToken": "tok"})
        self.assertEqual(final, {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "done"}]}})

    def test_aSecondRoundSendsOnlyItsOwnAnswers(self) -> None:
        self.initialize(ALL_CAPS)
        self.call_tool(1)
        self.alpha.calls[0].deferred.callback(asking({"a": ROOTS}, state="s1"))
        (q1,) = self.take()
        self.answer(q1, {"roots": []})
        self.alpha.calls[1].deferred.callback(asking({"b": {"method": "elicitation/create", "params": FORM}}, state="s2"))
        (q2,) = self.take()
        self.assertNotIn("elicitationId", q2["params"])
        self.answer(q2, {"action": "accept", "content": {"name": "Ada"}})
        retry = self.alpha.calls[2].params
        self.assertEqual((retry["inputResponses"], retry["requestState"]), ({"b": {"action": "accept", "content": {"name": "Ada"}}}, "s2"))
        self.alpha.calls[2].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["result"], {"content": []})

    def test_eightRoundsThenTheError(self) -> None:
        self.initialize(ALL_CAPS)
        self.call_tool(1)
        for n in range(8):
            self.alpha.calls[n].deferred.callback(asking({"again": ROOTS}, state=f"s{n}"))
            (question,) = self.take()
            self.answer(question, {"roots": []})
        self.assertEqual(len(self.alpha.calls), 9)
        self.alpha.calls[8].deferred.callback(asking({"again": ROOTS}))
        (error,) = self.take()
        self.assertEqual(error["error"]["code"], -32603)
        self.assertEqual(error["error"]["message"], "backend 'alpha' asked for input more than 8 times (gateway.maxInputRounds)")

    def test_theLimitIsTheGatewaySetting(self) -> None:
        self.gateway.max_input_rounds = 1
        self.initialize(ALL_CAPS)
        self.call_tool(1)
        self.alpha.calls[0].deferred.callback(asking({"a": ROOTS}))
        self.answer(self.take()[0], {"roots": []})
        self.alpha.calls[1].deferred.callback(asking({"a": ROOTS}))
        self.assertIn("more than 1 times", self.take()[0]["error"]["message"])

    def test_aRoundWithOnlyStateIsRetriedAfter250ms(self) -> None:
        self.initialize({})
        self.call_tool(1)
        self.alpha.calls[0].deferred.callback(asking(state="poll"))
        self.assertEqual(self.take(), [])
        self.clock.advance(0.249)
        self.assertEqual(len(self.alpha.calls), 1)
        self.clock.advance(0.001)
        retry = self.alpha.calls[1].params
        self.assertEqual(retry["requestState"], "poll")
        self.assertNotIn("inputResponses", retry)
        self.alpha.calls[1].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["id"], 1)


class CapabilityTests(RoundsTestCase):
    def test_aToolCallWithoutTheCapabilityIsAnErrorResult(self) -> None:
        self.initialize({"roots": {}})
        self.call_tool(1)
        self.alpha.calls[0].deferred.callback(asking({"r": ROOTS, "llm": {"method": "sampling/createMessage", "params": SAMPLE}}))
        (answer,) = self.take()  # nothing was put to the client
        result = answer["result"]
        self.assertIs(result["isError"], True)
        self.assertIn("asked for sampling/createMessage", result["content"][0]["text"])
        self.assertIn("capabilities sampling", result["content"][0]["text"])
        self.assertEqual(len(self.alpha.calls), 1)

    def test_promptsGetAndResourcesReadWithoutTheCapabilityAreMissingClientCapability(self) -> None:
        self.initialize({"elicitation": {"form": {}}})
        self.send({"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": "alpha__greet"}})
        self.send({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "alpha://doc"}})
        self.alpha.calls[0].deferred.callback(asking({"login": {"method": "elicitation/create", "params": URL}}))
        self.alpha.calls[1].deferred.callback(asking({"where": ROOTS}))
        prompt, read = self.take()
        self.assertEqual((prompt["id"], prompt["error"]["code"]), (1, -32021))
        self.assertEqual(prompt["error"]["data"], {"requiredCapabilities": {"elicitation": {"url": {}}}})
        self.assertEqual((read["id"], read["error"]["code"]), (2, -32021))
        self.assertEqual(read["error"]["data"], {"requiredCapabilities": {"roots": {}}})


class FailureTests(RoundsTestCase):
    def test_aClientErrorFailsTheRoundAndCancelsTheOtherQuestions(self) -> None:
        self.initialize(ALL_CAPS)
        self.call_tool(1)
        self.alpha.calls[0].deferred.callback(asking({"a": ROOTS, "b": {"method": "sampling/createMessage", "params": SAMPLE}}))
        roots, sampling = self.take()
        self.answer(sampling, error={"code": -1, "message": "the user declined"})
        cancelled, failed = self.take()
        self.assertEqual(cancelled, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": roots["id"], "reason": "the server cancelled it"}})
        self.assertEqual(failed["id"], 1)
        self.assertEqual(failed["error"]["code"], -32603)
        self.assertIn("asked the client for sampling/createMessage, which failed: the user declined", failed["error"]["message"])
        self.assertEqual(len(self.alpha.calls), 1)
        self.answer(roots, {"roots": []})  # too late: dropped

    def test_cancellingWhileTheClientIsAskedCancelsItsQuestions(self) -> None:
        self.initialize(ALL_CAPS)
        self.call_tool(1)
        self.alpha.calls[0].deferred.callback(asking({"a": ROOTS, "b": ROOTS}))
        a, b = self.take()
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
        told = self.take()
        self.assertEqual(sorted(m["params"]["requestId"] for m in told), sorted([a["id"], b["id"]]))
        self.assertTrue(all(m["method"] == "notifications/cancelled" for m in told))
        self.assertEqual(len(self.alpha.calls), 1)

    def test_cancellingDuringARetryCancelsTheBackendsCall(self) -> None:
        self.initialize(ALL_CAPS)
        self.call_tool(1)
        self.alpha.calls[0].deferred.callback(asking({"a": ROOTS}))
        self.answer(self.take()[0], {"roots": []})
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
        self.assertTrue(self.alpha.calls[1].cancelled)
        self.assertEqual(self.take(), [])  # a cancelled request is not answered

    def test_cancellingDuringThePauseLeavesNoTimer(self) -> None:
        self.initialize({})
        self.call_tool(1)
        self.alpha.calls[0].deferred.callback(asking(state="poll"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.alpha.calls), 1)

    def test_theWholeLoopIsOneCallForThePolicyAndTheAnswersAreNotAudited(self) -> None:
        from twisted_mcp.policy.pipeline import Policy
        from twisted_mcp.policy.rules import PolicyConfig

        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        records: list[dict[str, Any]] = []
        policy._audit = records.append  # type: ignore[method-assign]
        self.initialize(ALL_CAPS)
        self.call_tool(1)
        self.alpha.calls[0].deferred.callback(asking({"a": ROOTS}, state="s"))
        self.answer(self.take()[0], {"roots": [{"uri": "file:///planted-answer"}]})
        self.alpha.calls[1].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["id"], 1)
        calls = [r for r in records if r.get("method") == "tools/call"]
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0]["outcome"], "ok")
        self.assertNotIn("planted-answer", str(records))


class SettingTests(SynchronousTestCase):
    """gateway.maxInputRounds: read and checked by the loader (the service hands it to the gateway)."""

    def test_theSettingIsReadAndChecked(self) -> None:
        from twisted_mcp.config import ConfigError
        from twisted_mcp.config.loader import build

        self.assertEqual(build({"mcpServers": {}}, "inline", {}).gateway.maxInputRounds, 8)
        self.assertEqual(build({"gateway": {"maxInputRounds": 3}, "mcpServers": {}}, "inline", {}).gateway.maxInputRounds, 3)
        e = self.assertRaises(ConfigError, build, {"gateway": {"maxInputRounds": 0}, "mcpServers": {}}, "inline", {})
        self.assertIn("gateway.maxInputRounds", "\n".join(e.problems))
