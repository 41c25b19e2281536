"""
The merged catalog: every backend's tools, prompts, resources and resource
templates as clients see them, in a deterministic order, and the way back
from what a client names to the backend that owns it.

Tools and prompts are named C{<backend><separator><name>}
(L{twisted_mcp.mcp.names}); when two end up with the same name, the first
by backend name is served and the collision is logged.

Resources keep the backend's URI, and templates the backend's text, unless
backends must be told apart; then the gateway's own form
C{twisted-mcp://<backend>/<original, verbatim>} is shown
(L{twisted_mcp.mcp.uris}), for every copy:

  - a resource URI listed by two or more backends;
  - a template whose literal prefix (its text before the first C{{}) is a
    prefix of another backend's template's literal prefix, or the other way
    round (then they may match a common URI; templates whose prefixes differ
    before the shorter one ends never do), or that starts a URI another
    backend lists (the other backend's resource keeps its URI);
  - a URI or template already in the gateway's own scheme (so that a gateway
    behind a gateway cannot be confused with a backend of this one).

A URI in a result (a resource link, an embedded resource, the contents of a
read) is shown as the backend gave it when no listed resource, no template
and no URI remembered from another backend's results claims it; otherwise,
or when it is longer than L{MAX_REMEMBERED_URI} characters and nothing else
would lead back to its backend, in the gateway's form.  URIs shown as given
that are not listed are remembered (the last C{remembered} of them, least
recently used first out) so that a client can read them back.

L{Catalog.route_uri} takes a client's URI back to its backend, in this
order: a listed resource; the gateway's form naming a configured backend;
else the one backend that claims it, through a URI listed by several
backends (never unique), a template (matched against the backend's own
text), or a remembered URI.  Two claims are ambiguous: nothing is routed and
L{Catalog.why_unrouted} says which URIs to use instead.

What a rebuild changes: a URI a result carried as given, remembered for
its backend, that another backend's template comes to match is ambiguous
from then on (refused, with the URIs to use); one that another backend
comes to list goes to that backend, since a listed resource comes first.
A remembered URI that has left the memory routes nowhere unless a listing
or template covers it.

Each backend's listings are shaped first (L{twisted_mcp.dispatch.shaping}:
its config's C{tools:}, C{prompts:}, C{resources:}): what its filter removes
is not in the catalog, and a URI it removes is routed nowhere, however the
client names it.  L{Catalog.generation} is a digest of what clients see.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any, Callable, Iterable, NamedTuple

from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.config.models import Shaping
from twisted_mcp.dispatch.shaping import Outcome, Shaped, shape, uri_allowed
from twisted_mcp.mcp.names import name_prefix, prefixed_name
from twisted_mcp.mcp.uris import (
    TemplateError,
    UriTemplate,
    is_reserved,
    overlapping,
    prefixed,
    unprefixed,
)

log = Logger()

TOOLS = "tools"
PROMPTS = "prompts"
RESOURCES = "resources"
TEMPLATES = "resourceTemplates"

#: URIs seen in results that are remembered for routing, by default.
REMEMBERED = 10_000
#: A URI in a result longer than this is not remembered (it is shown in the
#: gateway's form instead, which needs no memory to be routed).
MAX_REMEMBERED_URI = 2048
#: How much of a client's URI an error message quotes.
_SHOWN = 200


class Entry(NamedTuple):
    """
    One thing a backend offers, as clients see it.

    @ivar backend: the backend that owns it.
    @ivar original: the backend's own tool or prompt name, resource URI or
        URI template.
    @ivar definition: the definition clients see (the backend's, shaped,
        with the exposed name, C{uri} or C{uriTemplate}).
    @ivar upstream: the backend's definition as it listed it, when its
        shaping changed it (renamed or overridden); None when it did not.
    """

    backend: Backend
    original: str
    definition: dict[str, Any]
    upstream: dict[str, Any] | None = None

    @property
    def tool(self) -> str:
        """The backend's own tool name (L{original}, under the name the tools code reads)."""
        return self.original


