"""
Fit: the tool list one request gets, from its view's selection, the
policy's filter for its principal and its client's budget.

  1. the policy's filter (L{twisted_mcp.policy.pipeline.Policy.listing});
  2. the budget: every visible tool (I{full} mode) when they fit in
     C{maxTools}; otherwise I{search} mode (the gateway's two tools and the
     view's pinned tools) or the first C{maxTools} (I{truncate}), as
     C{surface.overflow} says; C{search: always} and C{never} force it;
  3. names: aliases (L{twisted_mcp.mcp.names.shortened}) when a visible
     name is longer than the budget's limit.

The budget comes from the view's profile, then the config's C{clients}
rows, the built-in table (L{twisted_mcp.mcp.clients}) matched on the
C{clientInfo.name} of the request (a 2026-07-28 request's own envelope, or
what the session's C{initialize} said), then the default.

L{Fitted} results are kept in a small LRU keyed by (view, the catalog's
tools listing as last rebuilt, the policy's epoch, the principal's name and
roles, budget, settings):
a hit makes a C{tools/list} one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Mapping

import attrs
import orjson
from twisted.logger import Logger

from twisted_mcp.config.surface import SearchSettings, SurfaceSettings
from twisted_mcp.dispatch.views import DEFAULT_VIEW, Selection, View, view_of
from twisted_mcp.mcp.clients import BUDGET_KEYS, NO_ALIASES, Budget, match
from twisted_mcp.mcp.names import MIN_ALIAS_LIMIT, shortened
from twisted_mcp.wire.jsonrpc import EncodedList, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight

log = Logger()

#: Where an aliased tool's definition carries its shaped name.
SHAPED_NAME_META = "io.github.twisted-mcp/name"
#: Entries of the fitted-list cache.
CACHE_SIZE = 256
#: The (view, budget) pairs remembered as logged once (a cut, hidden tools).
MOST_LOGGED = 4096


def search_tool_definitions(settings: SearchSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The definitions of the gateway's two tools of search mode."""
    search = {
        "name": settings.searchName,
        "title": "Search tools",
        "description": (
            "Find the tools of this server for a task: give a few words describing it; the answer lists the "
            f"best matching tools (at most limit, default {settings.defaultLimit}) with their definitions. "
            f"Then call one with {settings.callName}."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "A few words describing the task."},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": settings.maxLimit,
                    "description": "How many tools at most.",
                },
            },
            "required": ["query"],
        },
        "outputSchema": {
            "type": "object",
            "properties": {
                "tools": {"type": "array", "items": {"type": "object"}},
                "total": {"type": "integer"},
                "query": {"type": "string"},
            },
            "required": ["tools", "total", "query"],
        },
        "annotations": {"readOnlyHint": True, "openWorldHint": False},
    }
    call = {
        "name": settings.callName,
        "title": "Call a tool",
        "description": f"Call a tool found with {settings.searchName}: its name, and its arguments as its inputSchema says.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": f"The tool's name as {settings.searchName} gave it."},
                "arguments": {"type": "object", "description": "The tool's arguments."},
            },
            "required": ["name"],
        },
    }
    return search, call


