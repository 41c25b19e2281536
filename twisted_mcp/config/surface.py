"""
The C{surface:}, C{search:} and C{clients:} sections: how a tool list is
fitted to a client (overflow, pages, caching hints, cursor keys), the
gateway's two search tools, and the config's rows of the client budget
table (L{twisted_mcp.mcp.clients}).  Every key is optional; without them
the gateway behaves as before (one page, every tool, today's names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import attrs

from twisted_mcp.config._check import _Checker, _describe, _join
from twisted_mcp.mcp.clients import BUDGET_KEYS, DEFAULT_SERVER_KEY_LENGTH, NO_ALIASES, SEARCH_MODES, ClientRule
from twisted_mcp.mcp.names import MIN_ALIAS_LIMIT, valid_tool_name

if TYPE_CHECKING:
    from twisted_mcp.config.models import Profile

#: The shortest cursor key accepted, in characters (as gateway.requestStateKeys).
MIN_CURSOR_KEY_CHARS = 32
#: The bounds of surface.pageSize other than 0 (one page).
PAGE_SIZES = (10, 1000)


@attrs.frozen(cache_hash=True)
class SearchSettings:
    """The gateway's two tools in search mode (C{search:})."""

    searchName: str = "search_tools"
    callName: str = "call_tool"
    defaultLimit: int = 8
    maxLimit: int = 20


@attrs.frozen(cache_hash=True)
class ClientsSettings:
    """The config's part of the client budget table (C{clients:})."""

    useClientInfo: bool = True
    serverKeyLength: int = DEFAULT_SERVER_KEY_LENGTH
    default: ClientRule | None = None
    rules: tuple[ClientRule, ...] = ()


@attrs.frozen(cache_hash=True)
class SurfaceSettings:
    """
    How tool lists are fitted to clients.

    @ivar overflow: what an exceeded C{maxTools} does: C{search} or C{truncate}.
    @ivar pageSize: C{tools/list} page size; 0: one page.
    @ivar ttlMs: a modern C{tools/list}'s C{ttlMs} when its answer did not
        depend on C{clientInfo}.
    @ivar cursorKeys: HMAC keys for list cursors (the first signs, all
        verify); empty: a key per process.
    """

    overflow: str = "search"
    pageSize: int = 0
    ttlMs: int = 0
    cursorKeys: tuple[str, ...] = attrs.field(default=(), repr=False)
    search: SearchSettings = SearchSettings()
    clients: ClientsSettings = ClientsSettings()


_SURFACE_KEYS = ("overflow", "pageSize", "ttlMs", "cursorKeys")
_SEARCH_KEYS = ("names", "defaultLimit", "maxLimit")
#: Keys of the design (section 4.3: found tools added to a handshake-era
#: session's list) that this version does not implement: refused, not ignored.
_NOT_BUILT = ("addFound", "maxFound")
_CLIENTS_KEYS = ("useClientInfo", "serverKeyLength", "default", "match")
_TOO_FEW = {
    2: "must be at least 2 in search mode (the two search tools)",
    3: "must be at least 3 in search mode (the two search tools and one more)",
}


def _unknown(check: _Checker, path: str, value: dict[str, Any], known: tuple[str, ...]) -> None:
    for key in value:
        if key not in known:
            check.problem(_join(path, key), f"unknown key (expected one of: {', '.join(known)})")