class Listing:
    """
    One kind of the catalog.

    @ivar entries: exposed name, URI or URI template -> its entry.
    @ivar listing: the definitions as clients see them, sorted by exposed
        name, URI or URI template.
    """

    __slots__ = ("entries", "listing", "_by_original")

    def __init__(self, entries: dict[str, Entry] | None = None) -> None:
        self.entries: dict[str, Entry] = entries or {}
        self.listing: list[dict[str, Any]] = [self.entries[key].definition for key in sorted(self.entries)]
        #: (backend name, original) -> exposed, made when first asked for.
        self._by_original: dict[tuple[str, str], str] | None = None

    def get(self, exposed: str) -> Entry | None:
        """The entry clients see as C{exposed}, if any."""
        return self.entries.get(exposed)

    def exposed(self, backend: str, original: str) -> str | None:
        """How clients see C{backend}'s C{original}, if it is listed."""
        if self._by_original is None:
            self._by_original = {(e.backend.name, e.original): key for key, e in self.entries.items()}
        return self._by_original.get((backend, original))


class Catalog:
    """
    What every backend offers, as clients see it, rebuilt whenever a
    backend's listings change; and the way back from a client's name or URI
    to the backend that owns it.
    """

    def __init__(self, separator: str, remembered: int = REMEMBERED) -> None:
        """
        @param separator: between the backend's name and a tool's or a
            prompt's in exposed names.
        @param remembered: how many URIs seen in results are remembered for
            L{route_uri}.
        """
        self.separator = separator
        self.tools = Listing()
        self.prompts = Listing()
        self.resources = Listing()
        self.templates = Listing()
        self._backends: dict[str, Backend] = {}
        #: A URI listed by several backends -> their entries.
        self._shared: dict[str, list[Entry]] = {}
        #: Every template that compiled (the backend's text), indexed by literal prefix.
        self._matchers = _Matchers([])
        #: What the last rebuild computed, for the next to reuse: exposed
        #: names of (backend, tool or prompt name), compiled templates.
        self._names: dict[tuple[str, str], str] = {}
        self._compiled: dict[str, UriTemplate | TemplateError] = {}
        #: URI seen in a result, shown as given -> its backend's name; least recently used first.
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._remembered = remembered
        #: The problems of the last rebuild (collisions, bad templates), logged once while they last.
        self._reported: set[tuple[str, ...]] = set()
        #: What each backend's shaping did at the last rebuild: backend name ->
        #: kind (C{tools}, C{prompts}, C{resources}, C{resourceTemplates}) -> outcome;
        #: only backends with shaping.
        self.shaped: dict[str, dict[str, Outcome]] = {}
        #: A digest of the listings clients see: equal catalogs have equal
        #: generations, and it changes whenever L{rebuild} reports a change.
        self.generation = _generation(self)

    # -- the tools, for the code written before the other kinds ---------------

    @property
    def entries(self) -> dict[str, Entry]:
        return self.tools.entries

    @property
    def listing(self) -> list[dict[str, Any]]:
        return self.tools.listing

    def get(self, name: str) -> Entry | None:
        return self.tools.entries.get(name)

    # -- rebuilding -------------------------------------------------------------

    def rebuild(self, backends: Iterable[Backend]) -> frozenset[str]:
        """
        Recompute from the backends' listings.

        @return: the kinds whose listing changed, among C{"tools"},
            C{"prompts"}, C{"resources"} and C{"resourceTemplates"}.
        """
        ordered = sorted(backends, key=lambda b: b.name)
        reported: set[tuple[str, ...]] = set()
        names: dict[tuple[str, str], str] = {}
        shaped: dict[str, dict[str, Outcome]] = {}
        tools = self._named("tool", ordered, [b.tools for b in ordered], names, reported, shaped)
        prompts = self._named("prompt", ordered, [_listed(b, "prompts") for b in ordered], names, reported, shaped)
        self._names = names
        resources, shared = self._resources(ordered, reported, shaped)
        templates, matchers = self._templates(ordered, resources, reported, shaped)
        changed = frozenset(
            kind
            for kind, old, new in (
                (TOOLS, self.tools, tools),
                (PROMPTS, self.prompts, prompts),
                (RESOURCES, self.resources, resources),
                (TEMPLATES, self.templates, templates),
            )
            if new.listing != old.listing
        )
        self.tools, self.prompts, self.resources, self.templates = tools, prompts, resources, templates
        self._shared, self._matchers = shared, matchers
        self._backends = {b.name: b for b in ordered}
        self.shaped = shaped
        self._report_unmatched(shaped, reported)
        if changed:
            self.generation = _generation(self)
        # Only the problems of now: a backend that renames its tools on every
        # listing would otherwise grow this set for ever.
        self._reported = reported
        return changed

    def _named(
        self,
        kind: str,
        ordered: list[Backend],
        listings: list[Any],
        names: dict[tuple[str, str], str],
        reported: set[tuple[str, ...]],
        shaped: dict[str, dict[str, Outcome]],
    ) -> Listing:
        """
        Tools or prompts (C{kind}) under C{<backend><separator><name>},
        after each backend's shaping (where a rename gives the name).

        @param names: the exposed names computed so far (added to).
        @param shaped: what shaping did, by backend and kind (added to).
        """
        entries: dict[str, Entry] = {}
        renamed: set[str] = set()
        known = self._names
        for backend, listed in zip(ordered, listings, strict=True):
            items = _shaped(backend, f"{kind}s", sorted(_valid(listed, "name"), key=_name), "name", shaped)
            for item in items:
                original = item.original
                key = (name_prefix(backend.name, backend.name_prefix, self.separator), item.definition["name"])
                name = known.get(key) or prefixed_name(*key)
                names[key] = name
                other = entries.get(name)
                if other is not None:
                    after = name in renamed or key[1] != original
                    self._collision(kind, name, backend, original, other, reported, after)
                    continue
                if key[1] != original:
                    renamed.add(name)
                definition = dict(item.definition)
                definition["name"] = name
                entries[name] = Entry(backend, original, definition, item.upstream)
        return Listing(entries)

    def _collision(
        self,
        kind: str,
        name: str,
        backend: Backend,
        original: str,
        other: Entry,
        reported: set[tuple[str, ...]],
        after_rename: bool = False,
    ) -> None:
        key: tuple[str, ...] = (backend.name, original, other.backend.name, other.original)
        if kind != "tool":
            key = (kind, *key)
        reported.add(key)
        if key in self._reported:
            return
        cause = " after rename" if after_rename else ""
        log.error(
            f"{kind} name collision{cause}: {{backend}}'s {kind} {{{kind}!r}} and {{other}}'s {kind} {{other_{kind}!r}} "
            f"are both exposed as {{name!r}}; only the first is served (rename one of the servers or {kind}s)",
            backend=backend.name,
            other=other.backend.name,
            name=name,
            **{kind: original, f"other_{kind}": other.original},
        )

    def _resources(
        self, ordered: list[Backend], reported: set[tuple[str, ...]], shaped: dict[str, dict[str, Outcome]]
    ) -> tuple[Listing, dict[str, list[Entry]]]:
        owners: dict[str, list[tuple[Backend, Shaped]]] = {}
        for backend in ordered:
            for resource in _shaped(backend, RESOURCES, _valid(_listed(backend, "resources"), "uri"), "uri", shaped):
                copies = owners.setdefault(resource.original, [])
                if not copies or copies[-1][0] is not backend:  # a backend's repeats: its first is kept
                    copies.append((backend, resource))
        entries: dict[str, Entry] = {}
        shared: dict[str, list[Entry]] = {}
        for uri, copies in owners.items():
            alone = len(copies) == 1 and not is_reserved(uri)
            for backend, resource in copies:
                exposed = uri if alone else prefixed(backend.name, uri)
                entries[exposed] = Entry(backend, uri, {**resource.definition, "uri": exposed}, resource.upstream)
            if len(copies) > 1:
                shared[uri] = [entries[prefixed(b.name, uri)] for b, _ in copies]
                self._report(
                    reported,
                    ("shared", uri, *(b.name for b, _ in copies)),
                    "resource URI {uri!r} is listed by several servers ({backends}); each is shown to clients "
                    "as twisted-mcp://<server>/{uri}",
                    uri=uri,
                    backends=", ".join(b.name for b, _ in copies),
                )
        return Listing(entries), shared

    def _templates(
        self,
        ordered: list[Backend],
        resources: Listing,
        reported: set[tuple[str, ...]],
        shaped: dict[str, dict[str, Outcome]],
    ) -> tuple[Listing, _Matchers]:
        found: list[tuple[Backend, dict[str, Any], dict[str, Any] | None]] = []
        for backend in ordered:
            texts: set[str] = set()
            listed = _valid(_listed(backend, "resource_templates"), "uriTemplate")
            for kept in _shaped(backend, TEMPLATES, listed, "uriTemplate", shaped):
                if kept.original not in texts:  # a backend's repeats: its first is kept
                    texts.add(kept.original)
                    found.append((backend, kept.definition, kept.upstream))
        shared = overlapping(
            [(b.name, t["uriTemplate"]) for b, t, _ in found],
            [(e.backend.name, e.original) for e in resources.entries.values()],
        )
        entries: dict[str, Entry] = {}
        matchers: list[tuple[UriTemplate, Entry]] = []
        known, compiled = self._compiled, {}
        for i, (backend, template, upstream) in enumerate(found):
            text = template["uriTemplate"]
            exposed = prefixed(backend.name, text) if i in shared or is_reserved(text) else text
            entry = entries[exposed] = Entry(backend, text, {**template, "uriTemplate": exposed}, upstream)
            matcher = compiled[text] = known.get(text) or _compile(text)
            if isinstance(matcher, UriTemplate):
                matchers.append((matcher, entry))
            else:
                e = matcher
                self._report(
                    reported,
                    ("template", backend.name, text),
                    "{backend}'s resource template {template!r} is not a valid URI template ({why}); it is listed, "
                    "but a URI made from it can be read only in the gateway's form twisted-mcp://{backend}/<URI>",
                    backend=backend.name,
                    template=_shown(text),
                    why=str(e),
                )
        self._compiled = compiled
        return Listing(entries), _Matchers(matchers)

    def _report_unmatched(self, shaped: dict[str, dict[str, Outcome]], reported: set[tuple[str, ...]]) -> None:
        """
        Warn (once while it lasts) of each rename or override that names an
        own name (or URI) its server does not list: a typo would otherwise
        go unnoticed.  Only once the server listed something of that kind.
        """
        for backend, outcomes in shaped.items():
            for section, kinds in ((TOOLS, (TOOLS,)), (PROMPTS, (PROMPTS,)), (RESOURCES, (RESOURCES, TEMPLATES))):
                found = [outcomes[kind] for kind in kinds if kind in outcomes]
                if not found or not any(o.listed for o in found):
                    continue
                unmatched = set.intersection(*(set(o.unmatched) for o in found))
                for own in sorted(unmatched):
                    self._report(
                        reported,
                        ("unmatched", backend, section, own),
                        "backend {backend}: {section}.rename or {section}.overrides names {own!r}, which the server does not list",
                        backend=backend,
                        section=section,
                        own=own,
                    )

    def _report(self, reported: set[tuple[str, ...]], key: tuple[str, ...], message: str, **fields: Any) -> None:
        """Log C{message} unless the last rebuild already did (C{key} says which problem it is)."""
        reported.add(key)
        if key not in self._reported:
            log.warn(message, **fields)

    # -- URIs -------------------------------------------------------------------

    def route_uri(self, uri: str) -> tuple[Entry | None, Backend, str] | None:
        """
        The backend a client's URI belongs to.

        @return: the listed resource or the template it matches, if any (in
            the latter case of the backend the URI is routed to); the
            backend; and the backend's own URI.  None when no backend can be
            named (L{why_unrouted} says why).
        """
        if type(uri) is not str:
            return None
        entry = self.resources.entries.get(uri)
        if entry is not None:
            return entry, entry.backend, entry.original
        own = unprefixed(uri)
        if own is not None:
            backend = self._backends.get(own[0])
            if backend is None:
                return None
            found = self._own_entry(backend.name, own[1])
            if not _reachable(backend, own[1], found):
                return None
            return found, backend, own[1]
        if is_reserved(uri):
            return None
        claims = self._claims(uri)
        if len(claims) != 1:
            return None
        ((name, entry),) = claims.items()
        if uri in self._seen:
            self._seen.move_to_end(uri)
        return entry, self._backends[name], uri

    def why_unrouted(self, uri: str, visible: Callable[[Backend, str], bool] | None = None) -> str:
        """
        Why L{route_uri} routes C{uri} nowhere, for the client and the log.

        @param visible: whether the client may be told of a backend's URI;
            URIs for which it answers false are not named as candidates.
        """
        if type(uri) is not str:
            return f"a resource URI is a string, not {type(uri).__name__}"
        shown = _shown(uri)
        own = unprefixed(uri)
        if own is not None and own[0] not in self._backends:
            return f"the URI {shown!r} names the server {own[0]!r}, which this gateway does not have"
        if own is None and is_reserved(uri):
            return f"the URI {shown!r} is not of the form twisted-mcp://<server>/<the server's own URI>"
        if self.route_uri(uri) is not None:
            return f"the URI {shown!r} can be routed"
        candidates = [
            (backend, exposed)
            for backend, exposed in self._candidates(uri)
            if visible is None or visible(backend, exposed)
        ]
        if len(candidates) > 1:
            return (
                f"the URI {shown!r} could belong to several servers ({', '.join(b.name for b, _ in candidates)}); "
                f"ask for one of: {', '.join(_shown(exposed) for _, exposed in candidates)}"
            )
        if candidates:
            return f"the URI {shown!r} is not unique on this gateway; ask for {_shown(candidates[0][1])}"
        return (
            f"no server lists the resource {shown!r} or has a resource template that matches it (a URI that "
            f"appeared only in a result can be read back while it is among the last {self._remembered} such URIs)"
        )

    def expose_uri(self, backend: Backend, uri: str) -> str:
        """
        C{backend}'s URI as clients see it: as given when nothing else
        claims it (then remembered for L{route_uri}), else in the gateway's
        form.
        """
        name = backend.name
        listed = self.resources.exposed(name, uri)
        if listed is not None:
            return listed
        if is_reserved(uri) or uri in self.resources.entries:
            return prefixed(name, uri)
        claims = self._claims(uri)
        if claims.keys() - {name}:
            return prefixed(name, uri)
        if not self._remember(uri, name) and not claims:
            return prefixed(name, uri)
        return uri

    def expose_content(self, backend: Backend, value: Any) -> Any:
        """
        A result from C{backend} with the URIs in it as clients see them
        (L{expose_uri}): C{content[]} of a tool result, C{messages[].content}
        of a prompt, C{contents[]} of a read; in content, the C{uri} of a
        C{resource_link} and C{resource.uri} of an embedded C{resource}.

        Nothing else is looked into (C{structuredContent} is left alone).
        C{value} is never changed: a copy is returned where a URI changed,
        sharing everything that did not.
        """
        if type(value) is not dict:
            return value
        out = value
        content = value.get("content")
        if type(content) is list and _has_uri_block(content):
            new = _each(content, lambda block: self._expose_block(backend, block))
            if new is not content:
                out = {**out, "content": new}
        messages = value.get("messages")
        if type(messages) is list:
            new = _each(messages, lambda message: self._expose_message(backend, message))
            if new is not messages:
                out = {**out, "messages": new}
        contents = value.get("contents")
        if type(contents) is list:
            new = _each(contents, lambda item: self._expose_uri_field(backend, item))
            if new is not contents:
                out = {**out, "contents": new}
        return out

    def _expose_message(self, backend: Backend, message: Any) -> Any:
        if type(message) is not dict:
            return message
        content = message.get("content")
        new = self._expose_block(backend, content)
        return message if new is content else {**message, "content": new}

    def _expose_block(self, backend: Backend, block: Any) -> Any:
        if type(block) is not dict:
            return block
        kind = block.get("type")
        if kind == "resource_link":
            return self._expose_uri_field(backend, block)
        if kind == "resource":
            resource = block.get("resource")
            new = self._expose_uri_field(backend, resource)
            return block if new is resource else {**block, "resource": new}
        return block

    def _expose_uri_field(self, backend: Backend, item: Any) -> Any:
        if type(item) is not dict:
            return item
        uri = item.get("uri")
        if not isinstance(uri, str):
            return item
        exposed = self.expose_uri(backend, uri)
        return item if exposed == uri else {**item, "uri": exposed}

    def _claims(self, uri: str) -> dict[str, Entry | None]:
        """
        The backends that could own C{uri}, a URI not listed as it is and
        not in the gateway's form, by name: with the entry of their copy
        (listed by several backends) or their template that matches it, or
        None when only remembered from their results.
        """
        claims: dict[str, Entry | None] = {}
        for entry in self._shared.get(uri, ()):
            claims[entry.backend.name] = entry
        for entry in self._matchers.matching(uri):
            claims.setdefault(entry.backend.name, entry)
        seen = self._seen.get(uri)
        if seen is not None and seen in self._backends:
            claims.setdefault(seen, None)
        # A URI a backend's resources filter removes is not that backend's to serve.
        return {name: entry for name, entry in claims.items() if _reachable(self._backends[name], uri, entry)}

    def _candidates(self, uri: str) -> list[tuple[Backend, str]]:
        """The URIs, in the gateway's form, a client can use instead of C{uri}, with their backends."""
        out = []
        for name, entry in sorted(self._claims(uri).items()):
            exposed = entry.definition["uri"] if entry is not None and "uri" in entry.definition else prefixed(name, uri)
            out.append((self._backends[name], exposed))
        return out

    def reachable(self, backend: Backend, uri: str) -> bool:
        """Whether C{backend}'s resources filter lets a client reach its own C{uri} in this catalog."""
        return _reachable(backend, uri, self._own_entry(backend.name, uri))

    def _own_entry(self, name: str, original: str) -> Entry | None:
        """C{name}'s listed resource C{original}, or the first of its templates that matches it."""
        exposed = self.resources.exposed(name, original)
        if exposed is not None:
            return self.resources.entries[exposed]
        for entry in self._matchers.matching(original):
            if entry.backend.name == name:
                return entry
        return None

    def _remember(self, uri: str, name: str) -> bool:
        """Remember that C{uri} was shown as given for backend C{name}; false if it is too long to."""
        if len(uri) > MAX_REMEMBERED_URI:
            return False
        seen = self._seen
        seen[uri] = name
        seen.move_to_end(uri)
        while len(seen) > self._remembered:
            seen.popitem(last=False)
        return True


