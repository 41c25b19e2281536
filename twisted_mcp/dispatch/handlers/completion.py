"""
C{completion/complete}, routed by its reference: a prompt (by the name
clients see) or a resource template (by the URI template clients see).  A
reference the caller may not see (by the policy or outside its view), or
that no backend owns, is answered with no values: the answer says nothing
of what exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted_mcp.dispatch.catalog import Entry
from twisted_mcp.dispatch.lists import selection_of
from twisted_mcp.dispatch.routing import forward, refuse
from twisted_mcp.policy.subject import Subject
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight

NOTHING = {"completion": {"values": [], "hasMore": False}}


def complete(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    ref = params.get("ref")
    argument = params.get("argument")
    if type(ref) is not dict or type(argument) is not dict:
        raise refuse(session, "completion/complete", INVALID_PARAMS, "Invalid params: completion/complete needs ref and argument, objects")
    found = _reference(session, ref)
    if found is None:
        return NOTHING
    subject, entry, out_ref = found
    backend = entry.backend
    if "completions" not in backend.capabilities:
        return NOTHING
    policy = session.gateway.policy
    if policy.active:
        try:
            principal = policy.principal(session.peer)
        except JsonRpcError:
            principal = None  # refused (and audited) by the policy below
        if principal is not None and not policy.visible(principal, subject):
            return NOTHING
    out = dict(params)
    out["ref"] = out_ref
    return forward(session, request, subject, backend, params, out)


def _reference(session: ClientSession, ref: dict[str, Any]) -> tuple[Subject, Entry, dict[str, Any]] | None:
    catalog = session.gateway.catalog
    kind = ref.get("type")
    if kind == "ref/prompt":
        name = ref.get("name")
        entry = catalog.prompts.entries.get(name) if type(name) is str else None
        if entry is None:
            return None
        assert type(name) is str
        if name not in selection_of(session).prompts.members:
            return None
        return Subject("prompt", name, entry.backend.name, entry.original), entry, {**ref, "name": entry.original}
    if kind == "ref/resource":
        uri = ref.get("uri")
        if type(uri) is not str:
            return None
        entry = catalog.templates.entries.get(uri)
        subject_kind = "template"
        if entry is None:
            entry = catalog.resources.entries.get(uri)
            subject_kind = "resource"
        if entry is None or not selection_of(session).has_uri(uri, entry):
            return None
        return Subject(subject_kind, uri, entry.backend.name, entry.original), entry, {**ref, "uri": entry.original}
    return None
