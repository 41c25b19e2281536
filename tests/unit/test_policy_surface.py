"""
The policy over the whole MCP surface, on the injected clock: roles over
prompts and resources (lists, gets, reads, completions), the kill switch,
rate and concurrency limits and breakers on requests that are not tool
calls, the audit record of each kind, requests a backend sends a client
(sampling, elicitation, roots), and an existing tools-only config keeping
its meaning.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.base import Backend
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.errors import RESOURCE_NOT_FOUND
from twisted_mcp.policy.audit.records import digest_arguments, redact_uri
from twisted_mcp.policy.call import Call
from twisted_mcp.policy.identity import IdentityError, Principal
from twisted_mcp.policy.pipeline import LOCAL, Policy
from twisted_mcp.policy.rules import PolicyConfig, matches_uri, parse_policy, server_matches
from twisted_mcp.policy.subject import Subject, subject_of
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

from .fakes import begin_tool
from .test_policy import Recorder, _catalog


class Entry(NamedTuple):
    """A catalog entry as the dispatch core's catalog gives it."""

    backend: Backend
    original: str
    definition: dict[str, Any]


class Surface:
    """Two backends' tools, prompts, resources and resource templates, listed as clients see them."""

    def __init__(self) -> None:
        self.tools = _catalog(("a", ["read", "write"]), ("b", ["x"]))
        a = self.tools.entries["a__read"].backend
        b = self.tools.entries["b__x"].backend
        self.backends = {"a": a, "b": b}
        self.entries: dict[str, dict[str, Entry]] = {
            "prompt": {
                "a__greet": Entry(a, "greet", {"name": "a__greet", "arguments": [{"name": "who"}]}),
                "a__secret_plan": Entry(a, "secret_plan", {"name": "a__secret_plan"}),
                "b__summary": Entry(b, "summary", {"name": "b__summary"}),
            },
            "resource": {
                "file:///srv/docs/readme.md": Entry(a, "file:///srv/docs/readme.md", {"uri": "file:///srv/docs/readme.md"}),
                "file:///srv/private/keys.txt": Entry(a, "file:///srv/private/keys.txt", {"uri": "file:///srv/private/keys.txt"}),
                "test://static/resource/1": Entry(b, "test://static/resource/1", {"uri": "test://static/resource/1"}),
            },
            "template": {
                "file:///srv/docs/{path}": Entry(a, "file:///srv/docs/{path}", {"uriTemplate": "file:///srv/docs/{path}"}),
                "file:///srv/private/{name}": Entry(a, "file:///srv/private/{name}", {"uriTemplate": "file:///srv/private/{name}"}),
                "test://static/resource/{id}": Entry(b, "test://static/resource/{id}", {"uriTemplate": "test://static/resource/{id}"}),
            },
        }
        self.entries["tool"] = dict(self.tools.entries)  # type: ignore[arg-type]

    def listing(self, kind: str) -> list[dict[str, Any]]:
        return [e.definition for e in self.entries[kind].values()]

    def subject(self, kind: str, name: str) -> Subject:
        return subject_of(kind, self.entries[kind][name])

    def read(self, uri: str, backend: str = "a") -> Subject:
        """The subject of a read of C{uri} (listed, or one a template covers)."""
        return Subject("resource", uri, backend, uri)


VIEWER = Principal(name="vera", roles=("viewer",), source="config")
DEV = Principal(name="dan", roles=("dev",), source="config")

ROLES = {
    "viewer": {
        "allow": ["a__read"],
        "prompts": {"allow": ["a__*"], "deny": ["*secret*"]},
        "resources": {"allow": ["file:///srv/docs/*", "b"], "deny": ["*private*"]},
    },
    "dev": {"allow": ["*"]},  # a role written before prompts and resources were passed
    "admin": {"allow": ["*"], "prompts": {"allow": ["*"]}, "resources": {"allow": ["*"]}},
}


class SurfaceTestCase(SynchronousTestCase):
    def make(self, config: dict[str, Any], principal: Any = VIEWER, record_arguments: bool = False) -> Policy:
        self.clock = Clock()
        problems: list[str] = []
        rules = parse_policy(config, None, problems, {"a", "b"})
        self.assertEqual(problems, [])
        self.audit = Recorder()
        self.audit.config.recordArguments = record_arguments
        self.who = [principal]
        policy = Policy(rules, "__", self.clock, lambda peer: self.who[0], self.audit)
        self.surface = Surface()
        policy.catalog_changed(self.surface.tools.entries)
        return policy

    def start(self, policy: Policy, method: str, subject: Subject, params: dict[str, Any] | None = None) -> tuple[Call, Deferred[Any]]:
        """Begin and dispatch a request; its outcome is audited when the backend answers."""
        call = policy.begin("s1", method, subject, params or {}, None)
        backend = self.surface.backends[subject.backend]
        d = call.dispatch(lambda: backend.call(method, {}))

        def ok(result: Any) -> Any:
            call.succeeded(result, 7)
            return result

        def bad(f: Any) -> Any:
            call.failed(f.value)
            return f

        return call, d.addCallbacks(ok, bad)

    def code(self, policy: Policy, method: str, subject: Subject, params: dict[str, Any] | None = None) -> int | None:
        """The refusal's code, or None when the request reached the backend."""
        try:
            _, d = self.start(policy, method, subject, params)
        except JsonRpcError as e:
            return e.code
        if d.called:
            return self.failureResultOf(d, JsonRpcError).value.code
        return None

    def answer(self, backend: str, result: Any = None) -> None:
        self.surface.backends[backend].calls[-1].callback(result if result is not None else {"contents": []})