class _Matchers:
    """
    Compiled templates indexed by their literal prefix, so that finding
    those that match a URI looks only at the templates whose prefix starts
    it: one dictionary look-up per distinct prefix length.
    """

    __slots__ = ("_by_prefix", "_lengths")

    def __init__(self, matchers: list[tuple[UriTemplate, Entry]]) -> None:
        by_prefix: dict[str, list[tuple[str, UriTemplate, Entry]]] = {}
        for matcher, entry in matchers:
            by_prefix.setdefault(matcher.prefix, []).append((entry.definition["uriTemplate"], matcher, entry))
        for bucket in by_prefix.values():
            bucket.sort(key=lambda m: m[0])
        self._by_prefix = by_prefix
        self._lengths = sorted({len(prefix) for prefix in by_prefix})

    def matching(self, uri: str) -> list[Entry]:
        """The entries of the templates that match C{uri}, by exposed template."""
        found: list[tuple[str, Entry]] = []
        for length in self._lengths:
            if length > len(uri):
                break
            for exposed, matcher, entry in self._by_prefix.get(uri[:length], ()):
                if matcher.matches(uri):
                    found.append((exposed, entry))
        found.sort(key=lambda m: m[0])
        return [entry for _, entry in found]


def _shaping(backend: Backend, kind: str) -> Shaping | None:
    """C{backend}'s shaping of C{kind} (C{tools}, C{prompts}, C{resources}), if any."""
    return getattr(backend, "shaping", {}).get(kind)


