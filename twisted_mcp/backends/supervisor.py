"""
L{SupervisedBackend}: a backend whose connection is a run that is started,
discovered within a bound, and restarted with backoff when it fails; the
stdio and HTTP backends are its two kinds of run.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_mcp.backends.base import Backend, State
from twisted_mcp.backends.listen import BackendListen
from twisted_mcp.backends.session import DiscoveryError, McpClientSession
from twisted_mcp.config.shaping import shaping_of
from twisted_mcp.wire.jsonrpc import (
    INTERNAL_ERROR,
    JsonRpcError,
)

log = Logger()

_KIND_NAMES = {
    "tools": "tool list",
    "prompts": "prompt list",
    "resources": "resource list",
    "resourceTemplates": "resource template list",
}

class RunEvents:
    """
    What one run's MCP client session reports, passed to its backend with
    the run (so that the backend can tell a current run from an old one).
    """

    backend: "SupervisedBackend"

    def _listing_changed(self, kind: str) -> None:
        self.backend._session_changed(self, kind)

    def _server_request(self, method: str, params: dict[str, Any], related: Any) -> Deferred[Any]:
        return self.backend._run_request(self, method, params, related)

    def _server_notification(self, method: str, params: dict[str, Any], related: Any) -> None:
        self.backend._run_notification(self, method, params, related)


class SupervisedBackend(Backend):
    """
    What every transport shares: runs, each discovered (bounded by the
    discovery timeout) and, when a run ends, a new one after a backoff
    delay that doubles up to C{restartMaxDelay} and resets after the
    backend stayed up C{stableAfter} seconds.

    A I{run} is one child process or one HTTP session; it has a
    C{session} (L{McpClientSession}).  Subclasses implement L{_attempt}
    (start a run), L{_abandon} (end a run whose discovery failed; it must
    lead to L{_run_ended}) and L{_is_current}.

    A run of a stateless-era (2026-07-28) server is sent one
    C{subscriptions/listen} (L{listen}): what it changes, and the updates of
    the resources clients subscribe to, come on it.
    """

    def __init__(self, name: str, config: Any, clock: IReactorTime) -> None:
        super().__init__(name)
        self.config = config
        self.name_prefix = getattr(config, "prefix", None)
        self.priority, self.shaping = shaping_of(config)
        self.clock = clock
        self.call_timeout = config.callTimeout
        self.per_session = getattr(config, "perSession", False)
        self.max_instances = config.maxInstances
        self.max_instances_per_principal = config.maxInstancesPerPrincipal
        self.idle_timeout = config.idleTimeout
        self.restarts = 0
        self._delay = config.restartDelay
        self._restart_call: Any = None
        self._up_since: float | None = None
        self._stopping = False
        self.listen = BackendListen(
            name, clock, config.restartDelay, config.restartMaxDelay, config.stableAfter, config.callTimeout
        )

    def _attempt(self) -> None:
        raise NotImplementedError()

    def _abandon(self, run: Any) -> None:
        raise NotImplementedError()

    def _is_current(self, run: Any) -> bool:
        raise NotImplementedError()

    def _why_failed(self, failure: Any, run: Any) -> str:
        if isinstance(failure.value, DiscoveryError):
            return str(failure.value)
        if failure.check(TimeoutError, CancelledError):
            return f"discovery did not finish within {self.config.discoveryTimeout:g} s"
        return f"discovery failed: {failure.getErrorMessage()}"

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._attempt()

    def _stop_supervising(self) -> None:
        super().stopService()
        self._stopping = True
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        self.listen.stop()
        self._first_discovery_done()

    def _discover(self, run: Any) -> None:
        timeout = self.config.discoveryTimeout
        d = Deferred.fromCoroutine(run.discover(timeout))
        d.addTimeout(timeout, self.clock)
        d.addCallbacks(self._discovered, self._discovery_failed, callbackArgs=(run,), errbackArgs=(run,))

    def _discovered(self, _: None, run: Any) -> None:
        if not self._is_current(run) or self._stopping:
            return
        session = run.session
        self._take_listings(session)
        self._take_handshake(session)
        self.discovered = True
        self._up_since = self.clock.seconds()
        self.last_error = None
        if session.era == "modern":
            self.listen.attach(session)
        info = session.server_info
        counts = [f"{len(self.tools)} tool(s)"] + [
            f"{len(entries)} {noun}(s)"
            for entries, noun in (
                (self.prompts, "prompt"),
                (self.resources, "resource"),
                (self.resource_templates, "resource template"),
            )
            if entries
        ]
        log.info(
            "backend {backend} is up: {counts} from {server} {version} (protocol {protocol}, {era}, {probe})",
            backend=self.name,
            counts=", ".join(counts),
            server=info.get("name", "?"),
            version=info.get("version", "?"),
            protocol=session.protocol_version,
            era=session.era,
            probe=session.probe,
        )
        self._set_state(State.UP)
        self._first_discovery_done()

    def _discovery_failed(self, failure: Any, run: Any) -> None:
        if not self._is_current(run):
            return
        why = self._why_failed(failure, run)
        self.last_error = why
        log.error("backend {backend} is down: {why}", backend=self.name, why=why)
        self._set_state(State.DOWN)
        self._abandon(run)
        self._first_discovery_done()

    def _take_listings(self, session: McpClientSession) -> None:
        listed = session.listed
        self.tools = listed["tools"]
        self.prompts = listed["prompts"]
        self.resources = listed["resources"]
        self.resource_templates = listed["resourceTemplates"]

    def _take_handshake(self, session: McpClientSession) -> None:
        self.handshakes += 1
        self.era = session.era
        self.probe = session.probe
        self.protocol_version = session.protocol_version
        self.capabilities = session.capabilities
        self.instructions = session.instructions
        self.server_info = session.server_info

    def _session_changed(self, run: Any, kind: str) -> None:
        """A run's session listed C{kind} again and it changed."""
        if self._is_current(run) and self.state is State.UP:
            self._take_listings(run.session)
            log.info(
                "backend {backend}: its {kind} changed, now {count}",
                backend=self.name,
                kind=_KIND_NAMES.get(kind, kind),
                count=len(run.session.listed[kind]),
            )
            self._changed()

    def _session_renewed(self, run: Any) -> None:
        """A run made a new MCP session with the same server (HTTP): take
        what its handshake said, and list everything again."""
        if not self._is_current(run):
            return
        session = run.session
        self._take_handshake(session)
        session.relist_everything()
        if self.state is State.UP:
            self._changed()  # a new session (and perhaps a new handshake)

    def _run_request(self, run: Any, method: str, params: dict[str, Any], related: Any) -> Deferred[Any]:
        """A request from a run's server: refused unless the run is the current one."""
        if not self._is_current(run) or self._stopping:
            raise JsonRpcError(INTERNAL_ERROR, f"backend {self.name!r} is restarting; {method} is refused")
        return self._server_request(method, params, related)

    def _run_notification(self, run: Any, method: str, params: dict[str, Any], related: Any) -> None:
        """A notification from a run's server: dropped unless the run is the current one."""
        if self._is_current(run) and not self._stopping:
            self._server_notification(method, params, related)

    def _run_ended(self, run: Any, why: str) -> None:
        """A run is over (process exited, connection lost): start another later."""
        if not self._is_current(run) or self._stopping:
            return
        if self.state is State.UP:
            log.warn("backend {backend}: {why}", backend=self.name, why=why)
        self.listen.detach()
        self.last_error = why
        now = self.clock.seconds()
        if self._up_since is not None and now - self._up_since >= self.config.stableAfter:
            self._delay = self.config.restartDelay
        self._up_since = None
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        if self._stopping:
            return
        delay = self._delay
        self._delay = min(delay * 2, self.config.restartMaxDelay)
        self.restarts += 1
        log.info("backend {backend}: restarting in {delay:g} s", backend=self.name, delay=delay)
        self._restart_call = self.clock.callLater(delay, self._restart)
        self._set_state(State.DOWN)

    def _restart(self) -> None:
        self._restart_call = None
        self._attempt()

    @property
    def listen_state(self) -> str | None:
        if self.era != "modern":
            return None
        return "open" if self.listen.is_open else "closed"

    def in_flight(self) -> int:
        """Requests sent and not answered yet, but the listen (never answered while open)."""
        return max(0, super().in_flight() - self.listen.requests)

    def subscribe_resource(self, uri: str, params: dict[str, Any], context: Any = None) -> Deferred[Any]:
        """A stateless-era server: the URI joins its listen (made again by every new listen)."""
        if self.era != "modern":
            return super().subscribe_resource(uri, params, context)
        if self.state is not State.UP:
            raise self.unavailable()
        return self.listen.add(uri)

    def unsubscribe_resource(self, uri: str) -> Deferred[Any]:
        """A stateless-era server: a listen without the URI replaces the open one."""
        if self.era != "modern":
            return super().unsubscribe_resource(uri)
        self.listen.remove(uri)
        return succeed({})

    def unavailable(self) -> JsonRpcError:
        error = super().unavailable()
        call = self._restart_call
        if call is not None and call.active():
            retry = max(0.0, call.getTime() - self.clock.seconds())
            error.data["retryAfter"] = round(retry, 3)
            error.message += f"; restarting in {retry:.1f} s"
        return error

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self._changed()


__all__ = ["SupervisedBackend"]