class RoleTests(SurfaceTestCase):
    def test_aRoleSeesOnlyItsPromptsAndResourcesInListsAndRequests(self) -> None:
        policy = self.make({"roles": ROLES})
        surface = self.surface
        shown = {kind: [d.get("name") or d.get("uri") or d["uriTemplate"] for d in policy.listing(VIEWER, kind, surface.listing(kind), surface.entries[kind])] for kind in ("tool", "prompt", "resource", "template")}
        self.assertEqual(
            shown,
            {
                "tool": ["a__read"],
                "prompt": ["a__greet"],
                "resource": ["file:///srv/docs/readme.md", "test://static/resource/1"],
                "template": ["file:///srv/docs/{path}", "test://static/resource/{id}"],
            },
        )
        methods = {"tool": "tools/call", "prompt": "prompts/get", "resource": "resources/read", "template": "completion/complete"}
        for kind, entries in surface.entries.items():
            for name in entries:
                subject = surface.subject(kind, name)
                self.assertEqual(policy.visible(VIEWER, subject), name in shown[kind], subject)
                code = self.code(policy, methods[kind], subject)
                self.assertEqual(code, None if name in shown[kind] else errors.ACCESS_DENIED, subject)
        refused = [r for r in self.audit.records if r["decision"] == "deny"]
        self.assertEqual(
            {(r["kind"], r["subject"]) for r in refused},
            {("tool", "a__write"), ("tool", "b__x"), ("prompt", "a__secret_plan"), ("prompt", "b__summary"),
             ("resource", "file:///srv/private/keys.txt"), ("template", "file:///srv/private/{name}")},
        )  # fmt: skip

    def test_theRefusalNamesTheSubjectAsItsKindDoes(self) -> None:
        policy = self.make({"roles": ROLES})
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "prompts/get", self.surface.subject("prompt", "b__summary"), {}, None)
        self.assertEqual((e.code, e.data), (errors.ACCESS_DENIED, {"prompt": "b__summary"}))
        self.assertEqual(e.message, "'vera' (roles: viewer) may not get 'b__summary'")
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "resources/read", self.surface.read("file:///srv/private/keys.txt"), {}, None)
        self.assertEqual((e.code, e.data), (errors.ACCESS_DENIED, {"uri": "file:///srv/private/keys.txt"}))
        self.assertEqual(e.message, "role 'viewer' denies 'file:///srv/private/keys.txt'")
        template = self.surface.subject("template", "file:///srv/private/{name}")
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "completion/complete", template, {}, None)
        self.assertEqual(e.data, {"uriTemplate": "file:///srv/private/{name}"})

    def test_aStarInAURIPatternCrossesSlashes(self) -> None:
        policy = self.make({"roles": ROLES})
        self.assertIsNone(self.code(policy, "resources/read", self.surface.read("file:///srv/docs/deep/down/there.md")))
        self.assertEqual(self.code(policy, "resources/read", self.surface.read("file:///srv/other.md")), errors.ACCESS_DENIED)

    def test_denyOnURIsSeesThemPercentDecodedAndFolded(self) -> None:
        """C{%70rivate} and C{PRIVATE} cannot slip past C{*private*}; allow rules still match only what was written."""
        policy = self.make({"roles": ROLES})
        for uri in ["file:///srv/docs/%70rivate.md", "file:///srv/docs/PRIVATE.md", "file:///srv/docs/Private.md"]:
            self.assertEqual(self.code(policy, "resources/read", self.surface.read(uri)), errors.ACCESS_DENIED, uri)
        self.assertEqual(self.code(policy, "resources/read", self.surface.read("file:///srv/%64ocs/readme.md")), errors.ACCESS_DENIED)

    def test_dotSegmentsCannotClimbOutOfAnAllowedPath(self) -> None:
        """C{file:///srv/docs/*} does not allow what a server that resolves C{..} would read outside it."""
        policy = self.make({"roles": ROLES})
        for uri in [
            "file:///srv/docs/../../etc/passwd",
            "file:///srv/docs/%2e%2e/%2E%2E/etc/passwd",
            "file:///srv/docs/..%2f..%2fetc/passwd",
            "file:///srv/docs/..\\..\\etc/passwd",
            "file:///srv/docs/./../x",
            "file:///srv/docs/..",
        ]:
            self.assertEqual(self.code(policy, "resources/read", self.surface.read(uri)), errors.ACCESS_DENIED, uri)
        for uri in ["file:///srv/docs/a/../b.md", "file:///srv/docs/./b.md", "file:///srv/docs/a%20b.md", "file:///srv/docs/x?q=../../y"]:
            self.assertIsNone(self.code(policy, "resources/read", self.surface.read(uri)), uri)

    def test_denyOnURIsSeesThemWithDotSegmentsResolved(self) -> None:
        policy = self.make({"roles": {"viewer": {"resources": {"allow": ["*"], "deny": ["file:///etc/*"]}}}})
        self.assertEqual(self.code(policy, "resources/read", self.surface.read("file:///srv/../etc/passwd")), errors.ACCESS_DENIED)
        self.assertEqual(self.code(policy, "resources/read", self.surface.read("file:///srv/%2e%2e/etc/passwd")), errors.ACCESS_DENIED)

    def test_denyOnURIsSeesTheBackendOwnURI(self) -> None:
        """A URI the gateway renamed (two backends offered it) is still denied by the backend's own URI."""
        policy = self.make({"roles": {"viewer": {"resources": {"allow": ["*"], "deny": ["file:///etc/*"]}}}})
        renamed = Subject("resource", "a+file:///etc/passwd", "a", "file:///etc/passwd")
        self.assertEqual(self.code(policy, "resources/read", renamed), errors.ACCESS_DENIED)

    def test_aBareServerNameCoversEveryResourceOfThatServerOnly(self) -> None:
        policy = self.make({"roles": ROLES})
        self.assertIsNone(self.code(policy, "resources/read", self.surface.read("test://anything/at/all", "b")))
        self.assertEqual(self.code(policy, "resources/read", self.surface.read("test://anything/at/all", "a")), errors.ACCESS_DENIED)

    def test_anUnknownRoleSeesNothing(self) -> None:
        policy = self.make({"roles": ROLES}, Principal(name="g", roles=("ghost",), source="config"))
        for kind in ("prompt", "resource", "template"):
            self.assertEqual(policy.listing(self.who[0], kind, self.surface.listing(kind), self.surface.entries[kind]), [])


