"""
C{subscriptions/listen} (MCP 2026-07-28): a long-lived request for change
notifications, held open by L{twisted_mcp.dispatch.listens.Listens}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight


def listen(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Deferred[Any]:
    return session.listens.listen(request, params)