def _shaped(backend: Backend, kind: str, items: list[dict[str, Any]], key: str, shaped: dict[str, dict[str, Outcome]]) -> list[Shaped]:
    """C{backend}'s C{items} of C{kind} after its shaping; what was done is added to C{shaped}."""
    shaping = _shaping(backend, RESOURCES if kind == TEMPLATES else kind)
    out, outcome = shape(shaping, items, key)
    if shaping is not None:
        shaped.setdefault(backend.name, {})[kind] = outcome
    return out


def _reachable(backend: Backend, uri: str, entry: Entry | None) -> bool:
    """Whether C{backend}'s resources filter lets a client reach its own C{uri} (matched through C{entry}, if any)."""
    template = entry.original if entry is not None and "uriTemplate" in entry.definition else None
    return uri_allowed(_shaping(backend, RESOURCES), uri, template)


def _generation(catalog: Catalog) -> str:
    """A digest of the listings clients see (equal listings, equal digests)."""
    listings = [catalog.tools.listing, catalog.prompts.listing, catalog.resources.listing, catalog.templates.listing]
    text = json.dumps(listings, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _compile(text: str) -> UriTemplate | TemplateError:
    try:
        return UriTemplate(text)
    except TemplateError as e:
        return e


def _name(definition: dict[str, Any]) -> str:
    name: str = definition["name"]
    return name


def _listed(backend: Backend, attribute: str) -> Any:
    """A backend's listing of a kind (none from a backend that predates the kind)."""
    return getattr(backend, attribute, ())


def _valid(listed: Any, key: str) -> list[dict[str, Any]]:
    """The definitions in C{listed} that have a non-empty string under C{key}."""
    return [item for item in listed if type(item) is dict and type(item.get(key)) is str and item[key]]


#: The content blocks that carry a URI (L{Catalog._expose_block}); a tuple, as a block's type may be unhashable.
_URI_BLOCKS = ("resource_link", "resource")


def _has_uri_block(content: list[Any]) -> bool:
    """Whether some block of C{content} may carry a URI to expose: most
    results hold text only, and are passed on without a closure per call."""
    for block in content:
        if type(block) is dict and block.get("type") in _URI_BLOCKS:
            return True
    return False


def _each(items: list[Any], change: Callable[[Any], Any]) -> list[Any]:
    """C{items} with C{change} applied to each: the same list if nothing changed, else a new one."""
    out: list[Any] | None = None
    for i, item in enumerate(items):
        new = change(item)
        if new is not item:
            if out is None:
                out = list(items)
            out[i] = new
    return items if out is None else out


def _shown(uri: str) -> str:
    """C{uri}, cut to a length an error message can quote."""
    return uri if len(uri) <= _SHOWN else uri[: _SHOWN - 1] + "\u2026"
