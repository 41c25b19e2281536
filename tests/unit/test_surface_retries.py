"""
A 2026-07-28 retry through the surface: a call made through C{call_tool}
(search mode) and answered with an InputRequiredResult may be retried
through C{call_tool} or directly by its shaped name, and the sealed
C{requestState} opens in each case (the unwrapped call is the one bound).
"""

from __future__ import annotations

from typing import Any

from .test_eras import envelope
from .test_mrtr_passthrough import BACKEND_STATE, QUESTIONS
from .test_rounds import ALL_CAPS, RoundsTestCase, asking
from .test_surface_fit import _surface


class RetryThroughCallToolTests(RoundsTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.gateway.surface = _surface(clients={"match": [{"name": "modern-client", "search": "always"}]})

    def send_call(self, rid: Any, name: str, arguments: Any, **more: Any) -> None:
        params = {"name": name, "arguments": arguments, **more}
        params["_meta"] = envelope(**{"io.modelcontextprotocol/clientCapabilities": ALL_CAPS})
        self.session.message_received({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})

    def test_three_retry_forms(self) -> None:
        self.send_call(1, "call_tool", {"name": "alpha__ask", "arguments": {"q": 1}})
        first = self.alpha.calls[0]
        self.assertEqual((first.params["name"], first.params["arguments"]), ("ask", {"q": 1}))
        first.deferred.callback(asking(QUESTIONS, state=BACKEND_STATE))
        (answer,) = self.take()
        token = answer["result"]["requestState"]
        answers = {"where": {"roots": []}}
        forms = [
            ("call_tool", {"name": "alpha__ask", "arguments": {"q": 1}}),
            ("alpha__ask", {"q": 1}),
        ]
        for rid, (name, arguments) in enumerate(forms, start=2):
            self.send_call(rid, name, arguments, inputResponses=answers, requestState=token)
            retry = self.alpha.calls[-1]
            self.assertEqual(retry.params["requestState"], BACKEND_STATE)
            self.assertEqual(retry.params["inputResponses"], answers)
            self.assertEqual((retry.params["name"], retry.params["arguments"]), ("ask", {"q": 1}))
            retry.deferred.callback({"content": [], "resultType": "complete"})
            (final,) = self.take()
            self.assertEqual((final["id"], final["result"]["resultType"]), (rid, "complete"))
        self.assertEqual(len(self.alpha.calls), 3)