class CompatibilityTests(SurfaceTestCase):
    def test_anExistingRoleKeepsItsToolsAndSeesNoPromptsOrResources(self) -> None:
        """
        A role written before prompts and resources were passed (C{allow},
        C{deny} over tools): the same tools as before, and no prompt or
        resource until the role names them.
        """
        policy = self.make({"roles": ROLES}, DEV)
        surface = self.surface
        tools = policy.listing(DEV, "tool", surface.tools.listing, surface.tools.entries)
        self.assertEqual([t["name"] for t in tools], ["a__read", "a__write", "b__x"])
        for kind in ("prompt", "resource", "template"):
            self.assertEqual(policy.listing(DEV, kind, surface.listing(kind), surface.entries[kind]), [], kind)
        self.assertIsNone(self.code(policy, "tools/call", surface.subject("tool", "b__x")))
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "prompts/get", surface.subject("prompt", "a__greet"), {}, None)
        self.assertEqual((e.code, e.message), (errors.ACCESS_DENIED, "'dan' (roles: dev) may not get 'a__greet'"))

    def test_theNewBeginChecksToolArgumentsAgainstTheCatalog(self) -> None:
        policy = self.make({"roles": ROLES})
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "tools/call", self.surface.subject("tool", "a__read"), {"arguments": {"n": "x"}}, None)
        self.assertEqual((e.code, e.data["path"]), (INVALID_PARAMS, "/n"))
        self.assertEqual(self.surface.backends["a"].calls, [])
        for stray in [Subject("tool", "a__nope", "a", "nope"), Subject("tool", "a__read", "b", "read")]:
            e = self.assertRaises(JsonRpcError, policy.begin, "s", "tools/call", stray, {}, None)
            self.assertEqual((e.code, e.message), (INVALID_PARAMS, f"Unknown tool: {stray.exposed!r}"))

    def test_withoutIdentityEveryoneSeesEverythingAtNoCost(self) -> None:
        rules = parse_policy({"limits": {"principal": {"rate": 100}}}, None, [], {"a", "b"})
        policy = Policy(rules, "__", Clock())
        surface = Surface()
        for kind in ("tool", "prompt", "resource", "template"):
            listing = surface.listing(kind)
            self.assertIs(policy.listing(LOCAL, kind, listing, surface.entries[kind]), listing)
        self.assertTrue(policy.visible(LOCAL, surface.subject("prompt", "a__secret_plan")))
        self.assertTrue(Policy(PolicyConfig(), "__", Clock()).visible(LOCAL, surface.subject("prompt", "a__secret_plan")))


class KillSwitchTests(SurfaceTestCase):
    CONFIG = {"roles": ROLES, "killSwitch": {"prompts": ["a__greet"], "resources": ["*readme*"], "tools": ["a__*"]}}

    def test_promptsAndResourcesHaveTheirOwnLists(self) -> None:
        policy = self.make(self.CONFIG, Principal(name="ada", roles=("admin",), source="config"))
        surface = self.surface
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "prompts/get", surface.subject("prompt", "a__greet"), {}, None)
        self.assertEqual((e.code, e.message), (errors.TOOL_DISABLED, "prompt 'a__greet' is disabled by the kill switch"))
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "resources/read", surface.read("file:///srv/docs/readme.md"), {}, None)
        self.assertEqual((e.code, e.message), (errors.TOOL_DISABLED, "resource 'file:///srv/docs/readme.md' is disabled by the kill switch"))
        # killSwitch.tools (a__*) covers tools only, not the backend's prompts.
        self.assertIsNone(self.code(policy, "prompts/get", surface.subject("prompt", "a__secret_plan")))
        self.assertEqual(self.code(policy, "tools/call", surface.subject("tool", "a__read")), errors.TOOL_DISABLED)
        self.assertEqual(policy.kill_switch()["prompts"], ["a__greet"])
        self.assertEqual(policy.kill_switch()["resources"], ["*readme*"])

    def test_theLocalPrincipalLosesTheFastPathOnlyForTheKindThatIsKilled(self) -> None:
        rules = parse_policy({"killSwitch": {"resources": ["*readme*"]}}, None, [], {"a", "b"})
        policy = Policy(rules, "__", Clock())
        surface = Surface()
        prompts = surface.listing("prompt")
        self.assertIs(policy.listing(LOCAL, "prompt", prompts, surface.entries["prompt"]), prompts)
        shown = policy.listing(LOCAL, "resource", surface.listing("resource"), surface.entries["resource"])
        self.assertEqual([d["uri"] for d in shown], ["file:///srv/private/keys.txt", "test://static/resource/1"])

    def test_aKilledBackendOrPrincipalStopsEveryKind(self) -> None:
        policy = self.make({"roles": ROLES, "killSwitch": {"backends": ["b"]}})
        self.assertEqual(self.code(policy, "resources/read", self.surface.read("test://static/resource/1", "b")), errors.BACKEND_DISABLED)
        self.assertEqual(self.code(policy, "completion/complete", self.surface.subject("template", "test://static/resource/{id}")), errors.BACKEND_DISABLED)
        self.assertIn("backend 'b' is disabled", policy.reverse_refusal(VIEWER, "b", "sampling/createMessage") or "")
        policy.set_kill("principal", "vera", True)
        self.assertEqual(self.code(policy, "prompts/get", self.surface.subject("prompt", "a__greet")), errors.PRINCIPAL_DISABLED)
        self.assertIn("principal 'vera' is disabled", policy.reverse_refusal(VIEWER, "a", "roots/list") or "")

    def test_runTimeKillsOfPromptsAndResourcesHideThemAndSurviveAReload(self) -> None:
        policy = self.make({"roles": ROLES})
        surface = self.surface
        policy.set_kill("resource", "file:///srv/docs/*", True)
        policy.set_kill("prompt", "a__greet", True)
        self.assertEqual([d["uri"] for d in policy.listing(VIEWER, "resource", surface.listing("resource"), surface.entries["resource"])], ["test://static/resource/1"])
        self.assertEqual(policy.listing(VIEWER, "prompt", surface.listing("prompt"), surface.entries["prompt"]), [])
        successor = Policy(policy.rules, "__", self.clock, lambda peer: VIEWER, self.audit)
        successor.inherit(policy)
        self.assertFalse(successor.visible(VIEWER, surface.subject("prompt", "a__greet")))
        self.assertFalse(successor.visible(VIEWER, surface.subject("template", "file:///srv/docs/{path}")))
        successor.set_kill("prompt", "a__greet", False)
        self.assertTrue(successor.visible(VIEWER, surface.subject("prompt", "a__greet")))

    def test_aReadWaitingForASlotIsCheckedAgainWhenItGetsOne(self) -> None:
        policy = self.make({"roles": ROLES, "concurrency": {"backends": {"a": {"max": 1, "queue": 1}}}})
        readme = self.surface.read("file:///srv/docs/readme.md")
        _, first = self.start(policy, "resources/read", readme)
        _, waiting = self.start(policy, "resources/read", readme)
        policy.set_kill("resource", "*readme*", True)
        self.answer("a")
        self.successResultOf(first)
        self.assertEqual(self.failureResultOf(waiting, JsonRpcError).value.code, errors.TOOL_DISABLED)
        self.assertEqual(len(self.surface.backends["a"].calls), 1)
        self.assertEqual([(r["decision"], r["error_code"]) for r in self.audit.records], [("deny", errors.TOOL_DISABLED), ("allow", None)])


