"""
The policy's configuration (roles, kill switch, limits, concurrency,
breakers, pinning) and the pattern matching every check uses.

Name patterns (tools and prompts) are shell-style globs (C{*}, C{?}, C{[...]} with ranges and
C{[!...]}) matched against a tool's exposed name, case-sensitively by
default.  Deny rules and the kill switch fold: they match the folded name
(ASCII letters in lower case, C{-} as C{_}) with a folded pattern (each
literal folded, each bracket expression replaced by the folded set of the
characters it holds, so C{[A-Z]} matches either case).  A pattern without
a separator in it and without wildcards also matches a whole backend
(C{github} is C{github__*}).  Deny rules and the kill switch also match
the backend's own name of the tool (the pipeline passes every name of a
tool to L{any_match}).  A pattern that cannot mean what it says (an
unclosed C{[}, a backwards range) is refused when it is loaded.

URI patterns (resources and resource templates, L{matches_uri}) are the
same globs over a URI, where C{*} crosses C{/} too; a pattern that is a
bare server name (C{A-Z a-z 0-9 _ -} only) covers every resource of that
server.  Deny rules and the kill switch fold them as names are folded, and
also see the percent-decoded URI.

Server patterns (C{serverRequests}) are the same globs over server names,
always folded, as C{killSwitch.backends} names servers.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Iterable, Mapping

import attrs


@attrs.frozen
class Patterns:
    """What a role allows and denies of one kind (deny beats allow)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


#: The families of requests a server sends to a client, by the method's
#: first part: C{roles.<name>.serverRequests.<family>}.
SERVER_REQUEST_FAMILIES = ("sampling", "elicitation", "roots")


@attrs.frozen
class Role:
    """
    One role of C{roles}.  C{allow}/C{deny} are tool-name patterns (as
    before resources and prompts were passed).

    @ivar prompts: prompt-name patterns; a role without C{prompts} sees none.
    @ivar resources: URI patterns over resources and resource templates; a
        role without C{resources} sees none.
    @ivar server_requests: family (C{sampling}, C{elicitation}, C{roots})
        -> the servers whose requests of that family this role's clients
        may answer; a family not named here: every server.
    """

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    prompts: Patterns = Patterns()
    resources: Patterns = Patterns()
    server_requests: Mapping[str, Patterns] = attrs.field(factory=dict)


@attrs.frozen
class Rate:
    rate: float
    burst: float
    tool: str | None = None


@attrs.frozen
class Concurrency:
    max: int
    queue: int = 0
    queueTimeout: float = 30.0
    tool: str | None = None


@attrs.frozen
class RefusalLimit:
    """How many refusals per principal are audited and logged one by one (C{limits.refusals})."""

    rate: float = 1.0
    burst: float = 20.0
    #: Suppressed refusals are reported (one record per principal) this long after the first.
    reportSeconds: float = 60.0


@attrs.frozen
class PolicyConfig:
    roles: Mapping[str, Role] = attrs.field(factory=dict)
    roles_configured: bool = False
    kill_tools: tuple[str, ...] = ()
    kill_prompts: tuple[str, ...] = ()
    kill_resources: tuple[str, ...] = ()
    kill_backends: tuple[str, ...] = ()
    kill_principals: tuple[str, ...] = ()
    rate_principal: Rate | None = None
    rate_tools: tuple[Rate, ...] = ()
    rate_backends: Mapping[str, Rate] = attrs.field(factory=dict)
    refusal_limit: RefusalLimit = RefusalLimit()
    conc_backends: Mapping[str, Concurrency] = attrs.field(factory=dict)
    conc_tools: tuple[Concurrency, ...] = ()
    breaker_failures: int = 5
    breaker_open: float = 30.0
    pinning: str = "off"
    lock_file: str | None = None
    #: Whether any policy section was configured at all.
    active: bool = False


_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ-", "abcdefghijklmnopqrstuvwxyz_")


