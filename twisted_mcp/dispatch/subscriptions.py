"""
L{Subscriptions}: clients' resource subscriptions, counted per backend: one
upstream C{resources/subscribe} per URI whatever the number of clients,
C{resources/unsubscribe} when the last one leaves, updates delivered only
to the subscribers (while the policy in force lets them see the
resource), and every subscription made again when a backend comes back up (a restart, or the replacement of a reload).
Toward a stateless-era (2026-07-28) backend, subscribing adds the URI to
its listen stream (L{twisted_mcp.backends.listen}) instead.

A subscriber (L{Subscriber}) is a handshake-era session (C{resources/subscribe})
or a stateless-era client's open C{subscriptions/listen}
(L{twisted_mcp.dispatch.listens.Listen}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.policy.audit.records import redact_uri
from twisted_mcp.policy.subject import Subject
from twisted_mcp.wire.jsonrpc import JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.gateway import Gateway
    from twisted_mcp.policy.pipeline import Policy

log = Logger()


class Subscriber(Protocol):
    """Who wants a resource's updates: a session, or one listen of a session."""

    @property
    def closing(self) -> bool:
        """It takes nothing more: a subscription made meanwhile does not count for it."""

    @property
    def peer(self) -> Any:
        """Its caller, whom the policy must let see the resource."""

    def notify(self, method: str, params: dict[str, Any] | None = None, related: Any = None) -> None:
        """Send it one notification."""


class _Upstream:
    """One URI of one backend, and the sessions subscribed to it."""

    __slots__ = ("target", "uri", "sessions", "waiting", "withdrawn", "pending", "active")

    def __init__(self, target: Backend, uri: str) -> None:
        self.target = target
        self.uri = uri
        #: Subscribed sessions, each with the URI as it sees it and what
        #: the policy checked (None: no policy).
        self.sessions: dict[Subscriber, tuple[str, Subject | None]] = {}
        #: Sessions waiting for the upstream subscription to be made.
        self.waiting: list[tuple[Deferred[Any], Subscriber, str, Subject | None]] = []
        #: Waiters whose session unsubscribed before the backend answered.
        self.withdrawn: set[Deferred[Any]] = set()
        self.pending: Deferred[Any] | None = None
        #: The backend accepted the subscription.
        self.active = False


