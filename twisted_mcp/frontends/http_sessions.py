"""
The Streamable HTTP front's sessions: C{Mcp-Session-Id} -> L{HttpSession}.

A session id is minted at C{initialize} from the operating system's CSPRNG
(192 bits, URL-safe base64).  Each session belongs to the client identity
that created it (L{owner_of}); presented by anyone else it is unknown.  A
session with no request or stream open for C{http.sessionIdleTimeout}
seconds expires.  The table caps the sessions in all (C{http.maxSessions})
and per identity (C{http.maxSessionsPerPrincipal}).
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twisted_mcp.frontends.http_config import HttpSettings

log = Logger()

#: What a session id the gateway minted looks like (anything else is refused with 400).
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def mint_session_id() -> str:
    """A new session id: 192 bits from C{os.urandom}, URL-safe, no padding."""
    return base64.urlsafe_b64encode(os.urandom(24)).decode("ascii")


def owner_of(peer: Any) -> tuple[Any, ...]:
    """
    Who a request comes from, as far as session ownership goes: the same
    fields that name a socket client's principal (L{twisted_mcp.policy.peers}):
    transport, listener, Unix uid and gid, TLS certificate (the listener is
    left out of what replicas compare: L{twisted_mcp.frontends.http_shared.owner_digest}).  Not the address
    or port, which change with every connection.  With a bearer token,
    the principal it names (name, roles and where it came from, not its
    expiry): a fresh token of the same principal keeps the session; another
    principal's, or the same name with other roles, does not.
    """
    principal = getattr(peer, "principal", None)
    token_owner = None if principal is None else (principal.source, principal.name, principal.roles)
    return (peer.transport, peer.listener, peer.uid, peer.gid, peer.common_name, peer.fingerprint, token_owner)


class HttpSession:
    """
    One MCP session over HTTP: its L{twisted_mcp.dispatch.session.ClientSession},
    the POST exchanges awaiting their answers (by request id key), its SSE
    streams that are open or resumable (by number), and which of them is the
    session's GET stream.

    @ivar busy: requests and streams open now; the idle clock runs only at 0.
    """

    def __init__(self, sid: str, owner: tuple[Any, ...], label: str) -> None:
        self.id = sid
        self.owner = owner
        self.label = label
        self.core: Any = None
        self.posts: dict[Any, Any] = {}
        #: L{twisted_mcp.frontends.http_streams.SseStream}s open or resumable, by number.
        self.sse: dict[int, Any] = {}
        self.standalone: Any = None
        self.last_stream = 0
        self.busy = 0
        self.ended = False
        self.timer: IDelayedCall | None = None
        #: Times another client identity presented this session's id.
        self.foreign = 0
        #: The core session of a client identity's stateless-era (2026-07-28)
        #: requests: its id is never disclosed, its requests' ids are the gateway's.
        self.stateless = False
        #: The last request id the gateway gave a stateless-era request.
        self.last_id = 0
        #: The profile of the path it was created on (None: the default view);
        #: on another path its id is unknown.
        self.view: str | None = None
        #: With a shared session store: the id of its C{initialize}, its
        #: record as last saved (L{twisted_mcp.frontends.http_shared.SessionRecord};
        #: None until saved), whether the store took it, when the store was
        #: last told it was used, and
        #: the gateway's own requests made in it (by id key: the URI a
        #: subscription made again on this replica is for).
        self.init_rid: Any = None
        self.record: Any = None
        self.saved = False
        self.touched = float("-inf")
        self.internal: dict[Any, str] = {}
        #: Subscriptions of its record still to be made again here (a few at a
        #: time, within C{gateway.maxCallsInFlight}), and whether any failed
        #: (then its record is not saved from here: it keeps them).
        self.resubscribe: list[str] = []
        self.resubscribe_failed = False
        #: The number in the id of the last subscription made again.
        self.last_resubscribe = 0
        #: False once the store refused its record for good (too large): served here only.
        self.shareable = True

    def streams(self) -> int:
        """SSE streams open now (a POST answered as a stream counts once it streams)."""
        return sum(1 for stream in self.sse.values() if stream.sink is not None)

    def stream_number(self) -> int:
        """A new stream's number, unique in the session."""
        self.last_stream += 1
        return self.last_stream


