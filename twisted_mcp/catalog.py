"""
The merged tool catalog: every backend's tools under exposed names
C{<backend><separator><tool>}, valid for the spec and for Claude
(C{^[A-Za-z0-9_-]{1,64}$}), in a deterministic order.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable, NamedTuple

from twisted.logger import Logger

from twisted_mcp.backends.base import Backend

log = Logger()

MAX_NAME = 64
_INVALID = re.compile(r"[^A-Za-z0-9_-]")


def exposed_name(backend: str, tool: str, separator: str) -> str:
    """
    The name a client sees for C{tool} of C{backend}.

    Characters outside C{[A-Za-z0-9_-]} become C{_}; a name longer than 64
    characters is cut to 55 and given C{_} and 8 hex digits of the SHA-256
    of the full, unmodified name, so that it stays unique and stable.
    """
    full = f"{backend}{separator}{tool}"
    name = untruncated_name(backend, tool, separator)
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(full.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}_{digest}"
    return name


def untruncated_name(backend: str, tool: str, separator: str) -> str:
    """The exposed name before the 64-character limit cuts it."""
    return _INVALID.sub("_", f"{backend}{separator}{tool}")


class Entry(NamedTuple):
    backend: Backend
    tool: str
    definition: dict[str, Any]


class Catalog:
    """
    Exposed name -> (backend, original tool name), and the tool list as
    clients see it, rebuilt whenever a backend's tools change.
    """

    def __init__(self, separator: str) -> None:
        self.separator = separator
        self.entries: dict[str, Entry] = {}
        self.listing: list[dict[str, Any]] = []
        #: The collisions of the last rebuild, logged once while they last.
        self._reported: set[tuple[str, str, str, str]] = set()

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def rebuild(self, backends: Iterable[Backend]) -> bool:
        """Recompute from the backends' tools; return whether the list changed."""
        entries: dict[str, Entry] = {}
        collisions: set[tuple[str, str, str, str]] = set()
        for backend in sorted(backends, key=lambda b: b.name):
            for tool in sorted(backend.tools, key=lambda t: t["name"]):
                name = exposed_name(backend.name, tool["name"], self.separator)
                other = entries.get(name)
                if other is not None:
                    key = (backend.name, tool["name"], other.backend.name, other.tool)
                    collisions.add(key)
                    if key in self._reported:
                        continue
                    log.error(
                        "tool name collision: {backend}'s tool {tool!r} and {other}'s tool {other_tool!r} "
                        "are both exposed as {name!r}; only the first is served (rename one of the "
                        "servers or tools)",
                        backend=backend.name,
                        tool=tool["name"],
                        other=other.backend.name,
                        other_tool=other.tool,
                        name=name,
                    )
                    continue
                definition = dict(tool)
                definition["name"] = name
                entries[name] = Entry(backend, tool["name"], definition)
        listing = [entries[name].definition for name in sorted(entries)]
        changed = listing != self.listing
        self.entries = entries
        self.listing = listing
        # Only the collisions of now: a backend that renames its tools on
        # every listing would otherwise grow this set for ever.
        self._reported = collisions
        return changed
