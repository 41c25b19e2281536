"""
Held calls: a handshake-era backend's sampling, elicitation or roots request
during a stateless-era client's call, answered to that client as an
InputRequiredResult, the backend call held until the client retries with
its answers and the sealed requestState.  The seal itself, and every edge of
a held call's life, its bounds and its timeout.
"""

from __future__ import annotations

import base64
import os
import tempfile
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import ConfigError
from twisted_mcp.config.loader import load
from twisted_mcp.dispatch.held_calls import HeldCallLimits, HeldCalls
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import line_caller
from twisted_mcp.mcp.request_state import Claims, Seal, StateRefused, check_binding
from twisted_mcp.wire.jsonrpc import JsonRpcError

from .test_eras import envelope
from .test_gateway import SessionTestCase

CAPS = {"sampling": {}, "elicitation": {"form": {}}, "roots": {}}
SAMPLE = {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 5}
ELICIT = {"message": "name?", "requestedSchema": {"type": "object", "properties": {}}, "elicitationId": "e1"}


def claims(clock: Clock, **change: Any) -> Claims:
    values: dict[str, Any] = {
        "kind": "held",
        "principal": "p" * 64,
        "method": "tools/call",
        "request": "d" * 64,
        "backend": "alpha#1",
        "expires": clock.seconds() + 600,
        "state": [1, 1],
    }
    values.update(change)
    return Claims(**values)


class SealTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.seal = Seal(self.clock, [b"k" * 32])

    def refused(self, token: Any, *words: str) -> str:
        with self.assertRaises(StateRefused) as caught:
            self.seal.open(token)
        self.assertEqual(caught.exception.code, -32602)
        for w in words:
            self.assertIn(w, caught.exception.message)
        if type(token) is str and token:
            self.assertNotIn(token, caught.exception.message)
        return caught.exception.message

    def test_aSealedTokenOpensToItsClaims(self) -> None:
        c = claims(self.clock)
        self.assertEqual(self.seal.open(self.seal.seal(c)), c)

    def test_flippingAnyByteIsRefused(self) -> None:
        token = self.seal.seal(claims(self.clock))
        for i in range(len(token)):
            flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
            self.refused(flipped)

    def test_everyOtherSpellingOfTheMacIsRefused(self) -> None:
        """The last character of the MAC has unused low bits, and base64
        decoding skips characters outside its alphabet: neither makes an
        altered token read as the sealed one."""
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        for n in range(20):
            token = self.seal.seal(claims(self.clock, expires=float(n)))
            for c in alphabet.replace(token[-1], ""):
                self.refused(token[:-1] + c, "verification")
            self.refused(token[:-5] + "!" + token[-5:])
            self.refused(token[:-6] + "!!" + token[-6:])
            self.refused(token[:-1] + "=" + token[-1])
            self.assertEqual(self.seal.open(token).expires, float(n))

    def test_aTokenWithForgedClaimsIsRefused(self) -> None:
        token = self.seal.seal(claims(self.clock))
        head, body, mac = token.split(".")
        forged = base64.urlsafe_b64encode(b'{"s":[2,1]}').rstrip(b"=").decode()
        self.refused(f"{head}.{forged}.{mac}", "verification")

    def test_anotherKeysTokenIsRefusedAndRotationKeepsOldKeysVerifying(self) -> None:
        other = Seal(self.clock, [b"o" * 32])
        token = other.seal(claims(self.clock))
        self.refused(token, "verification")
        self.assertEqual(Seal(self.clock, [b"n" * 32, b"o" * 32]).open(token), claims(self.clock))

    def test_anExpiredTokenIsRefused(self) -> None:
        token = self.seal.seal(claims(self.clock, expires=self.seal.expiry()))
        self.clock.advance(600)
        self.seal.open(token)
        self.clock.advance(1)
        self.refused(token, "expired")

    def test_malformedTokensAreRefused(self) -> None:
        for token in (None, 7, "", "x.y.z", "tmcp1.", "tmcp1.a.b.c", "tmcp1." + "a" * 5000 + ".b"):
            self.refused(token)

    def test_theBindingNamesWhatDiffers(self) -> None:
        c = claims(self.clock)
        check_binding(c, "held", "p" * 64, "tools/call", "d" * 64)
        cases = {
            "another caller": ("held", "q" * 64, "tools/call", "d" * 64),
            "another request": ("held", "p" * 64, "prompts/get", "d" * 64),
            "another kind": ("pass", "p" * 64, "tools/call", "d" * 64),
        }
        for words, args in cases.items():
            with self.assertRaises(StateRefused) as caught:
                check_binding(c, *args)
            self.assertIn(words, caught.exception.message)
        with self.assertRaises(StateRefused):
            check_binding(c, "held", "p" * 64, "tools/call", "e" * 64)

    def test_aSealWithoutKeysMakesItsOwn(self) -> None:
        a, b = Seal(self.clock), Seal(self.clock)
        token = a.seal(claims(self.clock))
        self.assertEqual(a.open(token), claims(self.clock))
        with self.assertRaises(StateRefused):
            b.open(token)
        self.assertNotIn("k" * 8, repr(self.seal))


