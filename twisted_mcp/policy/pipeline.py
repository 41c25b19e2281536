"""
The governed point every request passes, in one documented order (each
refusal's code, from L{twisted_mcp.mcp.errors}, in brackets):

  1. identity      who is calling [AUTHENTICATION_FAILED]
  2. kill switch   a disabled principal, backend, tool, prompt or resource
                   [PRINCIPAL_DISABLED, BACKEND_DISABLED, TOOL_DISABLED]
  3. access        the caller's roles allow the subject [ACCESS_DENIED]; a
                   quarantined tool (pinning) is refused here too
                   [TOOL_QUARANTINED]
  4. arguments     tools only: against the tool's inputSchema [JSON-RPC's
                   INVALID_PARAMS, with the path]
  5. rate limits   per principal and per backend (every request), per
                   principal and tool (tools only) [RATE_LIMITED]
  6. concurrency   per backend (every request) and per tool (tools only),
                   with a bounded queue [BUSY]
  7. breaker       the backend's circuit breaker [CIRCUIT_OPEN]
  8. dispatch      the request goes to the backend
  9. audit         one record of the outcome (or of the refusal)

A request is about one L{Subject}: a tool (C{tools/call}), a prompt
(C{prompts/get}, a completion of its argument), a resource (C{resources/read},
subscriptions) or a resource template (a completion of its variable).  The
dispatch core resolves it, then asks L{Policy.begin}.  When the audit sink
is failing and the policy is to refuse, requests are refused
[AUDIT_UNAVAILABLE] rather than passed unaudited.  The same checks (2 and 3)
decide what the lists show, which completions are answered and what
requests are allowed, so they never disagree.

Requests a backend sends to a client (sampling, elicitation, roots) are
checked by L{Policy.reverse_refusal} and recorded by L{Policy.audit_reverse}:
who asked, which client answered and the outcome, never the content.

With shared state (L{twisted_mcp.state}; C{Policy(..., state=...)}), rate
limits (step 5, taken when the call is dispatched), concurrency slots
(leases) and, if configured, breakers hold across every replica; the kill
switch, approvals, quarantine and revoked tokens arrive as flags
(L{Policy.apply_flags}); while the flags cannot be read and the operator
chose to refuse, every request is refused after step 1
[STATE_UNAVAILABLE] (L{Policy.flags_problem}).  Without it (the default)
every check runs in this process, exactly as above.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Iterable

from twisted.internet.defer import fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.mcp import errors
from twisted_mcp.policy.argument_checks import ArgumentError, Validators
from twisted_mcp.policy.audit.records import digest_arguments, redact_uri
from twisted_mcp.policy.breaker import Breaker
from twisted_mcp.policy.call import AUDIT_REFUSAL, Call, _up, rate_refusal
from twisted_mcp.policy.decisions import decide, names_of, server_request_refusal
from twisted_mcp.policy.flags import read_flags, useful_approvals, write_approvals
from twisted_mcp.policy.limits import Slots, TokenBucket, forget_full
from twisted_mcp.policy.pinning import Pins, pinned_definitions
from twisted_mcp.policy.principal import IdentityError, Principal
from twisted_mcp.policy.refusals import CoalescedRefusal, RefusalBudget, describe
from twisted_mcp.policy.rules import PolicyConfig, any_match
from twisted_mcp.policy.shared_limits import LeaseSlots
from twisted_mcp.policy.subject import DATA_KEYS, LISTING_METHODS, NAME_KEYS, WORDS, Subject, original_of
from twisted_mcp.state.base import BucketSpec, SharedState
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, JsonRpcError

log = Logger()

LOCAL = Principal(name="local", roles=(), source="local", all_access=True)

#: Not in the decision cache (None there is a decision: allowed).
_UNDECIDED: Any = object()

#: Where the arguments of a request are, by method (their digest goes into
#: the audit record; their values only with C{audit.recordArguments}).
_ARGUMENTS = {"tools/call": "arguments", "prompts/get": "arguments", "completion/complete": "argument"}

#: What C{audit_reverse} accepts as the outcome of a request a backend sent a client.
REVERSE_OUTCOMES = ("ok", "error", "cancelled", "refused")


def _not_shared(failure: Failure, tool: str) -> None:
    log.warn(
        "tool {tool}: its quarantine could not be shared with the other replicas ({why}); it applies on this one",
        tool=tool,
        why=failure.getErrorMessage(),
    )


#: The source of L{Policy.epoch}.
_EPOCHS = itertools.count(1)


class Policy:
    """
    The checks, their state (buckets, slots, breakers, quarantine) and the
    audit trail.

    @param authenticate: given the session's L{Peer} (None for an unknown
        one), returns the caller's L{Principal} or raises L{IdentityError};
        None: the local principal, with every permission.
    @param audit: an L{AuditLog}, or None for no audit trail.
    @param state: what the replicas share (L{SharedState}); None: nothing,
        every check in this process (and a reload's policy keeps the
        state of the one it replaces, L{inherit}).
    """

    def __init__(
        self,
        rules: PolicyConfig,
        separator: str,
        clock: IReactorTime,
        authenticate: Callable[[Any], Principal] | None = None,
        audit: Any = None,
        state: SharedState | None = None,
    ) -> None:
        self.rules = rules
        self.separator = separator
        self.clock = clock
        self._authenticate = authenticate
        self.audit = audit
        self.validators = Validators()
        self.pins = Pins(rules.pinning, rules.lock_file)
        self.breakers: dict[str, Breaker] = {}
        self._principal_buckets: dict[str, TokenBucket] = {}
        self._tool_buckets: dict[tuple[str, int, str], TokenBucket] = {}
        self._backend_buckets: dict[str, TokenBucket] = {}
        self._backend_slots = {name: Slots(c.max, c.queue, c.queueTimeout, clock) for name, c in rules.conc_backends.items()}
        self._tool_slots: dict[tuple[int, str], Slots] = {}
        self._decisions: dict[tuple[Any, ...], tuple[int, str] | None] = {}
        #: Which per-tool rate and concurrency rules cover a tool (L{_tool_rules}).
        self._tool_rule_memo: dict[tuple[Any, ...], tuple[tuple[int, ...], tuple[int, ...]]] = {}
        #: Each backend's configured name prefix (None: the default), as
        #: last seen (L{note_backends}): deny rules and limits match a
        #: renamed tool under it with its own name too.
        self.prefixes: dict[str, str | None] = {}
        #: Bumped whenever what a principal may see can have changed (the
        #: kill switch, approvals, a new catalog), for views cached elsewhere.
        self.generation = 0
        #: What the rules decide, as of now: unique among every policy of the
        #: process, new only when decisions can change (this policy made by a
        #: reload, the kill switch, a pin approved or reviewed, a backend's
        #: prefix), not when one more is cached (as L{generation} is).
        self.epoch = next(_EPOCHS)
        #: The catalog's tools (exposed name -> entry), as last reviewed: the
        #: definitions arguments are checked against.
        self._tools: dict[str, Any] = {}
        self._prefix = os.urandom(4).hex()
        self._count = 0
        self._taken: list[TokenBucket] = []
        self.refusals: dict[int, int] = {}
        self.refusal_budget = RefusalBudget(rules.refusal_limit, clock, self._report_suppressed)
        #: The kill switch as thrown at run time (the admin endpoint), on
        #: top of the config's: kind ("principal", "backend", "tool",
        #: "prompt", "resource") -> names or patterns.
        self.kills: dict[str, set[str]] = {
            "principal": set(),
            "backend": set(),
            "tool": set(),
            "prompt": set(),
            "resource": set(),
        }
        #: False when nothing is configured: the gateway is a plain
        #: aggregator and calls skip the pipeline.
        self.active = rules.active or authenticate is not None or audit is not None
        #: The policy that replaced this one (a reload), for calls that
        #: started under this one and are checked again later.
        self.successor: Policy | None = None
        self._state_given = state is not None
        self._use_state(state if state is not None else SharedState())
        #: Token ids refused from now on (a JWT's jti, "sha256:" + hex of a
        #: static token): the shared C{revoked} flags; the identity checks read it.
        self.revoked: set[str] = set()
        self._flags_problem: str | None = None
        #: The approvals read from the shared flags (exposed name -> lock-file entry).
        self._approvals: dict[str, dict[str, Any]] = {}
        #: The quarantine this replica published (name -> reason).
        self._published: dict[str, str] = {}
        #: Malformed flags already logged.
        self._reported: set[tuple[str, str]] = set()
        self._applying = False
        self._next_flags: dict[str, dict[str, str]] | None = None

    def _use_state(self, state: SharedState) -> None:
        self.state = state
        self._rates = state.rates
        self._leases = state.leases
        #: Whether step 5 or 6 goes through the shared state.
        self._shared_limits = state.rates is not None or state.leases is not None
        self._lease_backends: dict[str, LeaseSlots] = {}
        self._lease_tools: dict[tuple[int, str], LeaseSlots] = {}

    @property
    def flags_problem(self) -> str | None:
        """
        Why the shared flags (kill switch, approvals...) cannot be read, set
        while the operator chose to refuse then (C{onUnavailable.killSwitch:
        refuse}): every request L{begin} checks, and every request a backend
        sends a client, is refused [STATE_UNAVAILABLE] with it.  None: no problem.
        """
        return self._flags_problem

    @flags_problem.setter
    def flags_problem(self, problem: str | None) -> None:
        self._flags_problem = problem
        if problem is not None:
            self.active = True  # the pipeline must run to refuse

    # -- identity and visibility -------------------------------------------

    def principal(self, peer: Any = None) -> Principal:
        """Who is calling; L{errors.GatewayError} (C{AUTHENTICATION_FAILED}) when that cannot be established."""
        if self._authenticate is None:
            return LOCAL
        try:
            return self._authenticate(peer)
        except IdentityError as e:
            raise errors.GatewayError(errors.AUTHENTICATION_FAILED, f"Authentication failed: {e.message}", {"reason": e.message})

    def decision(self, principal: Principal, subject: Subject) -> tuple[int, str] | None:
        """Why C{principal} may not see or use C{subject} (steps 2 and 3: an error code and a reason), or None."""
        key = (principal, subject.kind, subject.exposed, subject.backend, subject.original)
        try:
            return self._decisions[key]
        except KeyError:
            pass
        return self._decided(key, principal, subject)

    def _decided(self, key: tuple[Any, ...], principal: Principal, subject: Subject) -> tuple[int, str] | None:
        decision = decide(
            self.rules, self.kills, self.separator, self.pins, principal, subject, self.prefixes.get(subject.backend)
        )
        if len(self._decisions) > 100000:
            self._decisions.clear()
        self.generation += 1
        self._decisions[key] = decision
        return decision

    def visible(self, principal: Principal, subject: Subject) -> bool:
        """Whether C{principal} may see C{subject}: in lists, and as the reference of a completion."""
        if not self.active:
            return True
        return self.decision(principal, subject) is None

    def inherit(self, old: "Policy") -> None:
        """
        Keep the running state of every check whose rules did not change
        (a reload): tokens left in rate buckets, concurrency slots held by
        calls in flight, breakers, the run-time kill switch, the refusal
        counts and what is already quarantined (so it is not reported again).
        """
        new, was = self.rules, old.rules
        old.successor = self
        self.refusals = old.refusals
        if new.refusal_limit == was.refusal_limit:
            self.refusal_budget = old.refusal_budget
        else:
            old.refusal_budget.flush()
        if new.rate_principal == was.rate_principal:
            self._principal_buckets = old._principal_buckets
        if new.rate_tools == was.rate_tools:
            self._tool_buckets = old._tool_buckets
        for name, bucket in old._backend_buckets.items():
            if new.rate_backends.get(name) == was.rate_backends.get(name):
                self._backend_buckets[name] = bucket
        for name, slots in old._backend_slots.items():
            if new.conc_backends.get(name) == was.conc_backends.get(name):
                self._backend_slots[name] = slots
        if new.conc_tools == was.conc_tools:
            self._tool_slots = old._tool_slots
        if (new.breaker_failures, new.breaker_open) == (was.breaker_failures, was.breaker_open):
            self.breakers = dict(old.breakers)
        if (new.pinning, new.lock_file) == (was.pinning, was.lock_file):
            self.pins.quarantined = dict(old.pins.quarantined)
            self.pins.own = dict(old.pins.own)
        for kind, names in old.kills.items():
            for n in names:
                self.set_kill(kind, n, True)
        self._inherit_state(old)

    def _inherit_state(self, old: "Policy") -> None:
        """The shared state's part of L{inherit}: the store, the flags as last read, leases and waiters of unchanged limits."""
        if not self._state_given:
            self._use_state(old.state)
        if old.state is self.state:
            for name, leased in old._lease_backends.items():
                if self._backend_slots.get(name) is leased.local:
                    self._lease_backends[name] = leased
            if self._tool_slots is old._tool_slots:
                self._lease_tools = old._lease_tools
        self.revoked = old.revoked  # one set, whoever holds it
        self._flags_problem = old._flags_problem
        if old._flags_problem is not None:
            self.active = True
        self._published = old._published
        self._reported = old._reported
        self._approvals = dict(old._approvals)
        self._take_approvals(useful_approvals(self.pins.pinned, self._approvals, self._tools))
        self.pins.set_shared(old.pins.shared)
        publish = self._publish_breaker if self.state.breakers is not None else None
        for breaker in self.breakers.values():
            breaker.on_change = publish

    def current(self) -> "Policy":
        """The policy in force now: this one, or the last that replaced it."""
        policy = self
        while policy.successor is not None:
            policy = policy.successor
        return policy

    def set_kill(self, kind: str, name: str, disabled: bool) -> None:
        """Throw (or release) the kill switch for a principal, backend, tool, prompt or resource at run time."""
        names = self.kills[kind]
        if disabled:
            names.add(name)
        else:
            names.discard(name)
        self._decisions.clear()
        self.generation += 1
        self.epoch = next(_EPOCHS)
        # A change the rules cannot see makes the policy active.
        self.active = True

    def kill_switch(self) -> dict[str, list[str]]:
        """
        The kill switch in force: the config's and the run time's.  Prompts
        and resources are shown only when some are disabled (the shape
        stays what it was for a kill switch over tools only).
        """
        rules = self.rules
        shown = {
            "principals": sorted(set(rules.kill_principals) | self.kills["principal"]),
            "backends": sorted(set(rules.kill_backends) | self.kills["backend"]),
            "tools": sorted(set(rules.kill_tools) | self.kills["tool"]),
        }
        prompts = sorted(set(rules.kill_prompts) | self.kills["prompt"])
        resources = sorted(set(rules.kill_resources) | self.kills["resource"])
        if prompts:
            shown["prompts"] = prompts
        if resources:
            shown["resources"] = resources
        return shown

    def approve(self, names: list[str], entries: dict[str, Any]) -> list[str]:
        """Pin the current definitions of C{names} (the admin endpoint): write
        the lock file and lift their quarantine.  Returns the names pinned."""
        from twisted_mcp.policy.pinning import read_lock, write_lock

        chosen = [n for n in names if n in entries]
        if not chosen or self.pins.path is None:
            return []
        # What is on disk now (`twisted-mcp pin` may have run since start-up).
        try:
            on_disk = read_lock(self.pins.path)
        except FileNotFoundError:
            on_disk = {}
        except (OSError, ValueError) as e:
            raise ValueError(f"the lock file {self.pins.path} cannot be read ({e}); fix it or run `twisted-mcp pin`")
        kept = [(n, p.get("backend", ""), p.get("tool", ""), p) for n, p in on_disk.items() if n not in chosen]
        fresh = [(n, entries[n].backend.name, entries[n].tool, *pinned_definitions(entries[n])) for n in chosen]
        self.pins.pinned = write_lock(self.pins.path, fresh, kept)
        self.pins.error = None
        for n in chosen:
            self.pins.lift(n)
        self._decisions.clear()
        self.generation += 1
        self.epoch = next(_EPOCHS)
        return chosen

    def note_backends(self, backends: Iterable[Any]) -> None:
        """Remember the configured name prefix of each of C{backends}; cached decisions go when one changed."""
        for backend in backends:
            prefix = getattr(backend, "name_prefix", None)
            if self.prefixes.get(backend.name, prefix) != prefix:
                self._decisions.clear()
                self.generation += 1
                self.epoch = next(_EPOCHS)
            self.prefixes[backend.name] = prefix

    def catalog_changed(self, entries: dict[str, Any]) -> None:
        """
        The catalog was rebuilt (any kind): review the tools' pins, drop
        stale validators and every cached decision.  C{entries} are the
        catalog's tools.
        """
        self.note_backends({e.backend.name: e.backend for e in entries.values()}.values())
        self._decisions.clear()
        self.generation += 1
        self.epoch = next(_EPOCHS)
        self._tools = entries
        self.validators.forget(set(entries))
        self._take_approvals(useful_approvals(self.pins.pinned, self._approvals, entries))
        self._review()

    def _review(self) -> None:
        """Review the catalog's tools' pins: report (log, audit, and publish to the other replicas) what is newly quarantined."""
        entries = self._tools
        fresh = self.pins.review((name, *pinned_definitions(e)) for name, e in entries.items())
        if self.state.flags is not None:
            self._publish_quarantine(fresh)
        for exposed, why in fresh:
            entry = entries[exposed]
            action = "quarantined" if self.pins.mode == "enforce" else "not pinned (warn only)"
            log.warn("tool {tool} {action}: {why}", tool=exposed, action=action, why=why)
            self._audit(
                {
                    "method": "pinning/review",
                    "kind": "tool",
                    "subject": exposed,
                    "tool": exposed,
                    "backend": entry.backend.name,
                    "principal": "-",
                    "roles": [],
                    "session": "-",
                    "decision": "deny" if self.pins.mode == "enforce" else "allow",
                    "reason": why,
                    "outcome": None,
                    "error_code": errors.TOOL_QUARANTINED if self.pins.mode == "enforce" else None,
                    "latency_ms": None,
                    "result_bytes": None,
                    "arguments_digest": None,
                }
            )

    def _publish_quarantine(self, fresh: list[tuple[str, str]]) -> None:
        """
        Tell the other replicas what this one's review newly quarantined,
        and take back what it published that its review no longer finds
        (fire and forget: a failure is logged).
        """
        flags = self.state.flags
        assert flags is not None
        changes: list[tuple[str, str | None]] = list(fresh)
        for name, reason in list(self._published.items()):
            if name not in self.pins.own:
                del self._published[name]
                if self.pins.shared.get(name, reason) == reason:
                    changes.append((name, None))
        for name, why in changes:
            if why is not None:
                self._published[name] = why
            try:
                d = flags.set("quarantine", name, why)
            except Exception as e:
                d = fail(e)
            d.addErrback(_not_shared, name)

    def listing(
        self, principal: Principal, kind: str, listing: list[dict[str, Any]], entries: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """
        The definitions of C{kind} (C{"tool"}, C{"prompt"}, C{"resource"},
        C{"template"}) in C{listing} that C{principal} may see: the same
        check as requests.  C{entries} maps each exposed name or URI to its
        catalog entry.
        """
        if self._unrestricted(principal, kind):
            return listing
        name_key = NAME_KEYS[kind]
        tools = kind == "tool"
        decisions = self._decisions
        shown = []
        for d in listing:
            name = d[name_key]
            entry = entries[name]
            backend = entry.backend.name
            original = entry.tool if tools else original_of(entry)
            key = (principal, kind, name, backend, original)
            decision = decisions.get(key, _UNDECIDED)
            if decision is _UNDECIDED:
                decision = self._decided(key, principal, Subject(kind, name, backend, original))
            if decision is None:
                shown.append(d)
        return shown

    def _unrestricted(self, principal: Principal, kind: str) -> bool:
        """Whether nothing can hide a subject of C{kind} from C{principal} (the lists' fast path)."""
        rules = self.rules
        if not principal.all_access or rules.kill_backends or principal.name in rules.kill_principals or any(self.kills.values()):
            return False
        if kind == "tool":
            return not rules.kill_tools and not self.pins.quarantined
        if kind == "prompt":
            return not rules.kill_prompts
        return not rules.kill_resources

    def audit_listing(
        self,
        session: str,
        kind: str,
        principal: Principal,
        shown: int,
        total: int,
        protocol: str | None = None,
        search: str | None = None,
        search_error: str | None = None,
    ) -> None:
        """
        One audit record of a list answered: C{shown} definitions it
        carried of the C{total} C{principal} may see.  C{search}: the name of
        the gateway's search tool when the answer is a search's (a
        C{tools/call} record naming that tool, C{shown} found);
        C{search_error}: why the search answered a tool error instead
        (outcome C{tool_error}, as for a tool's own).
        """
        if self.audit is None:
            return
        record = self.new_record(session, "tools/call" if search is not None else LISTING_METHODS[kind], protocol)
        record.update(principal=principal.name, roles=list(principal.roles), kind=kind, outcome="ok")
        if search is not None and search_error is not None:
            record.update(subject=search, tool=search, outcome="tool_error", reason=f"search refused: {search_error}")
        elif search is not None:
            record.update(subject=search, tool=search, reason=f"search: {shown} of {total} {WORDS[kind]}(s) found")
        else:
            record["reason"] = f"{shown} of {total} {WORDS[kind]}(s) visible"
        self._audit(record)

    # -- calls ---------------------------------------------------------------

    def new_record(self, session: str, method: str, protocol: str | None = None) -> dict[str, Any]:
        """
        The audit record of a request, filled in as it passes the steps.
        C{protocol} is the MCP version it was made under (what a
        handshake-era session negotiated, a 2026-07-28 request's own
        C{_meta} version); None when no client request is behind it.
        """
        self._count += 1
        return {
            "id": f"{self._prefix}-{self._count}",
            "time": self.clock.seconds(),
            "principal": None,
            "roles": [],
            "session": session,
            "method": method,
            "kind": None,
            "subject": None,
            "tool": None,
            "backend": None,
            "decision": "allow",
            "reason": None,
            "outcome": None,
            "error_code": None,
            "latency_ms": None,
            "result_bytes": None,
            "arguments_digest": None,
            "protocol": protocol,
        }

    def audit_event(self, method: str, principal: str, backend: str, outcome: str = "ok") -> None:
        """
        An audit record of something done toward a backend outside a client
        request (C{oauth/authorized}, C{oauth/logout}): who and which
        backend, never a credential.
        """
        if self.audit is None:
            return
        record = self.new_record("gateway", method)
        record.update(principal=principal, kind="oauth", subject=backend, backend=backend, outcome=outcome)
        self.audit.record(record)

    def deny(self, record: dict[str, Any], code: int, message: str, data: dict[str, Any] | None = None) -> errors.GatewayError:
        """
        Audit a refusal and return the error to raise.  Beyond the
        principal's refusal budget the refusal is only counted (a
        L{CoalescedRefusal}, which the gateway does not log either).
        """
        record["decision"] = "deny"
        record["reason"] = message
        record["error_code"] = code
        self.refusals[code] = self.refusals.get(code, 0) + 1
        if not self.refusal_budget.admit(record["principal"], code):
            return CoalescedRefusal(code, message, data)
        self._audit(record)
        return errors.GatewayError(code, message, data)

    def _report_suppressed(self, principal: str, count: int, since: float, codes: dict[int, int]) -> None:
        """One audit record and one log line for the refusals the budget did not record."""
        reason = describe(count, since, self.clock.seconds(), codes)
        log.warn("principal {principal}: {reason}", principal=principal, reason=reason)
        record = self.new_record("-", "policy/refusals-suppressed")
        record.update(principal=principal, decision="deny", reason=reason)
        self._audit(record)

    def flush(self) -> None:
        """Report the suppressed refusals now (before the audit trail closes)."""
        self.refusal_budget.flush()

    def audit_blocked(self) -> bool:
        audit = self.audit
        return audit is not None and audit.refuses_calls

    def begin(
        self,
        session: str,
        method: str,
        subject: Subject,
        params: dict[str, Any],
        peer: Any = None,
        entry: Any = None,
        protocol: str | None = None,
    ) -> Call:
        """
        Steps 1 to 5 for a request about C{subject}, which the caller
        resolved (an unknown name or URI is refused with L{refuse_unknown});
        raises L{JsonRpcError} (already audited) for a refusal.  The
        returned L{Call} does the rest.  C{method} is the request's method
        (C{tools/call}, C{prompts/get}, C{resources/read},
        C{completion/complete}...); C{params} its params, whose arguments
        are digested for the audit; C{entry}, for a tool, the catalog entry
        the caller resolved it to; C{protocol}, the MCP version of the
        request (see L{new_record}).
        """
        record = self.new_record(session, method, protocol)
        try:
            principal = self._identify(record, peer)
            self._describe(record, subject)
            if self.audit_blocked():
                raise self.deny(record, errors.AUDIT_UNAVAILABLE, AUDIT_REFUSAL)
            if self._flags_problem is not None:
                raise self.deny(record, errors.STATE_UNAVAILABLE, self._flags_problem)
            if subject.kind == "tool":
                # The catalog entry the caller resolved (its definition is
                # what the arguments are checked against), else ours.
                entry = entry if entry is not None else self._tools.get(subject.exposed)
                if entry is None or entry.backend.name != subject.backend:
                    raise self.deny(record, INVALID_PARAMS, f"Unknown tool: {subject.exposed!r}", subject.data())
            return self._admit(record, principal, subject, method, params, peer, entry)
        except JsonRpcError:
            raise
        except Exception as e:
            log.failure("policy check of a request failed")
            raise self.deny(record, INTERNAL_ERROR, f"Internal error while checking the request: {type(e).__name__}")

    def _identify(self, record: dict[str, Any], peer: Any) -> Principal:
        """Step 1: the caller, named in C{record}; a refusal (audited) when it cannot be identified."""
        try:
            principal = self.principal(peer)
        except JsonRpcError as e:
            raise self.deny(record, e.code, e.message, e.data)
        record["principal"] = principal.name
        record["roles"] = list(principal.roles)
        return principal

    @staticmethod
    def _describe(record: dict[str, Any], subject: Subject) -> None:
        """What the request is about, in its audit record (a URI without its secrets)."""
        record["kind"] = subject.kind
        record["subject"] = subject.exposed if subject.kind in ("tool", "prompt") else redact_uri(subject.exposed)
        record["backend"] = subject.backend
        if subject.kind == "tool":
            record["tool"] = subject.exposed

    def _admit(
        self, record: dict[str, Any], principal: Principal, subject: Subject, method: str, params: Any, peer: Any, entry: Any
    ) -> Call:
        """Steps 2 to 5 once the subject is known."""
        where = _ARGUMENTS.get(method)
        arguments = params.get(where) if where is not None and type(params) is dict else None
        if arguments is not None and type(arguments) is not dict:
            raise self.deny(record, INVALID_PARAMS, f"Invalid params: {method} {where} must be an object")
        if where is not None and self.audit is not None:
            record["arguments_digest"] = digest_arguments(arguments if arguments is not None else {})
            if self.audit.config.recordArguments:
                record["arguments"] = arguments
        refused = self.decision(principal, subject)
        if refused is not None:
            code, why = refused
            raise self.deny(record, code, why, subject.data())
        if entry is not None:
            name = subject.exposed
            try:
                self.validators.check(name, entry.definition, arguments)
            except ArgumentError as e:
                error = JsonRpcError(
                    INVALID_PARAMS, f"Invalid params: {e.path}: {e.reason}", {"tool": name, "path": e.path, "reason": e.reason}
                )
                # The audit keeps where and which rule, not the (perhaps secret) value.
                self.deny(record, INVALID_PARAMS, f"invalid arguments at {e.path} ({e.keyword})")
                raise error
        if self._shared_limits:
            return self._admit_shared(record, principal, subject, peer, entry)
        # Which per-tool rules cover it: looked up once, for steps 5 and 6.
        tool_rules = self._tool_rules(subject) if subject.kind == "tool" else None
        wait, which = self._rate_check(principal, subject, tool_rules)
        if wait:
            raise self.deny(
                record,
                errors.RATE_LIMITED,
                f"rate limit ({which}) reached; retry in {_up(wait):.3f} s",
                {"retryAfter": _up(wait), "limit": which},
            )
        call = Call(self, record, subject, self._slots_for(subject, tool_rules), principal, peer, entry)
        call.taken, self._taken = self._taken, []
        return call

    def _admit_shared(self, record: dict[str, Any], principal: Principal, subject: Subject, peer: Any, entry: Any) -> Call:
        """Step 5 with limits in the shared state: the buckets go into the L{Call}, which takes them when dispatched."""
        specs: tuple[BucketSpec, ...] = ()
        if self._rates is not None:
            specs = self._rate_specs(principal, subject)
        else:
            wait, which = self._rate_check(principal, subject)
            if wait:
                message, data = rate_refusal(wait, which)
                raise self.deny(record, errors.RATE_LIMITED, message, data)
        slots: list[Any] = self._leased_slots(subject) if self._leases is not None else self._slots_for(subject)
        call = Call(self, record, subject, slots, principal, peer, entry)
        call.taken, self._taken = self._taken, []
        if specs:
            call.specs = specs
        return call

    def _rate_specs(self, principal: Principal, subject: Subject) -> tuple[BucketSpec, ...]:
        """
        The shared buckets a request takes a token of (step 5), as
        L{_rate_check} picks them: named the same on every replica and
        across reloads (the principal, the rule's index and the exposed
        tool, the backend).
        """
        rules = self.rules
        backend = subject.backend
        specs = []
        rate = rules.rate_principal
        if rate is not None:
            specs.append(BucketSpec(f"p\x00{principal.name}", rate.rate, rate.burst, "principal"))
        if subject.kind == "tool":
            tool = subject.exposed
            for i in self._tool_rules(subject)[0]:
                rule = rules.rate_tools[i]
                specs.append(BucketSpec(f"t\x00{principal.name}\x00{i}\x00{tool}", rule.rate, rule.burst, "tool"))
        rate = rules.rate_backends.get(backend)
        if rate is not None:
            specs.append(BucketSpec(f"b\x00{backend}", rate.rate, rate.burst, "backend"))
        return tuple(specs)

    def refuse_request(
        self, session: str, method: str, code: int, message: str, peer: Any = None, data: Any = None, protocol: str | None = None
    ) -> JsonRpcError:
        """
        The error (audited) for a request refused before it names a subject
        (malformed params, say).  The caller is identified first, so the
        record says who; one who cannot be is refused for that.
        """
        record = self.new_record(session, method, protocol)
        try:
            self._identify(record, peer)
        except JsonRpcError as e:
            return e
        return self.deny(record, code, message, data)

    def refuse_unknown(
        self, session: str, method: str, kind: str, name: str, peer: Any = None, protocol: str | None = None
    ) -> JsonRpcError:
        """
        The error (audited) for a request about a C{kind} no backend offers
        under C{name}: C{Unknown tool: 'x'} (-32602, C{data.tool}), the same
        for prompts and resource templates, and MCP's C{Resource not found}
        (-32002, C{data.uri}) for a resource.
        """
        record = self.new_record(session, method, protocol)
        record["kind"] = kind
        record["subject"] = name if kind in ("tool", "prompt") else redact_uri(name)
        if kind == "tool":
            record["tool"] = name
        try:
            self._identify(record, peer)
        except JsonRpcError as e:
            return e
        if self.audit_blocked():
            return self.deny(record, errors.AUDIT_UNAVAILABLE, AUDIT_REFUSAL)
        shown = record["subject"]  # the reason goes into the audit trail: a URI without its secrets
        if kind == "resource":
            return self.deny(record, errors.RESOURCE_NOT_FOUND, f"Resource not found: {shown!r}", {DATA_KEYS[kind]: name})
        return self.deny(record, INVALID_PARAMS, f"Unknown {WORDS[kind]}: {shown!r}", {DATA_KEYS[kind]: name})

    def charge_principal(
        self, session: str, method: str, principal: Principal, protocol: str | None = None
    ) -> JsonRpcError | None:
        """
        Step 5 for a request the gateway answers itself (C{search_tools}):
        one token of C{principal}'s own rate limit (the C{principal}
        bucket; no tool or backend bucket, as it reaches no backend).

        @return: None when a token was taken; else the refusal (audited),
            the very error a call over the limit gets.
        """
        now = self.clock.seconds()
        bucket = self._principal_bucket(principal, now)
        if bucket is None:
            return None
        wait = bucket.wait_time(now)
        if not wait:
            bucket.take()
            return None
        record = self.new_record(session, method, protocol)
        record["principal"] = principal.name
        record["roles"] = list(principal.roles)
        return self.deny(
            record,
            errors.RATE_LIMITED,
            f"rate limit (principal) reached; retry in {_up(wait):.3f} s",
            {"retryAfter": _up(wait), "limit": "principal"},
        )

    def _principal_bucket(self, principal: Principal, now: float) -> TokenBucket | None:
        """C{principal}'s bucket of the C{principal} rate limit (None: no such limit)."""
        rate = self.rules.rate_principal
        if rate is None:
            return None
        b = self._principal_buckets.get(principal.name)
        if b is None:
            forget_full(self._principal_buckets, now)
            b = self._principal_buckets[principal.name] = TokenBucket(rate.rate, rate.burst, now)
        return b

    def _rate_check(
        self, principal: Principal, subject: Subject, tool_rules: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    ) -> tuple[float, str]:
        """
        Step 5: the longest wait any of the call's buckets asks (and which
        limit), or a token taken from each (in L{_taken}) when none does.
        Each bucket's wait is read as it is found (reading it twice at the
        same moment changes nothing), without a list of pairs per call.
        C{tool_rules}: L{_tool_rules} of a tool, when the caller has it.
        """
        rules = self.rules
        if rules.rate_principal is None and not rules.rate_tools and not rules.rate_backends:
            self._taken = []
            return 0.0, ""
        now = self.clock.seconds()
        backend = subject.backend
        buckets: list[TokenBucket] = []
        worst, which = 0.0, ""
        b = self._principal_bucket(principal, now)
        if b is not None:
            buckets.append(b)
            wait = b.wait_time(now)
            if wait > worst:
                worst, which = wait, "principal"
        if subject.kind == "tool":
            tool = subject.exposed
            for i in (tool_rules if tool_rules is not None else self._tool_rules(subject))[0]:
                key = (principal.name, i, tool)
                b = self._tool_buckets.get(key)
                if b is None:
                    rule = rules.rate_tools[i]
                    forget_full(self._tool_buckets, now)
                    b = self._tool_buckets[key] = TokenBucket(rule.rate, rule.burst, now)
                buckets.append(b)
                wait = b.wait_time(now)
                if wait > worst:
                    worst, which = wait, "tool"
        rate = rules.rate_backends.get(backend)
        if rate is not None:
            b = self._backend_buckets.get(backend)
            if b is None:
                b = self._backend_buckets[backend] = TokenBucket(rate.rate, rate.burst, now)
            buckets.append(b)
            wait = b.wait_time(now)
            if wait > worst:
                worst, which = wait, "backend"
        if worst:
            return worst, which
        for b in buckets:
            b.take()
        self._taken = buckets
        return 0.0, ""

    def _limit_names(self, subject: Subject) -> tuple[str, ...]:
        """The names a per-tool limit matches: those deny rules match (L{names_of}), so a rename keeps its limits."""
        return names_of(subject, self.separator, self.prefixes.get(subject.backend))

    def _tool_rules(self, subject: Subject) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """
        The indices of the per-tool rate rules and of the per-tool
        concurrency rules that cover the tool C{subject}, in order.  Kept:
        matching every rule's glob against the tool's names was most of
        steps 5 and 6 on every call, and the answer depends only on the
        rules and separator (this policy's, fixed), the tool's names and its
        backend's prefix (all in the key).
        """
        rules = self.rules
        if not rules.rate_tools and not rules.conc_tools:
            return (), ()
        backend = subject.backend
        prefix = self.prefixes.get(backend)
        key = (subject.kind, subject.exposed, backend, subject.original, prefix)
        found = self._tool_rule_memo.get(key)
        if found is None:
            names = names_of(subject, self.separator, prefix)
            separator = self.separator
            found = (
                tuple(i for i, r in enumerate(rules.rate_tools) if any_match((r.tool or "",), names, separator, backend)),
                tuple(i for i, c in enumerate(rules.conc_tools) if any_match((c.tool or "",), names, separator, backend)),
            )
            if len(self._tool_rule_memo) > 100000:
                self._tool_rule_memo.clear()
            self._tool_rule_memo[key] = found
        return found

    def _slots_for(self, subject: Subject, tool_rules: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> list[Slots]:
        """Step 6's slots in this process: the backend's, then each per-tool rule's (C{tool_rules} as in L{_rate_check})."""
        slots = []
        backend = subject.backend
        s = self._backend_slots.get(backend)
        if s is not None:
            slots.append(s)
        if subject.kind == "tool":
            tool = subject.exposed
            for i in (tool_rules if tool_rules is not None else self._tool_rules(subject))[1]:
                key = (i, tool)
                t = self._tool_slots.get(key)
                if t is None:
                    c = self.rules.conc_tools[i]
                    t = self._tool_slots[key] = Slots(c.max, c.queue, c.queueTimeout, self.clock)
                slots.append(t)
        return slots

    def _leased_slots(self, subject: Subject) -> list[LeaseSlots]:
        """L{_slots_for} with the slots shared by every replica (leases), each beside this process's own (its fallback)."""
        leases = self._leases
        assert leases is not None
        found = []
        backend = subject.backend
        c = self.rules.conc_backends.get(backend)
        s = self._backend_slots.get(backend)
        if s is not None and c is not None:
            leased = self._lease_backends.get(backend)
            if leased is None or leased.local is not s:
                leased = LeaseSlots(f"b\x00{backend}", c.max, c.queue, c.queueTimeout, self.clock, leases, self.state, s)
                self._lease_backends[backend] = leased
            found.append(leased)
        if subject.kind == "tool":
            tool = subject.exposed
            names = self._limit_names(subject)
            for i, t in enumerate(self.rules.conc_tools):
                if any_match((t.tool or "",), names, self.separator, backend):
                    key = (i, tool)
                    local = self._tool_slots.get(key)
                    if local is None:
                        local = self._tool_slots[key] = Slots(t.max, t.queue, t.queueTimeout, self.clock)
                    leased = self._lease_tools.get(key)
                    if leased is None or leased.local is not local:
                        leased = LeaseSlots(f"t\x00{i}\x00{tool}", t.max, t.queue, t.queueTimeout, self.clock, leases, self.state, local)
                        self._lease_tools[key] = leased
                    found.append(leased)
        return found

    # -- requests a backend sends to a client --------------------------------

    def reverse_refusal(self, principal: Principal, backend: str, method: str) -> str | None:
        """
        Why the client of C{principal} may not be sent the request
        C{method} (C{sampling/createMessage}, C{elicitation/create},
        C{roots/list}) that C{backend} sent, or None: the kill switch
        (principal, backend), the audit trail refusing requests, and the
        roles' C{serverRequests}.  The reason is written for the backend's
        error and the log.
        """
        if not self.active:
            return None
        if self.audit_blocked():
            return AUDIT_REFUSAL
        if self._flags_problem is not None:
            return self._flags_problem
        return server_request_refusal(self.rules, self.kills, principal, backend, method)

    def audit_reverse(
        self,
        session: str,
        principal: Principal | None,
        backend: str,
        method: str,
        outcome: str,
        error_code: int | None = None,
        latency_ms: float | None = None,
        reason: str | None = None,
        cause: str | None = None,
        protocol: str | None = None,
    ) -> None:
        """
        One audit record of a request C{backend} sent a client (never its
        content): C{method}, the backend that asked, the client that
        answered (C{session} and C{principal}; None and C{"-"} when the
        gateway could not tell which client to ask), and the C{outcome}:
        C{"ok"}, C{"error"} (C{error_code}: the client's, or the gateway's
        when it gave up, a timeout say), C{"cancelled"}, or C{"refused"} (the
        gateway did not send it: C{reason} says why, C{error_code} is the
        code the backend got).  C{cause} is the audit id of the client's
        request that led to it (C{Call.record["id"]}), when known;
        C{protocol}, the MCP version of the client that answered.  A
        refusal counts against the principal's refusal budget, as refused
        requests do.
        """
        if outcome not in REVERSE_OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(REVERSE_OUTCOMES)}")
        if self.audit is None:
            return
        record = self.new_record(session, method, protocol)
        record.update(kind="server_request", backend=backend, error_code=error_code, latency_ms=latency_ms, reason=reason)
        if principal is not None:
            record["principal"] = principal.name
            record["roles"] = list(principal.roles)
        if cause is not None:
            record["cause"] = cause
        if outcome == "refused":
            record["decision"] = "deny"
            if not self.refusal_budget.admit(record["principal"], error_code or 0):
                return
        else:
            record["outcome"] = outcome
        self._audit(record)

    def backend_changed(self, backend: Any) -> None:
        self.note_backends((backend,))
        breaker = self.breakers.get(backend.name)
        if breaker is not None and backend.state.value == "up":
            breaker.backend_up()

    def breaker(self, backend: str) -> Breaker:
        b = self.breakers.get(backend)
        if b is None:
            b = self.breakers[backend] = Breaker(backend, self.rules.breaker_failures, self.rules.breaker_open, self.clock)
            if self.state.breakers is not None:
                b.on_change = self._publish_breaker
        return b

    def _publish_breaker(self, breaker: Breaker, state: str) -> None:
        """Tell the other replicas (breakers shared) that C{breaker} went to C{state}."""
        store = self.state.breakers
        if store is None:
            return
        try:
            store.publish(breaker.name, state, breaker.until() if state == "open" else 0.0)
        except Exception:
            log.failure("circuit breaker of backend {backend}: sharing its state failed", backend=breaker.name)

    def apply_breaker(self, backend: str, state: str, until: float) -> None:
        """
        Another replica's breaker of C{backend} went to C{state} (C{"open"}
        until C{until}, epoch seconds; C{"closed"}): this replica's follows,
        without publishing it again.  Half-open stays each replica's own.
        """
        if backend not in self.breakers and state != "open":
            return
        self.breaker(backend).apply(state, until)

    # -- the shared flags ----------------------------------------------------

    def apply_flags(self, snapshot: dict[str, dict[str, str]]) -> bool:
        """
        Apply the flags every replica shares (C{kind -> name -> value}): the
        run-time kill switch becomes the C{kill:*} kinds; approvals (name
        -> the JSON of a lock-file entry) are merged into the pins (and the
        lock file, when one is configured); C{quarantine} joins this
        replica's own finds; C{revoked} token ids join L{revoked}.  Only the
        kinds present change anything; an unknown kind is ignored, and so
        is a malformed approval (logged).  Cached decisions go, and
        L{epoch} changes, only when something changed.

        @return: whether anything changed.
        """
        if self._applying:
            # Called from within (a store that tells its watchers at once of
            # what this replica publishes): applied when this one is done.
            self._next_flags = snapshot
            return False
        self._applying = True
        try:
            changed = self._apply_flags(snapshot)
            while self._next_flags is not None:
                snapshot, self._next_flags = self._next_flags, None
                changed = self._apply_flags(snapshot) or changed
        finally:
            self._applying = False
            self._next_flags = None
        return changed

    def _apply_flags(self, snapshot: dict[str, dict[str, str]]) -> bool:
        flags = read_flags(snapshot, self._reported)
        changed = False
        for kind, names in flags.kills.items():
            held = self.kills[kind]
            if held != names:
                held.clear()
                held.update(names)
                changed = True
                if names:
                    self.active = True  # a change the rules cannot see makes the policy active
        if flags.approvals is not None:
            self._approvals = flags.approvals
            if self._take_approvals(useful_approvals(self.pins.pinned, flags.approvals, self._tools)):
                changed = True
                self._review()
        if flags.quarantine is not None and self.pins.set_shared(flags.quarantine):
            changed = True
        if flags.revoked is not None:
            new = flags.revoked - self.revoked
            if new:
                self.revoked.update(new)
                changed = True
        if changed:
            self._decisions.clear()
            self.generation += 1
            self.epoch = next(_EPOCHS)
        return changed

    def _take_approvals(self, fresh: dict[str, dict[str, Any]]) -> bool:
        """
        Pin C{fresh} (approvals of the tools' current definitions, from
        another replica: L{useful_approvals}) in the lock file, when one is
        configured, and in memory, and lift their quarantine; whether there
        were any.
        """
        if not fresh:
            return False
        if self.pins.path is not None and self.pins.mode != "off":
            written = write_approvals(self.pins.path, fresh)
            if written is not None:
                self.pins.pinned = written
                self.pins.error = None
        self.pins.pinned.update(fresh)
        for name in fresh:
            self.pins.lift(name)
        log.info("pins approved on another replica: {tools}", tools=", ".join(sorted(fresh)))
        return True

    def _audit(self, record: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.record(record)
