"""
Resource URIs in the merged catalog: the gateway's own form of a backend's
URI, and RFC 6570 URI templates as far as routing needs them.

A backend's URI or URI template is shown to clients as the backend gave it
unless the catalog must tell backends apart (L{twisted_mcp.dispatch.catalog}
decides when).  Then it is shown as::

    twisted-mcp://<backend>/<the backend's URI, verbatim>

which maps back exactly by cutting the prefix (L{unprefixed}).  Backend
names are C{[A-Za-z0-9_-]+} (the configuration allows nothing else), a
valid RFC 3986 host, so the first C{/} after it ends it.  The original's
C{:} and C{/} are legal path characters; a C{?} or C{#} in the original
becomes the query or fragment of the new URI, which changes nothing for
mapping back, since that is done on the string.  If the original is a
valid URI, so is the new one, except for an IP-literal authority
(C{http://[::1]/}), whose brackets are not legal in a path; clients pass
such URIs on as strings all the same.  The prefix applied to a template's
text gives a template that expands to the prefix followed by the original
template's expansion.

L{UriTemplate} answers whether a URI could be an expansion of a template
(levels 1 to 4: C{{var}}, C{{+var}}, C{{#var}}, C{{.var}}, C{{/var}},
C{{;var}}, C{{?a,b}}, C{{&a}}, with C{:n} and C{*} modifiers).  The match
is deliberately lenient, as real servers and clients are: a simple
C{{var}} may contain C{/} (FastMCP-style paths), any expression may be
empty.  It runs on RE2, in time linear in the URI, whatever the template.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_left
from typing import Any, Iterable, Sequence

#: The scheme of the gateway's own URIs.
SCHEME = "twisted-mcp"
PREFIX = f"{SCHEME}://"
#: Longest URI template the gateway compiles to match URIs against.
MAX_TEMPLATE = 4096

_BACKEND_NAME = re.compile(r"[A-Za-z0-9_-]+")
_VARSPEC = re.compile(r"(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})(?:\.?(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2}))*(?::[1-9][0-9]{0,3}|\*)?")

# What each operator's expansion may look like (possibly empty: undefined
# variables expand to nothing).  Values are not checked character by
# character: a lenient match routes what a strict one would refuse.
_EXPANSIONS = {
    "": r"[^?#]*",
    "+": r".*",
    "#": r"(?:#.*)?",
    ".": r"(?:\.[^?#]*)?",
    "/": r"(?:/[^?#]*)?",
    ";": r"(?:;[^?#]*)?",
    "?": r"(?:\?[^#]*)?",
    "&": r"(?:&[^#]*)?",
}
#: Operators RFC 6570 reserves for future use.
_RESERVED_OPERATORS = "=,!@|"


@functools.cache
def _re2() -> tuple[Any, Any]:
    """RE2 and its options, imported with the first template compiled (google-re2 is several MB)."""
    import re2

    options = re2.Options()
    options.log_errors = False
    return re2, options


def prefixed(backend: str, original: str) -> str:
    """The gateway's own form of C{backend}'s URI (or URI template) C{original}."""
    return f"{PREFIX}{backend}/{original}"


def unprefixed(uri: str) -> tuple[str, str] | None:
    """
    The backend name and the backend's own URI in a URI of the form
    L{prefixed} makes, or None if C{uri} does not have that form.
    """
    if not uri.startswith(PREFIX):
        return None
    slash = uri.find("/", len(PREFIX))
    if slash < 0:
        return None
    backend = uri[len(PREFIX) : slash]
    if _BACKEND_NAME.fullmatch(backend) is None:
        return None
    return backend, uri[slash + 1 :]


def is_reserved(uri: str) -> bool:
    """Whether C{uri} uses the gateway's own scheme (in any case)."""
    return uri[: len(SCHEME) + 1].lower() == SCHEME + ":"


def literal_prefix(template: str) -> str:
    """The text of C{template} before its first expression (all of it if none)."""
    brace = template.find("{")
    return template if brace < 0 else template[:brace]


def may_overlap(one: str, other: str) -> bool:
    """
    Whether two URI templates may match a common URI, judged by their
    literal prefixes: every expansion of a template starts with its literal
    prefix, so templates whose prefixes differ before the shorter one ends
    never match the same URI.  Conservative: C{True} does not mean that some
    URI matches both.
    """
    a, b = literal_prefix(one), literal_prefix(other)
    return a.startswith(b) or b.startswith(a)


def overlapping(templates: Sequence[tuple[str, str]], uris: Sequence[tuple[str, str]]) -> set[int]:
    """
    Which templates must be told apart from another owner's.

    @param templates: (owner, template text) pairs.
    @param uris: (owner, URI) pairs, the URIs the owners list.
    @return: the indices in C{templates} of those that L{may_overlap} a
        template of another owner, or whose literal prefix starts a URI
        another owner lists.  In time O((T + U) log(T + U) + T * P), P the
        number of distinct prefix lengths, whatever the overlaps.
    """
    if not templates:
        return set()
    prefixes = [literal_prefix(text) for _, text in templates]
    owners_of: dict[str, set[str]] = {}
    for (owner, _), prefix in zip(templates, prefixes, strict=True):
        owners_of.setdefault(prefix, set()).add(owner)
    lengths = sorted({len(p) for p in owners_of})
    template_index = _PrefixIndex(zip((owner for owner, _ in templates), prefixes, strict=True))
    uri_index = _PrefixIndex(uris)
    found: set[int] = set()
    for i, ((owner, _), prefix) in enumerate(zip(templates, prefixes, strict=True)):
        if template_index.others_starting_with(prefix, owner) or uri_index.others_starting_with(prefix, owner):
            found.add(i)
            continue
        for length in lengths:
            if length > len(prefix):
                break
            if owners_of.get(prefix[:length], set()) - {owner}:
                found.add(i)
                break
    return found


