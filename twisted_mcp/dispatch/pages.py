"""
The gateway's own cursors for paginated lists (prompts, resources,
resource templates, and tools when C{surface.pageSize} is set): an offset
into the merged, filtered listing, signed so that a cursor the gateway did
not make, or made for another list, is refused with a clear error rather
than read as something else.

A tools cursor is also bound to what the list was made of (view, catalog
generation, budget): a cursor from another profile or from before a
catalog change is refused.  With C{surface.cursorKeys} the first key signs
and every key verifies (so replicas sharing the keys read each other's
cursors); without, a key made per process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any, Sequence

from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

#: Items per page.
PAGE_SIZE = 100
_KEY = os.urandom(16)


def _sign(kind: str, offset: int, key: bytes = _KEY) -> str:
    mac = hmac.new(key, f"{kind}:{offset}".encode(), hashlib.sha256).digest()[:9]
    return base64.urlsafe_b64encode(offset.to_bytes(4, "big") + mac).decode("ascii")


def _offset(kind: str, cursor: Any, keys: Sequence[bytes] = (_KEY,), shown: str | None = None) -> int:
    if cursor is None:
        return 0
    try:
        if type(cursor) is not str or len(cursor) > 64:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
        offset = int.from_bytes(raw[:4], "big")
        if len(raw) != 13 or not any(hmac.compare_digest(_sign(kind, offset, key), cursor) for key in keys):
            raise ValueError
    except ValueError:
        raise JsonRpcError(
            INVALID_PARAMS,
            f"Invalid params: unknown cursor for {shown or kind} (use the nextCursor of the gateway's last answer, "
            "or list again from the start)",
        )
    return offset


def page(kind: str, items: list[dict[str, Any]], cursor: Any, size: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of C{items} as the result of listing C{kind}, with
    C{nextCursor} when more follow."""
    start = _offset(kind, cursor)
    end = start + size
    result: dict[str, Any] = {kind: items[start:end]}
    if end < len(items):
        result["nextCursor"] = _sign(kind, end)
    return result


def bound_page(
    kind: str,
    binding: str,
    items: list[dict[str, Any]],
    cursor: Any,
    size: int,
    keys: Sequence[str] = (),
) -> dict[str, Any]:
    """
    One page of C{items}, with cursors bound to C{binding} (what the list
    was made of: view, catalog generation, budget) and signed with the
    first of C{keys} (verified with any; none: the process's own key).
    """
    secrets = [key.encode("utf-8") for key in keys] or [_KEY]
    bound = f"{kind}|{binding}"
    start = _offset(bound, cursor, secrets, kind)
    end = start + size
    result: dict[str, Any] = {kind: items[start:end]}
    if end < len(items):
        result["nextCursor"] = _sign(bound, end, secrets[0])
    return result


__all__ = ["PAGE_SIZE", "bound_page", "page"]
