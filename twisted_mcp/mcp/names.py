"""
How the merged catalog names a backend's tool or prompt for clients:
C{<prefix><tool>}, where the prefix is the backend's C{prefix} setting or,
by default, C{<backend><separator>}; valid for the spec and for Claude
(C{^[A-Za-z0-9_-]{1,64}$}), stable and unique when cut to length.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Iterable

MAX_NAME = 64
_INVALID = re.compile(r"[^A-Za-z0-9_-]")
#: SEP-986 (MCP 2025-11-25 and later, "Tool Names"): 1 to 128 characters of
#: A-Z a-z 0-9 _ - . only.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: The hex digits an alias carries, tried in order when aliases collide.
ALIAS_DIGITS = (8, 12, 16)
#: The shortest name-length limit aliases can honour (a name and its hash).
MIN_ALIAS_LIMIT = 24


def name_prefix(backend: str, prefix: str | None, separator: str) -> str:
    """
    What comes before a tool's own name in the names clients see: the
    backend's configured C{prefix} (which may be empty), or
    C{<backend><separator>} when none is configured.
    """
    return f"{backend}{separator}" if prefix is None else prefix


def prefixed_name(prefix: str, tool: str) -> str:
    """
    The name a client sees for C{tool} under C{prefix}.

    Characters outside C{[A-Za-z0-9_-]} become C{_}; a name longer than 64
    characters is cut to 55 and given C{_} and 8 hex digits of the SHA-256
    of the full, unmodified name, so that it stays unique and stable.
    """
    full = f"{prefix}{tool}"
    name = _INVALID.sub("_", full)
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(full.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}_{digest}"
    return name


def exposed_name(backend: str, tool: str, separator: str) -> str:
    """The name a client sees for C{tool} of C{backend} under the default
    prefix, C{<backend><separator>} (see L{prefixed_name})."""
    return prefixed_name(name_prefix(backend, None, separator), tool)


def untruncated_name(backend: str, tool: str, separator: str) -> str:
    """The exposed name under the default prefix before the 64-character limit cuts it."""
    return _INVALID.sub("_", f"{backend}{separator}{tool}")


def valid_tool_name(name: object) -> bool:
    """Whether C{name} is a valid tool name under SEP-986: 1 to 128
    characters of C{A-Z a-z 0-9 _ - .} only."""
    return type(name) is str and _TOOL_NAME.fullmatch(name) is not None


def _sha256_hex(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


def _alias(name: str, limit: int, digits: int, digest: Callable[[str], str]) -> str:
    return f"{name[: limit - digits - 1]}_{digest(name)[:digits]}"


def shortened(
    names: Iterable[str], limit: int, digest: Callable[[str], str] = _sha256_hex
) -> tuple[dict[str, str], dict[str, str]]:
    """
    Aliases for the C{names} longer than C{limit} characters: each is cut
    and given C{_} and 8 hex digits of the SHA-256 of the full name (the
    construction of L{prefixed_name}); a name of at most C{limit}
    characters is kept as it is.  Aliases that collide (with a kept name or
    with each other) are made again with 12, then 16 digits, every member of
    the colliding group at once, in sorted order; a name whose alias still
    collides gets none (the caller hides it rather than serve it
    ambiguously).  The result is a pure function of the set of names and
    C{limit}: an alias depends only on its own name unless it collides.

    @param limit: at least L{MIN_ALIAS_LIMIT}.
    @param digest: the hex digest of a name (tests force collisions with it).
    @return: C{(alias_of, shaped_of)}: shaped name -> alias for the names
        that changed, and alias -> shaped name.
    """
    if limit < MIN_ALIAS_LIMIT:
        raise ValueError(f"a name-length limit must be at least {MIN_ALIAS_LIMIT}, got {limit}")
    unique = sorted(set(names))
    kept = {n for n in unique if len(n) <= limit}
    pending = [n for n in unique if len(n) > limit]
    alias_of: dict[str, str] = {}
    for digits in ALIAS_DIGITS:
        if not pending:
            break
        taken = kept | set(alias_of.values())
        made: dict[str, list[str]] = {}
        for name in pending:
            made.setdefault(_alias(name, limit, digits, digest), []).append(name)
        pending = []
        for alias, group in made.items():
            if len(group) == 1 and alias not in taken:
                alias_of[group[0]] = alias
            else:
                pending.extend(group)
        pending.sort()
    return alias_of, {alias: name for name, alias in alias_of.items()}


__all__ = [
    "ALIAS_DIGITS",
    "MAX_NAME",
    "MIN_ALIAS_LIMIT",
    "exposed_name",
    "name_prefix",
    "prefixed_name",
    "shortened",
    "untruncated_name",
    "valid_tool_name",
]
