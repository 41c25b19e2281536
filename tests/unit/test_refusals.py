"""
Refusals are rate limited per principal (C{limits.refusals}): beyond the
budget the client still gets its refusal, but the audit records (and log
lines) of the excess are coalesced into one report per principal and
interval, and the call never reaches the backend.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.dispatch.session import ClientSession
from twisted_mcp.frontends.stream import deliver, line_caller
from twisted_mcp.mcp import errors
from twisted_mcp.policy.identity import Principal
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.refusals import RefusalBudget
from twisted_mcp.policy.rules import RefusalLimit, parse_policy
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

from .fakes import begin_tool
from .test_policy import FakeBackend, Recorder, _catalog

SUPPRESSED = "policy/refusals-suppressed"


class RefusalBudgetTests(SynchronousTestCase):
    def make(self, refusals: dict[str, Any] | None = None) -> None:
        self.clock = Clock()
        limits = {"refusals": refusals} if refusals is not None else {}
        problems: list[str] = []
        rules = parse_policy({"roles": {"dev": {"allow": ["a"]}}, "limits": limits}, None, problems, {"a", "b"})
        self.assertEqual(problems, [])
        self.audit = Recorder()
        self.who = Principal(name="p", roles=("dev",), source="config")
        self.policy = Policy(rules, "__", self.clock, lambda peer: self.who, self.audit)
        self.catalog = _catalog(("a", ["read"]), ("b", ["x"]))
        self.policy.catalog_changed(self.catalog.entries)

    def refuse(self, times: int, tool: str = "b__x") -> list[JsonRpcError]:
        out = []
        for _ in range(times):
            with self.assertRaises(JsonRpcError) as caught:
                begin_tool(self.policy, "s", {"name": tool, "arguments": {}}, self.catalog)
            out.append(caught.exception)
        return out

    def denied(self) -> list[dict[str, Any]]:
        return [r for r in self.audit.records if r["method"] == "tools/call"]

    def reports(self) -> list[dict[str, Any]]:
        return [r for r in self.audit.records if r["method"] == SUPPRESSED]

    def test_the_default_budget(self) -> None:
        self.make()
        refused = self.refuse(25)
        # Every caller is told, with the same error, whether recorded or not.
        self.assertEqual({(e.code, e.message) for e in refused}, {(errors.ACCESS_DENIED, "'p' (roles: dev) may not call 'b__x'")})
        self.assertEqual(len(self.denied()), 20)
        self.assertEqual(self.reports(), [])
        self.clock.advance(60)
        (report,) = self.reports()
        limit = self.policy.rules.refusal_limit
        self.assertEqual((limit.rate, limit.burst, limit.reportSeconds), (1.0, 20.0, 60.0))
        self.assertEqual((report["principal"], report["decision"]), ("p", "deny"))
        self.assertIn("5 refusal(s) over the limit (limits.refusals)", report["reason"])
        self.assertIn(f"{errors.ACCESS_DENIED}: 5", report["reason"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_report_per_interval_with_every_code(self) -> None:
        self.make({"rate": 1, "burst": 2, "reportSeconds": 10})
        self.refuse(2)
        self.refuse(3)
        self.refuse(4, tool="nope__x")  # an unknown tool: another code
        self.assertEqual(len(self.denied()), 2)
        self.clock.advance(9)
        self.assertEqual(self.reports(), [])
        self.refuse(1)  # the bucket refilled: recorded
        self.assertEqual(len(self.denied()), 3)
        self.clock.advance(1)
        (report,) = self.reports()
        self.assertIn("7 refusal(s)", report["reason"])
        self.assertIn(f"{INVALID_PARAMS}: 4, {errors.ACCESS_DENIED}: 3", report["reason"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_call_never_reaches_the_backend(self) -> None:
        self.make({"rate": 0.001, "burst": 1})
        self.refuse(10)
        self.assertEqual(self.catalog.entries["b__x"].backend.calls, [])
        self.policy.flush()

    def test_each_principal_has_its_own_budget(self) -> None:
        self.make({"rate": 0.001, "burst": 1, "reportSeconds": 5})
        self.refuse(5)
        self.who = Principal(name="q", roles=("dev",), source="config")
        self.refuse(1)
        self.assertEqual([r["principal"] for r in self.denied()], ["p", "q"])
        self.clock.advance(5)
        self.assertEqual([(r["principal"], "4 refusal(s)" in r["reason"]) for r in self.reports()], [("p", True)])

    def test_allowed_calls_are_not_counted(self) -> None:
        self.make({"rate": 0.001, "burst": 1})
        for _ in range(5):
            call = begin_tool(self.policy, "s", {"name": "a__read", "arguments": {}}, self.catalog)
            call.succeeded({"content": []}, 0)
        self.refuse(1)
        self.assertEqual(len(self.denied()), 6)

    def test_flush_reports_at_once(self) -> None:
        self.make({"rate": 0.001, "burst": 1})
        self.refuse(3)
        self.policy.flush()
        self.assertEqual(len(self.reports()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_reload_keeps_the_budget_or_reports_what_it_counted(self) -> None:
        self.make({"rate": 0.001, "burst": 1, "reportSeconds": 30})
        self.refuse(3)
        same = Policy(self.policy.rules, "__", self.clock, lambda peer: self.who, self.audit)
        same.inherit(self.policy)
        self.policy = same
        self.refuse(1)
        self.assertEqual(len(self.denied()), 1)  # the same bucket: still empty
        rules = parse_policy({"roles": {"dev": {"allow": ["a"]}}, "limits": {"refusals": {"burst": 5}}}, None, [], {"a", "b"})
        changed = Policy(rules, "__", self.clock, lambda peer: self.who, self.audit)
        changed.inherit(self.policy)
        (report,) = self.reports()  # the old budget reported what it had counted
        self.assertIn("3 refusal(s)", report["reason"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_config_errors_name_the_key(self) -> None:
        problems: list[str] = []
        parse_policy({"limits": {"refusals": {"rate": 0, "burst": "many", "reportSeconds": 0, "per": 1}}}, None, problems, set())
        text = "\n".join(problems)
        for fragment in ("limits.refusals.rate:", "limits.refusals.burst:", "limits.refusals.reportSeconds:", "limits.refusals.per: unknown key"):
            self.assertIn(fragment, text)


class GatewayLogTests(SynchronousTestCase):
    def test_coalesced_refusals_are_answered_but_not_logged(self) -> None:
        """Refusals after a wait (here: the queue timed out) are logged by the gateway, within the budget."""
        from twisted.logger import globalLogPublisher

        clock = Clock()
        policy = {
            "roles": {"dev": {"allow": ["a"]}},
            "limits": {"refusals": {"rate": 0.001, "burst": 2}},
            "concurrency": {"backends": {"a": {"max": 1, "queue": 10, "queueTimeout": 1}}},
        }
        rules = parse_policy(policy, None, [], {"a"})
        backend = FakeBackend("a", ["read"])
        gateway = Gateway([backend], "__", clock, 5.0)
        gateway.policy = Policy(rules, "__", clock, lambda peer: Principal(name="p", roles=("dev",), source="config"), Recorder())
        backend._first_discovery_done()
        gateway.start()
        out: list[bytes] = []
        session = ClientSession(gateway, line_caller(out.append, "s1", None))
        send = lambda m: deliver(session, json.dumps(m).encode())  # noqa: E731
        send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c"}}})
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        del out[:]
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            for i in range(1, 7):  # the first holds the slot, five wait
                send({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "a__read", "arguments": {}}})
            clock.advance(1)
            gateway.policy.flush()
        finally:
            globalLogPublisher.removeObserver(events.append)
        answers = [json.loads(line) for line in out]
        self.assertEqual([a["error"]["code"] for a in answers], [errors.BUSY] * 5)
        logged = [e for e in events if "failed with" in e.get("log_format", "")]
        self.assertEqual(len(logged), 2)
        reports = [e for e in events if "refusal(s) over the limit" in str(e.get("reason", ""))]
        self.assertEqual(len(reports), 1)
        self.assertIn("3 refusal(s)", reports[0]["reason"])
        self.assertEqual(len(backend.calls), 1)
        backend.calls[0].callback({"content": []})
        self.assertEqual(clock.getDelayedCalls(), [])


class RefusalBucketBoundTests(SynchronousTestCase):
    def test_idle_buckets_are_forgotten_beyond_the_bound(self) -> None:
        """Past 10,000 principals with a bucket, full (idle) ones are
        forgotten: a full bucket admits exactly as a new one would."""
        clock = Clock()
        budget = RefusalBudget(RefusalLimit(rate=1.0, burst=20.0, reportSeconds=60.0), clock, lambda *report: None)
        for i in range(10_000):
            self.assertTrue(budget.admit(f"p{i}", errors.ACCESS_DENIED))
        clock.advance(20)  # every bucket is full again
        self.assertTrue(budget.admit("one-more", errors.ACCESS_DENIED))
        self.assertEqual(set(budget._buckets), {"one-more"})
