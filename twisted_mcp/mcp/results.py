"""
Results as a stateless-era (2026-07-28) client must see them: every result
says it is complete (C{resultType}); list results, C{resources/read} and
C{server/discover} say how long they may be cached and by whom (C{ttlMs},
C{cacheScope}); every result names the server in its C{_meta}.
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.mcp.meta import SERVER_INFO
from twisted_mcp.mcp.versions import SERVER_INFO as GATEWAY_INFO

#: The methods whose results carry caching hints (2026-07-28, server/utilities/caching).
CACHEABLE = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read", "server/discover"})


def to_modern(method: str, result: Any, scope: str) -> Any:
    """
    C{result} (of C{method}) for a stateless-era client: a shallow copy with
    C{resultType}, the caching hints on a complete result (C{ttlMs} 0,
    C{cacheScope} C{scope}, kept when the result has them) and the gateway
    as the server in C{_meta}.
    """
    if type(result) is not dict:
        return result
    out = dict(result)
    out.setdefault("resultType", "complete")
    if method in CACHEABLE and out["resultType"] == "complete":  # never on input_required
        out.setdefault("ttlMs", 0)
        out.setdefault("cacheScope", scope)
    meta = out.get("_meta")
    out["_meta"] = {**meta, SERVER_INFO: GATEWAY_INFO} if type(meta) is dict else {SERVER_INFO: GATEWAY_INFO}
    return out


__all__ = ["CACHEABLE", "to_modern"]
