"""
The merged tool catalog: every backend's tools under exposed names
(L{twisted_mcp.mcp.names}), in a deterministic order.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

from twisted.logger import Logger

from twisted_mcp.backends.base import Backend
from twisted_mcp.mcp.names import exposed_name

log = Logger()


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
