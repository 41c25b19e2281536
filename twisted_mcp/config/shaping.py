"""
A backend's C{priority} and its C{tools:}, C{prompts:} and C{resources:}
sections (design §2.1): what the gateway does to the server's listings
before clients see them.  Parsed into L{Shaping}; every problem is reported
with its key path (design §2.4).

The globs are the roles' dialect; whether one compiles is asked of the
caller (C{glob_problem}), since the roles' parser lives with the policy.
"""

from __future__ import annotations

import json
import math
import re
from types import MappingProxyType
from typing import Any, Callable, Mapping

from twisted_mcp.config._check import _Checker, _describe, _join, glob_compiles
from twisted_mcp.config.models import Shaping
from twisted_mcp.mcp.names import prefixed_name

#: The sections, by key in a server's entry.
KINDS = ("tools", "prompts", "resources")
#: The keys of a server's entry this module parses.
SHAPING_KEYS = ("priority", *KINDS)
#: The keys of each section.
KEYS = {
    "tools": ("allow", "deny", "rename", "overrides"),
    "prompts": ("allow", "deny", "rename", "overrides"),
    "resources": ("allow", "deny", "overrides"),
}
#: The fields an override may replace, by section.
OVERRIDABLE = {
    "tools": ("title", "description", "annotations"),
    "prompts": ("title", "description"),
    "resources": ("title", "description", "name", "annotations"),
}
#: The longest description an override may give (a bound, as audit's maxFieldBytes).
MAX_DESCRIPTION = 4096
#: The longest title or name an override may give.
MAX_TITLE = 256
#: The annotations whose type is known, with the type expected (others pass as given).
_BOOLEAN_ANNOTATIONS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
_PRIORITY = (-1_000_000, 1_000_000)

#: SEP-986 (MCP 2025-11-25 "Tool Names"): 1-128 of A-Z a-z 0-9 _ - .
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def valid_tool_name(name: str) -> bool:
    """Whether C{name} is a tool name SEP-986 allows (to be unified with C{mcp.names}' check)."""
    return _TOOL_NAME.match(name) is not None


def served_name(name: str) -> str:
    """The own name C{name} as the catalog serves it (C{.} and others become C{_}), before the prefix."""
    return prefixed_name("", name)


def parse_priority(check: _Checker, path: str, value: Any) -> int | None:
    """C{priority}: a whole number, higher first."""
    return check.integer(path, value, *_PRIORITY)


def parse_shaping(
    check: _Checker, path: str, kind: str, value: Any, glob_problem: Callable[[str], str | None]
) -> Shaping | None:
    """
    One of a server's C{tools:}, C{prompts:}, C{resources:} (C{kind}) at
    C{path}; None when it has problems (reported on C{check}).

    @param glob_problem: why a glob does not compile, or None.
    """
    section = check.mapping(path, value if value is not None else {})
    if section is None:
        return None
    before = len(check.problems)
    keys = KEYS[kind]
    if "rename" in section and kind == "resources":
        check.problem(_join(path, "rename"), "resources cannot be renamed (their URIs are addresses)")
    check.unknown_keys(path, {key: None for key in section if key != "rename" or kind != "resources"}, keys)
    fields: dict[str, Any] = {}
    for key in ("allow", "deny"):
        if key in section:
            fields[key] = _globs(check, _join(path, key), kind, section[key], glob_problem)
    if "rename" in section and kind != "resources":
        fields["rename"] = _renames(check, _join(path, "rename"), kind, section["rename"])
    if "overrides" in section:
        fields["overrides"] = _overrides(check, _join(path, "overrides"), kind, section["overrides"])
    if len(check.problems) != before:
        return None
    return Shaping(**fields)


def _example(kind: str) -> str:
    return '"repo://*"' if kind == "resources" else '"delete_*"'


def _globs(check: _Checker, path: str, kind: str, value: Any, glob_problem: Callable[[str], str | None]) -> tuple[str, ...]:
    if not isinstance(value, list):
        check.problem(path, f"expected a list of globs such as [{_example(kind)}], got {_shown(value)}")
        return ()
    out = []
    for i, item in enumerate(value):
        ipath = f"{path}[{i}]"
        if not isinstance(item, str) or not item or any(c.isspace() or not c.isprintable() for c in item):
            check.problem(ipath, f"expected a glob such as {_example(kind)}, got {_shown(item)}")
            continue
        if glob_compiles(check, ipath, item, glob_problem):
            out.append(item)
    return tuple(out)


