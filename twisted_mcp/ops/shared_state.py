"""
The shared state, applied to the policy in force: what the service does
with the stores of L{twisted_mcp.state.base.SharedState} (C{state:} in the
config).

- Flags (the run-time kill switch, pin approvals and quarantine, revoked
  tokens): every snapshot the store delivers (soon after any replica
  changes a flag, and every C{state.resyncInterval} anyway) is applied to
  the policy in force with C{policy.apply_flags}; when that changed
  anything, the clients whose view of the tools, prompts or resources
  changed are sent C{list_changed}.  A reload's new policy gets the last
  snapshot too.
- Availability: when the store stops answering, one warning is logged and,
  with C{onUnavailable.killSwitch: refuse} (the default), the policy's
  C{flags_problem} is set: requests are refused with C{STATE_UNAVAILABLE}
  rather than served without knowing what another replica switched off.
  When it answers again: one info line, the changes this replica made
  meanwhile are written, the flags are read at once, and the problem is
  cleared.
- Breakers (C{breakers: shared}): another replica's transitions go to
  C{policy.apply_breaker}.
- Admin actions (C{POST /kill}, C{/pins/approve}, C{/revoke}) apply on this
  replica at once and write their flag through L{SharedStateSync.write};
  while the store is unreachable the write waits here (in memory) and the
  answer says the change is not shared yet.  A write the store refuses for
  good (a name over its bound, Redis refusing the command) is not tried
  again: it is logged, the answer says so, and the change stays applied on
  this replica only (laid over every later snapshot).
- Until the flags were read once, with C{onUnavailable.killSwitch: refuse},
  the policy's C{flags_problem} is set too (L{NOT_READ_YET}): nothing is
  served before this replica knows what the others switched off.
- A reload's new policy gets the last snapshot with this replica's changes
  not yet written laid over it (a kill thrown here stays thrown).
- A store that lost its flags (Redis restarted without its data: its
  marker, C{flags.marker}, changed) is not followed: every replica writes
  back what it knew, and the union comes back.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mcp.state.base import Refused, SharedState, Unavailable

log = Logger()

#: What a write made while the store is down answers (after "the shared state (Redis) cannot be reached (...)").
NOT_SHARED_YET = (
    "the change applies on this replica now, and is written to the shared state when it answers again "
    "(other replicas do not see it until then)"
)


#: How many refused changes this replica keeps applying on its own (the oldest go first).
MAX_LOCAL_ONLY = 10000

#: How the answer of a write the store refused (it will never take it) starts.
REFUSED = "the shared state refused the change"

#: What requests are refused with (C{onUnavailable.killSwitch: refuse}) until the flags were read once.
NOT_READ_YET = (
    "the shared kill switch has not been read yet: the kill switch, approvals and revoked tokens of the other "
    "replicas are not known, so requests are refused until the shared state (Redis) answers"
)

def _permanent(failure: Failure) -> bool:
    """Whether a failed flag write would fail again (a bad name or value, Redis refusing it), rather than Redis not answering."""
    return not failure.check(Unavailable) or bool(failure.check(Refused))


def flags_problem_message(problem: str | None) -> str:
    """What requests are refused with while the flags cannot be read (C{onUnavailable.killSwitch: refuse})."""
    return (
        "the shared state (Redis) cannot be reached: the kill switch, approvals and revoked tokens of the other "
        f"replicas cannot be checked, so requests are refused until it answers again ({problem or 'no answer'})"
    )


def refuses_while_unavailable(state: SharedState) -> bool:
    """Whether any kind's choice is C{refuse} (then C{/readyz} answers 503 while the store is unreachable)."""
    return any(state.on_unavailable(kind) == "refuse" for kind in ("limits", "killSwitch", "sessions"))


