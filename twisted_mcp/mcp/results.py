"""
Results as each era's client must see them.

A stateless-era (2026-07-28) client: every result says it is complete
(C{resultType}); list results, C{resources/read} and C{server/discover} say
how long they may be cached and by whom (C{ttlMs}, C{cacheScope}); every
result names the server in its C{_meta} (L{to_modern}).  A handshake-era
client: none of that, even when a stateless-era backend sent it
(L{to_legacy}).  A stateless-era backend's result is checked first
(L{from_modern_backend}): one that asks for the client's input
(C{input_required}) is not bridged yet.
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.mcp.errors import GatewayError
from twisted_mcp.mcp.meta import SERVER_INFO
from twisted_mcp.mcp.versions import SERVER_INFO as GATEWAY_INFO
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR

#: What a stateless-era result carries that a handshake-era client is never sent.
MODERN_ONLY = ("resultType", "ttlMs", "cacheScope")

#: The methods whose results carry caching hints (2026-07-28, server/utilities/caching).
CACHEABLE = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read", "server/discover"})


def to_modern(method: str, result: Any, private: bool = False) -> Any:
    """
    C{result} (of C{method}) for a stateless-era client: a shallow copy with
    C{resultType}, the caching hints on a complete result and the gateway
    as the server in C{_meta}.  The hints a stateless-era backend gave are
    kept; otherwise C{ttlMs} is 0 and C{cacheScope} C{public} (C{private}
    for C{resources/read}: a handshake-era backend says nothing of who may
    see it).  With C{private} (the policy filters what each principal sees)
    C{cacheScope} is C{private} whatever the backend said.
    """
    if type(result) is not dict:
        return result
    out = dict(result)
    out.setdefault("resultType", "complete")
    if method in CACHEABLE and out["resultType"] == "complete":  # never on input_required
        out.setdefault("ttlMs", 0)
        if private:
            out["cacheScope"] = "private"
        else:
            out.setdefault("cacheScope", "private" if method == "resources/read" else "public")
    meta = out.get("_meta")
    out["_meta"] = {**meta, SERVER_INFO: GATEWAY_INFO} if type(meta) is dict else {SERVER_INFO: GATEWAY_INFO}
    return out


def to_legacy(result: Any) -> Any:
    """C{result} for a handshake-era client: without C{resultType}, C{ttlMs}, C{cacheScope} nor the server's info in C{_meta}."""
    if type(result) is not dict:
        return result
    out = {key: value for key, value in result.items() if key not in MODERN_ONLY}
    meta = out.get("_meta")
    if type(meta) is dict and SERVER_INFO in meta:
        kept = {key: value for key, value in meta.items() if key != SERVER_INFO}
        if kept:
            out["_meta"] = kept
        else:
            del out["_meta"]
    return out


def from_modern_backend(result: Any, backend: str) -> Any:
    """
    A stateless-era backend's C{result}, checked: a request for the
    client's input (C{resultType: input_required}) or an unknown
    C{resultType} is -32603 (a L{GatewayError} naming C{backend}).
    """
    if type(result) is not dict:
        return result
    kind = result.get("resultType", "complete")
    if kind == "complete":
        return result
    if kind == "input_required":
        why = (
            f"backend {backend!r} asked for input in the 2026-07-28 way (input_required); "
            "bridging it to clients comes later"
        )
    else:
        why = f"backend {backend!r} sent an unknown resultType {str(kind)[:40]!r}"
    raise GatewayError(INTERNAL_ERROR, why, {"backend": backend})


__all__ = ["CACHEABLE", "MODERN_ONLY", "from_modern_backend", "to_legacy", "to_modern"]