def _renames(check: _Checker, path: str, kind: str, value: Any) -> dict[str, str]:
    mapping = check.mapping(path, value)
    if mapping is None:
        return {}
    noun = kind[:-1]
    out: dict[str, str] = {}
    for own, new in mapping.items():
        npath = _join(path, own)
        if not isinstance(own, str) or not own:
            check.problem(npath, f"expected the server's own {noun} name, a string")
            continue
        if not isinstance(new, str) or not valid_tool_name(new):
            shown = json.dumps(new) if isinstance(new, str) else _shown(new)
            check.problem(npath, f"{shown} is not a valid {noun} name (letters, digits, _ - . only, 1-128 characters)")
            continue
        out[own] = new
    by_target: dict[str, list[str]] = {}
    for own, new in out.items():
        by_target.setdefault(served_name(new), []).append(own)  # a.b and a_b are both served as a_b
    for new, owns in by_target.items():
        if len(owns) > 1:
            names = sorted(owns)
            check.problem(path, f"{', '.join(names[:-1])} and {names[-1]} would both be named {new}")
    return out


def _overrides(check: _Checker, path: str, kind: str, value: Any) -> dict[str, dict[str, Any]]:
    mapping = check.mapping(path, value)
    if mapping is None:
        return {}
    allowed = OVERRIDABLE[kind]
    out: dict[str, dict[str, Any]] = {}
    for own, fields in mapping.items():
        opath = _join(path, own)
        if not isinstance(own, str) or not own:
            check.problem(opath, "expected the server's own name (or URI), a string")
            continue
        spec = check.mapping(opath, fields)
        if spec is None:
            continue
        override: dict[str, Any] = {}
        for key, field in spec.items():
            fpath = _join(opath, key)
            if key not in allowed:
                check.problem(opath, f"cannot override {key} (only {', '.join(allowed)})")
            elif key == "annotations":
                annotations = _annotations(check, fpath, field)
                if annotations is not None:
                    override[key] = annotations
            else:
                bound = MAX_DESCRIPTION if key == "description" else MAX_TITLE
                text = check.string(fpath, field, nonempty=key != "description")
                if text is not None and len(text) > bound:
                    check.problem(fpath, f"longer than {bound} characters")
                elif text is not None:
                    override[key] = text
        out[own] = override
    return out


def _annotations(check: _Checker, path: str, value: Any) -> dict[str, Any] | None:
    """
    An override's C{annotations}: names (strings) to JSON scalars (a string,
    a finite number, true, false, or null to remove the server's), so that
    what a client is served is always JSON.
    """
    mapping = check.mapping(path, value)
    if mapping is None:
        return None
    before = len(check.problems)
    for key, item in mapping.items():
        kpath = _join(path, key)
        if not isinstance(key, str):
            check.problem(kpath, f"an annotation's name is a string, got {_describe(key)}")
        elif item is None:
            continue  # removes the server's
        elif key in _BOOLEAN_ANNOTATIONS and not isinstance(item, bool):
            check.problem(kpath, f"expected true or false, got {_shown(item)}")
        elif key == "title" and not isinstance(item, str):
            check.problem(kpath, f"expected a string, got {_shown(item)}")
        elif not _json_scalar(item):
            check.problem(kpath, f"expected a string, a number, true, false or null, got {_describe(item)}")
    return dict(mapping) if len(check.problems) == before else None


def _json_scalar(value: Any) -> bool:
    """Whether C{value} is a JSON scalar: a string, a boolean, a finite number (or None)."""
    if value is None or type(value) in (str, bool, int):
        return True
    return type(value) is float and math.isfinite(value)


def _shown(value: Any) -> str:
    """C{value} as the problem quotes it: its JSON, cut short."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def shaping_of(config: Any) -> tuple[int, Mapping[str, Shaping]]:
    """A server config's C{priority} and its shaping by kind (the kinds it shapes, among L{KINDS})."""
    shaping = {kind: getattr(config, kind) for kind in KINDS if getattr(config, kind, None) is not None}
    return getattr(config, "priority", 0), MappingProxyType(shaping)


def parse_server_shaping(
    check: _Checker, path: str, spec: Mapping[str, Any], fields: dict[str, Any], glob_problem: Callable[[str], str | None]
) -> None:
    """A server entry's C{priority} and shaping sections (those present), into C{fields}."""
    if "priority" in spec:
        fields["priority"] = parse_priority(check, _join(path, "priority"), spec["priority"])
    for kind in KINDS:
        if kind in spec:
            fields[kind] = parse_shaping(check, _join(path, kind), kind, spec[kind], glob_problem)