class SharedStateSync:
    """
    Keeps the policy in force in step with the shared state.

    @param state: the service's L{SharedState}.
    @param policy: the policy in force now (asked on every change: a reload
        replaces it).
    @param views: what every client session may see now
        (C{GatewayService.views}).
    @param notify_views: tells the sessions whose view changed since
        C{views()}; returns how many were told (C{GatewayService.notify_views}).
    """

    def __init__(
        self,
        state: SharedState,
        policy: Callable[[], Any],
        views: Callable[[], Any],
        notify_views: Callable[[Any], int],
    ) -> None:
        self.state = state
        self._policy = policy
        self._views = views
        self._notify = notify_views
        #: The last flags snapshot read (None: none yet).
        self.snapshot: dict[str, dict[str, str]] | None = None
        #: The policy that snapshot was last applied to.
        self._applied_to: Any = None
        #: True once the flags were read at least once (or no flag store is shared).
        self.synced = state.flags is None
        #: Writes made while the store could not take them: (kind, name, value), in order.
        self.pending: list[tuple[str, str, str | None]] = []
        self._writing = 0
        #: Changes the store refused (it never will take them): (kind, name) -> value, kept on this replica only.
        self.local_only: dict[tuple[str, str], str | None] = {}
        #: Writes sent and not answered yet (each a list of (kind, name, value)).
        self._in_flight: list[list[tuple[str, str, str | None]]] = []
        self._reading: Deferred[Any] | None = None
        #: The store's marker as last seen (None: not read yet); a new one means Redis lost its flags.
        self._marker: str | None = None
        self._checking = False
        self._waiting: tuple[dict[str, dict[str, str]], bool] | None = None
        self._started = False

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Watch availability, flags and breakers (before the state starts, so no change is missed)."""
        if self._started:
            return
        self._started = True
        state = self.state
        self._apply_problem()  # killSwitch refuse: nothing is served before the flags were read once
        state.add_listener(self._availability)
        if state.flags is not None:
            state.flags.watch(self._flags)
        if state.breakers is not None:
            state.breakers.watch(self._breaker)

    def started(self) -> None:
        """The state's C{start()} fired: read the flags once now (or note the store is down)."""
        if not self.state.available:
            self._apply_problem()
        self.resync()

    # -- availability --------------------------------------------------------

    def _availability(self, available: bool, problem: str | None) -> None:
        if not available:
            choices = ", ".join(f"{kind}: {self.state.on_unavailable(kind)}" for kind in ("limits", "killSwitch", "sessions"))
            log.warn(
                "shared state (Redis) unreachable: {problem}; meanwhile ({choices}) -- refuse: requests needing it are "
                "refused and /readyz answers 503; local: this replica goes on with its own state",
                problem=problem or "no answer",
                choices=choices,
            )
            self._apply_problem()
            return
        log.info("shared state (Redis) answers again: {state}; reading the flags now", state=self.state.describe())
        self._replay()
        self.resync(force=True)

    def _apply_problem(self, policy: Any = None) -> None:
        """Set (or clear) the policy's C{flags_problem} as availability and C{onUnavailable.killSwitch} say."""
        policy = self._policy() if policy is None else policy
        if self.state.flags is None:
            return
        refuse = self.state.on_unavailable("killSwitch") == "refuse"
        if not self.state.available and refuse:
            policy.flags_problem = flags_problem_message(self.state.problem)
        elif not self.synced and refuse:
            policy.flags_problem = NOT_READ_YET
        elif getattr(policy, "flags_problem", None) is not None:
            policy.flags_problem = None

    # -- flags -----------------------------------------------------------------

    def resync(self, force: bool = False) -> None:
        """Read the flags now and apply them (one read at a time)."""
        flags = self.state.flags
        if flags is None or self._reading is not None:
            return
        if self.pending and self.state.available:
            self._replay()
            return  # the replay reads them once it is written
        d = self._reading = flags.snapshot()

        def read(snapshot: dict[str, dict[str, str]]) -> None:
            self._reading = None
            self._flags(snapshot, force)

        def failed(failure: Failure) -> None:
            self._reading = None
            if failure.check(CancelledError):
                return
            if not failure.check(Unavailable):
                log.failure("shared state: reading the flags failed", failure)
            # Unavailable: the state reports that itself (set_available), once.

        d.addCallbacks(read, failed)

    def _flags(self, snapshot: dict[str, dict[str, str]], force: bool = False) -> None:
        """
        A snapshot from the store: first check the store was not emptied
        since the last one (when it can tell: C{flags.marker}), then apply it.
        """
        marker = getattr(self.state.flags, "marker", None)
        if marker is None:
            self._take(snapshot, force)
            return
        if self._checking:
            self._waiting = (snapshot, force or (self._waiting is not None and self._waiting[1]))
            return
        self._checking = True
        d = marker(f"{self.state.replica}/{secrets.token_hex(8)}")

        def checked(value: str) -> None:
            if not self._emptied(value):
                self._take(snapshot, force)

        def failed(failure: Failure) -> None:
            self._waiting = None
            if not failure.check(Unavailable, CancelledError):
                log.failure("shared state: reading the flags marker failed", failure)

        def next_one(_: Any) -> None:
            self._checking = False
            if self._waiting is not None:
                (later, again), self._waiting = self._waiting, None
                self._flags(later, again)

        d.addCallbacks(checked, failed).addBoth(next_one)

    def _emptied(self, marker: str) -> bool:
        """
        Whether the store lost its flags since the last snapshot (its marker
        changed: Redis restarted without its data); then what this replica
        knew is written back (every replica does: the union comes back) and
        the snapshot, taken of the emptied store, is not applied.
        """
        known, self._marker = self._marker, marker
        if known is None or known == marker or self.snapshot is None:
            return False
        last = self._with_local_changes(self.snapshot)
        changes: list[tuple[str, str, str | None]] = [
            (kind, name, value) for kind, names in sorted(last.items()) for name, value in sorted(names.items())
        ]
        log.warn(
            "the shared state was emptied (Redis restarted without its data?): restored {n} flags this replica knew",
            n=len(changes),
        )
        if not changes:
            return False
        self.write(changes)  # read again once written
        return True

    def _take(self, snapshot: dict[str, dict[str, str]], force: bool = False) -> None:
        """Apply a snapshot, unless writes of this replica are still on their way."""
        try:
            if self._writing:
                return  # taken before this replica's own change landed: read again once it has
            if self.pending:
                if self.state.available:
                    self._replay()  # then read again (a failed write waits for the next snapshot)
                return
            self.synced = True
            policy = self._policy()
            if not force and snapshot == self.snapshot and policy is self._applied_to:
                self._apply_problem()
                return
            self._apply(policy, self._with_local_changes(snapshot), notify=True)
            self.snapshot = snapshot
            self._applied_to = policy
            self._apply_problem()
        except Exception:
            log.failure("shared state: applying the flags failed")

    def apply_to(self, policy: Any, notify: bool = False) -> bool:
        """
        Apply the last snapshot to C{policy} (a reload's new policy gets it
        this way, with C{notify} False: the reload tells the clients);
        whether anything changed.
        """
        if self.snapshot is None:
            return False
        changed = self._apply(policy, self._with_local_changes(self.snapshot), notify)
        self._applied_to = policy
        return changed

    def _with_local_changes(self, snapshot: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        """
        C{snapshot} with this replica's changes not yet written (waiting, or
        on their way) or refused by the store laid over it: a reload must not
        undo a kill thrown here that the store has not taken yet, nor a
        snapshot one the store refused.
        """
        local = [(kind, name, value) for (kind, name), value in self.local_only.items()]
        local += [change for changes in self._in_flight for change in changes] + self.pending
        if not local:
            return snapshot
        merged = {kind: dict(names) for kind, names in snapshot.items()}
        for kind, name, value in local:
            names = merged.setdefault(kind, {})
            if value is None:
                names.pop(name, None)
            else:
                names[name] = value
        return merged

    def _apply(self, policy: Any, snapshot: dict[str, dict[str, str]], notify: bool) -> bool:
        apply = getattr(policy, "apply_flags", None)
        if apply is None:
            return False
        before = self._views() if notify else None
        changed = bool(apply(snapshot))
        if changed:
            told = self._notify(before) if notify else 0
            counts = ", ".join(f"{kind} {len(names)}" for kind, names in sorted(snapshot.items()) if names) or "none set"
            log.info(
                "shared state: flags applied ({counts}); {told} client(s) told their lists changed",
                counts=counts,
                told=told,
            )
        return changed

    def policy_replaced(self, policy: Any) -> None:
        """A reload put C{policy} in force: the flags and the availability problem carry over."""
        if self.state.flags is None:
            return
        self.apply_to(policy)
        self._apply_problem(policy)

    # -- breakers ----------------------------------------------------------------

    def _breaker(self, backend: str, state: str, until: float) -> None:
        apply = getattr(self._policy(), "apply_breaker", None)
        if apply is None:
            return
        try:
            apply(backend, state, until)
        except Exception:
            log.failure("shared state: applying the breaker of {backend} failed", backend=backend)

    # -- writes (admin actions) --------------------------------------------------

    @property
    def shared(self) -> bool:
        """Whether flags are shared at all (a C{state:} section with a flag store)."""
        return self.state.flags is not None

    def write(self, changes: list[tuple[str, str, str | None]]) -> "Deferred[tuple[bool, str | None]]":
        """
        Write flags (kind, name, value; None removes) of a change already
        applied on this replica.  Fires with C{(True, None)} once every
        replica will see it, or C{(False, why)} when the store cannot take
        it now (it is kept and written when the store answers again).
        """
        flags = self.state.flags
        if flags is None:
            return succeed((False, "no shared state is configured (state:): the change applies on this replica only"))
        for kind, name, _ in changes:
            self.local_only.pop((kind, name), None)  # changed again: whatever the store says of it next
        if not self.state.available:
            self.pending.extend(changes)
            return succeed((False, self._why_not_shared()))
        self._writing += 1
        changes = list(changes)
        self._in_flight.append(changes)
        writes = [flags.set(kind, name, value) for kind, name, value in changes]
        d: Deferred[Any] = DeferredList(writes, consumeErrors=True)

        def done(results: list[tuple[bool, Any]]) -> tuple[bool, str | None]:
            self._writing -= 1
            self._in_flight.remove(changes)
            retry: list[tuple[str, str, str | None]] = []
            refused: list[str] = []
            for change, (ok, result) in zip(changes, results, strict=True):
                if ok:
                    continue
                if _permanent(result):
                    # Written again it would fail again: kept, it would stop every later snapshot.
                    kind, name, _ = change
                    why = result.getErrorMessage()
                    refused.append(why)
                    if len(self.local_only) >= MAX_LOCAL_ONLY:
                        self.local_only.pop(next(iter(self.local_only)))
                    self.local_only[(kind, name)] = change[2]
                    log.error(
                        "shared state: the {kind} flag {name} cannot be written ({why}); it applies on this replica "
                        "only and is not tried again",
                        kind=kind,
                        name=name[:100] + ("..." if len(name) > 100 else ""),
                        why=why,
                    )
                else:
                    retry.append(change)
            self.pending.extend(retry)
            if not self._writing and not retry:
                self.resync(force=True)
            if refused:
                return (False, f"{REFUSED} ({refused[0]}): it applies on this replica only")
            return (False, self._why_not_shared()) if retry else (True, None)

        d.addCallback(done)
        return d

    def _why_not_shared(self) -> str:
        return f"the shared state (Redis) cannot be reached ({self.state.problem or 'no answer'}): {NOT_SHARED_YET}"

    def _replay(self) -> None:
        """Write what this replica changed while the store was down, then read the flags."""
        if not self.pending or self.state.flags is None:
            return
        changes, self.pending = self.pending, []
        log.info("shared state: writing {n} change(s) this replica made while it was unreachable", n=len(changes))
        self.write(changes)


__all__ = ["NOT_READ_YET", "NOT_SHARED_YET", "REFUSED", "SharedStateSync", "flags_problem_message", "refuses_while_unavailable"]
