"""
The gateway's own cursors for paginated lists (prompts, resources,
resource templates): an offset into the merged, filtered listing, signed so
that a cursor the gateway did not make, or made for another list, is
refused with a clear error rather than read as something else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

#: Items per page.
PAGE_SIZE = 100
_KEY = os.urandom(16)


def _sign(kind: str, offset: int) -> str:
    mac = hmac.new(_KEY, f"{kind}:{offset}".encode(), hashlib.sha256).digest()[:9]
    return base64.urlsafe_b64encode(offset.to_bytes(4, "big") + mac).decode("ascii")


def _offset(kind: str, cursor: Any) -> int:
    if cursor is None:
        return 0
    try:
        if type(cursor) is not str or len(cursor) > 64:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
        offset = int.from_bytes(raw[:4], "big")
        if len(raw) != 13 or not hmac.compare_digest(_sign(kind, offset), cursor):
            raise ValueError
    except ValueError:
        raise JsonRpcError(
            INVALID_PARAMS,
            f"Invalid params: unknown cursor for {kind} (use the nextCursor of the gateway's last answer, "
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


__all__ = ["PAGE_SIZE", "page"]