class LimitTests(SurfaceTestCase):
    def test_thePrincipalRateLimitCountsEveryKind(self) -> None:
        policy = self.make({"roles": {"viewer": ROLES["viewer"]}, "limits": {"principal": {"rate": 1, "burst": 3}}})
        surface = self.surface
        self.assertIsNone(self.code(policy, "tools/call", surface.subject("tool", "a__read")))
        self.assertIsNone(self.code(policy, "prompts/get", surface.subject("prompt", "a__greet")))
        self.assertIsNone(self.code(policy, "resources/read", surface.read("file:///srv/docs/readme.md")))
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "resources/read", surface.read("file:///srv/docs/readme.md"), {}, None)
        self.assertEqual((e.code, e.data), (errors.RATE_LIMITED, {"retryAfter": 1.0, "limit": "principal"}))
        self.assertEqual(self.code(policy, "prompts/get", surface.subject("prompt", "a__greet")), errors.RATE_LIMITED)
        self.clock.advance(1)
        self.assertIsNone(self.code(policy, "prompts/get", surface.subject("prompt", "a__greet")))

    def test_theBackendRateLimitCountsEveryRequestToIt(self) -> None:
        policy = self.make({"roles": {"viewer": ROLES["viewer"]}, "limits": {"backends": {"a": {"rate": 0.5, "burst": 2}}}})
        surface = self.surface
        self.assertIsNone(self.code(policy, "prompts/get", surface.subject("prompt", "a__greet")))
        self.assertIsNone(self.code(policy, "resources/read", surface.read("file:///srv/docs/readme.md")))
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "completion/complete", surface.subject("template", "file:///srv/docs/{path}"), {}, None)
        self.assertEqual(e.data["limit"], "backend")
        self.assertIsNone(self.code(policy, "resources/read", surface.read("test://static/resource/1", "b")))  # another backend

    def test_perToolLimitsLeaveOtherKindsAlone(self) -> None:
        """C{limits.tools} and C{concurrency.tools} match tool names only, even when a prompt's name matches the pattern."""
        policy = self.make(
            {
                "roles": {"viewer": {**ROLES["viewer"], "allow": ["*"]}},
                "limits": {"tools": [{"tool": "a__*", "rate": 0.001, "burst": 1}]},
                "concurrency": {"tools": [{"tool": "a__*", "max": 1}]},
            }
        )
        surface = self.surface
        for _ in range(3):
            self.assertIsNone(self.code(policy, "prompts/get", surface.subject("prompt", "a__greet")))
        self.assertEqual(len(surface.backends["a"].calls), 3)  # three at once: no tool slot held them back
        self.assertIsNone(self.code(policy, "tools/call", surface.subject("tool", "a__read")))
        self.assertEqual(self.code(policy, "tools/call", surface.subject("tool", "a__read")), errors.RATE_LIMITED)

    def test_backendConcurrencyQueuesAndRefusesReadsAndGets(self) -> None:
        policy = self.make({"roles": {"viewer": ROLES["viewer"]}, "concurrency": {"backends": {"a": {"max": 1, "queue": 1, "queueTimeout": 5}}}})
        surface = self.surface
        backend = surface.backends["a"]
        _, read = self.start(policy, "resources/read", surface.read("file:///srv/docs/readme.md"))
        _, get = self.start(policy, "prompts/get", surface.subject("prompt", "a__greet"))
        self.assertEqual(len(backend.calls), 1)
        e = self.assertRaises(JsonRpcError, self.start, policy, "resources/read", surface.read("file:///srv/docs/readme.md"))
        self.assertEqual((e.code, e.data), (errors.BUSY, {"backend": "a"}))
        self.answer("a")
        self.successResultOf(read)
        self.assertEqual(len(backend.calls), 2)
        self.answer("a", {"messages": []})
        self.successResultOf(get)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(policy._backend_slots["a"].held, 0)

    def test_theBreakerCountsResourceReads(self) -> None:
        policy = self.make({"roles": {"viewer": ROLES["viewer"]}, "breaker": {"failures": 2, "openSeconds": 10}})
        surface = self.surface
        for _ in range(2):
            _, d = self.start(policy, "resources/read", surface.read("file:///srv/docs/readme.md"))
            surface.backends["a"].calls[-1].errback(errors.backend_error(errors.BACKEND_TIMEOUT, "a", "timed out"))
            self.failureResultOf(d)
        e = self.assertRaises(JsonRpcError, self.start, policy, "prompts/get", surface.subject("prompt", "a__greet"))
        self.assertEqual((e.code, e.data["backend"]), (errors.CIRCUIT_OPEN, "a"))
        # The backend's own "not found" is an answer: it does not count.
        self.clock.advance(10)
        _, d = self.start(policy, "resources/read", surface.read("file:///srv/docs/gone.md"))
        surface.backends["a"].calls[-1].errback(JsonRpcError(RESOURCE_NOT_FOUND, "Resource not found"))
        self.failureResultOf(d)
        self.assertEqual(policy.breaker("a").state, "closed")