class HeldCallTests(SessionTestCase):
    """Through the session, as a stateless-era client sees it, with a fake handshake-era backend."""

    def setUp(self) -> None:
        super().setUp()
        self.held = self.gateway.reverse.held

    def tearDown(self) -> None:
        self.assertEqual(len(self.held), 0)
        self.assertEqual(self.held._by_origin, {})
        self.assertEqual(self.session.backend_calls, {})
        super().tearDown()

    def call(self, id: Any, arguments: Any = None, caps: Any = CAPS, session: ClientSession | None = None, **more: Any) -> None:
        params = {"name": "alpha__add", "arguments": arguments if arguments is not None else {"a": 1}, **more}
        meta = envelope(**{"io.modelcontextprotocol/clientCapabilities": caps})
        params["_meta"] = {**meta, **params.get("_meta", {})}
        target = session or self.session
        target.message_received({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})

    def test_aCallIsHeldOnlyOnceItsBackendAsks(self) -> None:
        """Nothing is made for a call whose backend never asks (every stateless-era call would pay for it)."""
        self.call(1)
        self.assertEqual(self.held._by_origin, {})
        self.alpha.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["result"]["resultType"], "complete")
        self.call(2, _meta={"progressToken": "o"})
        self.ask("roots/list", {})
        self.assertEqual(len(self.held._by_origin), 1)  # made now
        token = self.held_answer(2)["requestState"]
        self.call(3, _meta={"progressToken": "p"}, requestState=token, inputResponses={"r1": {"roots": []}})
        self.alpha.calls[1].on_progress({"progress": 1})  # the backend's progress goes to the retry
        self.alpha.calls[1].deferred.callback({"content": []})
        progress, answer = self.take()
        self.assertEqual((progress["params"]["progressToken"], answer["id"]), ("p", 3))

    def ask(self, method: str, params: dict[str, Any], related: Any = "context") -> Any:
        """The backend's request during its latest call, tied to it by its context (an HTTP backend) or not (stdio)."""
        context = self.alpha.calls[-1].context if related == "context" else related
        d = self.gateway.reverse.server_request(self.alpha, method, params, context)
        got: list[Any] = []
        d.addBoth(got.append)
        return got

    def held_answer(self, id: Any) -> dict[str, Any]:
        self.clock.advance(0.01)
        (answer,) = self.take()
        self.assertEqual(answer["id"], id)
        result = answer["result"]
        self.assertEqual(result["resultType"], "input_required")
        return result

    def test_aBackendsRequestIsPutToTheClientAndItsAnswerGoesBack(self) -> None:
        self.call(1, _meta={"progressToken": "p"})
        got = self.ask("sampling/createMessage", {**SAMPLE, "_meta": {"progressToken": 9}})
        self.assertEqual(self.take(), [])  # gathered for one tick
        result = self.held_answer(1)
        self.assertEqual(result["inputRequests"], {"r1": {"method": "sampling/createMessage", "params": SAMPLE}})
        self.assertNotIn("ttlMs", result)
        self.assertEqual(len(self.held), 1)
        answer = {"role": "assistant", "content": {"type": "text", "text": "yo"}, "model": "m"}
        self.call(2, inputResponses={"r1": answer}, requestState=result["requestState"])
        self.assertEqual(got, [answer])
        self.assertEqual(len(self.alpha.calls), 1)  # the retry is not a new call
        self.assertEqual(self.take(), [])
        self.alpha.calls[0].deferred.callback({"content": [{"type": "text", "text": "done"}]})
        (final,) = self.take()
        self.assertEqual(final["id"], 2)
        self.assertEqual((final["result"]["resultType"], final["result"]["content"][0]["text"]), ("complete", "done"))

    def test_progressGoesToTheOpenRequestAndIsDroppedWhileHeld(self) -> None:
        self.call(1, _meta={"progressToken": "first"})
        on_progress = self.alpha.calls[0].on_progress
        on_progress({"progress": 1})
        self.assertEqual(self.take()[0]["params"]["progressToken"], "first")
        self.ask("roots/list", {})
        result = self.held_answer(1)
        on_progress({"progress": 2})
        self.assertEqual(self.take(), [])
        self.assertEqual(self.held.dropped_progress, 1)
        self.call(2, inputResponses={"r1": {"roots": []}}, requestState=result["requestState"], _meta={"progressToken": "second"})
        on_progress({"progress": 3})
        (progress,) = self.take()
        self.assertEqual(progress["params"], {"progress": 3, "progressToken": "second"})
        self.alpha.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["id"], 2)

    def test_keysLeftUnansweredComeBackInANewRoundAndTheOldTokenIsSpent(self) -> None:
        self.call(1)
        first = self.ask("sampling/createMessage", SAMPLE)
        second = self.ask("elicitation/create", ELICIT)
        result = self.held_answer(1)
        self.assertEqual(sorted(result["inputRequests"]), ["r1", "r2"])
        self.assertNotIn("elicitationId", result["inputRequests"]["r2"]["params"])
        token = result["requestState"]
        self.call(2, inputResponses={"r1": {"content": {"type": "text", "text": "x"}}, "zz": {}}, requestState=token)
        (again,) = self.take()
        self.assertEqual(again["id"], 2)
        self.assertEqual(list(again["result"]["inputRequests"]), ["r2"])
        self.assertEqual(len(first), 1)
        self.assertEqual(second, [])
        self.call(3, inputResponses={"r2": {"action": "accept", "content": {}}}, requestState=token)
        self.assertIn("already used", self.take()[0]["error"]["message"])
        self.call(4, inputResponses={"r2": {"action": "accept", "content": {}}}, requestState=again["result"]["requestState"])
        self.assertEqual(second, [{"action": "accept", "content": {}}])
        self.alpha.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["id"], 4)
        self.call(5, inputResponses={}, requestState=again["result"]["requestState"])
        self.assertIn("already used or its call has ended", self.take()[0]["error"]["message"])

    def test_aTokenIsRefusedForAnotherRequestAnotherCallerOrWhenAltered(self) -> None:
        self.call(1)
        self.ask("roots/list", {})
        token = self.held_answer(1)["requestState"]
        other_out: list[bytes] = []
        other = ClientSession(self.gateway, line_caller(other_out.append, "other"))
        self.call(7, session=other, inputResponses={"r1": {"roots": []}}, requestState=token)
        self.assertIn(b"belongs to another caller", other_out[0])
        altered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
        with capturedLogs() as logged:
            self.call(2, inputResponses={"r1": {"roots": []}}, requestState=altered)
        (entry,) = [e for e in logged if "requestState was refused" in e["log_format"]]
        self.assertIn("verification", entry["why"])
        self.assertNotIn(altered, str(entry))
        self.call(3, {"a": 2}, inputResponses={"r1": {"roots": []}}, requestState=token)
        self.call(4, inputResponses={"r1": "yes"}, requestState=token)
        errors = [m["error"] for m in self.take()]
        self.assertEqual([e["code"] for e in errors], [-32602] * 3)
        self.assertIn("verification", errors[0]["message"])
        self.assertIn("another request", errors[1]["message"])
        self.assertIn("inputResponses.r1 must be an object", errors[2]["message"])
        for e in errors:
            self.assertNotIn(token, str(e))
        # None of them spent it.
        self.call(5, inputResponses={"r1": {"roots": []}}, requestState=token)
        self.alpha.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["id"], 5)

    def test_anUnansweredHeldCallEndsAfterTheTimeout(self) -> None:
        self.call(1)
        elicited = self.ask("elicitation/create", ELICIT)
        sampled = self.ask("sampling/createMessage", SAMPLE)
        token = self.held_answer(1)["requestState"]
        self.clock.advance(299)
        self.assertFalse(self.alpha.calls[0].cancelled)
        self.clock.advance(1)
        self.assertEqual(elicited, [{"action": "cancel"}])
        self.assertIsInstance(sampled[0].value, JsonRpcError)
        self.assertIn("did not answer within 300 s", sampled[0].value.message)
        self.assertTrue(self.alpha.calls[0].cancelled)
        self.call(2, inputResponses={}, requestState=token)
        (refused,) = self.take()
        self.assertEqual(refused["error"]["code"], -32602)
        self.assertIn("already used or its call has ended", refused["error"]["message"])

    def test_aRequestWithoutTheCapabilityFailsTheCallWithMissingCapability(self) -> None:
        self.call(1, caps={"sampling": {}})
        with self.assertRaises(JsonRpcError) as caught:
            self.ask("elicitation/create", {**ELICIT, "mode": "url", "url": "https://x"})
        self.assertEqual(caught.exception.code, -32601)
        (answer,) = self.take()
        self.assertEqual(answer["error"]["code"], -32021)
        self.assertEqual(answer["error"]["data"], {"requiredCapabilities": {"elicitation": {"url": {}}}})
        self.assertTrue(self.alpha.calls[0].cancelled)

    def test_theBackendsRequestIsRefusedWithoutTheCapability(self) -> None:
        self.call(1, caps={})
        with self.assertRaises(JsonRpcError) as caught:
            self.gateway.reverse.server_request(self.alpha, "sampling/createMessage", SAMPLE, self.alpha.calls[0].context)
        self.assertEqual(caught.exception.code, -32601)
        self.assertEqual(self.take()[0]["error"]["data"], {"requiredCapabilities": {"sampling": {}}})

    def test_rootsWithoutTheCapabilityAreRefusedToTheBackendAndTheCallGoesOn(self) -> None:
        self.call(1, caps={})
        with self.assertRaises(JsonRpcError) as caught:
            self.gateway.reverse.server_request(self.alpha, "roots/list", {}, self.alpha.calls[0].context)
        self.assertEqual(caught.exception.code, -32601)
        self.assertIn("roots", caught.exception.message)
        self.assertFalse(self.alpha.calls[0].cancelled)
        self.assertEqual(self.take(), [])
        self.alpha.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["result"]["resultType"], "complete")

    def test_heldCallsAreBoundedPerPrincipal(self) -> None:
        self.held.limits = HeldCallLimits(maxHeldCallsPerPrincipal=1)
        self.call(1)
        self.ask("roots/list", {})
        token = self.held_answer(1)["requestState"]
        self.call(2)
        with self.assertRaises(JsonRpcError) as caught:
            self.gateway.reverse.server_request(self.alpha, "roots/list", {}, self.alpha.calls[1].context)
        self.assertEqual(caught.exception.code, -32603)
        (busy,) = self.take()
        self.assertEqual((busy["id"], busy["error"]["code"]), (2, -31007))
        self.assertEqual(busy["error"]["data"], {"limit": "maxHeldCallsPerPrincipal", "value": 1})
        self.assertTrue(self.alpha.calls[1].cancelled)
        self.assertEqual(len(self.held), 1)
        self.call(3, inputResponses={"r1": {"roots": []}}, requestState=token)
        self.alpha.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["id"], 3)

    def test_heldCallsAreBoundedOverall(self) -> None:
        self.held.limits = HeldCallLimits(maxHeldCalls=0)
        self.call(1)
        with self.assertRaises(JsonRpcError):
            self.gateway.reverse.server_request(self.alpha, "roots/list", {}, self.alpha.calls[0].context)
        self.assertEqual(self.take()[0]["error"]["data"]["limit"], "maxHeldCalls")

    def test_cancellingTheRetryCancelsTheBackendCall(self) -> None:
        self.call(1)
        self.ask("roots/list", {})
        token = self.held_answer(1)["requestState"]
        self.session.message_received({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
        self.assertFalse(self.alpha.calls[0].cancelled)  # answered already: a no-op
        self.call(2, inputResponses={"r1": {"roots": []}}, requestState=token)
        self.session.message_received({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}})
        self.assertTrue(self.alpha.calls[0].cancelled)
        self.assertEqual(self.take(), [])

    def test_aBackendThatAnswersWhileHeldHasItsResultGivenToTheRetry(self) -> None:
        self.call(1)
        got = self.ask("roots/list", {})
        token = self.held_answer(1)["requestState"]
        self.alpha.calls[0].deferred.callback({"content": [{"type": "text", "text": "gave up asking"}]})
        self.assertEqual(len(got), 1)  # its request is withdrawn
        self.call(2, inputResponses={"r1": {"roots": []}}, requestState=token)
        (answer,) = self.take()
        self.assertEqual(answer["result"]["content"][0]["text"], "gave up asking")

    def test_aStdioBackendsRequestGoesToTheSessionsOnlyCallToIt(self) -> None:
        self.call(1)
        self.ask("roots/list", {}, related=None)
        token = self.held_answer(1)["requestState"]
        # Held, the call still counts as in flight to its backend: its next request finds it.
        self.assertEqual(self.session.backend_calls, {"alpha": 1})
        self.ask("roots/list", {}, related=None)
        self.call(2, inputResponses={"r1": {"roots": []}}, requestState=token)
        (again,) = self.take()
        self.assertEqual(list(again["result"]["inputRequests"]), ["r2"])
        self.call(3, inputResponses={"r2": {"roots": []}}, requestState=again["result"]["requestState"])
        self.alpha.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["id"], 3)

    def test_aStdioBackendsRequestGoesToTheOpenCallNotToOneWaitingForARetry(self) -> None:
        self.call(1)
        self.ask("roots/list", {}, related=None)
        abandoned = self.held_answer(1)["requestState"]
        self.call(2, {"a": 2})
        self.ask("sampling/createMessage", SAMPLE, related=None)
        second = self.held_answer(2)
        self.assertEqual(list(second["inputRequests"].values()), [{"method": "sampling/createMessage", "params": SAMPLE}])
        # Both waiting now: a third request cannot be told apart, and is refused.
        with self.assertRaises(JsonRpcError):
            self.ask("roots/list", {}, related=None)
        self.clock.advance(300)
        self.assertTrue(self.alpha.calls[0].cancelled and self.alpha.calls[1].cancelled)
        self.assertNotEqual(abandoned, second["requestState"])

    def test_theSessionEndingEndsItsHeldCalls(self) -> None:
        self.call(1)
        elicited = self.ask("elicitation/create", ELICIT)
        self.held_answer(1)
        self.session.drain(1.0, self.clock)
        self.assertEqual(elicited, [{"action": "cancel"}])
        self.assertTrue(self.alpha.calls[0].cancelled)

    def test_aSessionEndingWhileRequestsAreGatheredAnswersTheCallAtOnce(self) -> None:
        self.call(1)
        elicited = self.ask("elicitation/create", ELICIT)
        self.session.drain(30.0, self.clock)
        self.clock.advance(0.01)
        (answer,) = self.take()
        self.assertEqual(answer["error"]["code"], -31033)
        self.assertEqual(elicited, [{"action": "cancel"}])
        self.assertTrue(self.alpha.calls[0].cancelled)

    def test_aBackendThatAnswersWhileItsRequestsAreGatheredWithdrawsThem(self) -> None:
        self.call(1)
        got = self.ask("roots/list", {})
        self.alpha.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["result"]["resultType"], "complete")
        self.assertEqual(len(got), 1)
        self.clock.advance(0.01)
        self.assertEqual(self.take(), [])

    def test_aRetryWithoutRequestStateIsAFreshCallAndItsPlumbingNeverReachesTheBackend(self) -> None:
        self.call(1, inputResponses={"r1": {"secret": "answer"}})
        self.call(2, inputResponses={"r1": {}}, requestState=None)
        self.assertEqual(self.take()[0]["error"]["code"], -32602)  # a requestState that is not a string
        (call,) = self.alpha.calls
        self.assertEqual(call.params, {"name": "add", "arguments": {"a": 1}})
        call.deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["id"], 1)

    def test_handshakeEraSessionsAreStillSentRealRequests(self) -> None:
        self.request(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {"roots": {}}, "clientInfo": {"name": "c"}})
        self.take()
        self.request(1, "tools/call", {"name": "alpha__add", "arguments": {}})
        self.ask("roots/list", {})
        (sent,) = self.take()
        self.assertEqual(sent["method"], "roots/list")
        self.session.message_received({"jsonrpc": "2.0", "id": sent["id"], "result": {"roots": []}})
        self.alpha.calls[0].deferred.callback({"content": []})
        self.take()

    def test_aCallToADownBackendLeavesNothing(self) -> None:
        from twisted_mcp.backends.base import State

        self.alpha.state = State.DOWN
        self.call(1)
        self.assertEqual(self.take()[0]["error"]["code"], -31030)

    def test_aCallThePolicyRefusesLeavesNothing(self) -> None:
        from twisted_mcp.policy.pipeline import Policy
        from twisted_mcp.policy.rules import PolicyConfig

        self.gateway.policy = Policy(PolicyConfig(kill_tools=("alpha__*",), active=True), "__", self.clock)
        self.call(1)
        self.assertEqual(self.take()[0]["error"]["code"], -31002)

    def test_thePolicyChecksTheFirstRequestAndAuditsTheCallsOutcomeOnce(self) -> None:
        from twisted_mcp.policy.pipeline import Policy
        from twisted_mcp.policy.rules import PolicyConfig

        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        records: list[dict[str, Any]] = []
        policy._audit = records.append  # type: ignore[method-assign]
        self.call(1)
        self.ask("roots/list", {})
        token = self.held_answer(1)["requestState"]
        self.assertEqual(records, [])  # the InputRequiredResult is not the call's outcome
        self.call(2, inputResponses={"r1": {"roots": [{"uri": "file:///secret-answer"}]}}, requestState=token)
        self.alpha.calls[0].deferred.callback({"content": []})
        self.assertEqual(self.take()[0]["id"], 2)
        (record,) = [r for r in records if r.get("method") == "tools/call"]
        self.assertEqual(record["outcome"], "ok")
        self.assertNotIn("secret-answer", str(records))
        self.assertNotIn(token, str(records))