def fold_name(text: str) -> str:
    """Case and C{-}/C{_} folded away (ASCII only, so the length never changes)."""
    return text.translate(_FOLD)


class PatternError(ValueError):
    """A tool-name pattern that cannot mean what it says."""


_STAR = object()


def _bracket(pattern: str, start: int) -> tuple[frozenset[str], bool, int]:
    """
    The bracket expression opening at C{pattern[start]}: its characters,
    whether it is negated (C{[!...]}), and the index just past its C{]}.
    As in C{fnmatch}, a C{]} first in the brackets is a literal, and so is
    a C{-} first or last.
    """
    i = start + 1
    negated = pattern.startswith("!", i)
    i += negated
    members: set[str] = set()
    first = True
    while True:
        if i >= len(pattern):
            raise PatternError(f"the '[' at position {start + 1} is never closed with ']'")
        c = pattern[i]
        if c == "]" and not first:
            return frozenset(members), negated, i + 1
        first = False
        if pattern.startswith("-", i + 1) and i + 2 < len(pattern) and pattern[i + 2] != "]":
            low, high = c, pattern[i + 2]
            if low > high:
                raise PatternError(f"the range {low}-{high} is backwards: it holds no character (write {high}-{low})")
            members.update(chr(n) for n in range(ord(low), ord(high) + 1))
            i += 3
        else:
            members.add(c)
            i += 1


def _tokens(pattern: str) -> list[Any]:
    """C{_STAR}, C{None} for C{?}, a literal character, or (characters, negated)."""
    out: list[Any] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            members, negated, i = _bracket(pattern, i)
            out.append((members, negated))
            continue
        if c == "]":
            raise PatternError(f"the ']' at position {i + 1} closes no '['")
        if c == "!":
            raise PatternError(f"the '!' at position {i + 1} means something only right after '['")
        if c == "*":
            if not out or out[-1] is not _STAR:
                out.append(_STAR)
        else:
            out.append(None if c == "?" else c)
        i += 1
    return out


def _regex_of(token: Any, folded: bool) -> str:
    if token is None:
        return "."
    if isinstance(token, str):
        return re.escape(fold_name(token) if folded else token)
    members, negated = token
    chars = sorted({fold_name(c) for c in members} if folded else members)
    return "[" + ("^" if negated else "") + "".join(re.escape(c) for c in chars) + "]"


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str, folded: bool = False) -> "re.Pattern[str]":
    """
    The regular expression for the glob C{pattern}, to be C{fullmatch}ed
    against a name (against the L{fold_name}d name when C{folded}).  Raises
    L{PatternError} for a malformed pattern.  Each run of literals after a
    C{*} is matched in an atomic group at its leftmost place (as
    C{fnmatch} does), so that no pattern backtracks exponentially over a
    long name.
    """
    runs: list[str] = [""]
    for token in _tokens(pattern):
        if token is _STAR:
            runs.append("")
        else:
            runs[-1] += _regex_of(token, folded)
    if len(runs) == 1:
        return re.compile(runs[0], re.DOTALL)
    middle = "".join(f"(?>.*?{run})" for run in runs[1:-1])
    return re.compile(f"{runs[0]}{middle}.*{runs[-1]}", re.DOTALL)


_PATTERN_RE = re.compile(r"^[A-Za-z0-9_\-*?\[\]!]+$")


def pattern_problem(pattern: Any) -> str | None:
    """Why C{pattern} is not a usable tool-name pattern, or None."""
    if not isinstance(pattern, str) or not pattern or not _PATTERN_RE.match(pattern):
        return f"expected a pattern of A-Z a-z 0-9 _ - and * ? [ ] !, got {pattern!r}"
    try:
        compile_pattern(pattern)
    except PatternError as e:
        return f"{pattern!r} is not a valid pattern: {e}"
    return None


_SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def uri_pattern_problem(pattern: Any) -> str | None:
    """Why C{pattern} is not a usable URI pattern, or None."""
    if not isinstance(pattern, str) or not pattern or any(c.isspace() or not c.isprintable() for c in pattern):
        return f"expected a URI pattern without spaces or control characters, got {pattern!r}"
    try:
        compile_pattern(pattern)
    except PatternError as e:
        return f"{pattern!r} is not a valid pattern: {e}"
    return None


def matches_uri(pattern: str, uri: str, backend: str, fold: bool = False) -> bool:
    """
    Whether C{pattern} covers the resource (or resource template) C{uri} of
    C{backend}.  C{*} matches any characters, C{/} included.  A bare server
    name (no C{:}, C{/} or wildcard) covers every resource of that server.
    With C{fold} (deny rules and the kill switch), case and C{-}/C{_} are
    not told apart.
    """
    norm = fold_name if fold else str
    if _SERVER_NAME_RE.match(pattern):
        return norm(backend) == norm(pattern)
    return compile_pattern(pattern, fold).fullmatch(norm(uri)) is not None


def any_match_uri(patterns: Iterable[str], uris: tuple[str, ...], backend: str, fold: bool = False) -> bool:
    """Whether any of C{patterns} covers any of C{uris} (the same resource's URIs)."""
    return any(matches_uri(p, u, backend, fold) for p in patterns for u in uris)


def server_matches(patterns: Iterable[str], backend: str) -> bool:
    """Whether any of the server patterns C{patterns} covers the server C{backend} (always folded)."""
    folded = fold_name(backend)
    return any(compile_pattern(p, True).fullmatch(folded) is not None for p in patterns)


def _is_backend_name(pattern: str, separator: str) -> bool:
    return separator not in pattern and not any(c in pattern for c in "*?[")


def matches(pattern: str, name: str, separator: str, backend: str | None = None, fold: bool = False) -> bool:
    """
    Whether C{pattern} covers the name C{name} of a tool of C{backend}.  A
    bare name (no separator, no wildcard) is a backend: it covers exactly
    that backend's tools.  With C{fold} (deny rules and the kill
    switch), case and C{-}/C{_} are not told apart, so that a tool named
    C{Delete-File} cannot slip past C{*__delete_*}.
    """
    norm = fold_name if fold else str
    if _is_backend_name(pattern, separator):
        if backend is not None:
            return norm(backend) == norm(pattern)
        return norm(name).startswith(norm(pattern + separator))
    return compile_pattern(pattern, fold).fullmatch(norm(name)) is not None


def any_match(
    patterns: Iterable[str], names: tuple[str, ...], separator: str, backend: str | None = None, fold: bool = False
) -> bool:
    """Whether any of C{patterns} covers any of C{names} (the same tool's names)."""
    return any(matches(p, n, separator, backend, fold) for p in patterns for n in names)


def backends_named(name: str, known: Iterable[str]) -> list[str]:
    """The backends among C{known} that C{name} names (case and C{-}/C{_} folded, as deny rules match them)."""
    return sorted(k for k in known if fold_name(k) == fold_name(name))


# -- parsing ---------------------------------------------------------------

TOP_KEYS = ("roles", "killSwitch", "limits", "concurrency", "breaker", "pinning")
ROLE_KEYS = ("allow", "deny", "prompts", "resources", "serverRequests")
KILL_SWITCH_KEYS = ("tools", "prompts", "resources", "backends", "principals")


