"""
What a routed request is about (L{Subject}): a tool, a prompt, a resource
or a resource template, by the name or URI a client sees, the backend that
owns it and the backend's own name or URI.  The dispatch core resolves a
request to its subject; the policy decides on subjects.
"""

from __future__ import annotations

from typing import Any

import attrs

#: The kinds of subject, each with the key of its definition that names it
#: and the listing method that shows it.
KINDS = ("tool", "prompt", "resource", "template")
NAME_KEYS = {"tool": "name", "prompt": "name", "resource": "uri", "template": "uriTemplate"}
LISTING_METHODS = {
    "tool": "tools/list",
    "prompt": "prompts/list",
    "resource": "resources/list",
    "template": "resources/templates/list",
}
#: How refusals and the audit name a subject of each kind, for people.
WORDS = {"tool": "tool", "prompt": "prompt", "resource": "resource", "template": "resource template"}
#: The key of an error's C{data} that names the subject.
DATA_KEYS = {"tool": "tool", "prompt": "prompt", "resource": "uri", "template": "uriTemplate"}


@attrs.frozen
class Subject:
    """
    @ivar kind: C{"tool"}, C{"prompt"}, C{"resource"} or C{"template"}.
    @ivar exposed: the name (tools, prompts), URI (resources) or URI
        template (templates) a client sees.
    @ivar backend: the name of the backend that owns it.
    @ivar original: the backend's own name, URI or URI template.
    """

    kind: str
    exposed: str
    backend: str
    original: str

    def data(self) -> dict[str, str]:
        """The C{data} of an error about this subject: C{{"tool": name}}, C{{"uri": uri}}..."""
        return {DATA_KEYS[self.kind]: self.exposed}


def subject_of(kind: str, entry: Any) -> Subject:
    """The subject of a catalog entry of C{kind} (its definition names it as clients see it)."""
    return Subject(kind, entry.definition[NAME_KEYS[kind]], entry.backend.name, original_of(entry))


def original_of(entry: Any) -> str:
    """
    A catalog entry's backend-own name or URI: C{original}, or C{tool} in
    the entries of the tools-only catalog (where C{tool} is what the
    catalog of every kind keeps as an alias of C{original}).
    """
    try:
        return str(entry.original)
    except AttributeError:
        return str(entry.tool)


__all__ = ["DATA_KEYS", "KINDS", "LISTING_METHODS", "NAME_KEYS", "Subject", "WORDS", "original_of", "subject_of"]
