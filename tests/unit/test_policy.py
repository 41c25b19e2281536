"""
The policy pipeline's parts on the injected clock: token buckets,
concurrency slots, circuit breakers (every transition), pattern matching
(including names that try to slip past it), argument checks, pinning, and
the pipeline's order and error codes.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import Backend, State
from twisted_mcp.dispatch.catalog import Catalog
from twisted_mcp.mcp import errors
from twisted_mcp.policy import breaker as breaker_mod
from twisted_mcp.policy.arguments import ArgumentError, Validators
from twisted_mcp.policy.identity import IdentityError, Principal
from twisted_mcp.policy.limits import Busy, Slots, TokenBucket
from twisted_mcp.policy.pinning import Pins, digest, read_lock, write_lock
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import PolicyConfig, matches, parse_policy
from twisted_mcp.policy.subject import subject_of
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

from .fakes import begin_tool


def dispatched_call(policy: Policy, catalog: Catalog, name: str, args: Any = None) -> Deferred[Any]:
    """A tools/call as the dispatch core makes it: begin, dispatch, then succeeded or failed."""
    call = begin_tool(policy, "s1", {"name": name, "arguments": args or {}}, catalog)
    backend = call.entry.backend
    d = call.dispatch(lambda: backend.call("tools/call", {}))

    def ok(result: Any) -> Any:
        call.succeeded(result, 10)
        return result

    def bad(f: Any) -> Any:
        call.failed(f.value)
        return f

    return d.addCallbacks(ok, bad)


class BucketTests(SynchronousTestCase):
    def test_burstThenRate(self) -> None:
        b = TokenBucket(rate=2.0, burst=3.0, now=0.0)
        for _ in range(3):
            self.assertEqual(b.wait_time(0.0), 0.0)
            b.take()
        self.assertAlmostEqual(b.wait_time(0.0), 0.5)
        self.assertAlmostEqual(b.wait_time(0.25), 0.25)
        self.assertEqual(b.wait_time(0.5), 0.0)
        b.take()
        self.assertAlmostEqual(b.wait_time(0.5), 0.5)

    def test_refillCappedAtBurst(self) -> None:
        b = TokenBucket(rate=10.0, burst=2.0, now=0.0)
        b.wait_time(0.0)
        b.take()
        b.take()
        self.assertEqual(b.wait_time(100.0), 0.0)
        b.take()
        b.take()
        self.assertGreater(b.wait_time(100.0), 0.0)


class SlotTests(SynchronousTestCase):
    def test_limitQueueAndHandOver(self) -> None:
        clock = Clock()
        s = Slots(limit=1, queue=1, timeout=5, clock=clock)
        first = s.acquire()
        self.successResultOf(first)
        second = s.acquire()
        self.assertNoResult(second)
        self.assertRaises(Busy, s.acquire)
        s.release()
        self.successResultOf(second)
        self.assertEqual(s.held, 1)
        s.release()
        self.assertEqual(s.held, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_queueTimeout(self) -> None:
        clock = Clock()
        s = Slots(limit=1, queue=5, timeout=2, clock=clock)
        s.acquire()
        waiting = s.acquire()
        clock.advance(2)
        self.failureResultOf(waiting, Busy)
        self.assertEqual(list(s.waiting), [])

    def test_cancelWhileWaiting(self) -> None:
        clock = Clock()
        s = Slots(limit=1, queue=5, timeout=2, clock=clock)
        s.acquire()
        waiting = s.acquire()
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(list(s.waiting), [])
        self.assertEqual(clock.getDelayedCalls(), [])


class BreakerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.b = breaker_mod.Breaker("be", threshold=3, open_seconds=30, clock=self.clock)

    def test_opensAfterConsecutiveFailures(self) -> None:
        self.b.failed()
        self.b.failed()
        self.b.succeeded()  # resets the count
        self.b.failed()
        self.b.failed()
        self.assertEqual(self.b.state, breaker_mod.CLOSED)
        self.b.failed()
        self.assertEqual(self.b.state, breaker_mod.OPEN)
        self.assertAlmostEqual(self.b.admit(), 30.0)
        self.clock.advance(10)
        self.assertAlmostEqual(self.b.admit(), 20.0)

    def test_halfOpenLetsExactlyOneProbe(self) -> None:
        for _ in range(3):
            self.b.failed()
        self.clock.advance(30)
        self.assertEqual(self.b.admit(), 0.0)
        self.assertEqual(self.b.state, breaker_mod.HALF_OPEN)
        self.assertGreater(self.b.admit(), 0.0)  # a second call while the probe runs
        self.b.succeeded()
        self.assertEqual(self.b.state, breaker_mod.CLOSED)
        self.assertEqual(self.b.admit(), 0.0)

    def test_failedProbeReopens(self) -> None:
        for _ in range(3):
            self.b.failed()
        self.clock.advance(30)
        self.assertEqual(self.b.admit(), 0.0)
        self.b.failed()
        self.assertEqual(self.b.state, breaker_mod.OPEN)
        self.assertAlmostEqual(self.b.admit(), 30.0)

    def test_abandonedProbeFreesTheSlot(self) -> None:
        for _ in range(3):
            self.b.failed()
        self.clock.advance(30)
        self.b.admit()
        self.b.abandoned()
        self.assertEqual(self.b.admit(), 0.0)


@pytest.mark.parametrize(
    "pattern,name,expected",
    [
        ("github__*", "github__create_issue", True),
        ("github__*", "githubx__create_issue", False),
        ("github", "github__create_issue", True),  # a whole backend
        ("github", "github2__create_issue", False),
        ("github", "git__hub", False),
        ("*__delete_*", "repo__delete_branch", True),
        ("*__delete_*", "repo__undelete_branch", False),
        ("GitHub__*", "github__x", False),  # case-sensitive: no folding
        ("github__*", "GITHUB__x", False),
        ("github__read", "github__read_all", False),
        ("github__read", "github__read", True),
        ("github_*", "github__x", True),  # a pattern that reaches past the separator is what it says
        ("time__get?time", "time__get_time", True),
        ("time__[gs]et", "time__set", True),
        ("time__[gs]et", "time__bet", False),
    ],
)
def test_pattern_matching(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name, "__") is expected


@pytest.mark.parametrize(
    "requested",
    [
        "GITHUB__delete_repo",  # case
        "github_delete_repo",  # a different separator
        "github__delete\u2010repo",  # a Unicode hyphen
        "github\uff3f\uff3fdelete_repo",  # fullwidth low lines
        "gіthub__delete_repo",  # a Cyrillic i
        "github__delete_repo ",
        "github__delete_repo\x00",
    ],
)
def test_lookalike_names_are_unknown_tools_not_a_way_past_deny(requested: str) -> None:
    """Exposed names are ASCII-only; a look-alike is simply not a tool."""
    clock = Clock()
    rules = parse_policy({"roles": {"dev": {"allow": ["github__*"], "deny": ["*__delete_*"]}}}, None, [], {"github"})
    policy = Policy(rules, "__", clock, lambda peer: Principal(name="dev1", roles=("dev",), source="config"))
    catalog = _catalog(("github", ["delete_repo", "read"]))
    with pytest.raises(JsonRpcError) as e:
        begin_tool(policy, "s", {"name": requested, "arguments": {}}, catalog)
    assert e.value.code == -32602
    with pytest.raises(JsonRpcError) as e:
        begin_tool(policy, "s", {"name": "github__delete_repo", "arguments": {}}, catalog)
    assert e.value.code == errors.ACCESS_DENIED


class ArgumentTests(SynchronousTestCase):
    def test_validAndInvalid(self) -> None:
        v = Validators()
        tool = {"name": "t", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}, "s": {"type": "object", "properties": {"x": {"type": "string"}}}}, "required": ["n"]}}
        v.check("t", tool, {"n": 3})
        e = self.assertRaises(ArgumentError, v.check, "t", tool, {"n": 9})
        self.assertEqual(e.path, "/n")
        self.assertIn("9", e.reason)
        e = self.assertRaises(ArgumentError, v.check, "t", tool, {"n": 1, "s": {"x": 4}})
        self.assertEqual(e.path, "/s/x")
        e = self.assertRaises(ArgumentError, v.check, "t", tool, None)
        self.assertIn("'n' is a required property", e.reason)

    def test_draftFromSchema(self) -> None:
        v = Validators()
        # Draft 4 exclusiveMaximum is a boolean; 2020-12 would reject this schema.
        tool = {"name": "t", "inputSchema": {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object", "properties": {"n": {"type": "number", "maximum": 5, "exclusiveMaximum": True}}}}
        self.assertRaises(ArgumentError, v.check, "t", tool, {"n": 5})
        v.check("t", tool, {"n": 4})

    def test_remoteRefNeverFetched(self) -> None:
        v = Validators()
        tool = {"name": "t", "inputSchema": {"type": "object", "properties": {"n": {"$ref": "http://127.0.0.1:9/never.json"}}}}
        e = self.assertRaises(ArgumentError, v.check, "t", tool, {"n": 1})
        self.assertIn("does not fetch", e.reason)

    def test_compiledOncePerDefinition(self) -> None:
        v = Validators()
        tool = {"name": "t", "inputSchema": {"type": "object"}}
        v.check("t", tool, {})
        compiled = v._cache["t"][1]
        v.check("t", tool, {})
        self.assertIs(v._cache["t"][1], compiled)
        changed = {"name": "t", "inputSchema": {"type": "object", "required": ["a"]}}
        self.assertRaises(ArgumentError, v.check, "t", changed, {})


class PinningTests(SynchronousTestCase):
    def test_digestCoversTheWholeDefinition(self) -> None:
        base = {"name": "t", "description": "d", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}}
        self.assertEqual(digest(base), digest(dict(reversed(list(base.items())))))
        for key, value in [("description", "d2"), ("inputSchema", {"type": "string"}), ("annotations", {}), ("title", "T")]:
            self.assertNotEqual(digest(base), digest({**base, key: value}))
        self.assertEqual(digest(base), digest({**base, "_meta": {"x": 1}}))

    def test_quarantineNewAndChanged(self) -> None:
        path = self.mktemp()
        write_lock(path, [("a__t", "a", "t", {"name": "t", "description": "old"})])
        self.assertEqual(list(read_lock(path)), ["a__t"])
        pins = Pins("enforce", path)
        fresh = pins.review([("a__t", {"name": "t", "description": "new"}), ("a__u", {"name": "u"})])
        self.assertEqual({n for n, _ in fresh}, {"a__t", "a__u"})
        self.assertIn("changed", pins.blocks("a__t") or "")
        self.assertIn("new tool", pins.blocks("a__u") or "")
        self.assertEqual(pins.review([("a__t", {"name": "t", "description": "new"}), ("a__u", {"name": "u"})]), [])
        warn = Pins("warn", path)
        warn.review([("a__u", {"name": "u"})])
        self.assertIsNone(warn.blocks("a__u"))
        self.assertIn("a__u", warn.quarantined)

    def test_missingLockQuarantinesEverything(self) -> None:
        pins = Pins("enforce", self.mktemp())
        self.assertIn("no lock file", pins.error or "")
        pins.review([("a__t", {"name": "t"})])
        self.assertIsNotNone(pins.blocks("a__t"))


class FakeBackend(Backend):
    def __init__(self, name: str, tools: list[str]) -> None:
        super().__init__(name)
        self.state = State.UP
        self.tools = [{"name": t, "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}} for t in tools]
        self.calls: list[Deferred[Any]] = []

    def call(self, method: str, params: Any, on_progress: Any = None, timeout: Any = None, context: Any = None) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append(d)
        return d


def _catalog(*backends: tuple[str, list[str]]) -> Catalog:
    catalog = Catalog("__")
    catalog.rebuild([FakeBackend(name, tools) for name, tools in backends])
    return catalog


class Recorder:
    #: Never behind: calls go at once (AuditLog.behind).
    behind = False

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.healthy = True

        class C:
            onFailure = "refuse"
            recordArguments = False

        self.config = C()

    def record(self, fields: dict[str, Any]) -> None:
        self.records.append(dict(fields))

    @property
    def refuses_calls(self) -> bool:
        return not self.healthy and self.config.onFailure == "refuse"


def one_slot_policy(gateway: Any, clock: Any, backend: str, queue_timeout: float) -> Recorder:
    """
    Give C{gateway} a policy: principal C{p} of role C{dev}, which may call
    every tool; C{backend} takes one call at a time (four more wait, up to
    C{queue_timeout} seconds).  Its audit trail.
    """
    problems: list[str] = []
    policy = {"roles": {"dev": {"allow": ["*"]}}, "concurrency": {"backends": {backend: {"max": 1, "queue": 4, "queueTimeout": queue_timeout}}}}
    rules = parse_policy(policy, None, problems, {backend})
    assert problems == [], problems
    audit = Recorder()
    principal = Principal(name="p", roles=("dev",), source="config")
    gateway.policy = Policy(rules, "__", clock, lambda peer: principal, audit)
    gateway.policy.catalog_changed(gateway.catalog.entries)
    return audit


class PipelineTests(SynchronousTestCase):
    def make(self, policy_yaml: dict[str, Any], principal: Any = None) -> tuple[Policy, Catalog, Recorder]:
        self.clock = Clock()
        problems: list[str] = []
        rules = parse_policy(policy_yaml, None, problems, {"a", "b"})
        self.assertEqual(problems, [])
        audit = Recorder()
        if principal is None:
            principal = Principal(name="p", roles=("dev",), source="config")
        authenticate = (lambda peer: principal()) if callable(principal) else (lambda peer: principal)
        policy = Policy(rules, "__", self.clock, authenticate, audit)
        catalog = _catalog(("a", ["read", "write", "delete_all"]), ("b", ["x"]))
        policy.catalog_changed(catalog.entries)
        return policy, catalog, audit

    def call(self, policy: Policy, catalog: Catalog, name: str, args: Any = None) -> Deferred[Any]:
        return dispatched_call(policy, catalog, name, args)

    def code(self, policy: Policy, catalog: Catalog, name: str, args: Any = None) -> int:
        try:
            d = self.call(policy, catalog, name, args)
        except JsonRpcError as e:
            return e.code
        f = self.failureResultOf(d, JsonRpcError)
        return f.value.code

    def test_accessAndListingAgree(self) -> None:
        policy, catalog, audit = self.make({"roles": {"dev": {"allow": ["a"], "deny": ["*__delete_*"]}}})
        principal = policy.principal()
        visible = [t["name"] for t in policy.listing(principal, "tool", catalog.listing, catalog.entries)]
        self.assertEqual(visible, ["a__read", "a__write"])
        for name in ["a__read", "a__write", "a__delete_all", "b__x"]:
            try:
                self.call(policy, catalog, name)
                allowed = True
            except JsonRpcError as e:
                self.assertEqual(e.code, errors.ACCESS_DENIED)
                allowed = False
            self.assertEqual(allowed, name in visible, name)
        denied = [r for r in audit.records if r["decision"] == "deny"]
        self.assertEqual({r["tool"] for r in denied}, {"a__delete_all", "b__x"})
        self.assertTrue(all(r["principal"] == "p" and r["error_code"] == errors.ACCESS_DENIED for r in denied))

    def test_unknownRoleHasNoRights(self) -> None:
        policy, catalog, _ = self.make({"roles": {"dev": {"allow": ["*"]}}}, Principal(name="q", roles=("ghost",), source="config"))
        self.assertEqual(policy.listing(policy.principal(), "tool", catalog.listing, catalog.entries), [])
        self.assertEqual(self.code(policy, catalog, "a__read"), errors.ACCESS_DENIED)

    def test_killSwitchOrderAndCodes(self) -> None:
        policy, catalog, _ = self.make(
            {"roles": {"dev": {"allow": ["*"]}}, "killSwitch": {"tools": ["a__write"], "backends": ["b"], "principals": []}}
        )
        self.assertEqual(self.code(policy, catalog, "a__write"), errors.TOOL_DISABLED)
        self.assertEqual(self.code(policy, catalog, "b__x"), errors.BACKEND_DISABLED)
        names = [t["name"] for t in policy.listing(policy.principal(), "tool", catalog.listing, catalog.entries)]
        self.assertEqual(names, ["a__delete_all", "a__read"])
        policy2, catalog2, _ = self.make({"roles": {"dev": {"allow": ["*"]}}, "killSwitch": {"principals": ["p"]}})
        self.assertEqual(self.code(policy2, catalog2, "a__read"), errors.PRINCIPAL_DISABLED)

    def test_identityFailure(self) -> None:
        def broken() -> Principal:
            raise IdentityError("the token expired")

        policy, catalog, audit = self.make({}, broken)
        e = self.assertRaises(JsonRpcError, begin_tool, policy, "s", {"name": "a__read"}, catalog)
        self.assertEqual(e.code, errors.AUTHENTICATION_FAILED)
        self.assertIn("expired", e.message)
        self.assertEqual(audit.records[-1]["decision"], "deny")

    def test_argumentsCheckedBeforeTheBackend(self) -> None:
        policy, catalog, _ = self.make({"roles": {"dev": {"allow": ["*"]}}})
        e = self.assertRaises(JsonRpcError, begin_tool, policy, "s", {"name": "a__read", "arguments": {"n": "seven"}}, catalog)
        self.assertEqual(e.code, -32602)
        self.assertEqual(e.data["path"], "/n")
        self.assertEqual(catalog.entries["a__read"].backend.calls, [])

    def test_rateLimits(self) -> None:
        policy, catalog, _ = self.make(
            {"roles": {"dev": {"allow": ["*"]}}, "limits": {"principal": {"rate": 10, "burst": 10}, "tools": [{"tool": "a__write", "rate": 1, "burst": 2}], "backends": {"b": {"rate": 0.5, "burst": 1}}}}
        )
        self.call(policy, catalog, "a__write")
        self.call(policy, catalog, "a__write")
        e = self.assertRaises(JsonRpcError, begin_tool, policy, "s", {"name": "a__write"}, catalog)
        self.assertEqual((e.code, e.data["limit"]), (errors.RATE_LIMITED, "tool"))
        self.assertAlmostEqual(e.data["retryAfter"], 1.0)
        self.call(policy, catalog, "a__read")  # another tool: its own bucket
        self.call(policy, catalog, "b__x")
        e = self.assertRaises(JsonRpcError, begin_tool, policy, "s", {"name": "b__x"}, catalog)
        self.assertEqual(e.data["limit"], "backend")
        self.clock.advance(2)
        self.call(policy, catalog, "b__x")
        self.call(policy, catalog, "a__write")

    def test_rateBucketsOfIdlePrincipalsForgotten(self) -> None:
        """Past 10,000 principals (or principal and tool pairs) with a rate
        bucket, the full (idle) ones are forgotten: a full bucket admits
        exactly as a new one would."""
        who = [Principal(name="p0", roles=("dev",), source="config")]
        policy, catalog, _ = self.make(
            {"roles": {"dev": {"allow": ["*"]}}, "limits": {"principal": {"rate": 1, "burst": 2}, "tools": [{"tool": "a__*", "rate": 1, "burst": 2}]}},
            principal=lambda: who[0],
        )
        for i in range(10_000):
            who[0] = Principal(name=f"p{i}", roles=("dev",), source="config")
            self.call(policy, catalog, "a__read")
        self.assertEqual((len(policy._principal_buckets), len(policy._tool_buckets)), (10_000, 10_000))
        self.clock.advance(2)  # every bucket is full again
        who[0] = Principal(name="one-more", roles=("dev",), source="config")
        self.call(policy, catalog, "a__read")
        self.assertEqual(set(policy._principal_buckets), {"one-more"})
        self.assertEqual(set(policy._tool_buckets), {("one-more", 0, "a__read")})

    def test_concurrencyQueueThenBusy(self) -> None:
        policy, catalog, _ = self.make({"roles": {"dev": {"allow": ["*"]}}, "concurrency": {"backends": {"a": {"max": 1, "queue": 1, "queueTimeout": 5}}}})
        backend = catalog.entries["a__read"].backend
        first = self.call(policy, catalog, "a__read")
        second = self.call(policy, catalog, "a__read")
        self.assertEqual(len(backend.calls), 1)
        self.assertEqual(self.code(policy, catalog, "a__read"), errors.BUSY)
        backend.calls[0].callback({"content": []})
        self.successResultOf(first)
        self.assertEqual(len(backend.calls), 2)
        backend.calls[1].callback({"content": []})
        self.successResultOf(second)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_breakerOpensOnTransportFailuresOnly(self) -> None:
        policy, catalog, audit = self.make({"roles": {"dev": {"allow": ["*"]}}, "breaker": {"failures": 2, "openSeconds": 10}})
        backend = catalog.entries["a__read"].backend
        # The backend's own errors are answers, even with a code the gateway
        # uses for a transport failure: only the gateway's own count.
        for code in (INVALID_PARAMS, errors.BACKEND_TIMEOUT, errors.BACKEND_LOST, errors.BACKEND_UNAVAILABLE):
            d = self.call(policy, catalog, "a__read")
            backend.calls[-1].errback(JsonRpcError(code, "the tool's own complaint"))
            self.failureResultOf(d)
        self.assertEqual(policy.breaker("a").state, "closed")
        for _ in range(2):
            d = self.call(policy, catalog, "a__read")
            backend.calls[-1].errback(errors.backend_error(errors.BACKEND_TIMEOUT, "a", "timed out"))
            self.failureResultOf(d)
        e = self.assertRaises(JsonRpcError, self.call, policy, catalog, "a__read")
        self.assertEqual(e.code, errors.CIRCUIT_OPEN)
        self.assertAlmostEqual(e.data["retryAfter"], 10.0)
        self.clock.advance(10)
        probe = self.call(policy, catalog, "a__read")
        self.assertEqual(self.code(policy, catalog, "a__read"), errors.CIRCUIT_OPEN)
        backend.calls[-1].callback({"content": [], "isError": True})  # a tool error is a live backend
        self.successResultOf(probe)
        self.assertEqual(policy.breaker("a").state, "closed")
        self.assertEqual(audit.records[-1]["outcome"], "tool_error")

    def test_quarantineHidesAndRefuses(self) -> None:
        self.clock = Clock()
        lock = self.mktemp()
        catalog = _catalog(("a", ["read", "write", "delete_all"]), ("b", ["x"]))
        entries = [(n, e.backend.name, e.tool, {**e.definition, "name": e.tool}) for n, e in catalog.entries.items() if n != "b__x"]
        write_lock(lock, entries)
        rules = parse_policy({"pinning": {"mode": "enforce", "lockFile": lock}}, None, [], {"a", "b"})
        audit = Recorder()
        policy = Policy(rules, "__", self.clock, None, audit)
        policy.catalog_changed(catalog.entries)
        names = [t["name"] for t in policy.listing(policy.principal(), "tool", catalog.listing, catalog.entries)]
        self.assertNotIn("b__x", names)
        self.assertIn("a__read", names)
        self.assertEqual(self.code(policy, catalog, "b__x"), errors.TOOL_QUARANTINED)
        review = [r for r in audit.records if r["method"] == "pinning/review"]
        self.assertEqual([(r["tool"], r["kind"], r["subject"]) for r in review], [("b__x", "tool", "b__x")])
        self.assertIn("new tool", review[0]["reason"])

    def test_auditRefusal(self) -> None:
        policy, catalog, audit = self.make({"roles": {"dev": {"allow": ["*"]}}})
        audit.healthy = False
        self.assertEqual(self.code(policy, catalog, "a__read"), errors.AUDIT_UNAVAILABLE)
        audit.config.onFailure = "allow"
        d = self.call(policy, catalog, "a__read")
        catalog.entries["a__read"].backend.calls[-1].callback({"content": []})
        self.successResultOf(d)

    def test_outcomeRecord(self) -> None:
        policy, catalog, audit = self.make({"roles": {"dev": {"allow": ["*"]}}})
        d = self.call(policy, catalog, "a__read", {"n": 1})
        self.clock.advance(0.25)
        catalog.entries["a__read"].backend.calls[-1].callback({"content": [{"type": "text", "text": "x"}]})
        self.successResultOf(d)
        r = audit.records[-1]
        self.assertEqual((r["decision"], r["outcome"], r["tool"], r["backend"], r["principal"]), ("allow", "ok", "a__read", "a", "p"))
        self.assertEqual(r["latency_ms"], 250.0)
        self.assertEqual(r["result_bytes"], 10)
        self.assertTrue(r["arguments_digest"].startswith("sha256:"))
        self.assertNotIn("arguments", r)


def test_parse_policy_problems_name_key_paths() -> None:
    problems: list[str] = []
    parse_policy(
        {
            "roles": {"dev": {"allow": ["ok__*", "bad pattern"], "grant": []}},
            "killSwitch": {"backends": ["nope"]},
            "limits": {"principal": {"rate": -1}, "tools": [{"rate": 1}]},
            "concurrency": {"backends": {"a": {"max": 0}}},
            "breaker": {"failures": 0},
            "pinning": {"mode": "sometimes"},
        },
        None,
        problems,
        {"a"},
    )
    text = "\n".join(problems)
    for fragment in [
        "roles.dev.allow[1]:",
        "roles.dev.grant: unknown key",
        "killSwitch.backends: no server named 'nope'",
        "limits.principal.rate:",
        "limits.tools[0].tool: missing",
        "concurrency.backends.a.max:",
        "breaker.failures:",
        "pinning.mode: expected off, warn or enforce",
    ]:
        assert fragment in text, (fragment, problems)


def test_breaker_probes_at_once_when_its_backend_comes_back_up() -> None:
    clock = Clock()
    b = breaker_mod.Breaker("be", threshold=1, open_seconds=30, clock=clock)
    b.failed()
    assert b.admit() > 0
    b.backend_up()
    assert b.admit() == 0.0  # the probe
    assert b.admit() > 0  # only one
    b.succeeded()
    assert b.state == breaker_mod.CLOSED


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string"}, "n": {"type": "integer"}, "x": {"type": ["number", "null"]}}, "required": ["a"]},
        {"type": "object", "properties": {"a": {"type": "string", "description": "d"}}, "additionalProperties": False},
        {"type": "object", "properties": {"flag": {"type": "boolean"}, "o": {"type": "object"}, "l": {"type": "array"}}},
        {"type": "object"},
    ],
)
@pytest.mark.parametrize(
    "arguments",
    [{}, {"a": "x"}, {"a": 1}, {"a": "x", "n": 1}, {"a": "x", "n": 1.0}, {"a": "x", "n": 1.5}, {"a": "x", "n": True},
     {"a": "x", "x": None}, {"a": "x", "x": "s"}, {"a": "x", "extra": 1}, {"flag": 0}, {"flag": False}, {"o": []}, {"l": []}, [], "s"],
)
def test_fast_path_agrees_with_jsonschema(schema, arguments) -> None:
    from jsonschema import Draft202012Validator

    from twisted_mcp.policy.arguments import fast_check

    fast = fast_check(schema)
    assert fast is not None
    assert fast(arguments) == Draft202012Validator(schema).is_valid(arguments)


def test_fast_path_declines_schemas_it_does_not_understand() -> None:
    from twisted_mcp.policy.arguments import fast_check

    for schema in (
        {"type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}},
        {"type": "object", "properties": {"a": {"enum": [1, 2]}}},
        {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"type": "string"}}},
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "array"},
    ):
        assert fast_check(schema) is None, schema


@pytest.mark.parametrize(
    "schema,good,bad",
    [
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 3}}}, [{"n": 1}, {"n": 3}, {}], [{"n": 0}, {"n": 4}]),
        ({"type": "object", "properties": {"n": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}}}, [{"n": 0.5}], [{"n": 0}, {"n": 1}]),
        ({"type": "object", "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^a"}}}, [{"s": "ab"}, {"s": "abc"}], [{"s": "a"}, {"s": "abcd"}, {"s": "bb"}]),
        ({"type": "object", "properties": {"s": {"minLength": 2}}}, [{"s": 1}, {"s": "ab"}], [{"s": "a"}]),
    ],
)
def test_fast_path_constraints_agree_with_jsonschema(schema, good, bad) -> None:
    from jsonschema import Draft202012Validator

    from twisted_mcp.policy.arguments import fast_check

    fast = fast_check(schema)
    assert fast is not None
    reference = Draft202012Validator(schema)
    for args in good + bad:
        assert fast(args) == reference.is_valid(args) == (args in good), args


def test_a_bare_backend_name_is_that_backend_only_and_deny_folds_case() -> None:
    assert matches("a", "a___wipe", "__", backend="a_") is False
    assert matches("a", "a__read", "__", backend="a") is True
    assert matches("*__delete_*", "fs__Delete-File", "__", backend="fs", fold=True) is True
    assert matches("*__delete_*", "fs__Delete-File", "__", backend="fs") is False


class ReviewFixTests(PipelineTests):
    def test_refusalsAfterTheRateLimitGiveTheTokenBack(self) -> None:
        policy, catalog, _ = self.make(
            {"roles": {"dev": {"allow": ["*"]}}, "limits": {"principal": {"rate": 0.1, "burst": 2}}, "concurrency": {"backends": {"a": {"max": 1, "queue": 0}}}}
        )
        first = self.call(policy, catalog, "a__read")
        for _ in range(3):
            self.assertEqual(self.code(policy, catalog, "a__read"), errors.BUSY)
        catalog.entries["a__read"].backend.calls[0].callback({"content": []})
        self.successResultOf(first)
        # The busy refusals did not spend the burst: one more call is allowed.
        second = self.call(policy, catalog, "a__read")
        catalog.entries["a__read"].backend.calls[1].callback({"content": []})
        self.successResultOf(second)

    def test_onlyTheProbeDecidesTheBreaker(self) -> None:
        policy, catalog, _ = self.make({"roles": {"dev": {"allow": ["*"]}}, "breaker": {"failures": 1, "openSeconds": 5}})
        backend = catalog.entries["a__read"].backend
        running = self.call(policy, catalog, "a__read")  # admitted while closed
        d = self.call(policy, catalog, "a__read")
        backend.calls[-1].errback(errors.backend_error(errors.BACKEND_TIMEOUT, "a", "t"))
        self.failureResultOf(d)
        self.clock.advance(5)
        probe = self.call(policy, catalog, "a__read")
        running.cancel()  # the earlier call ends: it must not free the probe's place
        self.failureResultOf(running)
        self.assertEqual(self.code(policy, catalog, "a__read"), errors.CIRCUIT_OPEN)
        backend.calls[-1].callback({"content": []})
        self.successResultOf(probe)
        self.assertEqual(policy.breaker("a").state, "closed")

    def test_oneAuditRecordWhenSendRaises(self) -> None:
        policy, catalog, audit = self.make({"roles": {"dev": {"allow": ["*"]}}})
        call = begin_tool(policy, "s", {"name": "a__read", "arguments": {}}, catalog)

        def broken() -> Deferred[Any]:
            raise errors.backend_error(errors.BACKEND_UNAVAILABLE, "a", "down")

        self.assertRaises(JsonRpcError, call.dispatch, broken)
        call.failed(errors.backend_error(errors.BACKEND_UNAVAILABLE, "a", "down"))  # the caller's errback, too
        ids = [r["id"] for r in audit.records if r["method"] == "tools/call"]
        self.assertEqual(len(ids), len(set(ids)))

    def test_invalidArgumentValuesStayOutOfTheAudit(self) -> None:
        policy, catalog, audit = self.make({"roles": {"dev": {"allow": ["*"]}}})
        e = self.assertRaises(JsonRpcError, begin_tool, policy, "s", {"name": "a__read", "arguments": {"n": "hunter2"}}, catalog)
        self.assertIn("hunter2", e.message)  # the caller is told
        self.assertNotIn("hunter2", json.dumps(audit.records))  # the trail is not


import json  # noqa: E402


class DecisionCacheTests(SynchronousTestCase):
    def test_bounded(self) -> None:
        """Decisions are cached per (principal, tool); past 100,000 the
        cache starts again, whoever the principals are."""
        catalog = _catalog(("a", ["read"]))
        policy = Policy(PolicyConfig(active=True), "__", Clock())
        entry = catalog.entries["a__read"]
        for i in range(100_005):
            policy.decision(Principal(name=f"p{i}", source="peer"), subject_of("tool", entry))
        self.assertLessEqual(len(policy._decisions), 100_001)