class _P:
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def add(self, path: str, msg: str) -> None:
        self.problems.append(f"{path}: {msg}")

    def mapping(self, path: str, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.add(path, f"expected a mapping, got {type(value).__name__}")
            return None
        return value

    def keys(self, path: str, value: dict[str, Any], known: tuple[str, ...]) -> None:
        for k in value:
            if k not in known:
                self.add(f"{path}.{k}", f"unknown key (expected one of: {', '.join(known)})")

    def patterns(self, path: str, value: Any, what: str = "tool-name patterns", problem_of: Any = None) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.add(path, f"expected a list of {what}")
            return ()
        check = problem_of or pattern_problem
        out = []
        for i, p in enumerate(value):
            problem = check(p)
            if problem is not None:
                self.add(f"{path}[{i}]", problem)
            else:
                out.append(p)
        return tuple(out)

    def number(self, path: str, value: Any, lo: float, hi: float) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            self.add(path, f"expected a number from {lo:g} to {hi:g}, got {value!r}")
            return None
        return float(value)

    def integer(self, path: str, value: Any, lo: int, hi: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.add(path, f"expected a whole number from {lo} to {hi}, got {value!r}")
            return None
        return value


def _rate(p: _P, path: str, value: Any, with_tool: bool) -> Rate | None:
    m = p.mapping(path, value)
    if m is None:
        return None
    p.keys(path, m, ("rate", "burst", "tool") if with_tool else ("rate", "burst"))
    rate = p.number(f"{path}.rate", m.get("rate"), 0.001, 1e6) if "rate" in m else p.add(f"{path}.rate", "missing: calls per second")
    burst = p.number(f"{path}.burst", m["burst"], 1, 1e6) if "burst" in m else (max(1.0, rate) if rate else None)
    tool = None
    if with_tool:
        if "tool" not in m:
            p.add(f"{path}.tool", "missing: the tool-name pattern this limit applies to")
        else:
            pats = p.patterns(f"{path}.tool", m["tool"])
            tool = pats[0] if len(pats) == 1 else None
            if len(pats) != 1:
                return None
    if rate is None or burst is None:
        return None
    return Rate(rate=rate, burst=burst, tool=tool)


def _refusal_limit(p: _P, path: str, value: Any) -> RefusalLimit:
    """C{limits.refusals}; a key left out keeps its default."""
    m = p.mapping(path, value) or {}
    p.keys(path, m, ("rate", "burst", "reportSeconds"))
    default = RefusalLimit()
    rate = p.number(f"{path}.rate", m["rate"], 0.001, 1e6) if "rate" in m else default.rate
    burst = p.number(f"{path}.burst", m["burst"], 1, 1e6) if "burst" in m else default.burst
    report = p.number(f"{path}.reportSeconds", m["reportSeconds"], 1, 86400) if "reportSeconds" in m else default.reportSeconds
    if rate is None or burst is None or report is None:
        return default
    return RefusalLimit(rate=rate, burst=burst, reportSeconds=report)


def _concurrency(p: _P, path: str, value: Any, with_tool: bool) -> Concurrency | None:
    m = p.mapping(path, value)
    if m is None:
        return None
    p.keys(path, m, ("max", "queue", "queueTimeout", "tool") if with_tool else ("max", "queue", "queueTimeout"))
    limit = p.integer(f"{path}.max", m.get("max"), 1, 100000) if "max" in m else p.add(f"{path}.max", "missing: calls at once")
    queue = p.integer(f"{path}.queue", m["queue"], 0, 1000000) if "queue" in m else 0
    timeout = p.number(f"{path}.queueTimeout", m["queueTimeout"], 0.001, 86400) if "queueTimeout" in m else 30.0
    tool = None
    if with_tool:
        pats = p.patterns(f"{path}.tool", m.get("tool")) if "tool" in m else ()
        if "tool" not in m:
            p.add(f"{path}.tool", "missing: the tool-name pattern this limit applies to")
        if len(pats) != 1:
            return None
        tool = pats[0]
    if limit is None or queue is None or timeout is None:
        return None
    return Concurrency(max=limit, queue=queue, queueTimeout=timeout, tool=tool)


def _per_backend(p: _P, path: str, value: Any, backends: set[str], parse: Any) -> dict[str, Any]:
    """A mapping of server name to one limit, parsed by C{parse}."""
    out = {}
    for name, spec in (p.mapping(path, value) or {}).items():
        if name not in backends:
            p.add(f"{path}.{name}", "no server of that name in mcpServers")
        parsed = parse(p, f"{path}.{name}", spec, False)
        if parsed is not None:
            out[name] = parsed
    return out


def _per_tool(p: _P, path: str, value: Any, parse: Any, shape: str) -> tuple[Any, ...]:
    """A list of limits, each for a tool-name pattern, parsed by C{parse}."""
    if not isinstance(value, list):
        p.add(path, f"expected a list of {shape}")
        return ()
    return tuple(x for i, t in enumerate(value) if (x := parse(p, f"{path}[{i}]", t, True)) is not None)


def _kill_backends(p: _P, names: Any, backends: set[str]) -> tuple[str, ...]:
    """The servers C{killSwitch.backends} names (case and C{-}/C{_} folded, as deny rules match them)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        p.add("killSwitch.backends", "expected a list of server names")
        return ()
    out: list[str] = []
    for n in names:
        found = backends_named(n, backends)
        if not found:
            known = ", ".join(sorted(backends)) or "none"
            p.add("killSwitch.backends", f"no server named {n!r} in mcpServers (known: {known})")
        out += found
    return tuple(sorted(set(out)))


def _role(p: _P, path: str, spec: Any, backends: set[str]) -> Role | None:
    """One role: tool patterns (C{allow}, C{deny}), C{prompts}, C{resources}, C{serverRequests}."""
    m = p.mapping(path, spec if spec is not None else {})
    if m is None:
        return None
    p.keys(path, m, ROLE_KEYS)
    prompts = _patterns(p, f"{path}.prompts", m["prompts"], "prompt-name patterns", pattern_problem) if "prompts" in m else Patterns()
    resources = _patterns(p, f"{path}.resources", m["resources"], "URI patterns", uri_pattern_problem) if "resources" in m else Patterns()
    requests = _server_requests(p, f"{path}.serverRequests", m["serverRequests"], backends) if "serverRequests" in m else {}
    return Role(
        allow=p.patterns(f"{path}.allow", m.get("allow", [])),
        deny=p.patterns(f"{path}.deny", m.get("deny", [])),
        prompts=prompts,
        resources=resources,
        server_requests=requests,
    )


def _patterns(p: _P, path: str, value: Any, what: str, problem_of: Any, allow_default: tuple[str, ...] = ()) -> Patterns:
    """C{{allow: [...], deny: [...]}} of C{what}; C{allow} left out is C{allow_default}."""
    if not isinstance(value, dict):
        p.add(path, f"expected a mapping with allow and/or deny (each a list of {what}), got {type(value).__name__}")
        return Patterns()
    p.keys(path, value, ("allow", "deny"))
    allow = p.patterns(f"{path}.allow", value["allow"], what, problem_of) if "allow" in value else allow_default
    deny = p.patterns(f"{path}.deny", value.get("deny", []), what, problem_of)
    return Patterns(allow=allow, deny=deny)


def _server_requests(p: _P, path: str, value: Any, backends: set[str]) -> dict[str, Patterns]:
    """C{serverRequests}: per family, the servers allowed (every one unless C{allow} says) and denied."""
    m = p.mapping(path, value if value is not None else {}) or {}
    p.keys(path, m, SERVER_REQUEST_FAMILIES)

    def problem(pattern: Any) -> str | None:
        why = pattern_problem(pattern)
        if why is None and not any(c in pattern for c in "*?[") and not backends_named(pattern, backends):
            why = f"no server named {pattern!r} in mcpServers (known: {', '.join(sorted(backends)) or 'none'})"
        return why

    return {
        family: _patterns(p, f"{path}.{family}", m[family], "server-name patterns", problem, ("*",))
        for family in SERVER_REQUEST_FAMILIES
        if family in m
    }


def parse_policy(top: dict[str, Any], base_dir: str | None, problems: list[str], backends: set[str]) -> PolicyConfig:
    p = _P(problems)
    fields: dict[str, Any] = {"active": any(key in top for key in TOP_KEYS)}
    if "roles" in top:
        roles = p.mapping("roles", top["roles"]) or {}
        out = {}
        for name, spec in roles.items():
            role = _role(p, f"roles.{name}", spec, backends)
            if role is not None:
                out[str(name)] = role
        fields["roles"] = out
        fields["roles_configured"] = True
    if "killSwitch" in top:
        ks = p.mapping("killSwitch", top["killSwitch"] or {}) or {}
        p.keys("killSwitch", ks, KILL_SWITCH_KEYS)
        fields["kill_tools"] = p.patterns("killSwitch.tools", ks.get("tools", []))
        fields["kill_prompts"] = p.patterns("killSwitch.prompts", ks.get("prompts", []), "prompt-name patterns")
        fields["kill_resources"] = p.patterns("killSwitch.resources", ks.get("resources", []), "URI patterns", uri_pattern_problem)
        fields["kill_backends"] = _kill_backends(p, ks.get("backends", []), backends)
        principals = ks.get("principals", [])
        if not isinstance(principals, list) or not all(isinstance(n, str) for n in principals):
            p.add("killSwitch.principals", "expected a list of principal names")
        else:
            fields["kill_principals"] = tuple(principals)
    if "limits" in top:
        lm = p.mapping("limits", top["limits"] or {}) or {}
        p.keys("limits", lm, ("principal", "tools", "backends", "refusals"))
        if "principal" in lm:
            fields["rate_principal"] = _rate(p, "limits.principal", lm["principal"], False)
        if "tools" in lm:
            fields["rate_tools"] = _per_tool(p, "limits.tools", lm["tools"], _rate, "{tool, rate, burst}")
        if "backends" in lm:
            fields["rate_backends"] = _per_backend(p, "limits.backends", lm["backends"], backends, _rate)
        if "refusals" in lm:
            fields["refusal_limit"] = _refusal_limit(p, "limits.refusals", lm["refusals"])
    if "concurrency" in top:
        cm = p.mapping("concurrency", top["concurrency"] or {}) or {}
        p.keys("concurrency", cm, ("backends", "tools"))
        if "backends" in cm:
            fields["conc_backends"] = _per_backend(p, "concurrency.backends", cm["backends"], backends, _concurrency)
        if "tools" in cm:
            fields["conc_tools"] = _per_tool(p, "concurrency.tools", cm["tools"], _concurrency, "{tool, max, queue}")
    if "breaker" in top:
        bk = p.mapping("breaker", top["breaker"] or {}) or {}
        p.keys("breaker", bk, ("failures", "openSeconds"))
        if "failures" in bk:
            v = p.integer("breaker.failures", bk["failures"], 1, 1000000)
            if v is not None:
                fields["breaker_failures"] = v
        if "openSeconds" in bk:
            v2 = p.number("breaker.openSeconds", bk["openSeconds"], 0.01, 86400)
            if v2 is not None:
                fields["breaker_open"] = v2
    if "pinning" in top:
        pn = p.mapping("pinning", top["pinning"] or {}) or {}
        p.keys("pinning", pn, ("mode", "lockFile"))
        mode = pn.get("mode", "enforce")
        if mode not in ("off", "warn", "enforce"):
            p.add("pinning.mode", f"expected off, warn or enforce, got {mode!r}")
        else:
            fields["pinning"] = mode
        lock = pn.get("lockFile", "tools.lock.json")
        if not isinstance(lock, str) or not lock:
            p.add("pinning.lockFile", "expected a file name")
        else:
            lock = os.path.expanduser(lock)
            if not os.path.isabs(lock) and base_dir is not None:
                lock = os.path.normpath(os.path.join(base_dir, lock))
            fields["lock_file"] = lock
    return PolicyConfig(**fields)