class AuditTests(SurfaceTestCase):
    def test_aResourceReadRecord(self) -> None:
        policy = self.make({"roles": ROLES})
        _, d = self.start(policy, "resources/read", self.surface.read("file:///srv/docs/readme.md"), {"uri": "file:///srv/docs/readme.md"})
        self.clock.advance(0.5)
        self.answer("a")
        self.successResultOf(d)
        r = self.audit.records[-1]
        self.assertEqual(
            {k: r[k] for k in ("method", "kind", "subject", "tool", "backend", "principal", "roles", "session", "decision", "outcome", "latency_ms", "result_bytes", "arguments_digest")},
            {"method": "resources/read", "kind": "resource", "subject": "file:///srv/docs/readme.md", "tool": None, "backend": "a",
             "principal": "vera", "roles": ["viewer"], "session": "s1", "decision": "allow", "outcome": "ok", "latency_ms": 500.0,
             "result_bytes": 7, "arguments_digest": None},
        )  # fmt: skip

    def test_aPromptGetKeepsOnlyTheDigestOfItsArguments(self) -> None:
        policy = self.make({"roles": ROLES})
        arguments = {"who": "hunter2"}
        _, d = self.start(policy, "prompts/get", self.surface.subject("prompt", "a__greet"), {"name": "a__greet", "arguments": arguments})
        self.answer("a", {"messages": []})
        self.successResultOf(d)
        r = self.audit.records[-1]
        self.assertEqual((r["method"], r["kind"], r["subject"], r["tool"]), ("prompts/get", "prompt", "a__greet", None))
        self.assertEqual(r["arguments_digest"], digest_arguments(arguments))
        self.assertNotIn("hunter2", json.dumps(self.audit.records))

    def test_recordArgumentsKeepsPromptArgumentsToo(self) -> None:
        policy = self.make({"roles": ROLES}, record_arguments=True)
        self.start(policy, "prompts/get", self.surface.subject("prompt", "a__greet"), {"arguments": {"who": "world"}})
        self.assertEqual(policy.audit.records, [])  # type: ignore[union-attr]
        self.answer("a", {"messages": []})
        self.assertEqual(self.audit.records[-1]["arguments"], {"who": "world"})

    def test_aCompletionRecordNamesItsReference(self) -> None:
        policy = self.make({"roles": ROLES})
        argument = {"name": "path", "value": "rea"}
        params = {"ref": {"type": "ref/resource", "uri": "file:///srv/docs/{path}"}, "argument": argument}
        _, d = self.start(policy, "completion/complete", self.surface.subject("template", "file:///srv/docs/{path}"), params)
        self.answer("a", {"completion": {"values": ["readme.md"]}})
        self.successResultOf(d)
        r = self.audit.records[-1]
        self.assertEqual((r["method"], r["kind"], r["subject"], r["backend"]), ("completion/complete", "template", "file:///srv/docs/{path}", "a"))
        self.assertEqual(r["arguments_digest"], digest_arguments(argument))

    def test_promptArgumentsThatAreNotAnObjectAreRefused(self) -> None:
        policy = self.make({"roles": ROLES})
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "prompts/get", self.surface.subject("prompt", "a__greet"), {"arguments": ["x"]}, None)
        self.assertEqual((e.code, e.message), (INVALID_PARAMS, "Invalid params: prompts/get arguments must be an object"))
        self.assertEqual(self.audit.records[-1]["decision"], "deny")

    def test_aURIKeepsItsPathButNotItsSecrets(self) -> None:
        policy = self.make({"roles": {"viewer": {"resources": {"allow": ["*"]}}}})
        uri = "https://bob:pa55@api.example.com/reports/q3.csv?token=abc123&page=2"
        self.start(policy, "resources/read", self.surface.read(uri))
        self.answer("a")
        self.assertEqual(self.audit.records[-1]["subject"], "https://bob:[REDACTED]@api.example.com/reports/q3.csv?token=[REDACTED]&page=2")
        self.assertNotIn("abc123", json.dumps(self.audit.records))
        self.assertNotIn("pa55", json.dumps(self.audit.records))

    def test_aRefusedURIKeepsItsSecretsOutOfTheReasonToo(self) -> None:
        policy = self.make({"roles": {"viewer": {"resources": {"allow": ["file:///*"], "deny": ["*secret*"]}}}})
        for uri in ["https://api.example.com/secret/x?token=abc123", "https://bob:pa55@api.example.com/other"]:
            e = self.assertRaises(JsonRpcError, policy.begin, "s", "resources/read", self.surface.read(uri), {}, None)
            self.assertEqual(e.data, {"uri": uri})  # the client gets back the URI it sent
        e = policy.refuse_unknown("s", "resources/read", "resource", "x://h/y?api_key=abc123")
        self.assertEqual(e.message, "Resource not found: 'x://h/y?api_key=[REDACTED]'")
        self.assertIn("'https://api.example.com/secret/x?token=[REDACTED]'", self.audit.records[0]["reason"])
        self.assertEqual(len(self.audit.records), 3)
        trail = json.dumps(self.audit.records)
        self.assertNotIn("abc123", trail)
        self.assertNotIn("pa55", trail)

    def test_everyKindOfListingHasItsRecord(self) -> None:
        policy = self.make({"roles": ROLES})
        for kind, method in [("tool", "tools/list"), ("prompt", "prompts/list"), ("resource", "resources/list"), ("template", "resources/templates/list")]:
            shown = policy.listing(VIEWER, kind, self.surface.listing(kind), self.surface.entries[kind])
            policy.audit_listing("s1", kind, VIEWER, len(shown), len(self.surface.listing(kind)))
            r = self.audit.records[-1]
            self.assertEqual((r["method"], r["kind"], r["principal"], r["outcome"]), (method, kind, "vera", "ok"))
        self.assertEqual(self.audit.records[-1]["reason"], "2 of 3 resource template(s) visible")

    def test_unknownSubjectsAreRefusedAndAudited(self) -> None:
        policy = self.make({"roles": ROLES})
        cases = [
            ("tools/call", "tool", "a__nope", INVALID_PARAMS, "Unknown tool: 'a__nope'", {"tool": "a__nope"}),
            ("prompts/get", "prompt", "a__nope", INVALID_PARAMS, "Unknown prompt: 'a__nope'", {"prompt": "a__nope"}),
            ("resources/read", "resource", "x://nope", RESOURCE_NOT_FOUND, "Resource not found: 'x://nope'", {"uri": "x://nope"}),
            ("completion/complete", "template", "x://{nope}", INVALID_PARAMS, "Unknown resource template: 'x://{nope}'", {"uriTemplate": "x://{nope}"}),
        ]
        for method, kind, name, code, message, data in cases:
            e = policy.refuse_unknown("s1", method, kind, name, None)
            self.assertEqual((e.code, e.message, e.data), (code, message, data))
            r = self.audit.records[-1]
            self.assertEqual((r["method"], r["kind"], r["subject"], r["principal"], r["decision"], r["error_code"]), (method, kind, name, "vera", "deny", code))
        self.assertEqual(self.audit.records[0]["tool"], "a__nope")

    def test_anUnknownToolIsRecordedWithItsName(self) -> None:
        policy = self.make({"roles": ROLES})
        self.assertRaises(JsonRpcError, begin_tool, policy, "s1", {"name": "a__nope"}, self.surface.tools)
        r = self.audit.records[-1]
        self.assertEqual((r["method"], r["kind"], r["subject"], r["tool"], r["error_code"]), ("tools/call", "tool", "a__nope", "a__nope", INVALID_PARAMS))

    def test_aCallerWhoCannotBeIdentifiedIsRefusedForThatFirst(self) -> None:
        def broken(peer: Any) -> Principal:
            raise IdentityError("the token expired")

        policy = self.make({"roles": ROLES})
        policy._authenticate = broken
        e = policy.refuse_unknown("s1", "prompts/get", "prompt", "a__nope", None)
        self.assertEqual(e.code, errors.AUTHENTICATION_FAILED)
        e = policy.refuse_request("s1", "resources/read", INVALID_PARAMS, "Invalid params: resources/read needs params.uri, a string")
        self.assertEqual(e.code, errors.AUTHENTICATION_FAILED)
        e = self.assertRaises(JsonRpcError, policy.begin, "s", "resources/read", self.surface.read("file:///srv/docs/readme.md"), {}, None)
        self.assertEqual(e.code, errors.AUTHENTICATION_FAILED)
        self.assertEqual([r["error_code"] for r in self.audit.records], [errors.AUTHENTICATION_FAILED] * 3)

    def test_aFailingTrailRefusesEveryKind(self) -> None:
        policy = self.make({"roles": ROLES})
        self.audit.healthy = False
        self.assertEqual(self.code(policy, "prompts/get", self.surface.subject("prompt", "a__greet")), errors.AUDIT_UNAVAILABLE)
        self.assertEqual(self.code(policy, "resources/read", self.surface.read("file:///srv/docs/readme.md")), errors.AUDIT_UNAVAILABLE)
        self.assertEqual(policy.refuse_unknown("s", "resources/read", "resource", "x://y").code, errors.AUDIT_UNAVAILABLE)
        self.assertIn("audit trail", policy.reverse_refusal(VIEWER, "a", "sampling/createMessage") or "")


