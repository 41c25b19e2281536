"""
Pass-through: a stateless-era (2026-07-28) backend's InputRequiredResult to
a stateless-era client keeps its inputRequests and keys; its requestState
goes out in the gateway's seal (a "pass" token bound to the caller, the
request, the backend and a lifetime) and comes back to the backend byte for
byte on the retry, with inputResponses untouched.  Forged, stolen,
misplaced, expired and stale tokens are -32602 and reach no backend.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import capturedLogs

from twisted_mcp.dispatch import held_calls
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import line_caller
from twisted_mcp.mcp.request_state import PREFIX

from .test_eras import envelope
from .test_rounds import ALL_CAPS, FORM, ROOTS, RoundsTestCase, asking

BACKEND_STATE = "backend-state:{\"step\":1}"
QUESTIONS = {"user_name": {"method": "elicitation/create", "params": FORM}, "where": ROOTS}


class PassThroughTests(RoundsTestCase):
    def call(self, rid: Any, session: ClientSession | None = None, arguments: Any = None, **more: Any) -> None:
        params = {"name": "alpha__ask", "arguments": {"q": 1} if arguments is None else arguments, **more}
        params["_meta"] = envelope(**{"io.modelcontextprotocol/clientCapabilities": ALL_CAPS})
        (session or self.session).message_received({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})

    def asked(self) -> dict[str, Any]:
        """The client's first call, answered by the backend with an InputRequiredResult: what the client got."""
        self.call(1)
        self.alpha.calls[0].deferred.callback(asking(QUESTIONS, state=BACKEND_STATE))
        (answer,) = self.take()
        result: dict[str, Any] = answer["result"]
        return result

    def test_theQuestionsPassUnchangedAndTheStateIsSealed(self) -> None:
        result = self.asked()
        self.assertEqual(result["resultType"], "input_required")
        self.assertEqual(result["inputRequests"], QUESTIONS)
        token = result["requestState"]
        self.assertTrue(token.startswith(PREFIX))
        self.assertNotIn("backend-state", token)
        self.assertNotIn("ttlMs", result)

    def test_theRetryGivesTheBackendItsOwnStateAndTheAnswersUntouched(self) -> None:
        token = self.asked()["requestState"]
        answers = {"user_name": {"action": "accept", "content": {"name": "Ada"}}, "where": {"roots": []}, "extra": 5}
        for rid in (2, 3):  # not single-use: the backend's state is the backend's business
            self.call(rid, inputResponses=answers, requestState=token)
            retry = self.alpha.calls[-1]
            self.assertEqual(retry.params["requestState"], BACKEND_STATE)
            self.assertEqual(retry.params["inputResponses"], answers)
            self.assertEqual((retry.params["name"], retry.params["arguments"]), ("ask", {"q": 1}))
            retry.deferred.callback({"content": [], "resultType": "complete"})
            (final,) = self.take()
            self.assertEqual((final["id"], final["result"]["resultType"]), (rid, "complete"))

    def test_aResultWithoutStateHasNoneToSeal(self) -> None:
        self.call(1)
        self.alpha.calls[0].deferred.callback(asking({"where": ROOTS}))
        self.assertNotIn("requestState", self.take()[0]["result"])
        # Its retry has no requestState: the answers go to the backend untouched.
        self.call(2, inputResponses={"where": {"roots": []}})
        self.assertEqual(self.alpha.calls[1].params["inputResponses"], {"where": {"roots": []}})
        self.assertNotIn("requestState", self.alpha.calls[1].params)
        self.alpha.calls[1].deferred.callback({"content": []})
        self.take()

    def test_aHandshakeEraBackendIsNeverSentTheRetrysPlumbing(self) -> None:
        self.alpha.era, self.alpha.protocol_version = "legacy", None
        self.call(1, inputResponses={"where": {"roots": []}})
        self.assertEqual(self.alpha.calls[0].params, {"name": "ask", "arguments": {"q": 1}})
        self.alpha.calls[0].deferred.callback({"content": []})
        self.take()

    def test_thePolicyAndItsAuditNeverSeeTheRetrysPlumbing(self) -> None:
        from twisted_mcp.policy.pipeline import Policy
        from twisted_mcp.policy.rules import PolicyConfig

        policy = self.gateway.policy = Policy(PolicyConfig(active=True), "__", self.clock)
        records: list[dict[str, Any]] = []
        policy._audit = records.append  # type: ignore[method-assign]
        token = self.asked()["requestState"]
        self.call(2, inputResponses={"user_name": {"action": "accept", "content": {"name": "planted-answer"}}}, requestState=token)
        self.alpha.calls[1].deferred.callback({"content": []})
        self.take()
        self.assertEqual(len([r for r in records if r.get("method") == "tools/call"]), 2)
        self.assertNotIn("planted-answer", str(records))
        self.assertNotIn(token, str(records))
        self.assertNotIn(BACKEND_STATE, str(records))

    def refused(self, *words: str, session: ClientSession | None = None, out: list[bytes] | None = None) -> None:
        messages = [json.loads(line) for line in out] if out is not None else self.take()
        (error,) = [m["error"] for m in messages]
        self.assertEqual(error["code"], -32602)
        for w in words:
            self.assertIn(w, error["message"])

    def test_forgedStolenMisplacedExpiredAndStaleTokensAreRefused(self) -> None:
        token = self.asked()["requestState"]
        answers = {"where": {"roots": []}}
        flipped = token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
        with capturedLogs() as logged:
            self.call(2, inputResponses=answers, requestState=flipped)
        self.refused("verification")
        self.assertTrue(any("requestState was refused" in e["log_format"] for e in logged))
        self.assertNotIn(flipped, str(logged))
        other_out: list[bytes] = []
        other = ClientSession(self.gateway, line_caller(other_out.append, "other"))
        self.call(3, session=other, inputResponses=answers, requestState=token)
        self.refused("belongs to another caller", out=other_out)
        self.call(4, arguments={"q": 2}, inputResponses=answers, requestState=token)
        self.refused("another request")
        self.alpha.handshakes += 1  # the backend restarted: its state is gone
        self.call(5, inputResponses=answers, requestState=token)
        self.refused("restarted")
        self.alpha.handshakes -= 1
        # A gateway restarted with the same requestStateKeys: its backends are other processes.
        this_process = held_calls._PROCESS
        self.patch(held_calls, "_PROCESS", "another-process")
        self.call(51, inputResponses=answers, requestState=token)
        self.refused("restarted")
        self.patch(held_calls, "_PROCESS", this_process)
        self.clock.advance(601)
        self.call(6, inputResponses=answers, requestState=token)
        self.refused("expired")
        self.assertEqual(len(self.alpha.calls), 1)  # none reached the backend
        self.assertEqual(self.session.backend_calls, {})

    def test_aTokenForABackendThatCameBackInTheHandshakeEraIsRefused(self) -> None:
        """Not sent to it as a fresh call without the answers (a tool with effects would run twice)."""
        token = self.asked()["requestState"]
        self.alpha.handshakes += 1
        self.alpha.era, self.alpha.protocol_version = "legacy", None
        self.call(2, inputResponses={"where": {"roots": []}}, requestState=token)
        self.refused("restarted")
        self.assertEqual(len(self.alpha.calls), 1)

    def test_aBackendStateTooLongToSealIsTheBackendsFault(self) -> None:
        self.call(1)
        self.alpha.calls[0].deferred.callback(asking(QUESTIONS, state="x" * 60000))
        (answer,) = self.take()
        self.assertEqual(answer["error"]["code"], -32603)
        self.assertIn("requestState too long", answer["error"]["message"])