class _PrefixIndex:
    """Strings by owner, to count another owner's strings that start with a given prefix."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._all: list[str] = []
        by_owner: dict[str, list[str]] = {}
        for owner, text in pairs:
            self._all.append(text)
            by_owner.setdefault(owner, []).append(text)
        self._all.sort()
        for texts in by_owner.values():
            texts.sort()
        self._by_owner = by_owner

    def others_starting_with(self, prefix: str, owner: str) -> bool:
        """Whether some owner but C{owner} has a string that starts with C{prefix}."""
        own = self._by_owner.get(owner, [])
        return _count_starting_with(self._all, prefix) > _count_starting_with(own, prefix)


def _count_starting_with(ordered: list[str], prefix: str) -> int:
    """How many strings of the sorted list C{ordered} start with C{prefix}."""
    low = bisect_left(ordered, prefix)
    # The least string greater than every string that starts with prefix:
    # its last character that is not the greatest one, plus one.
    stem = prefix.rstrip(_LAST_CHARACTER)
    if not stem:  # "" or only U+10FFFF: every string from low on starts with it
        return len(ordered) - low
    return bisect_left(ordered, stem[:-1] + chr(ord(stem[-1]) + 1)) - low


_LAST_CHARACTER = chr(0x10FFFF)


class TemplateError(ValueError):
    """A URI template that is not valid RFC 6570."""


class UriTemplate:
    """
    A compiled RFC 6570 URI template, to tell whether a URI could be one of
    its expansions.

    @ivar text: the template as given.
    @ivar prefix: its literal text before the first expression.
    """

    __slots__ = ("text", "prefix", "_regex")

    def __init__(self, text: str) -> None:
        """
        @raise TemplateError: C{text} is not a valid template (the message
            says why), or is longer than L{MAX_TEMPLATE} characters.
        """
        if len(text) > MAX_TEMPLATE:
            raise TemplateError(f"longer than {MAX_TEMPLATE} characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise TemplateError("not valid Unicode (a lone surrogate)")
        self.text = text
        self.prefix = literal_prefix(text)
        pattern = _pattern(text)
        re2, options = _re2()
        try:
            self._regex = re2.compile("(?s)" + pattern, options)
        except re2.error as e:  # not expected: every part is escaped or fixed
            raise TemplateError(f"cannot be compiled ({e})")

    def matches(self, uri: str) -> bool:
        """Whether C{uri} could be an expansion of this template."""
        if not uri.startswith(self.prefix):
            return False
        try:
            return self._regex.fullmatch(uri) is not None
        except UnicodeEncodeError:
            return False

    def __repr__(self) -> str:
        return f"UriTemplate({self.text!r})"


def _pattern(text: str) -> str:
    """The RE2 pattern of C{text}'s expansions; L{TemplateError} if it is not a template."""
    parts: list[str] = []
    position = 0
    while position < len(text):
        opening = text.find("{", position)
        closing = text.find("}", position)
        if closing >= 0 and (opening < 0 or closing < opening):
            raise TemplateError(f"a '}}' with no '{{' before it, at character {closing + 1}")
        if opening < 0:
            parts.append(_literal(text[position:]))
            break
        parts.append(_literal(text[position:opening]))
        if closing < 0:
            raise TemplateError(f"the expression at character {opening + 1} is not closed with '}}'")
        parts.append(_expression(text[opening + 1 : closing], opening))
        position = closing + 1
    return "".join(parts)


def _expression(body: str, at: int) -> str:
    where = f"the expression at character {at + 1}"
    if "{" in body:
        raise TemplateError(f"{where} is not closed with '}}' before the next '{{'")
    operator = body[:1] if body[:1] in _EXPANSIONS or body[:1] in _RESERVED_OPERATORS else ""
    if operator in _RESERVED_OPERATORS and operator:
        raise TemplateError(f"{where} uses the operator {operator!r}, which RFC 6570 reserves")
    variables = body[len(operator) :]
    if not variables:
        raise TemplateError(f"{where} names no variable")
    for varspec in variables.split(","):
        if _VARSPEC.fullmatch(varspec) is None:
            raise TemplateError(f"{where} has an invalid variable {varspec!r}")
    return _EXPANSIONS[operator]


def _literal(text: str) -> str:
    """C{text} as an RE2 pattern matching exactly it."""
    return "".join(c if c.isascii() and c.isalnum() else "\\x{%x}" % ord(c) for c in text)


__all__ = [
    "MAX_TEMPLATE",
    "PREFIX",
    "SCHEME",
    "TemplateError",
    "UriTemplate",
    "is_reserved",
    "literal_prefix",
    "may_overlap",
    "overlapping",
    "prefixed",
    "unprefixed",
]