class CompletionTests(SurfaceTestCase):
    def test_aCompletionIsForReferencesThePrincipalMaySee(self) -> None:
        policy = self.make({"roles": ROLES})
        surface = self.surface
        self.assertTrue(policy.visible(VIEWER, surface.subject("prompt", "a__greet")))
        self.assertFalse(policy.visible(VIEWER, surface.subject("prompt", "a__secret_plan")))
        self.assertTrue(policy.visible(VIEWER, surface.subject("template", "test://static/resource/{id}")))
        self.assertFalse(policy.visible(VIEWER, surface.subject("template", "file:///srv/private/{name}")))
        self.assertFalse(policy.visible(DEV, surface.subject("template", "test://static/resource/{id}")))

    def test_visibilityIsCachedAndForgottenWhenTheCatalogChanges(self) -> None:
        policy = self.make({"roles": ROLES})
        subject = self.surface.subject("prompt", "a__greet")
        policy.visible(VIEWER, subject)
        self.assertIn((VIEWER, "prompt", "a__greet", "a", "greet"), policy._decisions)
        policy.catalog_changed(self.surface.tools.entries)
        self.assertEqual(policy._decisions, {})


class ServerRequestTests(SurfaceTestCase):
    CONFIG = {
        "roles": {
            "viewer": {"serverRequests": {"sampling": {"deny": ["b"]}, "elicitation": {"allow": ["a"]}}},
            "dev": {"allow": ["*"]},
            "nosampling": {"serverRequests": {"sampling": {"deny": ["*"]}}},
        }
    }

    def test_rolesSayWhichBackendsMaySendWhichRequests(self) -> None:
        policy = self.make(self.CONFIG)
        refusal = policy.reverse_refusal
        self.assertIsNone(refusal(VIEWER, "a", "sampling/createMessage"))
        self.assertEqual(
            refusal(VIEWER, "b", "sampling/createMessage"),
            "role 'viewer' does not let backend 'b' send sampling/createMessage (roles.viewer.serverRequests.sampling.deny)",
        )
        self.assertIsNone(refusal(VIEWER, "a", "elicitation/create"))
        self.assertEqual(
            refusal(VIEWER, "b", "elicitation/create"),
            "no role of 'vera' (roles: viewer) lets backend 'b' send elicitation/create (roles.<name>.serverRequests.elicitation)",
        )
        self.assertIsNone(refusal(VIEWER, "b", "roots/list"))  # a family the role does not mention: every backend

    def test_aRoleWithoutServerRequestsLetsEveryBackendThrough(self) -> None:
        policy = self.make(self.CONFIG)
        for method in ("sampling/createMessage", "elicitation/create", "roots/list"):
            self.assertIsNone(policy.reverse_refusal(DEV, "b", method))

    def test_oneRoleDenyingIsEnough(self) -> None:
        policy = self.make(self.CONFIG)
        both = Principal(name="m", roles=("dev", "nosampling"), source="config")
        self.assertIn("roles.nosampling.serverRequests.sampling.deny", policy.reverse_refusal(both, "a", "sampling/createMessage") or "")
        self.assertIsNone(policy.reverse_refusal(both, "a", "elicitation/create"))

    def test_anUnknownRoleMayNotBeAsked(self) -> None:
        policy = self.make(self.CONFIG)
        ghost = Principal(name="g", roles=("ghost",), source="config")
        self.assertIn("no role of 'g'", policy.reverse_refusal(ghost, "a", "roots/list") or "")

    def test_theLocalPrincipalAndAnInactivePolicyRefuseNothing(self) -> None:
        policy = self.make(self.CONFIG)
        self.assertIsNone(policy.reverse_refusal(LOCAL, "b", "elicitation/create"))
        self.assertIsNone(Policy(PolicyConfig(), "__", Clock()).reverse_refusal(LOCAL, "b", "sampling/createMessage"))

    def test_oneRecordPerRequestAndNeverItsContent(self) -> None:
        policy = self.make(self.CONFIG)
        policy.audit_reverse("s1", VIEWER, "a", "sampling/createMessage", "ok", latency_ms=12.5, cause="abc-1")
        policy.audit_reverse("s2", DEV, "b", "elicitation/create", "error", error_code=errors.BACKEND_TIMEOUT, latency_ms=60000.0)
        policy.audit_reverse("s1", VIEWER, "b", "sampling/createMessage", "refused", error_code=-32600, reason="role 'viewer' does not let backend 'b' ...")
        policy.audit_reverse("-", None, "b", "roots/list", "refused", error_code=-32600, reason="no client of backend 'b' has a call in flight")
        ok, error, refused, unrouted = self.audit.records
        self.assertEqual(
            {k: ok[k] for k in ("method", "kind", "backend", "principal", "roles", "session", "decision", "outcome", "error_code", "latency_ms", "cause", "subject", "tool", "arguments_digest")},
            {"method": "sampling/createMessage", "kind": "server_request", "backend": "a", "principal": "vera", "roles": ["viewer"], "session": "s1",
             "decision": "allow", "outcome": "ok", "error_code": None, "latency_ms": 12.5, "cause": "abc-1", "subject": None, "tool": None, "arguments_digest": None},
        )  # fmt: skip
        self.assertEqual((error["outcome"], error["error_code"], error["principal"]), ("error", errors.BACKEND_TIMEOUT, "dan"))
        self.assertEqual((refused["decision"], refused["outcome"], refused["error_code"]), ("deny", None, -32600))
        self.assertEqual((unrouted["principal"], unrouted["session"], unrouted["reason"]), (None, "-", "no client of backend 'b' has a call in flight"))
        self.assertNotIn("cause", error)

    def test_refusedServerRequestsAreWithinTheRefusalBudget(self) -> None:
        policy = self.make({**self.CONFIG, "limits": {"refusals": {"rate": 0.001, "burst": 2, "reportSeconds": 60}}})
        for _ in range(5):
            policy.audit_reverse("s1", VIEWER, "b", "sampling/createMessage", "refused", error_code=-32600, reason="no")
        self.assertEqual(len(self.audit.records), 2)
        self.clock.advance(60)
        self.assertEqual(self.audit.records[-1]["method"], "policy/refusals-suppressed")
        self.assertIn("3 refusal(s)", self.audit.records[-1]["reason"])

    def test_anUnknownOutcomeIsAProgrammingError(self) -> None:
        policy = self.make(self.CONFIG)
        self.assertRaises(ValueError, policy.audit_reverse, "s1", VIEWER, "a", "sampling/createMessage", "declined")
        Policy(PolicyConfig(), "__", Clock()).audit_reverse("s", None, "a", "roots/list", "ok")  # no trail: nothing to do


