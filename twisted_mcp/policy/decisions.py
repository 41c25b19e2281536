"""
Steps 2 and 3 of the policy for one subject: the kill switch, then the
caller's roles (and, for tools, pinning's quarantine); and whether a client
may answer a server's request (sampling, elicitation, roots).  Pure
functions of the rules, the run-time kill switch and the principal: the
pipeline caches their answers.

Deny rules and the kill switch see every name of a subject: for tools and
prompts the exposed name, the name before the 64-character limit cut it,
the backend's own name under the default prefix and under the backend's
configured one (the name before a rename); for resources and templates the exposed URI,
the backend's own URI, and both percent-decoded, so that neither a long
name nor C{%70asswd} slips past them.  Allow rules see only the exposed
name or URI, so nothing new becomes allowed.
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import unquote

from twisted_mcp.mcp import errors
from twisted_mcp.mcp.names import prefixed_name, untruncated_name
from twisted_mcp.policy.audit.records import redact_uri
from twisted_mcp.policy.principal import Principal
from twisted_mcp.policy.rules import PolicyConfig, Role, any_match, any_match_uri, server_matches
from twisted_mcp.policy.subject import WORDS, Subject

#: What a refused principal may not do to a subject of each kind.
_VERBS = {"tool": "call", "prompt": "get", "resource": "read", "template": "use"}


def names_of(subject: Subject, separator: str, prefix: str | None = None) -> tuple[str, ...]:
    """
    Every name deny rules and the kill switch match for C{subject}, without
    repeats.

    @param prefix: the backend's configured name prefix (None: the
        default, C{<backend><separator>}); a tool or prompt is also matched
        under it with its own name, so that a rename does not slip past
        a rule written for the name it was shown under before.
    """
    exposed, backend, original = subject.exposed, subject.backend, subject.original
    candidates: tuple[str, ...]
    if subject.kind in ("tool", "prompt"):
        candidates = (exposed, untruncated_name(backend, original, separator), f"{backend}{separator}{original}")
        if prefix is not None:
            candidates += (prefixed_name(prefix, original), f"{prefix}{original}")
    else:
        candidates = (exposed, original, *uri_forms(exposed)[1:], *uri_forms(original)[1:])
    return tuple(dict.fromkeys(candidates))


def uri_forms(uri: str) -> tuple[str, ...]:
    """
    Every form of C{uri} a deny glob must see, without repeats, C{uri}
    first: as written, percent-decoded, and each with its dot segments
    resolved (L{resolved_uri}); so that neither C{%73ecret} nor
    C{pub/../secret} slips past a deny of C{secret}.
    """
    decoded = unquote(uri)
    return tuple(dict.fromkeys((uri, decoded, resolved_uri(uri), resolved_uri(decoded))))


_DOT_OR_SLASH = re.compile(r"%(2[eEfF]|5[cC])")


def resolved_uri(uri: str) -> str:
    """
    C{uri} with the dot segments of its path resolved (C{a/b/../c} is
    C{a/c}), after decoding the escapes that can hide them (C{%2e},
    C{%2f}, C{%5c}) and reading C{\\} as C{/}, and with empty segments
    dropped (C{///a//b} is C{/a/b}): the resource a server that normalizes
    paths would serve.  Other escapes are left as they are.
    """
    text = _DOT_OR_SLASH.sub(lambda m: chr(int(m.group(1), 16)), uri)
    scheme, colon, rest = text.partition(":")
    if not colon:
        return uri
    if rest.startswith("//"):
        slash = rest.find("/", 2)
        if slash < 0:
            return uri
        head, path = f"{scheme}:{rest[:slash]}", rest[slash:]
    else:
        head, path = f"{scheme}:", rest
    end = min((i for i in (path.find("?"), path.find("#")) if i >= 0), default=len(path))
    path, tail = path[:end].replace("\\", "/"), path[end:]
    segments = path.split("/")
    inner = segments[1:-1]
    if "." not in segments and ".." not in segments and "" not in inner:
        return uri  # nothing to resolve: escapes and backslashes matter only where they hide dot segments
    out: list[str] = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == "..":
            if len(out) > 1:
                out.pop()
        elif segment != "." and (segment or i in (0, last)):
            out.append(segment)  # an empty segment inside the path (C{a//b}) is C{a/b}
    return head + "/".join(out) + tail


def principal_killed(rules: PolicyConfig, kills: Mapping[str, set[str]], principal: Principal) -> bool:
    """Whether the kill switch (the config's or the run-time one) disables C{principal}."""
    return principal.name in rules.kill_principals or principal.name in kills["principal"]


def _kill_patterns(rules: PolicyConfig, kills: Mapping[str, set[str]], kind: str) -> tuple[str, ...]:
    if kind == "tool":
        return rules.kill_tools + tuple(kills["tool"])
    if kind == "prompt":
        return rules.kill_prompts + tuple(kills["prompt"])
    return rules.kill_resources + tuple(kills["resource"])


def _role_patterns(role: Role, kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(allow, deny) of C{role} for subjects of C{kind}."""
    if kind == "tool":
        return role.allow, role.deny
    if kind == "prompt":
        return role.prompts.allow, role.prompts.deny
    return role.resources.allow, role.resources.deny


def _allows(patterns: tuple[str, ...], subject: Subject, separator: str) -> bool:
    """
    Whether allow C{patterns} cover C{subject} as the client named it.  A
    URI must be covered both as written and with its dot segments resolved,
    so that C{file:///srv/docs/../../etc/passwd} is not allowed by
    C{file:///srv/docs/*}.
    """
    exposed = subject.exposed
    if subject.kind in ("tool", "prompt"):
        return _covers(patterns, subject, (exposed,), separator, fold=False)
    resolved = resolved_uri(exposed)
    forms = (exposed,) if resolved == exposed else (exposed, resolved)
    return all(_covers(patterns, subject, (form,), separator, fold=False) for form in forms)


def _covers(patterns: tuple[str, ...], subject: Subject, names: tuple[str, ...], separator: str, fold: bool) -> bool:
    if not patterns:
        return False
    if subject.kind in ("tool", "prompt"):
        return any_match(patterns, names, separator, subject.backend, fold=fold)
    return any_match_uri(patterns, names, subject.backend, fold=fold)


def decide(
    rules: PolicyConfig,
    kills: Mapping[str, set[str]],
    separator: str,
    pins: Any,
    principal: Principal,
    subject: Subject,
    prefix: str | None = None,
) -> tuple[int, str] | None:
    """
    Why C{principal} may not see or use C{subject} (an error code and a
    reason for the caller), or None.

    @param prefix: the configured name prefix of C{subject}'s backend (see L{names_of}).
    """
    names = names_of(subject, separator, prefix)
    word = WORDS[subject.kind]
    backend = subject.backend
    # How refusals name it (the reason goes into the audit trail too): a URI without its secrets.
    exposed = subject.exposed if subject.kind in ("tool", "prompt") else redact_uri(subject.exposed)
    if principal_killed(rules, kills, principal):
        return errors.PRINCIPAL_DISABLED, f"principal {principal.name!r} is disabled by the kill switch"
    if backend in rules.kill_backends or backend in kills["backend"]:
        return errors.BACKEND_DISABLED, f"backend {backend!r} is disabled by the kill switch"
    if _covers(_kill_patterns(rules, kills, subject.kind), subject, names, separator, fold=True):
        return errors.TOOL_DISABLED, f"{word} {exposed!r} is disabled by the kill switch"
    if not principal.all_access:
        allowed = False
        for role_name in principal.roles:
            role = rules.roles.get(role_name)
            if role is None:
                continue  # An unknown role has no rights.
            allow, deny = _role_patterns(role, subject.kind)
            if _covers(deny, subject, names, separator, fold=True):
                return errors.ACCESS_DENIED, f"role {role_name!r} denies {exposed!r}"
            if _allows(allow, subject, separator):
                allowed = True
        if not allowed:
            roles = ", ".join(principal.roles) or "none"
            return errors.ACCESS_DENIED, f"{principal.name!r} (roles: {roles}) may not {_VERBS[subject.kind]} {exposed!r}"
    if subject.kind == "tool":
        why = pins.blocks(subject.exposed)
        if why is not None:
            return errors.TOOL_QUARANTINED, f"tool {exposed!r} is quarantined: {why}"
    return None


def server_request_refusal(
    rules: PolicyConfig, kills: Mapping[str, set[str]], principal: Principal, backend: str, method: str
) -> str | None:
    """
    Why the client of C{principal} may not be sent C{backend}'s request
    C{method} (C{sampling/createMessage}, C{elicitation/create},
    C{roots/list}), or None.  A role refuses it when its
    C{serverRequests.<family>.deny} names the backend, or when it has an
    C{allow} that does not; a role that does not mention the family lets
    every backend through.  One role's deny is enough to refuse; otherwise
    one known role must let it through (an unknown role has no rights).
    """
    if principal_killed(rules, kills, principal):
        return f"principal {principal.name!r} is disabled by the kill switch"
    if backend in rules.kill_backends or backend in kills["backend"]:
        return f"backend {backend!r} is disabled by the kill switch"
    if principal.all_access:
        return None
    family = method.partition("/")[0]
    allowed = False
    for role_name in principal.roles:
        role = rules.roles.get(role_name)
        if role is None:
            continue
        patterns = role.server_requests.get(family)
        if patterns is None:
            allowed = True
            continue
        if server_matches(patterns.deny, backend):
            return f"role {role_name!r} does not let backend {backend!r} send {method} (roles.{role_name}.serverRequests.{family}.deny)"
        if server_matches(patterns.allow, backend):
            allowed = True
    if allowed:
        return None
    roles = ", ".join(principal.roles) or "none"
    return f"no role of {principal.name!r} (roles: {roles}) lets backend {backend!r} send {method} (roles.<name>.serverRequests.{family})"


__all__ = ["decide", "names_of", "principal_killed", "resolved_uri", "server_request_refusal", "uri_forms"]
