"""
The C{protocol} field of audit records: every record of a client's request
names the MCP version it was made under, whatever its era and whatever
became of it (allowed, refused before or after it named a subject, a
listing, a server's request the client answered).
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.mcp import errors
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.principal import Principal
from twisted_mcp.policy.rules import parse_policy
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS

from .test_eras import MODERN, envelope
from .test_gateway import SessionTestCase
from .test_policy import Recorder

DEV = Principal(name="dev-user", roles=("dev",), source="config")


class ProtocolFieldTests(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        problems: list[str] = []
        rules = parse_policy({"roles": {"dev": {"allow": ["alpha"]}}}, None, problems, {"alpha", "beta"})
        self.assertEqual(problems, [])
        self.audit = Recorder()
        self.gateway.policy = Policy(rules, "__", self.clock, lambda peer: DEV, self.audit)
        self.alpha.capabilities = {"tools": {}, "resources": {}}  # resources/read is a method of this gateway

    def initialize(self, version: Any = "2025-06-18") -> dict[str, Any]:
        self.request(0, "initialize", {"protocolVersion": version, "capabilities": {"roots": {}}, "clientInfo": {"name": "c"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        (answer,) = self.take()
        return answer

    def requests(self, meta: dict[str, Any] | None) -> None:
        """One request of each fate, C{meta} (a stateless-era envelope, or None) on each."""

        def request(id: int, method: str, params: dict[str, Any]) -> None:
            if meta is not None:
                params = {**params, "_meta": meta}
            self.request(id, method, params)

        request(1, "tools/list", {})
        request(2, "tools/call", {"name": "alpha__echo", "arguments": {"text": "hi"}})
        self.alpha.calls[-1].deferred.callback({"content": [{"type": "text", "text": "hi"}]})
        request(3, "tools/call", {"name": "beta__get_time", "arguments": {}})  # not the role's
        request(4, "tools/call", {"name": "nope__missing", "arguments": {}})  # no such tool
        request(5, "tools/call", {"name": 42})  # refused before it names a subject
        request(6, "resources/read", {"uri": "nowhere://x"})
        answers = {a["id"]: a for a in self.take()}
        self.assertIn("result", answers[2])
        self.assertEqual(
            [answers[i]["error"]["code"] for i in (3, 4, 5)], [errors.ACCESS_DENIED, INVALID_PARAMS, INVALID_PARAMS]
        )
        self.assertIn("error", answers[6])

    def assertEveryRecordSays(self, protocol: str) -> None:
        outcomes = [(r["method"], r["decision"], r["outcome"], r["protocol"]) for r in self.audit.records]
        self.assertEqual(
            outcomes,
            [
                ("tools/list", "allow", "ok", protocol),
                ("tools/call", "allow", "ok", protocol),
                ("tools/call", "deny", None, protocol),
                ("tools/call", "deny", None, protocol),
                ("tools/call", "deny", None, protocol),
                ("resources/read", "deny", None, protocol),
            ],
        )

    def test_aHandshakeEraSessionsRecordsSayWhatItNegotiated(self) -> None:
        self.assertEqual(self.initialize("2025-06-18")["result"]["protocolVersion"], "2025-06-18")
        self.requests(None)
        self.assertEveryRecordSays("2025-06-18")

    def test_aStatelessEraRequestsRecordSaysItsOwnVersion(self) -> None:
        self.requests(envelope())
        self.assertEveryRecordSays(MODERN)

    def test_aServerRequestsRecordSaysTheVersionOfTheClientThatAnswered(self) -> None:
        self.initialize("2025-03-26")
        self.request(1, "tools/call", {"name": "alpha__echo", "arguments": {}})
        call = self.alpha.calls[-1]
        asked = self.gateway.reverse.server_request(self.alpha, "roots/list", {}, call.context)
        (question,) = [m for m in self.take() if m.get("method") == "roots/list"]
        self.send({"jsonrpc": "2.0", "id": question["id"], "result": {"roots": []}})
        self.assertEqual(self.successResultOf(asked), {"roots": []})
        call.deferred.callback({"content": []})
        (reverse,) = [r for r in self.audit.records if r["method"] == "roots/list"]
        self.assertEqual((reverse["kind"], reverse["outcome"], reverse["protocol"]), ("server_request", "ok", "2025-03-26"))

    def test_recordsOfNoClientRequestSayNone(self) -> None:
        record = self.gateway.policy.new_record("-", "policy/refusals-suppressed")
        self.assertIsNone(record["protocol"])