class SettingsTests(SynchronousTestCase):
    """The gateway.* settings of held calls: checked by the loader, and what the table then holds."""

    def load(self, gateway: str) -> Any:
        fd, path = tempfile.mkstemp(suffix=".yaml")
        self.addCleanup(os.unlink, path)
        with os.fdopen(fd, "w") as f:
            f.write(f"gateway: {gateway}\nmcpServers: {{}}\n")
        return load(path, {})

    def test_theSettingsReachTheTable(self) -> None:
        config = self.load("{maxHeldCalls: 3, maxHeldCallsPerPrincipal: 2, heldCallTimeout: 1.5, requestStateTtl: 30}")
        clock = Clock()
        table = HeldCalls(clock, Seal(clock))
        table.configure(config.gateway)
        self.assertEqual(table.limits, HeldCallLimits(3, 2, 1.5))
        self.assertEqual(table.seal.expiry(), 30)

    def test_badValuesAreConfigErrorsNamingTheKey(self) -> None:
        for key, value in (("maxHeldCalls", -1), ("heldCallTimeout", 0), ("requestStateTtl", "soon"), ("requestStateKeys", "k")):
            with self.assertRaises(ConfigError) as caught:
                self.load(f"{{{key}: {value}}}")
            self.assertIn(f"gateway.{key}", str(caught.exception))

    def test_shortKeysAreRefusedWithoutBeingShown(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.load("{requestStateKeys: [" + "a" * 40 + ", short-secret-value]}")
        self.assertIn("gateway.requestStateKeys[1]", str(caught.exception))
        self.assertNotIn("short-secret-value", str(caught.exception))

    def test_configuredKeysSealAndVerifyAndAreNeverShown(self) -> None:
        first, second = "1" * 32, "2" * 32
        old = self.load("{requestStateKeys: ['" + second + "']}")
        rotated = self.load("{requestStateKeys: ['" + first + "', '" + second + "']}")
        self.assertNotIn(first, repr(rotated.gateway))
        clock = Clock()
        before, after = HeldCalls(clock, Seal(clock)), HeldCalls(clock, Seal(clock))
        before.configure(old.gateway)
        after.configure(rotated.gateway)
        token = before.seal.seal(claims(clock))
        self.assertEqual(after.seal.open(token), claims(clock))  # sealed with the old key: still verified
        with self.assertRaises(StateRefused):
            before.seal.open(after.seal.seal(claims(clock)))  # the new key seals

