"""
What C{twisted-mcp tools} shows (design §7.1): the tool list a principal,
using a client, on a profile, gets from a gateway, as data.  The admin
endpoint's C{GET /tools} answers it, and the command builds the same from a
gateway it starts itself; both print it with the command's formatter.

Nothing here decides anything of its own: the list is the gateway's own
L{fitted_for} (views, the policy's filter, the budget, aliases), the budget
is L{budget_for}'s, and C{search} ranks with the gateway's search index and
the same visible set as C{search_tools}.  The only thing computed here is
which row of the client tables gave each number of the budget, a label
beside the values L{budget_for} chose.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from twisted_mcp.dispatch.handlers.search import MAX_QUERY, search_index
from twisted_mcp.dispatch.surface import Fitted, fitted_for
from twisted_mcp.dispatch.views import View, view_of
from twisted_mcp.mcp.clients import BUILT_IN, Budget, matching
from twisted_mcp.policy.principal import LOCAL_PRINCIPAL, Principal
from twisted_mcp.policy.subject import Subject

#: The numbers of a budget, in the order they are shown.
BUDGET_KEYS = ("maxTools", "maxNameLength", "nameOverhead", "search")


class ReportProblem(Exception):
    """
    What was asked for cannot be shown: an unknown principal or profile, a
    search out of bounds.  C{message} names the option and what is known.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen
class ToolsQuery:
    """
    What to show.

    @ivar principal: a principal named in the config's C{identity:} section;
        None: C{identity.principal}, or the local principal without identity.
    @ivar roles: instead, a principal with these roles of C{roles:} (named
        C{principal}, e.g. a token's subject, or C{(roles)}).
    @ivar client: the C{clientInfo.name} to match against the client tables.
    @ivar profile: a profile of C{profiles:}; None: the default view.
    @ivar search: a query to rank, as C{search_tools} would.
    @ivar limit: how many results (default C{search.defaultLimit}).
    @ivar explain: add each result's per-field scores.
    """

    principal: str | None = None
    roles: tuple[str, ...] | None = None
    client: str | None = None
    profile: str | None = None
    search: str | None = None
    limit: int | None = None
    explain: bool = False


def config_principals(identity: Any) -> dict[str, Principal]:
    """
    The principals the C{identity:} section names, by name: C{principal},
    then each listener's, then the named C{peers} and C{certificates}
    entries (the first of a name wins).
    """
    found: dict[str, Principal] = {}
    if identity is None:
        return found
    fixed = getattr(identity, "principal", None)
    if fixed is not None:
        found[fixed.name] = fixed
    for _, principal in getattr(identity, "listeners", ()):
        found.setdefault(principal.name, principal)
    for source, rules in (("peer", getattr(identity, "peers", ())), ("certificate", getattr(identity, "certificates", ()))):
        for rule in rules:
            if rule.name:
                found.setdefault(rule.name, Principal(name=rule.name, roles=tuple(rule.roles), source=source))
    return found


def principal_named(
    identity: Any, name: str | None, roles: tuple[str, ...] | None = None, known_roles: Any = ()
) -> Principal:
    """
    The principal C{name} names (L{config_principals}); without a name,
    C{identity.principal}, or the local principal when no identity is
    configured.  With C{roles} (each one of C{known_roles}), a principal
    called C{name} with those roles: one that only a token names.
    L{ReportProblem} when there is none, with the known names.
    """
    known = config_principals(identity)
    names = ", ".join(sorted(known)) or "none"
    if roles is not None:
        if identity is None:
            raise ReportProblem("--roles: no identity is configured, so every request runs as 'local' with every permission")
        for role in roles:
            if role not in known_roles:
                raise ReportProblem(f"--roles: no role {role!r} (roles: {', '.join(sorted(known_roles)) or 'none are configured'})")
        return Principal(name=name or "(roles)", roles=tuple(roles), source="roles")
    if identity is None:
        if name in (None, "local"):
            return LOCAL_PRINCIPAL
        raise ReportProblem(f"--principal {name}: no identity is configured, so every request runs as 'local'")
    if name is None:
        fixed = getattr(identity, "principal", None)
        if fixed is not None:
            return fixed  # type: ignore[no-any-return]
        raise ReportProblem(f"identities are configured but identity.principal is not: name one with --principal (known: {names})")
    principal = known.get(name)
    if principal is None:
        raise ReportProblem(
            f"--principal {name}: the identity section names no such principal (known: {names}; for one "
            "that only a token names, give its roles with --roles)"
        )
    return principal