class SessionTable:
    """
    The sessions of one HTTP front.

    @param on_expired: called with a session that expired (it is already
        out of the table): it ends the session's calls and streams.
    """

    def __init__(
        self,
        clock: IReactorTime,
        settings: HttpSettings,
        on_expired: Callable[[HttpSession], None],
        mint: Callable[[], str] = mint_session_id,
    ) -> None:
        self.clock = clock
        self.settings = settings
        self.on_expired = on_expired
        self.mint = mint
        self.sessions: dict[str, HttpSession] = {}
        self.by_owner: dict[tuple[Any, ...], int] = {}
        self.count = 0
        #: Sessions that expired (for the log and the metrics).
        self.expired = 0

    def __len__(self) -> int:
        return len(self.sessions)

    def refusal(self, owner: tuple[Any, ...]) -> tuple[str, int] | None:
        """The setting a new session of C{owner} would exceed, and its value; None if it may open."""
        s = self.settings
        if len(self.sessions) >= s.maxSessions:
            return "http.maxSessions", s.maxSessions
        if self.by_owner.get(owner, 0) >= s.maxSessionsPerPrincipal:
            return "http.maxSessionsPerPrincipal", s.maxSessionsPerPrincipal
        return None

    def open(self, owner: tuple[Any, ...], label_prefix: str) -> HttpSession:
        """A new session of C{owner} (call L{refusal} first)."""
        sid = self.mint()
        while sid in self.sessions:  # pragma: no cover - 192 random bits
            sid = self.mint()
        return self.adopt(sid, owner, label_prefix)

    def adopt(self, sid: str, owner: tuple[Any, ...], label_prefix: str) -> HttpSession:
        """
        A session of C{owner} under an id another replica minted (its record
        is in the shared state), counted like one opened here (call
        L{refusal} first).
        """
        self.count += 1
        session = HttpSession(sid, owner, f"{label_prefix}#{self.count}")
        self.sessions[sid] = session
        self.by_owner[owner] = self.by_owner.get(owner, 0) + 1
        self._idle(session)
        return session

    def find(self, sid: str, owner: tuple[Any, ...]) -> HttpSession | None:
        """The session C{sid} if C{owner} created it and it has not ended; None otherwise."""
        session = self.sessions.get(sid)
        if session is None:
            return None
        if session.owner != owner:
            if not session.foreign:
                log.warn(
                    "HTTP client session {client}: its id was presented by another client identity; answered 404 "
                    "(logged once per session)",
                    client=session.label,
                )
            session.foreign += 1
            return None
        return session

    def hold(self, session: HttpSession) -> None:
        """A request or stream of C{session} opened: it is not idle."""
        session.busy += 1
        if session.timer is not None:
            if session.timer.active():
                session.timer.cancel()
            session.timer = None

    def release(self, session: HttpSession) -> None:
        """A request or stream of C{session} closed; at none, the idle clock starts."""
        session.busy -= 1
        if session.busy <= 0 and not session.ended:
            session.busy = 0
            self._idle(session)

    def remove(self, session: HttpSession) -> bool:
        """Take C{session} out of the table (its id is unknown from now on); False if it already was."""
        if session.timer is not None:
            if session.timer.active():
                session.timer.cancel()
            session.timer = None
        if self.sessions.get(session.id) is not session:
            return False
        del self.sessions[session.id]
        session.ended = True
        left = self.by_owner[session.owner] - 1
        if left:
            self.by_owner[session.owner] = left
        else:
            del self.by_owner[session.owner]
        return True

    def _idle(self, session: HttpSession) -> None:
        if session.timer is None or not session.timer.active():
            session.timer = self.clock.callLater(self.settings.sessionIdleTimeout, self._expire, session)

    def _expire(self, session: HttpSession) -> None:
        session.timer = None
        if not self.remove(session):
            return
        self.expired += 1
        log.info(
            "HTTP client session {client} expired after {seconds:g} s unused (http.sessionIdleTimeout)",
            client=session.label,
            seconds=self.settings.sessionIdleTimeout,
        )
        self.on_expired(session)


__all__ = ["SESSION_ID_RE", "HttpSession", "SessionTable", "mint_session_id", "owner_of"]
