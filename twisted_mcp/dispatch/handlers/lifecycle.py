"""C{initialize} and C{ping}."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_mcp.mcp.versions import SERVER_INFO, negotiate
from twisted_mcp.wire.jsonrpc import INVALID_REQUEST, JsonRpcError

if TYPE_CHECKING:
    from twisted_mcp.dispatch.session import ClientSession, InFlight

log = Logger()

#: Characters of a client's name and of its version a session keeps.
_CLIENT_INFO_CHARS = 256


def _client_info(info: dict[str, Any]) -> dict[str, str]:
    """The name and version a client gave, as short strings: a session keeps
    them as long as it lasts (for /status), and an initialize may be as
    large as gateway.maxHandshakeBytes; the rest is not used."""
    return {key: value[:_CLIENT_INFO_CHARS] for key in ("name", "version") if type(value := info.get(key)) is str}


def initialize(session: ClientSession, request: InFlight, params: dict[str, Any]) -> Any:
    """
    Negotiate the version and take the client's capabilities at once; the
    answer (the capabilities the backends offer) waits for their first
    discovery.
    """
    caller = session.caller
    if caller.version is not None:
        raise JsonRpcError(INVALID_REQUEST, "Invalid Request: initialize was already received")
    caller.version = negotiate(params.get("protocolVersion"))
    caller.era = "legacy"
    info = params.get("clientInfo")
    given = info if type(info) is dict else {}
    caller.info = _client_info(given)
    capabilities = params.get("capabilities")
    caller.capabilities = capabilities if type(capabilities) is dict else {}
    session.initialized = True
    # It counts as info on the shared backends until it sets its own level.
    session.gateway.logs.apply()
    # The log cuts each field itself, longer than the session keeps it.
    log.info(
        "client {client}: {name} {version} connected (protocol {protocol})",
        client=session.label,
        name=given.get("name", "?"),
        version=given.get("version", "?"),
        protocol=caller.version,
    )
    gateway = session.gateway
    if gateway.ready:
        return _result(session)
    d: Deferred[Any] = gateway.when_ready()
    return d.addCallback(lambda _: _result(session))


def _result(session: ClientSession) -> dict[str, Any]:
    gateway = session.gateway
    result: dict[str, Any] = {
        "protocolVersion": session.caller.version,
        "capabilities": gateway.capabilities(session),
        "serverInfo": SERVER_INFO,
    }
    instructions = gateway.instructions(session)
    if instructions:
        result["instructions"] = instructions
    return result


def ping(session: ClientSession, request: InFlight, params: dict[str, Any]) -> dict[str, Any]:
    return {}
