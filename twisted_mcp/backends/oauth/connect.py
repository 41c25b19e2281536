"""
Connect links (C{docs/design/oauth.md} §4.4): the URL an elicitation
carries is C{<publicUrl>/oauth/connect/<id>}, never the authorization
server's own URL.  C{<id>} is 128 random bits naming one started
authorization: whom it is for (principal, backend), where the browser goes
next (the authorization URL, which carries the C{state}) and until when.

A link is single use (taken when the browser opens it) and expires on the
injected clock.  The URL is never logged nor shown in a repr: it carries
the C{state}.
"""

from __future__ import annotations

import secrets

from attrs import field, frozen
from twisted.internet.interfaces import IReactorTime

#: Links kept at once; beyond, the oldest is dropped (a link is only a pointer to a pending record).
MAX_LINKS = 1024
#: Links of one principal kept at once; beyond, that principal's oldest is
#: dropped (one principal's calls never push out another's links).
MAX_LINKS_PER_PRINCIPAL = 8


@frozen
class ConnectLink:
    """What a connect link leads to."""

    principal: str
    backend: str
    #: The authorization URL (carries the C{state}: never logged).
    url: str = field(repr=False)
    #: Clock seconds after which the link is refused.
    expires_at: float
    #: The scopes the call asked for (a step-up's): a link is offered again only for the same.
    scopes: tuple[str, ...] = ()


class ConnectLinks:
    """
    The connect links of this process.

    @param clock: the source of now (expiry).
    @param limit: links kept at once.
    """

    def __init__(self, clock: IReactorTime, limit: int = MAX_LINKS) -> None:
        self.clock = clock
        self.limit = limit
        self._links: dict[str, ConnectLink] = {}

    def __repr__(self) -> str:
        return f"<ConnectLinks: {len(self._links)} open>"

    def __len__(self) -> int:
        return len(self._links)

    def add(self, principal: str, backend: str, url: str, expires_at: float, scopes: tuple[str, ...] = ()) -> str:
        """A new link's id (22 URL-safe characters, 128 random bits) to C{url}."""
        self._expire()
        own = [k for k, link in self._links.items() if link.principal == principal]
        for link_id in own[: max(0, len(own) - MAX_LINKS_PER_PRINCIPAL + 1)]:
            del self._links[link_id]
        while len(self._links) >= self.limit:
            del self._links[next(iter(self._links))]
        link_id = secrets.token_urlsafe(16)
        self._links[link_id] = ConnectLink(principal, backend, url, expires_at, scopes)
        return link_id

    def unopened(self, principal: str, backend: str, scopes: tuple[str, ...], time_left: float) -> str | None:
        """
        The id of a link for the same authorization that nobody opened yet
        and that has C{time_left} seconds or more to live: several calls
        waiting for one consent share one link (and one pending
        authorization), instead of each beginning another.
        """
        now = self.clock.seconds()
        for link_id, link in reversed(self._links.items()):
            if (link.principal, link.backend, link.scopes) == (principal, backend, scopes) and link.expires_at - now >= time_left:
                return link_id
        return None

    def take(self, link_id: str) -> ConnectLink | None:
        """The link C{link_id} names, removed (single use); None when unknown or expired."""
        link = self._links.pop(link_id, None)
        if link is None or self.clock.seconds() > link.expires_at:
            return None
        return link

    def _expire(self) -> None:
        now = self.clock.seconds()
        for link_id in [k for k, link in self._links.items() if now > link.expires_at]:
            del self._links[link_id]


__all__ = ["MAX_LINKS", "ConnectLink", "ConnectLinks"]
