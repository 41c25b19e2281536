"""
The per-request envelope of MCP 2026-07-28: what a stateless-era request
says of itself in C{params._meta} (its protocol version, the client's
capabilities, who the client is, the log level it wants), read and checked
once, and the reserved keys taken out of what reaches a handshake-era
backend.

A request I{claims} the stateless era when C{params._meta} has the key
C{io.modelcontextprotocol/protocolVersion}, whatever its value: a bare
C{_meta} is nothing new (handshake-era requests carry C{progressToken} there).
"""

from __future__ import annotations

from typing import Any

import attrs

from twisted_mcp.mcp.errors import UNSUPPORTED_PROTOCOL_VERSION
from twisted_mcp.mcp.versions import MODERN_VERSIONS, SUPPORTED_VERSIONS
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

PREFIX = "io.modelcontextprotocol/"
PROTOCOL_VERSION = PREFIX + "protocolVersion"
CLIENT_CAPABILITIES = PREFIX + "clientCapabilities"
CLIENT_INFO = PREFIX + "clientInfo"
LOG_LEVEL = PREFIX + "logLevel"
SERVER_INFO = PREFIX + "serverInfo"
#: The reserved keys a client's request carries: a C{_meta} of these only keeps nothing (L{without_reserved}).
_ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION, CLIENT_CAPABILITIES, CLIENT_INFO, LOG_LEVEL})

#: The levels a request may ask for (RFC 5424's, as MCP names them).
_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
#: Characters of a client's name and version kept.
_INFO_CHARS = 256


@attrs.define
class Envelope:
    """
    What one stateless-era request said of itself; read, never changed.

    Not C{attrs.frozen}: one is built for every stateless-era request, and
    a frozen attrs class takes about twice as long to build (0.6 µs, not
    0.2 µs, measured).
    """

    version: str
    capabilities: dict[str, Any]
    client_info: dict[str, str]
    #: None: the request did not ask for log messages (and gets none).
    log_level: str | None


def claims_modern(params: Any) -> bool:
    """Whether C{params} (a request's) make it a stateless-era request."""
    if type(params) is not dict:
        return False
    meta = params.get("_meta")
    return type(meta) is dict and PROTOCOL_VERSION in meta


def read_envelope(params: dict[str, Any]) -> Envelope:
    """
    The envelope of a request that claims the stateless era, checked:
    malformed, it is -32602 (the key named); a version the gateway does not
    speak, -32022 with the versions it does.
    """
    envelope = check_envelope(params)
    check_version(envelope)
    return envelope


def check_envelope(params: dict[str, Any]) -> Envelope:
    """The envelope of a request that claims the stateless era, its form checked (-32602); not its version."""
    meta = params["_meta"]
    version = meta[PROTOCOL_VERSION]
    if type(version) is not str or not version:
        raise _invalid(f"_meta[{PROTOCOL_VERSION!r}] must be a protocol version string")
    capabilities = meta.get(CLIENT_CAPABILITIES)
    if type(capabilities) is not dict:
        what = "is missing" if capabilities is None else "must be an object"
        raise _invalid(f"_meta[{CLIENT_CAPABILITIES!r}] {what} (an empty object declares none)")
    info = meta.get(CLIENT_INFO)
    if info is not None and (type(info) is not dict or type(info.get("name")) is not str or type(info.get("version")) is not str):
        raise _invalid(f"_meta[{CLIENT_INFO!r}] must be an object with a name and a version (strings)")
    level = meta.get(LOG_LEVEL)
    if level is not None and level not in _LEVELS:
        raise _invalid(f"_meta[{LOG_LEVEL!r}] must be one of {', '.join(_LEVELS)}")
    kept = {"name": info["name"][:_INFO_CHARS], "version": info["version"][:_INFO_CHARS]} if info is not None else {}
    return Envelope(version, capabilities, kept, level)


def check_version(envelope: Envelope) -> None:
    """-32022, naming the versions the gateway speaks, unless it speaks the envelope's."""
    if envelope.version not in MODERN_VERSIONS:
        raise unsupported_version(envelope.version)


def unsupported_version(requested: str, supported: tuple[str, ...] = SUPPORTED_VERSIONS) -> JsonRpcError:
    return JsonRpcError(
        UNSUPPORTED_PROTOCOL_VERSION,
        f"Unsupported protocol version {requested[:40]!r}; this gateway speaks {', '.join(supported)}",
        {"supported": list(supported), "requested": requested[:100]},
    )


def without_reserved(meta: dict[str, Any]) -> dict[str, Any] | None:
    """C{meta} without the keys MCP reserves for the envelope (None when nothing is left), for a handshake-era backend."""
    if meta.keys() <= _ENVELOPE_KEYS:
        return None  # the envelope alone (most requests): no copy to make
    kept = {key: value for key, value in meta.items() if not key.startswith(PREFIX)}
    return kept or None


def _invalid(why: str) -> JsonRpcError:
    return JsonRpcError(INVALID_PARAMS, f"Invalid params: {why}", {"reason": "malformed request envelope"})


__all__ = [
    "CLIENT_CAPABILITIES",
    "CLIENT_INFO",
    "LOG_LEVEL",
    "PROTOCOL_VERSION",
    "SERVER_INFO",
    "Envelope",
    "check_envelope",
    "check_version",
    "claims_modern",
    "read_envelope",
    "unsupported_version",
    "without_reserved",
]
