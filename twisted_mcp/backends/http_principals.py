"""
One run per principal, for an HTTP server reached with each principal's own
OAuth token (C{auth: oauth}; C{docs/design/oauth.md} §6.1).

A handshake-era server binds its session to the user its token names, so a
session opened with Alice's token must never carry Bob's call: each
principal gets its own run (its own C{Mcp-Session-Id} and token), opened on
its first call and closed after C{idleTimeout} seconds without one.  The
backend's own run (discovery, listings, the gateway's own requests) stays
the catalog run; the connection pool is shared (connections carry no
identity, headers do).
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Protocol, Sequence

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class TokenSource(Protocol):
    """What an HTTP backend asks of the OAuth broker (L{twisted_mcp.backends.oauth.broker.OAuthBroker})."""

    def token_for(self, principal: str | None, backend: str) -> Deferred[Any]: ...

    def rejected(self, bearer: Any, backend: str, www_authenticate: Sequence[bytes]) -> Deferred[Any]: ...

    def challenged(self, backend: str, www_authenticate: Sequence[bytes]) -> None: ...

    def forbidden(self, bearer: Any, backend: str, www_authenticate: Sequence[bytes], tool: str) -> Deferred[Any]: ...


class PrincipalRuns:
    """
    The runs of one backend's principals, by principal.

    @param make_run: a new (unopened) run for a principal.
    @param open_run: opens a run (its handshake); raises when it cannot.
    @param idle_timeout: seconds without a call before a run is closed (0: never).
    @param max_runs: runs open at once; a principal beyond gets C{too_many()}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        make_run: Callable[[str], Any],
        open_run: Callable[[Any], Coroutine[Any, Any, None]],
        idle_timeout: float,
        max_runs: int,
    ) -> None:
        self._clock = clock
        self._make_run = make_run
        self._open_run = open_run
        self._idle_timeout = idle_timeout
        self.max_runs = max_runs
        self._runs: dict[str, Any] = {}
        self._opening: dict[str, list[Deferred[Any]]] = {}
        self._idle: dict[str, IDelayedCall] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def owns(self, run: Any) -> bool:
        """C{run} is the current run of its principal."""
        principal = getattr(run, "principal", None)
        return principal is not None and self._runs.get(principal) is run

    def pending(self) -> int:
        """Requests in flight over every principal's run."""
        return sum(run.pending() for run in self._runs.values())

    def run_for(self, principal: str) -> Deferred[Any]:
        """
        The open run of C{principal}: its current one, or a new one opened
        now (callers that arrive while it opens wait for the same opening;
        cancelling one of them does not cancel it).  Fails with what
        opening failed with, or L{TooManyRuns}.
        """
        run = self._runs.get(principal)
        waiters = self._opening.get(principal)
        if run is not None and waiters is None:
            if not run.closed:
                self._touch(principal)
                return succeed(run)
            self._forget(principal, run)
            run = None
        waiter: Deferred[Any] = Deferred()
        if run is not None and waiters is not None:
            waiters.append(waiter)
            return waiter
        if len(self._runs) >= self.max_runs:
            raise TooManyRuns(self.max_runs)
        run = self._runs[principal] = self._make_run(principal)
        self._opening[principal] = [waiter]
        d: Deferred[None] = ensureDeferred(self._open_run(run))
        d.addCallbacks(self._opened, self._not_opened, callbackArgs=(principal, run), errbackArgs=(principal, run))
        return waiter

    def _opened(self, _: Any, principal: str, run: Any) -> None:
        waiters = self._opening.pop(principal, [])
        self._touch(principal)
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(run)

    def _not_opened(self, failure: Failure, principal: str, run: Any) -> None:
        waiters = self._opening.pop(principal, [])
        self._forget(principal, run)
        run.close(f"could not open a session: {failure.getErrorMessage()}")
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(failure)

    def _touch(self, principal: str) -> None:
        if self._idle_timeout <= 0:
            return
        call = self._idle.get(principal)
        if call is not None and call.active():
            call.reset(self._idle_timeout)
        else:
            self._idle[principal] = self._clock.callLater(self._idle_timeout, self._expire, principal)

    def _expire(self, principal: str) -> None:
        self._idle.pop(principal, None)
        run = self._runs.get(principal)
        if run is None:
            return
        if run.pending():
            self._touch(principal)  # a long call: not idle
            return
        log.info("backend run of a principal idle for {timeout:g} s: closed", timeout=self._idle_timeout)
        self.discard(run, "idle")

    def _forget(self, principal: str, run: Any) -> None:
        if self._runs.get(principal) is run:
            del self._runs[principal]
        call = self._idle.pop(principal, None)
        if call is not None and call.active():
            call.cancel()

    def discard(self, run: Any, why: str) -> Deferred[Any]:
        """Close C{run} (its calls fail with C{why}) and end its session on the server."""
        principal = run.principal
        if principal is not None:
            self._forget(principal, run)
        run.close(why)
        return run.end_session()

    def close_all(self, why: str) -> list[Deferred[Any]]:
        """Close every run; the Deferreds of ending their sessions."""
        return [self.discard(run, why) for run in list(self._runs.values())]


class TooManyRuns(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} principals have sessions open (maxInstances)")
        self.limit = limit


__all__ = ["PrincipalRuns", "TokenSource", "TooManyRuns"]
