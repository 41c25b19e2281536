"""
The request headers of MCP 2026-07-28 over Streamable HTTP: C{MCP-Protocol-Version},
C{Mcp-Method} and C{Mcp-Name} repeat what the body says, so that
intermediaries can route and govern without reading it.  A server that reads
the body must check that they agree (else HTTP 400 with -32020,
HeaderMismatch).  A value that is not plain visible ASCII travels as
C{=?base64?<base64 of its UTF-8>?=} and is decoded before comparing: the
front decodes (L{header_value}), the backends encode (L{encode_value}).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from twisted_mcp.mcp.errors import HEADER_MISMATCH
from twisted_mcp.wire.jsonrpc import JsonRpcError

#: The methods that name what they act on, and the params key that names it.
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_PREFIX, _SUFFIX = "=?base64?", "?="
#: What a value may hold to travel as it is: printable ASCII (space included).
_PLAIN = frozenset(range(0x20, 0x7F))


def encode_value(text: str) -> bytes:
    """
    C{text} as a header value: as it is when it is printable ASCII without
    surrounding spaces and does not look like the sentinel, else
    C{=?base64?<base64 of its UTF-8>?=} (L{header_value} reverses it).
    """
    raw = text.encode("utf-8", "surrogatepass")
    if (
        _PLAIN.issuperset(raw)
        and text == text.strip(" ")
        and not (text.startswith(_PREFIX) and text.endswith(_SUFFIX))
    ):
        return raw
    return (_PREFIX + base64.b64encode(raw).decode("ascii") + _SUFFIX).encode("ascii")


def header_value(raw: bytes) -> str | None:
    """A header's value as the client meant it: surrounding spaces dropped, C{=?base64?...?=} decoded; None if undecodable."""
    try:
        text = raw.decode("ascii").strip(" \t")
    except UnicodeDecodeError:
        return None
    if text.startswith(_PREFIX) and text.endswith(_SUFFIX) and len(text) >= len(_PREFIX) + len(_SUFFIX):
        try:
            return base64.b64decode(text[len(_PREFIX) : -len(_SUFFIX)], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return text


def check_headers(get: Any, version: str, method: str, params: dict[str, Any]) -> None:
    """
    Raise -32020 unless the headers (C{get(name)}: raw bytes or None) agree
    with the body: its protocol version, its method, and the name or URI of
    a C{tools/call}, C{prompts/get} or C{resources/read}.
    """
    _agree(get, b"mcp-protocol-version", "MCP-Protocol-Version", version)
    _agree(get, b"mcp-method", "Mcp-Method", method)
    key = NAMED.get(method)
    if key is not None and type(params.get(key)) is str:
        _agree(get, b"mcp-name", "Mcp-Name", params[key])


def _agree(get: Any, header: bytes, name: str, body: str) -> None:
    raw = get(header)
    if raw is None:
        raise JsonRpcError(HEADER_MISMATCH, f"Header mismatch: the {name} header is missing (the body says {body[:100]!r})")
    value = header_value(raw)
    if value != body:
        shown = "an undecodable value" if value is None else repr(value[:100])
        raise JsonRpcError(HEADER_MISMATCH, f"Header mismatch: {name} header value {shown} does not match the body's {body[:100]!r}")


__all__ = ["HEADER_MISMATCH", "NAMED", "check_headers", "encode_value", "header_value"]
