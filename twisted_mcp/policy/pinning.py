"""
Tool pinning: a digest of every tool's full definition in a lock file;
tools that are new or changed since the lock was written are quarantined
(C{enforce}) or only reported (C{warn}).

The digest is of the definition as served (the backend's config's overrides
applied: what the model reads), under the server's own name; beside it the
lock keeps C{upstream}, the digest of the server's definition as it listed
it, so that a review can say whether the server or the config changed.
C{upstream} is written only where it differs from C{digest} (a tool the
config overrides): a pin without it, as in every lock file written before
it existed, is of a definition served as the server listed it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Protocol

from twisted.logger import Logger

from twisted_mcp.config import ConfigError, parse_text, read_file

log = Logger()


def digest(definition: dict[str, Any]) -> str:
    """SHA-256 of the tool's definition as its server gave it (its C{_meta} aside)."""
    body = {k: v for k, v in definition.items() if k != "_meta"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _Pinnable(Protocol):
    """A catalog entry, as pinning reads it (L{twisted_mcp.dispatch.catalog.Entry})."""

    @property
    def tool(self) -> str: ...

    @property
    def definition(self) -> dict[str, Any]: ...

    @property
    def upstream(self) -> dict[str, Any] | None: ...


def pinned_definitions(entry: _Pinnable) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    What is pinned of a catalog entry: the served definition and the
    server's own, each under the server's own tool name (so that neither
    the prefix nor a rename changes a digest: they change the lock's key).
    """
    served = {**entry.definition, "name": entry.tool}
    upstream = served if entry.upstream is None else {**entry.upstream, "name": entry.tool}
    return served, upstream


def read_lock(path: str) -> dict[str, dict[str, Any]]:
    """The pinned tools by exposed name; raises ValueError for a bad file
    (within the bounds of any configuration file, see L{twisted_mcp.config.reading.read_file})."""
    try:
        data = parse_text(read_file(path), path)
    except ConfigError as e:
        raise ValueError("; ".join(e.problems)) from None
    tools = data.get("tools") if isinstance(data, dict) else None
    if not isinstance(tools, dict):
        raise ValueError(f"{path}: not a twisted-mcp lock file (no \"tools\" mapping)")
    return tools


def write_lock(
    path: str,
    entries: Iterable[tuple[Any, ...]],
    kept: Iterable[tuple[str, str, str, dict[str, Any]]] = (),
) -> dict[str, dict[str, Any]]:
    """
    Write (atomically) the lock for C{(exposed, backend, tool, served)} or
    C{(exposed, backend, tool, served, upstream)} entries (without
    C{upstream}, the served definition is the server's), plus C{kept} pins
    as they were (C{(exposed, backend, tool, pin)}).
    """
    tools = {name: dict(pin) for name, _, _, pin in kept}
    for exposed, backend, tool, served, *rest in sorted(entries, key=lambda e: e[0]):
        pin = tools[exposed] = {"backend": backend, "tool": tool, "digest": digest(served)}
        if rest and digest(rest[0]) != pin["digest"]:
            pin["upstream"] = digest(rest[0])
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "tools": tools}, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return tools


class Pins:
    """
    The lock file's view: which exposed tools are quarantined, and why.

    @ivar quarantined: what is quarantined: this replica's own finds
        (C{own}) and, with shared state, those other replicas published
        (C{shared}).
    """

    def __init__(self, mode: str, path: str | None) -> None:
        self.mode = mode
        self.path = path
        self.pinned: dict[str, dict[str, Any]] = {}
        self.quarantined: dict[str, str] = {}
        self.own: dict[str, str] = {}
        self.shared: dict[str, str] = {}
        self.error: str | None = None
        if mode != "off" and path is not None:
            try:
                self.pinned = read_lock(path)
            except FileNotFoundError:
                self.error = f"no lock file at {path}: run `twisted-mcp pin --config FILE` to approve the current tools"
            except (OSError, ValueError) as e:
                self.error = f"cannot read the lock file {path}: {e}"
            if self.error:
                log.error("tool pinning ({mode}): {why}", mode=mode, why=self.error)

    def review(self, entries: Iterable[tuple[Any, ...]]) -> list[tuple[str, str]]:
        """
        Recompute the quarantine from C{(exposed, served)} or C{(exposed,
        served, upstream)} entries; return the (tool, reason) newly found.
        """
        if self.mode == "off":
            return []
        found: dict[str, str] = {}
        for exposed, served, *rest in entries:
            pin = self.pinned.get(exposed)
            if pin is None:
                found[exposed] = "new tool, not in the lock file"
                continue
            now = digest(served)
            if pin.get("digest") == now:
                continue
            was = pin.get("digest")
            if not rest:
                found[exposed] = f"definition changed since it was pinned (was {was}, now {now})"
            elif pin.get("upstream", was) != digest(rest[0]):
                found[exposed] = f"server changed: its definition differs from the pinned one (was {was}, now {now})"
            else:
                found[exposed] = f"config changed: its overrides change the definition served (was {was}, now {now})"
        fresh = [(k, v) for k, v in found.items() if self.quarantined.get(k) != v]
        self.own = found
        self.quarantined = {**self.shared, **found}
        return fresh

    def set_shared(self, shared: dict[str, str]) -> bool:
        """The quarantine other replicas published (exposed name -> reason); whether what is quarantined changed."""
        self.shared = dict(shared) if self.mode != "off" else {}
        merged = {**self.shared, **self.own}
        changed = merged != self.quarantined
        self.quarantined = merged
        return changed

    def lift(self, name: str) -> None:
        """C{name} was approved: no longer quarantined (until a review finds it again)."""
        self.quarantined.pop(name, None)
        self.own.pop(name, None)
        self.shared.pop(name, None)

    def blocks(self, exposed: str) -> str | None:
        """The reason C{exposed} is quarantined (enforce mode), or None."""
        if self.mode != "enforce":
            return None
        return self.quarantined.get(exposed)
