"""Whole HTTP responses the Streamable HTTP front answers with at once: a JSON-RPC error with a status, or plain text."""

from __future__ import annotations

from typing import Any

from twisted.web.http import Request

from twisted_mcp.wire.jsonrpc import encode_or_explain


def error_response(request: Request, status: int, code: int, message: str, data: Any = None, rid: Any = None) -> bytes:
    """A JSON-RPC error as the whole response, with an HTTP status."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body, _ = encode_or_explain({"jsonrpc": "2.0", "id": rid, "error": error})
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return body or b""


def plain_response(request: Request, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode("utf-8")


__all__ = ["error_response", "plain_response"]
