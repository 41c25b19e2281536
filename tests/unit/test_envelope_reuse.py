"""
A session reads a stateless-era client's envelope once while the client
sends the same one (ClientSession._modern): a request with another
envelope, a malformed one or an unknown version is read and judged anew.
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.dispatch import session as session_module

from .test_eras import envelope
from .test_gateway import SessionTestCase

CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
LEVEL = "io.modelcontextprotocol/logLevel"
VERSION = "io.modelcontextprotocol/protocolVersion"


class EnvelopeReuseTests(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.reads: list[dict[str, Any]] = []
        real = session_module.read_envelope

        def counted(params: dict[str, Any]) -> Any:
            self.reads.append(params["_meta"])
            return real(params)

        self.patch(session_module, "read_envelope", counted)

    def call(self, id: Any, **meta: Any) -> Any:
        """A stateless-era tools/call with C{meta} in its envelope; the InFlight the backend was called with."""
        self.request(id, "tools/call", {"name": "alpha__add", "arguments": {}, "_meta": envelope(**meta)})
        calls = [c for c in self.alpha.calls if c.context is not None and c.context.rid == id]
        return calls[-1].context if calls else None

    def answer_all(self) -> None:
        for call in self.alpha.calls:
            if not call.deferred.called:
                call.deferred.callback({"content": []})

    def test_theSameEnvelopeIsReadOnce(self) -> None:
        first = self.call(1)
        second = self.call(2)
        third = self.call(3)
        self.assertEqual(len(self.reads), 1)
        self.assertIs(second.envelope, first.envelope)
        self.assertIs(third.envelope, first.envelope)
        self.answer_all()
        self.assertEqual([m["id"] for m in self.take()], [1, 2, 3])

    def test_anotherEnvelopeIsReadAgain(self) -> None:
        self.call(1)
        changed = self.call(2, **{CAPABILITIES: {"elicitation": {}}})
        self.assertEqual(changed.envelope.capabilities, {"elicitation": {}})
        leveled = self.call(3, **{CAPABILITIES: {"elicitation": {}}, LEVEL: "debug"})
        self.assertEqual(leveled.envelope.log_level, "debug")
        back = self.call(4)
        self.assertEqual(back.envelope.capabilities, {})
        self.assertIsNone(back.envelope.log_level)
        self.assertEqual(len(self.reads), 4)
        self.answer_all()
        self.take()

    def test_aBadEnvelopeAfterAGoodOneIsRefusedThenTheGoodOneServes(self) -> None:
        self.call(1)
        self.assertIsNone(self.call(2, **{CAPABILITIES: None, "io.modelcontextprotocol/clientInfo": None}))
        self.assertIsNone(self.call(3, **{VERSION: "v999"}))
        self.assertIsNotNone(self.call(4))
        self.answer_all()
        answers = {m["id"]: m for m in self.take()}
        self.assertEqual(answers[2]["error"]["code"], -32602)
        self.assertEqual(answers[3]["error"]["code"], -32022)
        self.assertIn("result", answers[1])
        self.assertIn("result", answers[4])

    def test_theKeptCopyIsNotTheRequestsOwn(self) -> None:
        """What is compared is a copy: a request's _meta changed later (by anyone) is not what the next is compared with."""
        self.call(1)
        first_meta = self.reads[0]
        first_meta[CAPABILITIES] = {"sampling": {}}
        self.call(2, **{CAPABILITIES: {"sampling": {}}})
        self.assertEqual(len(self.reads), 2)
        self.answer_all()
        self.take()