def budget_keys(check: _Checker, path: str, spec: dict[str, Any], pinned: int = 0) -> dict[str, Any]:
    """
    The budget keys of C{spec} (C{maxTools}, C{maxNameLength},
    C{nameOverhead}, C{search}), checked; C{pinned} is how many pinned tools
    search mode lists beside the two search tools (a profile's).
    """
    out: dict[str, Any] = {}
    if "search" in spec:
        mode = spec["search"]
        if mode not in SEARCH_MODES:
            check.problem(_join(path, "search"), f"expected auto, always or never, got {_describe(mode)}")
        else:
            out["search"] = mode
    if "maxNameLength" in spec:
        length = spec["maxNameLength"]
        if isinstance(length, int) and not isinstance(length, bool) and length < MIN_ALIAS_LIMIT:
            check.problem(
                _join(path, "maxNameLength"),
                f"must be at least {MIN_ALIAS_LIMIT} (room for a name and its 8-character hash), got {length}",
            )
        else:
            value = check.integer(_join(path, "maxNameLength"), length, MIN_ALIAS_LIMIT, 128)
            if value is not None:
                out["maxNameLength"] = value
    if "nameOverhead" in spec:
        value = check.integer(_join(path, "nameOverhead"), spec["nameOverhead"], 0, 100)
        if value is not None:
            out["nameOverhead"] = value
    if "maxTools" in spec:
        value = check.integer(_join(path, "maxTools"), spec["maxTools"], 1, 100_000)
        if value is not None:
            least = 1 if out.get("search") == "never" else (2 if pinned == 0 else 3)
            if value < least:
                check.problem(_join(path, "maxTools"), _TOO_FEW[least])
            else:
                out["maxTools"] = value
    length, overhead = out.get("maxNameLength"), out.get("nameOverhead")
    if length is not None and overhead is not None and length - overhead < MIN_ALIAS_LIMIT:
        check.problem(
            _join(path, "nameOverhead"),
            f"leaves {length - overhead} characters of maxNameLength {length}: at least {MIN_ALIAS_LIMIT} must remain",
        )
    return out


def _client_rule(check: _Checker, path: str, value: Any, named: bool) -> ClientRule | None:
    spec = check.mapping(path, value)
    if spec is None:
        return None
    _unknown(check, path, spec, (("name", "countsServerKey") if named else ()) + BUDGET_KEYS)
    before = len(check.problems)
    fields = budget_keys(check, path, spec)
    name = "*"
    if named:
        if "name" not in spec:
            check.problem(_join(path, "name"), 'missing: the clientInfo.name glob this row matches, such as "cursor*"')
            return None
        name = check.string(_join(path, "name"), spec["name"]) or ""
        if "countsServerKey" in spec:
            fields["countsServerKey"] = bool(check.boolean(_join(path, "countsServerKey"), spec["countsServerKey"]))
    if len(check.problems) > before:
        return None
    return ClientRule(name, client=path, source="config", **fields)


def _clients(check: _Checker, value: Any) -> ClientsSettings:
    spec = check.mapping("clients", value if value is not None else {})
    if spec is None:
        return ClientsSettings()
    _unknown(check, "clients", spec, _CLIENTS_KEYS)
    fields: dict[str, Any] = {}
    if "useClientInfo" in spec:
        fields["useClientInfo"] = check.boolean("clients.useClientInfo", spec["useClientInfo"])
    if "serverKeyLength" in spec:
        fields["serverKeyLength"] = check.integer("clients.serverKeyLength", spec["serverKeyLength"], 0, 64)
    if "default" in spec:
        fields["default"] = _client_rule(check, "clients.default", spec["default"], named=False)
    if "match" in spec:
        rows = spec["match"]
        if not isinstance(rows, list):
            check.problem(
                "clients.match", f'expected a list of rows such as {{name: "cursor*", maxTools: 80}}, got {_describe(rows)}'
            )
        else:
            fields["rules"] = tuple(
                r for i, row in enumerate(rows) if (r := _client_rule(check, f"clients.match[{i}]", row, named=True))
            )
    return ClientsSettings(**{k: v for k, v in fields.items() if v is not None})


def _search(check: _Checker, value: Any) -> SearchSettings:
    spec = check.mapping("search", value if value is not None else {})
    if spec is None:
        return SearchSettings()
    for key in _NOT_BUILT:
        if key in spec:
            check.problem(
                f"search.{key}",
                "not supported by this version (found tools are not added to a session's list; "
                "clients call search_tools again), remove it",
            )
    _unknown(check, "search", spec, _SEARCH_KEYS + _NOT_BUILT)
    fields: dict[str, Any] = {}
    if "names" in spec:
        names = check.mapping("search.names", spec["names"])
        if names is not None:
            _unknown(check, "search.names", names, ("search", "call"))
            for key, field in (("search", "searchName"), ("call", "callName")):
                if key in names:
                    name = names[key]
                    if not valid_tool_name(name):
                        check.problem(f"search.names.{key}", f"{_describe(name)} is not a valid tool name")
                    else:
                        fields[field] = name
            chosen = (fields.get("searchName", "search_tools"), fields.get("callName", "call_tool"))
            if chosen[0] == chosen[1]:
                check.problem("search.names", "search and call must differ")
    for key, bounds in (("defaultLimit", (1, 100)), ("maxLimit", (1, 100))):
        if key in spec:
            fields[key] = check.integer(f"search.{key}", spec[key], *bounds)
    fields = {k: v for k, v in fields.items() if v is not None}
    settings = SearchSettings(**fields)
    if settings.defaultLimit > settings.maxLimit:
        check.problem("search.defaultLimit", f"is {settings.defaultLimit}, above search.maxLimit ({settings.maxLimit})")
    return settings


