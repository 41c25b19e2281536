"""
How the merged catalog names a backend's tool for clients:
C{<backend><separator><tool>}, valid for the spec and for Claude
(C{^[A-Za-z0-9_-]{1,64}$}), stable and unique when cut to length.
"""

from __future__ import annotations

import hashlib
import re

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


__all__ = ["MAX_NAME", "exposed_name", "untruncated_name"]