def budget_sources(settings: Any, view: View, client: str | None, budget: Budget) -> dict[str, dict[str, Any]]:
    """
    Each number of C{budget} (L{budget_for}'s, for C{client} on C{view}) with
    the row it came from: the profile, a C{clients.match} row, a built-in
    row (with its C{verified} note), C{clients.default}, or the default.
    """
    clients = settings.clients
    rows: list[tuple[Any, str, str | None]] = []
    if clients.useClientInfo and client:
        row = matching(client, clients.rules)
        if row is not None:
            rows.append((row, f"clients.match[{clients.rules.index(row)}]", None))
        row = matching(client, BUILT_IN)
        if row is not None:
            rows.append((row, f"built-in {row.client} ({row.name})", row.verified))
    if clients.default is not None:
        rows.append((clients.default, "clients.default", None))
    out: dict[str, dict[str, Any]] = {}
    for key in BUDGET_KEYS:
        shown: dict[str, Any] = {"value": getattr(budget, key), "source": "default"}
        if getattr(view, key) is not None:
            shown["source"] = f"profile {view.name}"
        else:
            for row, label, verified in rows:
                if getattr(row, key) is not None:
                    shown["source"] = label
                    if verified:
                        shown["verified"] = verified
                    if key == "nameOverhead" and row.countsServerKey:
                        shown["source"] += f", plus clients.serverKeyLength {clients.serverKeyLength}"
                    break
        out[key] = shown
    return out


def backends_down(gateway: Any) -> list[str]:
    """The backends that are not up (a per-session one: not yet discovered)."""
    down = []
    for name, backend in sorted(gateway.backends.items()):
        up = bool(backend.discovered) if backend.per_session else backend.state.value == "up"
        if not up:
            down.append(name)
    return down


@attrs.define
class _Asking:
    """
    Who the report looks as: a stand-in for the client session that
    L{fitted_for} and the search index read (its gateway, its caller's
    view, the C{clientInfo} it announced).
    """

    gateway: Any
    caller: Any
    client_info: dict[str, Any]


@attrs.frozen
class _Caller:
    view: str | None


def _tool_row(gateway: Any, fitted: Fitted, shaped: str) -> dict[str, Any]:
    catalog = gateway.catalog
    entry = catalog.tools.entries[shaped]
    backend = entry.backend.name
    shaping = catalog.shaped.get(backend, {}).get("tools")
    marks = []
    if shaping is not None and entry.original in shaping.renamed:
        marks.append("renamed")
    if shaping is not None and entry.original in shaping.overridden:
        marks.append("overridden")
    if shaped in gateway.policy.pins.quarantined:
        marks.append("quarantined")
    if shaped in fitted.view.pinned:
        marks.append("pinned")
    return {
        "name": fitted.alias_of.get(shaped, shaped),
        "shaped": shaped,
        "backend": backend,
        "tool": entry.original,
        "marks": marks,
    }


def _numbered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"position": i, **row} for i, row in enumerate(rows, 1)]


def _withheld(gateway: Any, fitted: Fitted, names: tuple[str, ...], principal: Principal | None) -> list[dict[str, Any]]:
    """The view's tools the principal does not get, and why."""
    policy = gateway.policy
    visible = set(fitted.visible)
    hidden = set(fitted.hidden)
    out = []
    for shaped in names:
        if shaped in visible:
            continue
        entry = gateway.catalog.tools.entries[shaped]
        if shaped in hidden:
            why = "its alias collides with another, or it is named like a search tool"
        else:
            decision = policy.decision(principal, Subject("tool", shaped, entry.backend.name, entry.original))
            why = decision[1] if decision is not None else "hidden by the policy"
        out.append({"shaped": shaped, "backend": entry.backend.name, "tool": entry.original, "reason": why})
    return out