def parse_surface(check: _Checker, top: dict[str, Any]) -> SurfaceSettings:
    """The C{surface:}, C{search:} and C{clients:} sections of C{top}, checked."""
    fields: dict[str, Any] = {}
    spec = check.mapping("surface", top.get("surface") or {}) if "surface" in top else {}
    if spec:
        _unknown(check, "surface", spec, _SURFACE_KEYS)
        if "overflow" in spec:
            if spec["overflow"] not in ("search", "truncate"):
                check.problem("surface.overflow", f"expected search or truncate, got {_describe(spec['overflow'])}")
            else:
                fields["overflow"] = spec["overflow"]
        if "pageSize" in spec:
            size = spec["pageSize"]
            if isinstance(size, bool) or not isinstance(size, int) or (size != 0 and not PAGE_SIZES[0] <= size <= PAGE_SIZES[1]):
                check.problem(
                    "surface.pageSize", f"expected 0 (one page) or {PAGE_SIZES[0]} … {PAGE_SIZES[1]}, got {_describe(size)}"
                )
            else:
                fields["pageSize"] = size
        if "ttlMs" in spec:
            ttl = check.integer("surface.ttlMs", spec["ttlMs"], 0, 86_400_000)
            if ttl is not None:
                fields["ttlMs"] = ttl
        if "cursorKeys" in spec:
            keys = check.string_list("surface.cursorKeys", spec["cursorKeys"])
            for i, key in enumerate(keys or ()):
                if len(key) < MIN_CURSOR_KEY_CHARS:
                    check.problem(
                        f"surface.cursorKeys[{i}]",
                        f"a key must have at least {MIN_CURSOR_KEY_CHARS} characters (e.g. the output of `openssl rand -hex 32`)",
                    )
                    keys = None
                    break
            if keys is not None:
                fields["cursorKeys"] = keys
    if "search" in top:
        fields["search"] = _search(check, top["search"])
    if "clients" in top:
        fields["clients"] = _clients(check, top["clients"])
    return SurfaceSettings(**fields)


def check_name_limits(check: _Checker, surface: SurfaceSettings, profiles: Mapping[str, Profile]) -> None:
    """
    Refuse a C{clients} row that, on its own, leaves a tool name fewer than
    L{MIN_ALIAS_LIMIT} characters (an alias's least): its C{maxNameLength}
    (C{clients.default}'s: 64 when unset) less its C{nameOverhead}, plus
    C{clients.serverKeyLength} when it counts the server key.  A row that
    sets only one of the two takes the other from whichever row matches next
    at run time, which the config cannot know: such a limit, like one a
    profile's budget makes with a row, is raised to L{MIN_ALIAS_LIMIT} when
    a client meets it, and logged.  (Profiles check their own pair.)
    """
    clients = surface.clients
    rows = [(f"clients.match[{i}]", r, r.maxNameLength) for i, r in enumerate(clients.rules)]
    if clients.default is not None:
        rows.append(("clients.default", clients.default, clients.default.maxNameLength or NO_ALIASES))
    for path, row, length in rows:
        if row.nameOverhead is None or length is None:
            continue
        plus = f" plus clients.serverKeyLength {clients.serverKeyLength}" if row.countsServerKey else ""
        overhead = row.nameOverhead + (clients.serverKeyLength if row.countsServerKey else 0)
        if length - overhead < MIN_ALIAS_LIMIT:
            check.problem(
                f"{path}.nameOverhead",
                f"{path}.nameOverhead {row.nameOverhead}{plus} leaves {length - overhead} of maxNameLength's {length} "
                f"characters for a tool name; at least {MIN_ALIAS_LIMIT} are needed",
            )


__all__ = ["ClientsSettings", "SearchSettings", "SurfaceSettings", "check_name_limits", "parse_surface"]