class Subscriptions:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._upstreams: dict[tuple[Backend, str], _Upstream] = {}
        #: Each session's subscriptions: the URI it used -> upstream key.
        self._of_session: dict[Subscriber, dict[str, tuple[Backend, str]]] = {}

    def count(self) -> int:
        """Upstream subscriptions held (for /metrics and tests)."""
        return sum(1 for u in self._upstreams.values() if u.active)

    def uris_of(self, session: Subscriber) -> list[str]:
        """The URIs (as C{session} named them) C{session} is subscribed to, sorted."""
        return sorted(self._of_session.get(session, ()))

    def subscribe(
        self, session: Subscriber, target: Backend, uri: str, params: dict[str, Any], context: Any, subject: Subject | None = None
    ) -> Deferred[Any]:
        """Subscribe C{session} to C{uri} of C{target}: upstream only for
        the first.  Its updates reach the session while the policy lets its
        caller see C{subject}."""
        key = (target, uri)
        upstream = self._upstreams.get(key)
        if upstream is None:
            upstream = self._upstreams[key] = _Upstream(target, uri)
        exposed = self.gateway.catalog.expose_uri(target, uri)
        if upstream.active:
            self._add(upstream, session, exposed, subject)
            return succeed({})
        entry: list[Any] = []
        waiter: Deferred[Any] = Deferred(lambda d: upstream.waiting.remove(entry[0]) if entry[0] in upstream.waiting else None)
        entry.append((waiter, session, exposed, subject))
        upstream.waiting.append(entry[0])
        if upstream.pending is None:
            d = upstream.pending = target.subscribe_resource(uri, params, context)
            d.addCallbacks(self._made, self._refused, callbackArgs=(upstream,), errbackArgs=(upstream,))
        return waiter

    def _add(self, upstream: _Upstream, session: Subscriber, exposed: str, subject: Subject | None) -> None:
        upstream.sessions[session] = (exposed, subject)
        self._of_session.setdefault(session, {})[exposed] = (upstream.target, upstream.uri)

    def _made(self, result: Any, upstream: _Upstream) -> None:
        upstream.pending = None
        waiting, upstream.waiting = upstream.waiting, []
        if self._upstreams.get((upstream.target, upstream.uri)) is not upstream:
            # The backend went (a reload removed it) while it subscribed.
            for waiter, _, _, _ in waiting:
                waiter.callback({})
            return
        upstream.active = True
        withdrawn, upstream.withdrawn = upstream.withdrawn, set()
        for waiter, session, exposed, subject in waiting:
            if not session.closing and waiter not in withdrawn:
                self._add(upstream, session, exposed, subject)
            waiter.callback({})
        if not upstream.sessions:
            self._drop(upstream)

    def _refused(self, failure: Any, upstream: _Upstream) -> None:
        upstream.pending = None
        waiting, upstream.waiting = upstream.waiting, []
        upstream.withdrawn = set()
        for waiter, _, _, _ in waiting:
            waiter.errback(failure)
        if not upstream.sessions and not upstream.active:
            self._upstreams.pop((upstream.target, upstream.uri), None)
        return None

    def unsubscribe(self, session: Subscriber, exposed: str) -> None:
        """C{session} no longer wants updates of C{exposed} (nothing if it had no such subscription)."""
        for pending in self._upstreams.values():
            for waiter, waiting, uri, _ in pending.waiting:
                if waiting is session and uri == exposed:
                    # Its subscribe still waits for the backend: it will not count.
                    pending.withdrawn.add(waiter)
        mine = self._of_session.get(session)
        key = mine.pop(exposed, None) if mine else None
        if mine is not None and not mine:
            del self._of_session[session]
        if key is None:
            return
        upstream = self._upstreams.get(key)
        if upstream is not None:
            upstream.sessions.pop(session, None)
            if not upstream.sessions and not upstream.waiting and upstream.active:
                self._drop(upstream)

    def session_ended(self, session: Subscriber) -> None:
        for exposed in list(self._of_session.get(session, {})):
            self.unsubscribe(session, exposed)

    def holds(self, target: Backend) -> bool:
        """Whether some session is subscribed (or subscribing) to a URI of C{target}."""
        return any(u.target is target for u in self._upstreams.values())

    def backend_gone(self, target: Backend) -> None:
        """C{target} leaves the gateway (a reload removed it, or a
        per-session instance stops): its subscriptions go with it."""
        for upstream in [u for u in self._upstreams.values() if u.target is target]:
            self._end(upstream)

    def drop_unreachable(self, reachable: Callable[[Backend, str], bool]) -> int:
        """
        End the subscriptions to URIs clients may no longer reach (a reload
        changed a backend's resources filter): no more updates reach their
        sessions, the backend is unsubscribed (best effort), and a client's
        later C{resources/unsubscribe} of one is accepted as a no-op.
        Returns how many were ended.
        """
        gone = [u for u in self._upstreams.values() if not reachable(u.target, u.uri)]
        for upstream in gone:
            log.info(
                "backend {backend}: subscription to {uri} ended: its resources filter no longer lets it through",
                backend=upstream.target.name,
                uri=redact_uri(upstream.uri),
            )
            self._end(upstream)
        return len(gone)

    def _end(self, upstream: _Upstream) -> None:
        """Forget C{upstream} for every session subscribed to it, and end it."""
        key = (upstream.target, upstream.uri)
        for session in upstream.sessions:
            mine = self._of_session.get(session)
            if mine is None:
                continue
            for exposed, k in list(mine.items()):
                if k == key:
                    del mine[exposed]
            if not mine:
                del self._of_session[session]
        upstream.sessions.clear()
        if upstream.active:
            self._drop(upstream)
        else:
            self._upstreams.pop(key, None)

    def _drop(self, upstream: _Upstream) -> None:
        """No session is left: end the upstream subscription (in the background)."""
        self._upstreams.pop((upstream.target, upstream.uri), None)
        upstream.active = False
        target = upstream.target
        try:
            d = target.unsubscribe_resource(upstream.uri)
        except Exception as e:
            log.info("backend {backend}: could not unsubscribe from {uri}: {why}", backend=target.name, uri=upstream.uri, why=e)
            return
        d.addErrback(
            lambda f: log.info("backend {backend}: could not unsubscribe from {uri}: {why}", backend=target.name, uri=upstream.uri, why=f.getErrorMessage())
        )

    def backend_up(self, target: Backend) -> None:
        """C{target} (re)started: its subscriptions are made again."""
        for upstream in list(self._upstreams.values()):
            if upstream.target is not target or not upstream.active:
                continue
            try:
                d = target.subscribe_resource(upstream.uri, {"uri": upstream.uri})
            except Exception as e:
                log.warn("backend {backend}: could not subscribe again to {uri}: {why}", backend=target.name, uri=upstream.uri, why=e)
                continue
            d.addCallbacks(self._made_again, self._not_made_again, callbackArgs=(upstream,), errbackArgs=(upstream,))

    def _made_again(self, result: Any, upstream: _Upstream) -> None:
        log.info("backend {backend}: subscribed again to {uri}", backend=upstream.target.name, uri=upstream.uri)

    def _not_made_again(self, failure: Any, upstream: _Upstream) -> None:
        log.warn(
            "backend {backend}: could not subscribe again to {uri}: {why}",
            backend=upstream.target.name,
            uri=upstream.uri,
            why=failure.getErrorMessage(),
        )

    def replaced(self, old: Backend, new: Backend) -> None:
        """A reload replaced C{old} by C{new}: its subscriptions move to C{new},
        made again once it is up."""
        for key, upstream in list(self._upstreams.items()):
            if upstream.target is not old:
                continue
            del self._upstreams[key]
            upstream.target = new
            self._upstreams[(new, upstream.uri)] = upstream
            for session in upstream.sessions:
                mine = self._of_session.get(session, {})
                for exposed, k in list(mine.items()):
                    if k == key:
                        mine[exposed] = (new, upstream.uri)

    def updated(self, target: Backend, params: dict[str, Any]) -> None:
        """C{notifications/resources/updated} from C{target}: to the sessions subscribed."""
        uri = params.get("uri")
        upstream = self._upstreams.get((target, uri)) if type(uri) is str else None
        if upstream is None:
            return
        policy = self.gateway.policy
        for session, (exposed, subject) in list(upstream.sessions.items()):
            if policy.active and subject is not None and not _may_see(policy, session, subject):
                continue  # the policy changed since it subscribed (a kill switch, a reload)
            out = dict(params)
            out["uri"] = exposed
            session.notify("notifications/resources/updated", out)


def _may_see(policy: Policy, session: Subscriber, subject: Subject) -> bool:
    """Whether the session's caller may see C{subject} under the policy in force."""
    try:
        principal = policy.principal(session.peer)
    except JsonRpcError:
        return False
    return policy.visible(principal, subject)


__all__ = ["Subscriptions"]
