"""
The governed point every request passes, in one documented order (each
refusal's code, from L{twisted_mcp.mcp.errors}, in brackets):

  1. identity      who is calling [AUTHENTICATION_FAILED]
  2. kill switch   a disabled principal, backend or tool [PRINCIPAL_DISABLED,
                   BACKEND_DISABLED, TOOL_DISABLED]
  3. access        the caller's roles allow the tool [ACCESS_DENIED]; a
                   quarantined tool (pinning) is refused here too
                   [TOOL_QUARANTINED]
  4. arguments     against the tool's inputSchema [JSON-RPC's INVALID_PARAMS,
                   with the path]
  5. rate limits   per principal, per principal and tool, per backend
                   [RATE_LIMITED]
  6. concurrency   per backend and per tool, with a bounded queue [BUSY]
  7. breaker       the backend's circuit breaker [CIRCUIT_OPEN]
  8. dispatch      the call goes to the backend
  9. audit         one record of the outcome (or of the refusal)

When the audit sink is failing and the policy is to refuse, calls are
refused [AUDIT_UNAVAILABLE] rather than passed unaudited.  The same checks
decide what C{tools/list} shows and what C{tools/call} allows, so the two
never disagree.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_mcp.mcp import errors
from twisted_mcp.mcp.names import untruncated_name
from twisted_mcp.policy.arguments import ArgumentError, Validators
from twisted_mcp.policy.audit.records import digest_arguments
from twisted_mcp.policy.breaker import Breaker
from twisted_mcp.policy.call import Call, _up
from twisted_mcp.policy.limits import Slots, TokenBucket, forget_full
from twisted_mcp.policy.pinning import Pins
from twisted_mcp.policy.principal import IdentityError, Principal
from twisted_mcp.policy.refusals import CoalescedRefusal, RefusalBudget, describe
from twisted_mcp.policy.rules import PolicyConfig, any_match, matches
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, JsonRpcError

log = Logger()

LOCAL = Principal(name="local", roles=(), source="local", all_access=True)


class Policy:
    """
    The checks, their state (buckets, slots, breakers, quarantine) and the
    audit trail.

    @param authenticate: given the session's L{Peer} (None for an unknown
        one), returns the caller's L{Principal} or raises L{IdentityError};
        None: the local principal, with every permission.
    @param audit: an L{AuditLog}, or None for no audit trail.
    """

    def __init__(
        self,
        rules: PolicyConfig,
        separator: str,
        clock: IReactorTime,
        authenticate: Callable[[Any], Principal] | None = None,
        audit: Any = None,
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
        self._decisions: dict[tuple[Any, str], tuple[int, str] | None] = {}
        self._prefix = os.urandom(4).hex()
        self._count = 0
        self._taken: list[TokenBucket] = []
        self.refusals: dict[int, int] = {}
        self.refusal_budget = RefusalBudget(rules.refusal_limit, clock, self._report_suppressed)
        #: The kill switch as thrown at run time (the admin endpoint), on
        #: top of the config's: kind ("principal", "backend", "tool") -> names.
        self.kills: dict[str, set[str]] = {"principal": set(), "backend": set(), "tool": set()}
        #: False when nothing is configured: the gateway is a plain
        #: aggregator and calls skip the pipeline.
        self.active = rules.active or authenticate is not None or audit is not None
        #: The policy that replaced this one (a reload), for calls that
        #: started under this one and are checked again later.
        self.successor: Policy | None = None

    # -- identity and visibility -------------------------------------------

    def principal(self, peer: Any = None) -> Principal:
        """Who is calling; L{errors.GatewayError} (C{AUTHENTICATION_FAILED}) when that cannot be established."""
        if self._authenticate is None:
            return LOCAL
        try:
            return self._authenticate(peer)
        except IdentityError as e:
            raise errors.GatewayError(errors.AUTHENTICATION_FAILED, f"Authentication failed: {e.message}", {"reason": e.message})

    def refusal(self, principal: Principal, entry: Any) -> tuple[int, str] | None:
        """Why C{principal} may not see or call the catalog C{entry} (steps 2 and 3), or None."""
        exposed = entry.definition["name"]
        key = (principal, exposed)
        try:
            return self._decisions[key]
        except KeyError:
            pass
        decision = self._decide(principal, exposed, entry.backend.name, entry.tool)
        if len(self._decisions) > 100000:
            self._decisions.clear()
        self._decisions[key] = decision
        return decision

    def _decide(self, principal: Principal, exposed: str, backend: str, tool: str) -> tuple[int, str] | None:
        rules = self.rules
        sep = self.separator
        kills = self.kills
        # Deny rules and the kill switch also see the backend's own name of
        # the tool: the part an exposed name loses to the 64-character limit
        # (or to character replacement) cannot hide a tool from them.
        names = tuple({exposed: None, untruncated_name(backend, tool, sep): None, f"{backend}{sep}{tool}": None})
        if principal.name in rules.kill_principals or principal.name in kills["principal"]:
            return errors.PRINCIPAL_DISABLED, f"principal {principal.name!r} is disabled by the kill switch"
        if backend in rules.kill_backends or backend in kills["backend"]:
            return errors.BACKEND_DISABLED, f"backend {backend!r} is disabled by the kill switch"
        if any_match(rules.kill_tools, names, sep, backend, fold=True) or any_match(kills["tool"], names, sep, backend, fold=True):
            return errors.TOOL_DISABLED, f"tool {exposed!r} is disabled by the kill switch"
        if not principal.all_access:
            allowed = False
            for role_name in principal.roles:
                role = rules.roles.get(role_name)
                if role is None:
                    continue  # An unknown role has no rights.
                if any_match(role.deny, names, sep, backend, fold=True):
                    return errors.ACCESS_DENIED, f"role {role_name!r} denies {exposed!r}"
                if any_match(role.allow, (exposed,), sep, backend):
                    allowed = True
            if not allowed:
                roles = ", ".join(principal.roles) or "none"
                return errors.ACCESS_DENIED, f"{principal.name!r} (roles: {roles}) may not call {exposed!r}"
        why = self.pins.blocks(exposed)
        if why is not None:
            return errors.TOOL_QUARANTINED, f"tool {exposed!r} is quarantined: {why}"
        return None

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
        for kind, names in old.kills.items():
            for n in names:
                self.set_kill(kind, n, True)

    def current(self) -> "Policy":
        """The policy in force now: this one, or the last that replaced it."""
        policy = self
        while policy.successor is not None:
            policy = policy.successor
        return policy

    def set_kill(self, kind: str, name: str, disabled: bool) -> None:
        """Throw (or release) the kill switch for a principal, backend or tool at run time."""
        names = self.kills[kind]
        if disabled:
            names.add(name)
        else:
            names.discard(name)
        self._decisions.clear()
        # A change the rules cannot see makes the policy active.
        self.active = True

    def kill_switch(self) -> dict[str, list[str]]:
        """The kill switch in force: the config's and the run time's."""
        rules = self.rules
        return {
            "principals": sorted(set(rules.kill_principals) | self.kills["principal"]),
            "backends": sorted(set(rules.kill_backends) | self.kills["backend"]),
            "tools": sorted(set(rules.kill_tools) | self.kills["tool"]),
        }

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
        fresh = [(n, entries[n].backend.name, entries[n].tool, {**entries[n].definition, "name": entries[n].tool}) for n in chosen]
        self.pins.pinned = write_lock(self.pins.path, fresh, kept)
        self.pins.error = None
        for n in chosen:
            self.pins.quarantined.pop(n, None)
        self._decisions.clear()
        return chosen

    def catalog_changed(self, entries: dict[str, Any]) -> None:
        """The catalog was rebuilt: review pins, drop stale validators and decisions."""
        self._decisions.clear()
        self.validators.forget(set(entries))
        fresh = self.pins.review((name, {**e.definition, "name": e.tool}) for name, e in entries.items())
        for exposed, why in fresh:
            entry = entries[exposed]
            action = "quarantined" if self.pins.mode == "enforce" else "not pinned (warn only)"
            log.warn("tool {tool} {action}: {why}", tool=exposed, action=action, why=why)
            self._audit(
                {
                    "method": "pinning/review",
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

    def listing(self, principal: Principal, listing: list[dict[str, Any]], entries: dict[str, Any]) -> list[dict[str, Any]]:
        """The tools C{principal} may see (the same check as calls)."""
        if (
            principal.all_access
            and not self.rules.kill_tools
            and not self.rules.kill_backends
            and not self.pins.quarantined
            and principal.name not in self.rules.kill_principals
            and not any(self.kills.values())
        ):
            return listing
        return [d for d in listing if self.refusal(principal, entries[d["name"]]) is None]

    # -- calls ---------------------------------------------------------------

    def new_record(self, session: str, method: str) -> dict[str, Any]:
        self._count += 1
        return {
            "id": f"{self._prefix}-{self._count}",
            "time": self.clock.seconds(),
            "principal": None,
            "roles": [],
            "session": session,
            "method": method,
            "tool": None,
            "backend": None,
            "decision": "allow",
            "reason": None,
            "outcome": None,
            "error_code": None,
            "latency_ms": None,
            "result_bytes": None,
            "arguments_digest": None,
        }

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

    def begin(self, session: str, params: dict[str, Any], catalog: Any, peer: Any = None) -> "Call":
        """
        Steps 1 to 5 for a C{tools/call}; raises L{JsonRpcError} (already
        audited) for a refusal.  The returned L{Call} does the rest.
        """
        record = self.new_record(session, "tools/call")
        try:
            return self._begin(record, params, catalog, peer)
        except JsonRpcError:
            raise
        except Exception as e:
            log.failure("policy check of a call failed")
            raise self.deny(record, INTERNAL_ERROR, f"Internal error while checking the call: {type(e).__name__}")

    def _begin(self, record: dict[str, Any], params: dict[str, Any], catalog: Any, peer: Any) -> "Call":
        try:
            principal = self.principal(peer)
        except JsonRpcError as e:
            raise self.deny(record, e.code, e.message, e.data)
        record["principal"] = principal.name
        record["roles"] = list(principal.roles)
        name = params.get("name")
        if type(name) is str:
            record["tool"] = name
        if self.audit_blocked():
            raise self.deny(record, errors.AUDIT_UNAVAILABLE, "the audit trail cannot be written; calls are refused until it can")
        if type(name) is not str:
            raise self.deny(record, INVALID_PARAMS, "Invalid params: tools/call needs params.name, a string")
        entry = catalog.entries.get(name)
        if entry is None:
            raise self.deny(record, INVALID_PARAMS, f"Unknown tool: {name!r}", {"tool": name})
        backend = entry.backend.name
        record["backend"] = backend
        arguments = params.get("arguments")
        if arguments is not None and type(arguments) is not dict:
            raise self.deny(record, INVALID_PARAMS, "Invalid params: tools/call arguments must be an object")
        if self.audit is not None:
            record["arguments_digest"] = digest_arguments(arguments if arguments is not None else {})
            if self.audit.config.recordArguments:
                record["arguments"] = arguments
        refused = self.refusal(principal, entry)
        if refused is not None:
            code, why = refused
            raise self.deny(record, code, why, {"tool": name})
        try:
            self.validators.check(name, entry.definition, arguments)
        except ArgumentError as e:
            error = JsonRpcError(INVALID_PARAMS, f"Invalid params: {e.path}: {e.reason}", {"tool": name, "path": e.path, "reason": e.reason})
            # The audit keeps where and which rule, not the (perhaps secret) value.
            self.deny(record, INVALID_PARAMS, f"invalid arguments at {e.path} ({e.keyword})")
            raise error
        wait, which = self._rate_check(principal, name, backend)
        if wait:
            raise self.deny(
                record,
                errors.RATE_LIMITED,
                f"rate limit ({which}) reached; retry in {_up(wait):.3f} s",
                {"retryAfter": _up(wait), "limit": which},
            )
        call = Call(self, record, entry, self._slots_for(name, backend), principal, peer)
        call.taken, self._taken = self._taken, []
        return call

    def _rate_check(self, principal: Principal, tool: str, backend: str) -> tuple[float, str]:
        rules = self.rules
        now = self.clock.seconds()
        buckets = []
        if rules.rate_principal is not None:
            b = self._principal_buckets.get(principal.name)
            if b is None:
                forget_full(self._principal_buckets, now)
                b = self._principal_buckets[principal.name] = TokenBucket(rules.rate_principal.rate, rules.rate_principal.burst, now)
            buckets.append((b, "principal"))
        for i, rule in enumerate(rules.rate_tools):
            if matches(rule.tool or "", tool, self.separator, backend):
                key = (principal.name, i, tool)
                b = self._tool_buckets.get(key)
                if b is None:
                    forget_full(self._tool_buckets, now)
                    b = self._tool_buckets[key] = TokenBucket(rule.rate, rule.burst, now)
                buckets.append((b, "tool"))
        rate = rules.rate_backends.get(backend)
        if rate is not None:
            b = self._backend_buckets.get(backend)
            if b is None:
                b = self._backend_buckets[backend] = TokenBucket(rate.rate, rate.burst, now)
            buckets.append((b, "backend"))
        worst, which = 0.0, ""
        for b, kind in buckets:
            wait = b.wait_time(now)
            if wait > worst:
                worst, which = wait, kind
        if worst:
            return worst, which
        for b, _ in buckets:
            b.take()
        self._taken = [b for b, _ in buckets]
        return 0.0, ""

    def _slots_for(self, tool: str, backend: str) -> list[Slots]:
        slots = []
        s = self._backend_slots.get(backend)
        if s is not None:
            slots.append(s)
        for i, c in enumerate(self.rules.conc_tools):
            if matches(c.tool or "", tool, self.separator, backend):
                key = (i, tool)
                t = self._tool_slots.get(key)
                if t is None:
                    t = self._tool_slots[key] = Slots(c.max, c.queue, c.queueTimeout, self.clock)
                slots.append(t)
        return slots

    def backend_changed(self, backend: Any) -> None:
        breaker = self.breakers.get(backend.name)
        if breaker is not None and backend.state.value == "up":
            breaker.backend_up()

    def breaker(self, backend: str) -> Breaker:
        b = self.breakers.get(backend)
        if b is None:
            b = self.breakers[backend] = Breaker(backend, self.rules.breaker_failures, self.rules.breaker_open, self.clock)
        return b

    def _audit(self, record: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.record(record)
