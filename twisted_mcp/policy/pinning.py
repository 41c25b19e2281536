"""
Tool pinning: a digest of every tool's full definition in a lock file;
tools that are new or changed since the lock was written are quarantined
(C{enforce}) or only reported (C{warn}).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable

from twisted.logger import Logger

from twisted_mcp.config import ConfigError, parse_text, read_file

log = Logger()


def digest(definition: dict[str, Any]) -> str:
    """SHA-256 of the tool's definition as its server gave it (its C{_meta} aside)."""
    body = {k: v for k, v in definition.items() if k != "_meta"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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
    entries: Iterable[tuple[str, str, str, dict[str, Any]]],
    kept: Iterable[tuple[str, str, str, dict[str, Any]]] = (),
) -> dict[str, dict[str, Any]]:
    """Write (atomically) the lock for C{(exposed, backend, tool, definition)}
    entries, plus C{kept} pins as they were (C{(exposed, backend, tool, pin)})."""
    tools = {name: dict(pin) for name, _, _, pin in kept}
    for exposed, backend, tool, definition in sorted(entries, key=lambda e: e[0]):
        tools[exposed] = {"backend": backend, "tool": tool, "digest": digest(definition)}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "tools": tools}, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return tools


class Pins:
    """The lock file's view: which exposed tools are quarantined, and why."""

    def __init__(self, mode: str, path: str | None) -> None:
        self.mode = mode
        self.path = path
        self.pinned: dict[str, dict[str, Any]] = {}
        self.quarantined: dict[str, str] = {}
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

    def review(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
        """Recompute the quarantine; return the (tool, reason) newly found."""
        if self.mode == "off":
            return []
        found: dict[str, str] = {}
        for exposed, definition in entries:
            pin = self.pinned.get(exposed)
            if pin is None:
                found[exposed] = "new tool, not in the lock file"
            elif pin.get("digest") != digest(definition):
                found[exposed] = f"definition changed since it was pinned (was {pin.get('digest')}, now {digest(definition)})"
        fresh = [(k, v) for k, v in found.items() if self.quarantined.get(k) != v]
        self.quarantined = found
        return fresh

    def blocks(self, exposed: str) -> str | None:
        """The reason C{exposed} is quarantined (enforce mode), or None."""
        if self.mode != "enforce":
            return None
        return self.quarantined.get(exposed)
