"""
The C{profiles:} section (design of issue 14, sections 2.2 and 2.4): named
selections of the shaped catalog, each served at C{<http.path>/<name>} and
on any C{--listen profile:<name>:<endpoint>}.

    profiles:
      dev:
        tools: ["github__*", filesystem__read_file]   # globs and exact SHAPED names, in order
        pinned: [filesystem__read_file]               # in search mode, listed beside the search tools
        prompts: ["github__*"]
        resources: ["repo://*"]                       # URI globs
        budget: {maxTools: 40, maxNameLength: 48}     # wins over the client tables
        search: auto                                  # auto, always or never
        instructions: "Tools for the dev team's repositories."

What a profile selects is decided when the catalog is built (the backends
are not listed yet at load): only the shape of the section is checked here,
each problem with its key path.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from twisted_mcp.config._check import _Checker, _describe, glob_compiles
from twisted_mcp.config.models import Profile
from twisted_mcp.mcp.clients import BUDGET_KEYS

#: What a profile name looks like: a safe path segment, no escaping needed.
PROFILE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_PROFILE_KEYS = ("tools", "pinned", "prompts", "resources", "budget", "search", "instructions")
SEARCH_MODES = ("auto", "always", "never")
#: The shortest name budget: room for a name and its 8-character hash.
MIN_NAME_LENGTH = 24
#: The longest tool name MCP allows (SEP-986).
MAX_NAME_LENGTH = 128
MAX_TOOLS = 100_000
MAX_NAME_OVERHEAD = 100
MAX_INSTRUCTIONS = 8192
_EXAMPLES = {"tools": "github__*", "pinned": "filesystem__read_file", "prompts": "github__*", "resources": "repo://*"}


def parse_profiles(
    check: _Checker, value: Any, path: str = "profiles", glob_problem: Callable[[str], str | None] | None = None
) -> dict[str, Profile]:
    """
    The C{profiles:} section as L{Profile}s by name; every problem goes to
    C{check}, and a profile with one is left out.

    @param glob_problem: why a glob does not compile, or None (the loader
        passes the roles' parser; without it globs are not compiled here).
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        check.problem(path, f"expected a mapping of profile names to their selections, got {_describe(value)}")
        return {}
    profiles: dict[str, Profile] = {}
    for name, spec in value.items():
        if not isinstance(name, str) or not PROFILE_NAME_RE.match(name):
            check.problem(f"{path}.{json.dumps(str(name))}", "a profile name must match [a-z0-9][a-z0-9_-]{0,31}")
            continue
        profile = _profile(check, f"{path}.{name}", name, spec, glob_problem)
        if profile is not None:
            profiles[name] = profile
    return profiles


def _profile(check: _Checker, path: str, name: str, spec: Any, glob_problem: Callable[[str], str | None] | None) -> Profile | None:
    before = len(check.problems)
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        check.problem(path, f"expected a mapping ({', '.join(_PROFILE_KEYS)}), got {_describe(spec)}")
        return None
    check.unknown_keys(path, spec, _PROFILE_KEYS)
    fields: dict[str, Any] = {}
    for key in ("tools", "pinned", "prompts", "resources"):
        if key in spec:
            fields[key] = _patterns(check, f"{path}.{key}", spec[key], _EXAMPLES[key], glob_problem)
    if "search" in spec:
        fields["search"] = _search(check, f"{path}.search", spec["search"])
    if "instructions" in spec:
        text = check.string(f"{path}.instructions", spec["instructions"])
        if text is not None and len(text) > MAX_INSTRUCTIONS:
            check.problem(f"{path}.instructions", f"longer than {MAX_INSTRUCTIONS} characters")
        fields["instructions"] = text
    if "budget" in spec:
        fields.update(_budget(check, f"{path}.budget", spec["budget"], fields.get("search"), bool(fields.get("pinned")), "search" in spec, path))
    if len(check.problems) > before:
        return None
    return Profile(name=name, **fields)


def _patterns(
    check: _Checker, path: str, value: Any, example: str, glob_problem: Callable[[str], str | None] | None
) -> tuple[str, ...]:
    """A list of globs and exact names, in order; each glob must compile."""
    if not isinstance(value, list):
        check.problem(path, f'expected a list of globs and names such as ["{example}"], got {_describe(value)}')
        return ()
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            check.problem(f"{path}[{i}]", f'expected a glob or a name such as "{example}", got {_describe(item)}')
        elif glob_problem is None or glob_compiles(check, f"{path}[{i}]", item, glob_problem):
            out.append(item)
    return tuple(out)


def _search(check: _Checker, path: str, value: Any) -> str | None:
    if value not in SEARCH_MODES:
        check.problem(path, f"expected auto, always or never, got {_describe(value)}")
        return None
    return str(value)


def _budget(
    check: _Checker, path: str, value: Any, search: str | None, pinned: bool, search_outside: bool, profile_path: str
) -> dict[str, Any]:
    """
    The C{budget:} keys a profile sets (the ones it leaves come from the
    client tables), checked against the bounds of design section 2.4.
    """
    if not isinstance(value, dict):
        check.problem(path, f"expected a mapping ({', '.join(BUDGET_KEYS)}), got {_describe(value)}")
        return {}
    check.unknown_keys(path, value, BUDGET_KEYS)
    out: dict[str, Any] = {}
    if "search" in value:
        if search_outside:
            check.problem(f"{path}.search", f"also set as {profile_path}.search; set it in one place")
        else:
            search = out["search"] = _search(check, f"{path}.search", value["search"])
    length = None
    if "maxNameLength" in value:
        length = check.whole(f"{path}.maxNameLength", value["maxNameLength"])
        if length is not None and length < MIN_NAME_LENGTH:
            check.problem(
                f"{path}.maxNameLength",
                f"must be at least {MIN_NAME_LENGTH} (room for a name and its 8-character hash), got {length}",
            )
        elif length is not None and length > MAX_NAME_LENGTH:
            check.problem(f"{path}.maxNameLength", f"must be at most {MAX_NAME_LENGTH} (the longest tool name MCP allows), got {length}")
        out["maxNameLength"] = length
    if "nameOverhead" in value:
        overhead = check.integer(f"{path}.nameOverhead", value["nameOverhead"], 0, MAX_NAME_OVERHEAD)
        if overhead is not None and length is not None and MIN_NAME_LENGTH <= length and length - overhead < MIN_NAME_LENGTH:
            check.problem(
                f"{path}.nameOverhead",
                f"leaves {length - overhead} of maxNameLength's {length} characters for a tool name; at least {MIN_NAME_LENGTH} are needed",
            )
        out["nameOverhead"] = overhead
    if "maxTools" in value:
        count = check.whole(f"{path}.maxTools", value["maxTools"])
        if count is not None:
            if search == "never":
                least, why = 1, ""
            elif pinned:
                least, why = 3, " in search mode (the two search tools and one more)"
            else:
                least, why = 2, " in search mode (the two search tools)"
            if count < least:
                check.problem(f"{path}.maxTools", f"must be at least {least}{why}, got {count}")
            elif count > MAX_TOOLS:
                check.problem(f"{path}.maxTools", f"must be at most {MAX_TOOLS}, got {count}")
        out["maxTools"] = count
    return out


__all__ = ["PROFILE_NAME_RE", "SEARCH_MODES", "parse_profiles"]
