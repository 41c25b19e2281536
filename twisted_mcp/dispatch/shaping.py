"""
Shaping a backend's listing (design §2.1, §3.1): what its C{tools:},
C{prompts:} or C{resources:} section does to the server's definitions
before the catalog names them.  Pure: no reactor, no state.

In this order:
  1. B{filter} on the server's own name (its own URI or URI template text,
     for resources): kept when an C{allow} glob matches and no C{deny} glob
     does (deny beats allow).  The globs are the roles' dialect
     (L{twisted_mcp.policy.rules.compile_pattern}), matched against the whole
     name, C{*} crossing C{/}; a bare name is the name, never a backend.
     C{deny} folds case and C{-}/C{_} as the roles' deny does.
  2. B{rename} (tools, prompts): the new own name replaces the server's
     (the backend's prefix is put before it by the catalog, which still
     sends the server its own name).
  3. B{overrides}: C{title}, C{description} (and C{name} for resources)
     replace the server's; C{annotations} are merged key by key over the
     server's, a None value removing the key.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import attrs

from twisted_mcp.config.models import Shaping
from twisted_mcp.policy.decisions import resolved_uri, uri_forms
from twisted_mcp.policy.rules import compile_pattern, fold_name


@attrs.frozen
class Shaped:
    """
    One definition the filter kept.

    @ivar original: the server's own name, URI or URI template.
    @ivar definition: the definition after rename and overrides (under its
        new own name: the catalog puts the prefix before it).
    @ivar upstream: the server's definition, when shaping changed it; None
        when C{definition} is the server's.
    """

    original: str
    definition: dict[str, Any]
    upstream: dict[str, Any] | None


@attrs.frozen
class Outcome:
    """
    What shaping did to one backend's listing of one kind, for C{/status}.

    @ivar listed: how many definitions the server listed.
    @ivar filtered: the own names (or URIs) the filter removed, sorted.
    @ivar renamed: own name -> new own name, for the tools or prompts renamed.
    @ivar overridden: own name (or URI) -> the keys overridden, sorted.
    """

    listed: int
    filtered: tuple[str, ...] = ()
    renamed: Mapping[str, str] = attrs.field(factory=dict)
    overridden: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    #: The own names (or URIs) C{rename} or C{overrides} name that the server
    #: did not list (a typo, or gone from the server), sorted.
    unmatched: tuple[str, ...] = ()

    @property
    def kept(self) -> int:
        """How many definitions the filter kept."""
        return self.listed - len(self.filtered)


def kept(shaping: Shaping | None, own: str) -> bool:
    """Whether C{shaping}'s filter keeps the own name (or URI) C{own}."""
    if shaping is None:
        return True
    return _matches(shaping.allow, own) and not _denied(shaping.deny, (own,))


def uri_allowed(shaping: Shaping | None, uri: str, template: str | None = None) -> bool:
    """
    Whether a URI a client asks for may reach its backend (read, subscribe):
    no C{deny} glob matches any form of the backend's own C{uri} (as
    written, decoded, resolved: L{uri_forms}, as the roles' deny sees it),
    and an C{allow} glob matches it or the text of the kept C{template} it
    was matched through.  A URI whose dot segments resolve elsewhere
    (C{pub/../x}) must be allowed in that form too.
    """
    if shaping is None:
        return True
    if _denied(shaping.deny, uri_forms(uri)):
        return False
    if not (_matches(shaping.allow, uri) or (template is not None and kept(shaping, template))):
        return False
    resolved = resolved_uri(uri)
    return resolved == uri or _matches(shaping.allow, resolved)


def shape(shaping: Shaping | None, items: Iterable[dict[str, Any]], key: str) -> tuple[list[Shaped], Outcome]:
    """
    C{items} (one backend's definitions of one kind, each with a string
    under C{key}: C{name}, C{uri} or C{uriTemplate}) after C{shaping}, in
    their order; and what was done.  Without shaping every item is kept as
    it is (the same dictionaries).
    """
    out: list[Shaped] = []
    seen: set[str] = set()
    listed = 0
    filtered: list[str] = []
    renamed: dict[str, str] = {}
    changed: dict[str, tuple[str, ...]] = {}
    for item in items:
        listed += 1
        own = item[key]
        seen.add(own)
        if shaping is None:
            out.append(Shaped(own, item, None))
            continue
        if not kept(shaping, own):
            filtered.append(own)
            continue
        new = shaping.rename.get(own) if key == "name" else None
        override = shaping.overrides.get(own)
        definition = item
        if new is not None and new != own:
            definition = {**definition, key: new}
            renamed[own] = new
        if override:
            definition = overridden(definition, override)
            changed[own] = tuple(sorted(override))
        out.append(Shaped(own, definition, item if definition != item else None))
    named = set(shaping.overrides) | (set(shaping.rename) if key == "name" else set()) if shaping is not None else set()
    return out, Outcome(listed, tuple(sorted(filtered)), renamed, changed, tuple(sorted(named - seen)))


def overridden(definition: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """C{definition} (not changed) with C{override}'s fields; C{annotations} merged key by key, None removing."""
    out = dict(definition)
    for key, value in override.items():
        if key != "annotations":
            out[key] = value
            continue
        server = definition.get("annotations")
        merged = dict(server) if type(server) is dict else {}
        for name, given in value.items():
            if given is None:
                merged.pop(name, None)
            else:
                merged[name] = given
        if merged or "annotations" in definition:
            out["annotations"] = merged
    return out


def _matches(globs: Iterable[str], text: str) -> bool:
    return any(compile_pattern(glob).fullmatch(text) is not None for glob in globs)


def _denied(globs: Iterable[str], texts: tuple[str, ...]) -> bool:
    """Whether a deny glob matches one of C{texts}, case and C{-}/C{_} folded as the roles' deny folds."""
    folded = [fold_name(text) for text in texts]
    return any(compile_pattern(glob, True).fullmatch(text) is not None for glob in globs for text in folded)
