"""
A merged listing as one caller may see it: what the caller's view selects,
filtered by the policy (and the listing audited), for C{tools/list},
C{prompts/list}, C{resources/list} and C{resources/templates/list}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_mcp.dispatch.views import Selection, view_of
from twisted_mcp.wire.jsonrpc import JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.catalog import Listing
    from twisted_mcp.dispatch.session import ClientSession

#: What each listing is called in results and in the policy.
NOUNS = {"tools": "tool", "prompts": "prompt", "resources": "resource", "resourceTemplates": "template"}


def selection_of(session: ClientSession) -> Selection:
    """What the view of C{session}'s caller selects of the catalog now."""
    gateway = session.gateway
    return gateway.views.selection(view_of(gateway, session.caller), gateway.catalog)


def principal_or_refuse(session: ClientSession, method: str) -> Any:
    """The caller's principal (None without a policy), or the refusal of C{method}."""
    policy = session.gateway.policy
    if not policy.active:
        return None
    try:
        return policy.principal(session.peer)
    except JsonRpcError as e:
        raise policy.deny(policy.new_record(session.label, method, session.protocol_version), e.code, e.message, e.data)


def visible(session: ClientSession, method: str, kind: str, listing: Listing) -> list[dict[str, Any]]:
    """The definitions of C{listing} (of C{kind}) the session's caller may
    see: those its view selects, as the policy lets it see them."""
    definitions = selection_of(session).of_kind(kind).definitions
    policy = session.gateway.policy
    if not policy.active:
        return definitions
    principal = principal_or_refuse(session, method)
    noun = NOUNS[kind]
    shown = policy.listing(principal, noun, definitions, listing.entries)
    policy.audit_listing(session.label, noun, principal, len(shown), len(definitions), session.protocol_version)
    return shown


__all__ = ["NOUNS", "principal_or_refuse", "selection_of", "visible"]
