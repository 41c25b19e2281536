"""
L{ServerLogs}: the backends' C{notifications/message} toward clients, and
C{logging/setLevel}.

Each session has its own level (L{Caller.log_level}; C{info} until it
sets one).  A backend's message reaches only the sessions whose level
admits it and that may see the backend, with the backend's name in
C{logger}; a message the backend ties to one call reaches that call's
session only, and a per-session instance's reaches its owner only.  A
stateless-era (2026-07-28) client gets a message only as part of a request
that asked for it (C{_meta} C{logLevel}): one tied to that request, or one
its backend tied to no call while that request was the only call to it.  A
shared backend is set to the most verbose level any session asked for.
A stateless-era backend is never sent C{logging/setLevel}: the level rides
on each request sent to it (L{twisted_mcp.dispatch.routing}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.dispatch.caller import DEFAULT_LOG_LEVEL, LOG_LEVELS, severity

if TYPE_CHECKING:
    from twisted_mcp.dispatch.gateway import Gateway
    from twisted_mcp.dispatch.session import ClientSession

log = Logger()


def logger_name(backend: str, logger: Any) -> str:
    """The C{logger} a client sees: the backend's name, then the backend's own logger if it gave one."""
    if type(logger) is str and logger:
        return f"{backend}/{logger[:200]}"
    return backend


class ServerLogs:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        #: The level last sent to each backend.
        self._sent: dict[Backend, str] = {}

    def set_level(self, session: ClientSession, level: str) -> None:
        session.caller.log_level = level
        self.apply()

    def requested(self, session: ClientSession, level: str) -> None:
        """
        A stateless-era request of C{session} asked for log messages of
        C{level} and above: the backends are set at least that verbose (a
        handshake-era backend's level is per connection, so it stays at the
        most verbose level any of the session's requests asked for).
        """
        current = session.caller.log_level
        if current is None or (severity(level) or 0) < (severity(current) or 0):
            self.set_level(session, level)

    def wanted(self, backend: Backend) -> str | None:
        """The most verbose level the sessions that see C{backend} asked for (None: none asked)."""
        owner = self.gateway.instance_owners.get(backend)
        sessions = [owner] if owner is not None else list(self.gateway.sessions)
        if all(s.caller.log_level is None for s in sessions):
            return None  # nobody asked: the backend keeps its own default
        levels = [s.caller.log_level or DEFAULT_LOG_LEVEL for s in sessions]
        return min(levels, key=lambda level: severity(level) or 0)

    def apply(self) -> None:
        """Send each backend that logs the level its sessions want, if it changed."""
        shared = [b for b in self.gateway.backends.values() if not b.per_session]
        for backend in shared + list(self.gateway.instances):
            self._apply(backend)

    def _apply(self, backend: Backend) -> None:
        if backend.state.value != "up" or "logging" not in backend.capabilities:
            return
        if backend.era == "modern":
            return  # 2026-07-28 has no logging/setLevel: each request carries its level.
        level = self.wanted(backend)
        if level is None or self._sent.get(backend) == level:
            return
        self._sent[backend] = level
        try:
            d = backend.call("logging/setLevel", {"level": level})
        except Exception as e:
            log.info("backend {backend}: could not set its log level: {why}", backend=backend.name, why=e)
            self._sent.pop(backend, None)
            return

        def failed(f: Any) -> None:
            if self._sent.get(backend) == level:
                del self._sent[backend]
            log.info("backend {backend}: could not set its log level to {level}: {why}", backend=backend.name, level=level, why=f.getErrorMessage())

        d.addErrback(failed)

    def backend_up(self, backend: Backend) -> None:
        """C{backend} (re)started at its default level: set it again."""
        self._sent.pop(backend, None)
        if not backend.per_session or backend in self.gateway.instances:
            self._apply(backend)

    def forget(self, backend: Backend) -> None:
        self._sent.pop(backend, None)

    def deliver(self, backend: Backend, params: dict[str, Any], related: Any) -> None:
        """A backend's C{notifications/message}: to the sessions it is for."""
        level = params.get("level")
        if level not in LOG_LEVELS:
            level = "info"
        out = dict(params)
        out["level"] = level
        out["logger"] = logger_name(backend.name, params.get("logger"))
        session = getattr(related, "session", None)
        if session is not None:
            targets = [session]
        else:
            owner = self.gateway.instance_owners.get(backend)
            targets = [owner] if owner is not None else list(self.gateway.sessions)
        gateway = self.gateway
        for s in targets:
            if s.closing or not gateway.sees_backend(s, backend.name):
                continue
            request = related
            if s.caller.era == "modern":
                # Only to the request it belongs to, and only if that request asked for logs.
                request = related if session is s else self._only_call(s, backend) if session is None else None
                wanted = request.envelope.log_level if request is not None and request.envelope is not None else None
                if wanted is None or (severity(level) or 0) < (severity(wanted) or 0):
                    continue
            elif not s.initialized or not s.caller.admits_log(level):
                continue
            s.notify("notifications/message", out, getattr(request, "rid", None))

    def _only_call(self, session: ClientSession, backend: Backend) -> Any:
        """
        The request a message its backend could not tie to a call (a stdio
        backend's) belongs to: C{session}'s only call to C{backend}, when no
        other session has one; None otherwise.
        """
        name = backend.name
        if session.backend_calls.get(name) != 1:
            return None
        if any(other is not session and other.backend_calls.get(name) for other in self.gateway.sessions):
            return None
        return next((r for r in session.in_flight.values() if r.backend == name), None)


__all__ = ["ServerLogs", "logger_name"]
