"""
The flags every replica shares (L{twisted_mcp.state.base.FlagStore}), as
the policy reads them: the run-time kill switch (C{kill:*}), pin approvals
(C{approval}), quarantine (C{quarantine}) and revoked tokens (C{revoked}).

L{read_flags} turns a snapshot into what changes the policy, each kind
present replacing (or, for approvals and revocations, adding to) what the
policy holds; a kind absent from the snapshot changes nothing; an unknown
kind, and an approval that is not a lock-file entry, are ignored (the
latter logged once).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

import attrs
from twisted.logger import Logger

from twisted_mcp.policy.pinning import digest, pinned_definitions, read_lock, write_lock

log = Logger()

#: The kill switch's kinds, as flag kinds name them (C{kill:<kind>}).
KILL_KINDS = ("principal", "backend", "tool", "prompt", "resource")


@attrs.frozen
class Flags:
    """
    What a snapshot says, kind by kind (None: the kind was not in it).

    @ivar kills: kind (C{"tool"}...) -> the names disabled at run time.
    @ivar approvals: exposed tool name -> its lock-file entry.
    @ivar quarantine: exposed tool name -> why.
    @ivar revoked: token ids.
    """

    kills: dict[str, set[str]]
    approvals: dict[str, dict[str, Any]] | None
    quarantine: dict[str, str] | None
    revoked: set[str] | None


def read_flags(snapshot: Mapping[str, Any], reported: set[tuple[str, str]]) -> Flags:
    """
    What C{snapshot} (kind -> name -> value) says.  A malformed approval
    is logged (once per name and value: C{reported} remembers them) and
    left out.
    """
    kills: dict[str, set[str]] = {}
    approvals = quarantine = revoked = None
    for kind, entries in snapshot.items():
        if not isinstance(entries, Mapping):
            log.warn("shared flags: kind {kind} is not a mapping of names; ignored", kind=kind)
            continue
        if kind.startswith("kill:") and kind[5:] in KILL_KINDS:
            kills[kind[5:]] = {str(n) for n in entries}
        elif kind == "approval":
            approvals = {}
            for name, value in entries.items():
                pin = _approval(str(name), value, reported)
                if pin is not None:
                    approvals[str(name)] = pin
        elif kind == "quarantine":
            quarantine = {str(n): str(v) for n, v in entries.items()}
        elif kind == "revoked":
            revoked = {str(n) for n in entries}
    return Flags(kills, approvals, quarantine, revoked)


def _approval(name: str, value: Any, reported: set[tuple[str, str]]) -> dict[str, Any] | None:
    """The lock-file entry an approval flag holds, or None (logged once) when it is not one."""
    why = None
    pin: Any = None
    try:
        pin = json.loads(value) if isinstance(value, (str, bytes)) else value
    except (ValueError, RecursionError) as e:
        why = f"not JSON ({e})"
    if why is None and not isinstance(pin, dict):
        why = "not a JSON object"
    elif why is None and not (isinstance(pin.get("digest"), str) and pin["digest"].startswith("sha256:")):
        why = 'no "digest" ("sha256:...")'
    if why is None:
        return pin  # type: ignore[no-any-return]
    key = (name, str(value)[:200])
    if key not in reported:
        if len(reported) > 10000:
            reported.clear()
        reported.add(key)
        log.warn(
            "shared flags: the approval of tool {tool} is malformed ({why}); ignored (approve the tool again)", tool=name, why=why
        )
    return None


def changed_approvals(pinned: Mapping[str, dict[str, Any]], approvals: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The approvals that pin something other than C{pinned} does."""
    return {name: pin for name, pin in approvals.items() if pinned.get(name) != pin}


def useful_approvals(
    pinned: Mapping[str, dict[str, Any]], approvals: Mapping[str, dict[str, Any]], tools: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """
    The approvals worth taking: those that pin the definition a tool of
    C{tools} (this replica's catalog: exposed name -> entry) has now, when
    the lock entry in C{pinned} does not already pin it.  An approval of an
    older (or other) definition is left alone: written back, it would undo a
    newer pin (C{twisted-mcp pin}, a shipped lock file) and quarantine the
    tool again.
    """
    useful: dict[str, dict[str, Any]] = {}
    for name, pin in changed_approvals(pinned, approvals).items():
        entry = tools.get(name)
        if entry is None:
            continue
        now = digest(pinned_definitions(entry)[0])
        if pin.get("digest") == now and pinned.get(name, {}).get("digest") != now:
            useful[name] = pin
    return useful


def write_approvals(path: str, approvals: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """
    Merge C{approvals} into the lock file at C{path} (atomically); the pins
    it now holds, or None (logged) when it cannot be read or written.
    """
    try:
        try:
            on_disk = read_lock(path)
        except FileNotFoundError:
            on_disk = {}
        merged = {**on_disk, **approvals}
        kept: Iterable[tuple[str, str, str, dict[str, Any]]] = [
            (n, str(p.get("backend", "")), str(p.get("tool", "")), p) for n, p in merged.items()
        ]
        return write_lock(path, [], kept)
    except (OSError, ValueError) as e:
        log.error(
            "shared flags: approvals from another replica cannot be written to the lock file {path} ({why}); "
            "they apply in memory only until a restart",
            path=path,
            why=e,
        )
        return None


__all__ = ["KILL_KINDS", "Flags", "changed_approvals", "read_flags", "useful_approvals", "write_approvals"]