@pytest.mark.parametrize(
    "pattern,uri,backend,fold,expected",
    [
        ("file:///srv/*", "file:///srv/a/b/c.txt", "a", False, True),  # * crosses /
        ("file:///srv/*.md", "file:///srv/a/b.md", "a", False, True),
        ("file:///srv/*.md", "file:///srv/a/b.txt", "a", False, False),
        ("file:///srv/?", "file:///srv/x", "a", False, True),
        ("file:///srv/?", "file:///srv/xy", "a", False, False),
        ("test://static/resource/[0-9]", "test://static/resource/7", "a", False, True),
        ("file:///srv/*", "FILE:///SRV/x", "a", False, False),  # allow rules are exact
        ("file:///srv/*", "FILE:///SRV/x", "a", True, True),  # deny rules and the kill switch fold
        ("file:///srv/{path}", "file:///srv/{path}", "a", False, True),  # a template, literally
        ("a", "anything://at/all", "a", False, True),  # a bare server name: that server's resources
        ("a", "anything://at/all", "b", False, False),
        ("a", "a", "b", False, False),
        ("A", "x://y", "a", True, True),
    ],
)
def test_uri_patterns(pattern: str, uri: str, backend: str, fold: bool, expected: bool) -> None:
    assert matches_uri(pattern, uri, backend, fold) is expected