@attrs.define(eq=False)
class Fitted:
    """
    The tool list of one (view, principal, budget), and the way back from
    the names it shows.

    @ivar mode: C{full}, C{search} or C{truncate}.
    @ivar tools: the definitions as the client sees them, in order.
    @ivar visible: the shaped names the principal may see in the view (in
        view order), whatever the mode shows: a name learnt from search may
        be called directly.
    @ivar definitions: shaped name -> served definition, for C{visible}.
    @ivar members: every shaped name the view selects (visible or not: a
        tool the policy hides is refused by the policy, as a direct call).
    @ivar alias_of: shaped name -> alias, for the names that changed.
    @ivar shaped_of: alias -> shaped name.
    @ivar search_names: the gateway's two tools' names, in search mode.
    """

    mode: str
    tools: list[dict[str, Any]]
    visible: tuple[str, ...]
    definitions: Mapping[str, dict[str, Any]]
    members: frozenset[str]
    alias_of: Mapping[str, str]
    shaped_of: Mapping[str, str]
    budget: Budget
    view: View
    search_names: tuple[str, str] | None = None
    #: Visible tools left out: their aliases collide, or (search mode) they
    #: are named like a search tool.
    hidden: tuple[str, ...] = ()
    _digest: str | None = None
    _listed: EncodedList | None = None
    _pages: dict[tuple[int, str], EncodedList] = attrs.Factory(dict)

    @property
    def digest(self) -> str:
        """A digest of the list as shown (for C{list_changed})."""
        if self._digest is None:
            try:
                # orjson: a thousand real definitions in milliseconds, where
                # the standard library takes tens of them.
                data = orjson.dumps(self.tools, option=orjson.OPT_SORT_KEYS, default=str)
            except TypeError:  # a lone surrogate, an integer beyond 64 bits
                text = json.dumps(self.tools, sort_keys=True, default=str, ensure_ascii=False)
                data = text.encode("utf-8", "surrogatepass")
            self._digest = hashlib.sha256(data).hexdigest()
        return self._digest

    @property
    def listed(self) -> EncodedList:
        """C{tools} as a C{tools/list} answer carries it: encoded once, on
        the first answer, and those bytes written for every later one."""
        if self._listed is None:
            self._listed = EncodedList(self.tools)
        return self._listed

    def page(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A page of C{tools} (a slice of it) as a C{tools/list} answer
        carries it, encoded on its first answer, as L{listed}."""
        if not items:
            return items
        key = (len(items), items[0]["name"])  # names are unique in a list: a page's first one tells it
        encoded = self._pages.get(key)
        if encoded is None:
            encoded = self._pages[key] = EncodedList(items)
        return encoded

    def shaped(self, name: str) -> str | None:
        """The shaped name C{name} (an alias or a shaped name) calls, or
        None when it is not a tool of the view (or is hidden in this mode)."""
        shaped = self.shaped_of.get(name, name)
        if shaped not in self.members:
            return None
        if self.search_names is not None and shaped in self.search_names:
            return None
        return shaped

    def served(self, shaped: str) -> dict[str, Any]:
        """C{shaped}'s definition as this client sees it (its alias as its name)."""
        return self.definitions[shaped]


def _served(definition: dict[str, Any], alias: str | None) -> dict[str, Any]:
    if alias is None:
        return definition
    out = dict(definition)
    shaped = out["name"]
    out["name"] = alias
    meta = out.get("_meta")
    out["_meta"] = {**meta, SHAPED_NAME_META: shaped} if type(meta) is dict else {SHAPED_NAME_META: shaped}
    return out


def fit(
    selection: Selection,
    shown: list[dict[str, Any]],
    budget: Budget,
    settings: SurfaceSettings,
    view: View,
) -> Fitted:
    """
    The list C{budget} allows of the definitions C{shown} (the view's
    selection as the policy lets the principal see it, in view order).
    """
    names = [d["name"] for d in shown]
    hidden: list[str] = []
    # Under MIN_ALIAS_LIMIT no alias fits: serve names up to it as they are
    # and alias the rest to it (the cache logs once that the client's own
    # limit is lower), rather than drop tools.
    limit = max(budget.name_limit, MIN_ALIAS_LIMIT)
    alias_of: dict[str, str] = {}
    shaped_of: dict[str, str] = {}
    if limit < NO_ALIASES and any(len(n) > limit for n in names):
        alias_of, shaped_of = shortened(names, limit)
        unnamed = [n for n in names if len(n) > limit and n not in alias_of]
        hidden += unnamed
        if unnamed:
            keep = [i for i, n in enumerate(names) if n not in unnamed]
            shown, names = [shown[i] for i in keep], [names[i] for i in keep]
    over = budget.maxTools is not None and len(names) > budget.maxTools
    if budget.search == "always" or (over and budget.search != "never" and settings.overflow == "search"):
        mode = "search"
    elif over:
        mode = "truncate"
    else:
        mode = "full"
    search_names = None
    if mode == "search":
        search_names = (settings.search.searchName, settings.search.callName)
        clashing = [n for n in names if n in search_names]
        hidden += clashing
        if clashing:
            keep = [i for i, n in enumerate(names) if n not in search_names]
            shown, names = [shown[i] for i in keep], [names[i] for i in keep]
    definitions = {n: _served(d, alias_of.get(n)) for n, d in zip(names, shown, strict=True)}
    if mode == "full":
        tools = list(definitions.values()) if alias_of else shown
    elif mode == "truncate":
        tools = [definitions[n] for n in names[: budget.maxTools]]
    else:
        pinned = set(view.pinned)
        tools = [*search_tool_definitions(settings.search)]
        tools += [definitions[n] for n in names if n in pinned]
        if budget.maxTools is not None:
            tools = tools[: budget.maxTools]
    return Fitted(
        mode=mode,
        tools=tools,
        visible=tuple(names),
        definitions=definitions,
        members=selection.members,
        alias_of=alias_of,
        shaped_of=shaped_of,
        budget=budget,
        view=view,
        search_names=search_names,
        hidden=tuple(hidden),
    )


def client_name(session: ClientSession, request: InFlight | None) -> str | None:
    """The C{clientInfo.name} a request's client announced: in a
    2026-07-28 request's own envelope, else at the session's C{initialize}."""
    if request is not None and request.envelope is not None:
        info = request.envelope.client_info
    else:
        info = session.client_info
    name = info.get("name") if type(info) is dict else None
    return name if type(name) is str else None


def budget_for(settings: SurfaceSettings, view: View, name: str | None) -> Budget:
    """The budget of a client named C{name} on C{view}: the profile's keys
    win over the client tables."""
    clients = settings.clients
    budget = match(name, clients.rules, clients.useClientInfo, clients.serverKeyLength, clients.default)
    overrides = {k: getattr(view, k) for k in BUDGET_KEYS if getattr(view, k) is not None}
    if not overrides:
        return budget
    return attrs.evolve(
        budget,
        source=f"profile {view.name}; {budget.source}",
        from_client_info=budget.from_client_info and len(overrides) < len(BUDGET_KEYS),
        **overrides,
    )


class FittedCache:
    """The last L{CACHE_SIZE} fitted lists, least recently used out first."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[Any, Fitted] = OrderedDict()
        self._budgets: dict[Any, Budget] = {}
        #: What was logged once (a cut, hidden tools), so as not to repeat it.
        self._cut: set[tuple[Any, ...]] = set()
        #: The catalog's tools listing as last seen, and a number new with
        #: each rebuild (keys hold the number, not old listings).
        self._listing: Any = None
        self._listing_serial = 0
        #: The last answer of L{reshapes}: (settings, client name, answer).
        self._reshapes: tuple[Any, str | None, bool] = (None, None, False)

    def listing_serial(self, listing: Any) -> int:
        """A number that changes when the catalog's tools listing is rebuilt
        (a new object, even with the same text): the fitted lists of the
        previous one are dropped."""
        if listing is not self._listing:
            self._listing = listing
            self._listing_serial += 1
            self._entries.clear()
        return self._listing_serial

    def budget(self, settings: SurfaceSettings, view: View, name: str | None) -> Budget:
        key = (settings, view, name)
        budget = self._budgets.get(key)
        if budget is None:
            if len(self._budgets) > 4096:
                self._budgets.clear()
            budget = self._budgets[key] = budget_for(settings, view, name)
        return budget

    def reshapes(self, settings: SurfaceSettings, name: str | None) -> bool:
        """
        Whether the budget of a client named C{name} on the default view
        can make its tool list or a name differ from the catalog's (aliases,
        a cut, search mode).  Asked on every C{tools/call}: the last answer
        is kept (a pure function of the frozen settings and the name), so
        that a run of calls from one client costs two comparisons.
        """
        last_settings, last_name, answer = self._reshapes
        if settings is last_settings and name == last_name:
            return answer
        budget = self.budget(settings, DEFAULT_VIEW, name)
        answer = budget.name_limit < NO_ALIASES or budget.maxTools is not None or budget.search == "always"
        self._reshapes = (settings, name, answer)
        return answer

    def get(self, key: Any) -> Fitted | None:
        fitted = self._entries.get(key)
        if fitted is not None:
            self._entries.move_to_end(key)
        return fitted

    def put(self, key: Any, fitted: Fitted) -> None:
        self._entries[key] = fitted
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        if len(self._cut) > MOST_LOGGED:
            self._cut.clear()  # logged again at worst, once more
        hidden = (fitted.view, fitted.budget, fitted.hidden)
        if fitted.hidden and hidden not in self._cut:
            self._cut.add(hidden)
            log.warn(
                "view {view}, budget from {source}: tools hidden (their aliases collide, or they are named like a "
                "search tool): {names}",
                view=fitted.view.name,
                source=fitted.budget.source,
                names=", ".join(fitted.hidden),
            )
        cut = (fitted.view, fitted.budget)
        below = ("below", fitted.view, fitted.budget)
        if fitted.budget.name_limit < MIN_ALIAS_LIMIT and below not in self._cut:
            self._cut.add(below)
            log.warn(
                "view {view}, budget from {source}: the client takes names of {limit} characters, below the "
                "{least} aliases need; names are served up to {least} characters (a longer one gets an alias "
                "of {least}), which this client may refuse",
                view=fitted.view.name,
                source=fitted.budget.source,
                limit=fitted.budget.name_limit,
                least=MIN_ALIAS_LIMIT,
            )
        if fitted.mode == "truncate" and cut not in self._cut:
            self._cut.add(cut)
            log.info(
                "tools/list cut to {kept} of {total} tool(s) for view {view} (budget from {source})",
                kept=len(fitted.tools),
                total=len(fitted.visible),
                view=fitted.view.name,
                source=fitted.budget.source,
            )

    def __len__(self) -> int:
        return len(self._entries)


def fitted_for(session: ClientSession, request: InFlight | None, principal: Any = None) -> Fitted:
    """
    The fitted tool list of C{request} (None: the session's own, as its
    last C{initialize} described its client).  C{principal} is the
    caller's, already established when the policy is active.
    """
    gateway = session.gateway
    settings = gateway.surface
    view = view_of(gateway, session.caller)
    catalog = gateway.catalog
    selection = gateway.views.selection(view, catalog)
    cache: FittedCache = gateway.fits
    budget = cache.budget(settings, view, client_name(session, request))
    policy = gateway.policy
    # The tools listing itself, not the catalog's generation: a rebuild with
    # the same text (a backend restarted, a priority changed) makes a new one.
    # What visibility depends on, no more: the policy's epoch (not its
    # generation, which every cached decision bumps), the principal's name
    # and roles (not its token's expiry), the listing as rebuilt.
    who = None if principal is None else (principal.name, principal.roles, principal.all_access)
    key = (view, cache.listing_serial(catalog.tools), policy.epoch, who, budget, settings)
    fitted = cache.get(key)
    if fitted is not None:
        return fitted
    definitions = selection.definitions
    if policy.active:
        definitions = policy.listing(principal, "tool", definitions, catalog.tools.entries)
    fitted = fit(selection, definitions, budget, settings, view)
    cache.put(key, fitted)
    return fitted


def reshaped(session: ClientSession, request: InFlight | None) -> bool:
    """Whether this request's view or budget can make its tool list or a
    name differ from the catalog's (a profile, aliases or search mode)."""
    gateway = session.gateway
    view = view_of(gateway, session.caller)
    if view is not DEFAULT_VIEW:
        return True
    return gateway.fits.reshapes(gateway.surface, client_name(session, request))


def tools_digest(session: ClientSession, request: InFlight | None) -> str | None:
    """The digest of the tool list C{request} (None: the session's own)
    would get now; None when it cannot be told (the caller is refused) or
    the list is the catalog's own (every change is told, as without a
    budget or a profile)."""
    if not reshaped(session, request):
        return None
    policy = session.gateway.policy
    try:
        principal = policy.principal(session.peer) if policy.active else None
        return fitted_for(session, request, principal).digest
    except JsonRpcError:  # the caller is refused
        return None


def search_sentence(fitted: Fitted) -> str:
    """The instructions' sentence for a client in search mode."""
    search, call = fitted.search_names or ("search_tools", "call_tool")
    return (
        f"This server has {len(fitted.visible)} tools; call {search} with a few words describing the task to find them, "
        f"then {call} with the name it returns."
    )


__all__ = [
    "CACHE_SIZE",
    "SHAPED_NAME_META",
    "Fitted",
    "FittedCache",
    "budget_for",
    "client_name",
    "fit",
    "fitted_for",
    "reshaped",
    "search_sentence",
    "search_tool_definitions",
    "tools_digest",
]
