"""
A bound on how much one principal's refused calls can write (issue: an
unprivileged client filling the disk with the audit records and log lines
of calls it knows will be refused).

Each principal has a token bucket over its refusals (C{limits.refusals}).
Within it, a refusal is audited and logged as always.  Beyond it, the
client still gets its refusal, but the refusal is only counted: one audit
record and one log line per principal and report interval say how many
were suppressed, and with which error codes.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted_mcp.mcp.errors import GatewayError
from twisted_mcp.policy.limits import TokenBucket, forget_full
from twisted_mcp.policy.rules import RefusalLimit

#: The principal of refusals made before anyone was identified.
UNIDENTIFIED = "(unidentified)"


class CoalescedRefusal(GatewayError):
    """A refusal beyond its principal's budget: answered, but neither audited nor logged one by one."""


class _Suppressed:
    __slots__ = ("count", "since", "codes", "report")

    def __init__(self, since: float) -> None:
        self.count = 0
        self.since = since
        self.codes: dict[int, int] = {}
        self.report: IDelayedCall | None = None


class RefusalBudget:
    """
    Decides which refusals are recorded one by one, and reports the others.

    @param write: called with (principal, count, since, codes) for each
        report of suppressed refusals; it writes the audit record.
    """

    def __init__(self, limit: RefusalLimit, clock: IReactorTime, write: Callable[[str, int, float, dict[int, int]], None]) -> None:
        self.limit = limit
        self._clock = clock
        self._write = write
        self._buckets: dict[str, TokenBucket] = {}
        self._suppressed: dict[str, _Suppressed] = {}

    def admit(self, principal: str | None, code: int) -> bool:
        """Whether this refusal is recorded; if not, it is counted for the next report."""
        name = principal or UNIDENTIFIED
        now = self._clock.seconds()
        bucket = self._buckets.get(name)
        if bucket is None:
            forget_full(self._buckets, now)
            bucket = self._buckets[name] = TokenBucket(self.limit.rate, self.limit.burst, now)
        if bucket.wait_time(now) == 0.0:
            bucket.take()
            return True
        self._count(name, code, now)
        return False

    def _count(self, name: str, code: int, now: float) -> None:
        pending = self._suppressed.get(name)
        if pending is None:
            pending = self._suppressed[name] = _Suppressed(now)
            pending.report = self._clock.callLater(self.limit.reportSeconds, self._report, name)
        pending.count += 1
        pending.codes[code] = pending.codes.get(code, 0) + 1

    def _report(self, name: str) -> None:
        pending = self._suppressed.pop(name)
        pending.report = None
        self._write(name, pending.count, pending.since, pending.codes)

    def flush(self) -> None:
        """Report every count now (a reload that changes the limit, shutdown)."""
        for name in list(self._suppressed):
            report = self._suppressed[name].report
            if report is not None and report.active():
                report.cancel()
            self._report(name)


def describe(count: int, since: float, now: float, codes: dict[int, int]) -> str:
    """The reason of a report record: how many, over how long, which codes."""
    by_code = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items()))
    return (
        f"{count} refusal(s) over the limit (limits.refusals) were not recorded one by one "
        f"in the last {now - since:.0f} s (by error code: {by_code})"
    )


__all__ = ["CoalescedRefusal", "RefusalBudget", "UNIDENTIFIED", "describe"]