def _searched(asking: _Asking, fitted: Fitted, query: ToolsQuery) -> dict[str, Any]:
    """The ranked results of C{query.search}, as C{search_tools} ranks them."""
    settings = asking.gateway.surface.search
    text = query.search or ""
    if len(text) > MAX_QUERY:
        raise ReportProblem(f"--search: the query is longer than {MAX_QUERY} characters")
    limit = settings.defaultLimit if query.limit is None else query.limit
    if not 1 <= limit <= settings.maxLimit:
        raise ReportProblem(f"--limit: expected a whole number from 1 to {settings.maxLimit} (search.maxLimit), got {limit}")
    index = search_index(asking.gateway)
    results = []
    for rank, hit in enumerate(index.search(text, fitted.visible, limit), 1):
        row = {"rank": rank, **_tool_row(asking.gateway, fitted, hit.name), "score": round(hit.score, 4)}
        if query.explain:
            row["explain"] = {field: round(value, 4) for field, value in index.explain(text, hit.name).items() if value}
        results.append(row)
    return {"query": text, "limit": limit, "total": len(fitted.visible), "results": results}


def tools_report(gateway: Any, identity: Any, query: ToolsQuery) -> dict[str, Any]:
    """
    The tool list C{query} describes, as the gateway serves it now: mode,
    budget and where each number came from, the list the client sees
    (C{surface}), every tool the principal may use (C{catalog}; in search
    mode the client finds them with the search tool), the view's tools the
    principal does not get (C{withheld}), and C{search} results when asked.

    @param identity: the config's C{identity:} section (its principals).
    @raise ReportProblem: an unknown principal or profile, a bad search.
    """
    profiles: Mapping[str, Any] = gateway.profiles or {}
    if query.profile is not None and query.profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none are configured"
        raise ReportProblem(f"--profile {query.profile}: no such profile (profiles: {known})")
    principal = principal_named(identity, query.principal, query.roles, gateway.policy.rules.roles)
    asking = _Asking(gateway, _Caller(query.profile), {"name": query.client} if query.client else {})
    view = view_of(gateway, asking.caller)
    policy = gateway.policy
    # As the sessions do: no principal when no policy is active (the same cached list).
    acting = principal if policy.active else None
    fitted = fitted_for(asking, None, acting)  # type: ignore[arg-type]
    selection = gateway.views.selection(view, gateway.catalog)
    budget = fitted.budget
    search_names = fitted.search_names or ()
    surface = []
    for definition in fitted.tools:
        name = definition["name"]
        if name in search_names:
            surface.append({"name": name, "shaped": None, "backend": None, "tool": None, "marks": ["gateway"]})
        else:
            surface.append(_tool_row(gateway, fitted, fitted.shaped_of.get(name, name)))
    report: dict[str, Any] = {
        "ready": bool(gateway.ready),
        "down": backends_down(gateway),
        "principal": {
            "name": principal.name,
            "roles": list(principal.roles),
            "source": principal.source,
            "allAccess": principal.all_access,
        },
        "client": query.client,
        "profile": view.name,
        "mode": fitted.mode,
        "budget": {
            "source": budget.source,
            "nameLimit": budget.name_limit,
            "fromClientInfo": budget.from_client_info,
            "keys": budget_sources(gateway.surface, view, query.client, budget),
        },
        "selected": len(selection.names),
        "visible": len(fitted.visible),
        "surface": _numbered(surface),
        "catalog": _numbered([_tool_row(gateway, fitted, shaped) for shaped in fitted.visible]),
        "withheld": _withheld(gateway, fitted, selection.names, acting if acting is not None else principal),
    }
    if query.search is not None:
        report["search"] = _searched(asking, fitted, query)
    return report


__all__ = [
    "BUDGET_KEYS",
    "ReportProblem",
    "ToolsQuery",
    "backends_down",
    "budget_sources",
    "config_principals",
    "principal_named",
    "tools_report",
]