def test_server_patterns_fold_like_the_kill_switch() -> None:
    assert server_matches(("Web-*",), "web_search") is True
    assert server_matches(("web",), "websearch") is False
    assert server_matches(("*",), "anything") is True
    assert server_matches((), "anything") is False


def test_redact_uri_leaves_plain_uris_alone() -> None:
    for uri in ["test://static/resource/1", "file:///srv/a=b.txt", "test:///x?page=2", "mailto:bob@example.com"]:
        assert redact_uri(uri) == uri
    assert redact_uri("https://h/x?api_key=1&q=2") == "https://h/x?api_key=[REDACTED]&q=2"


def test_config_problems_name_their_key_paths() -> None:
    problems: list[str] = []
    parse_policy(
        {
            "roles": {
                "viewer": {
                    "prompts": ["a__*"],
                    "resources": {"allow": ["file:///srv/ docs/*", "file:///[z-a]"], "grant": []},
                    "serverRequests": {"sampling": {"deny": ["nosuch"]}, "elicitation": {"allow": "a"}, "logging": {}},
                },
                "other": {"prompts": {"deny": ["bad pattern"]}, "serverRequests": {"roots": {"allow": ["*", "x]"]}}},
            },
            "killSwitch": {"prompts": ["a__[x"], "resources": ["file:///x]"], "templates": []},
        },
        None,
        problems,
        {"a"},
    )
    text = "\n".join(problems)
    for fragment in [
        "roles.viewer.prompts: expected a mapping with allow and/or deny (each a list of prompt-name patterns), got list",
        "roles.viewer.resources.allow[0]: expected a URI pattern without spaces or control characters",
        "roles.viewer.resources.allow[1]: 'file:///[z-a]' is not a valid pattern: the range z-a is backwards",
        "roles.viewer.resources.grant: unknown key",
        "roles.viewer.serverRequests.sampling.deny[0]: no server named 'nosuch' in mcpServers (known: a)",
        "roles.viewer.serverRequests.logging: unknown key (expected one of: sampling, elicitation, roots)",
        "roles.other.prompts.deny[0]: expected a pattern of A-Z a-z 0-9 _ -",
        "roles.other.serverRequests.roots.allow[1]: 'x]' is not a valid pattern",
        "killSwitch.prompts[0]: 'a__[x' is not a valid pattern",
        "killSwitch.resources[0]: 'file:///x]' is not a valid pattern",
        "killSwitch.templates: unknown key (expected one of: tools, prompts, resources, backends, principals)",
    ]:
        assert fragment in text, (fragment, problems)
    assert not any(p.startswith("roles.viewer.serverRequests.elicitation") for p in problems), problems  # one name is a list of one


def test_a_role_parses_into_its_parts() -> None:
    problems: list[str] = []
    rules = parse_policy(
        {"roles": {"viewer": {"allow": ["a"], "prompts": {"allow": ["a__*"]}, "resources": {"deny": ["*secret*"]}, "serverRequests": {"sampling": {"deny": ["a"]}, "roots": {"allow": []}}}}},
        None,
        problems,
        {"a"},
    )
    assert problems == []
    role = rules.roles["viewer"]
    assert (role.allow, role.prompts.allow, role.prompts.deny) == (("a",), ("a__*",), ())
    assert (role.resources.allow, role.resources.deny) == ((), ("*secret*",))
    assert (role.server_requests["sampling"].allow, role.server_requests["sampling"].deny) == (("*",), ("a",))
    assert role.server_requests["roots"].allow == ()  # allow: [] lets no server send roots/list
    assert "elicitation" not in role.server_requests


@pytest.mark.parametrize(
    "uri,resolved",
    [
        ("file:///srv/docs/readme.md", "file:///srv/docs/readme.md"),
        ("file:///srv/docs/../x", "file:///srv/x"),
        ("file:///../../x", "file:///x"),  # never above the root
        ("file:///srv/%2E%2e/x", "file:///x"),
        ("file:///srv/a%20b/../c", "file:///srv/c"),
        ("file:///srv/a%20b", "file:///srv/a%20b"),  # other escapes are kept
        ("https://h/a/./b/../c?x=../y#../z", "https://h/a/c?x=../y#../z"),  # the query and fragment are not a path
        ("https://h", "https://h"),
        ("urn:x:../y", "urn:x:../y"),
        ("no-scheme/../x", "no-scheme/../x"),
        ("file:////secret/k", "file:///secret/k"),  # empty segments are dropped ...
        ("file:///a//b/", "file:///a/b/"),  # ... but the root and a trailing slash kept
    ],
)
def test_resolved_uri(uri: str, resolved: str) -> None:
    from twisted_mcp.policy.decisions import resolved_uri

    assert resolved_uri(uri) == resolved
