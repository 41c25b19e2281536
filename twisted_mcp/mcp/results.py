"""
Results as each era's client must see them.

A stateless-era (2026-07-28) client: every result says it is complete
(C{resultType}); list results, C{resources/read} and C{server/discover} say
how long they may be cached and by whom (C{ttlMs}, C{cacheScope}); every
result names the server in its C{_meta} (L{to_modern}).  A handshake-era
client: none of that, even when a stateless-era backend sent it
(L{to_legacy}).  A stateless-era backend's result is checked first
(L{from_modern_backend}): one that asks for the client's input
(C{input_required}, only on the L{MRTR_METHODS}) must be well formed, and
is bridged by the dispatch layer (rounds toward a handshake-era client, a
sealed pass-through toward a stateless-era one).
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.mcp.errors import GatewayError
from twisted_mcp.mcp.meta import SERVER_INFO
from twisted_mcp.mcp.versions import SERVER_INFO as GATEWAY_INFO
from twisted_mcp.wire.jsonrpc import INTERNAL_ERROR

#: What a stateless-era result carries that a handshake-era client is never sent.
MODERN_ONLY = ("resultType", "ttlMs", "cacheScope")

#: The requests a server may answer with an InputRequiredResult (2026-07-28, basic/patterns/mrtr).
MRTR_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
#: The server-to-client requests an InputRequiredResult may carry.
INPUT_METHODS = frozenset({"sampling/createMessage", "elicitation/create", "roots/list"})

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


def from_modern_backend(result: Any, backend: str, method: str) -> Any:
    """
    A stateless-era backend's C{result} of C{method}, checked: an unknown
    C{resultType}, or a request for the client's input (C{input_required})
    that is malformed or answers a method that may not ask, is -32603 (a
    L{GatewayError} naming C{backend}).
    """
    if type(result) is not dict:
        return result
    kind = result.get("resultType", "complete")
    if kind == "complete":
        return result
    if kind == "input_required":
        why = _input_required_problem(result, method)
        if why is None:
            return result
        why = f"backend {backend!r} answered {method} with a malformed InputRequiredResult: {why}"
    else:
        why = f"backend {backend!r} sent an unknown resultType {str(kind)[:40]!r}"
    raise GatewayError(INTERNAL_ERROR, why, {"backend": backend})


def is_input_required(result: Any) -> bool:
    """Whether C{result} (checked by L{from_modern_backend}) asks for the client's input."""
    return type(result) is dict and result.get("resultType") == "input_required"


def _input_required_problem(result: dict[str, Any], method: str) -> str | None:
    """What is wrong with an InputRequiredResult answering C{method}, or None."""
    if method not in MRTR_METHODS:
        return "only tools/call, prompts/get and resources/read may ask for input"
    requests = result.get("inputRequests")
    state = result.get("requestState")
    if (requests is None or requests == {}) and state is None:
        return "it has neither inputRequests nor requestState"  # (the spec: at least one of them)
    if state is not None and type(state) is not str:
        return "requestState must be a string"
    if requests is None:
        return None
    if type(requests) is not dict:
        return "inputRequests must be an object"
    for key, request in requests.items():
        if type(request) is not dict or request.get("method") not in INPUT_METHODS:
            return f"inputRequests.{str(key)[:40]} must be a sampling, elicitation or roots request"
        params = request.get("params", {})
        if type(params) is not dict:
            return f"inputRequests.{str(key)[:40]}.params must be an object"
    return None


__all__ = ["CACHEABLE", "INPUT_METHODS", "MODERN_ONLY", "MRTR_METHODS", "from_modern_backend", "is_input_required", "to_legacy", "to_modern"]
