"""
Which MCP era a backend speaks: the probe, and the verdict it reaches.

A server of the stateless era (2026-07-28) answers C{server/discover}; a
server of the handshake era wants C{initialize} first.  With C{protocol:
auto} (the default) the gateway sends C{server/discover} with a short
timeout and, on any error or silence, C{initialize} on the same connection
(the spec says the fallback must not hang on one error code).  A server
that refused that C{initialize} with -32022 speaks only the new era (an SDK
2.3 server that saw the probe late is pinned to it): one more
C{server/discover} settles it.  C{protocol: legacy} and C{protocol: modern}
skip the probe; a server that crashes on an unknown first request must be
pinned C{legacy}.

L{settle} only decides: it is handed the two requests as callables, so the
verdict for each kind of answer is tested without a process.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import attrs

from twisted_mcp.mcp import errors
from twisted_mcp.mcp.errors import UNSUPPORTED_PROTOCOL_VERSION
from twisted_mcp.mcp.versions import MODERN_VERSIONS
from twisted_mcp.wire.jsonrpc import JsonRpcError, PeerGone, RequestTimeout

#: The longest wait for an answer to the probe (seconds); at most half of
#: the discovery timeout, so that the fallback has time too.
PROBE_TIMEOUT = 5.0

#: C{server/discover} at a version, within a timeout: the result, or
#: L{JsonRpcError}, L{RequestTimeout}, L{PeerGone}.
Discover = Callable[[str, float], Awaitable[Any]]
#: C{initialize} within a timeout: the result, or the same failures.
Initialize = Callable[[float], Awaitable[Any]]


@attrs.frozen
class Verdict:
    """
    What a backend speaks and how that was decided.

    @ivar era: C{"modern"} (2026-07-28) or C{"legacy"} (the handshake era).
    @ivar how: for the log and /status: C{"pinned"} (its config said),
        C{"discover"} (it answered the probe), or C{"fallback: <why>"}.
    @ivar version: the modern version adopted (None for legacy).
    @ivar result: the C{DiscoverResult} (modern) or the C{initialize}
        result (legacy) to adopt.
    """

    era: str
    how: str
    version: str | None
    result: Any


class ProbeFailed(Exception):
    """No verdict: the reason says what the server answered."""


class ExitedDuringProbe(ProbeFailed):
    """The server went away while it was being probed (it may crash on unknown first requests)."""


def probe_timeout(discovery_timeout: float) -> float:
    """How long the probe waits: min(5 s, half the discovery timeout)."""
    return min(PROBE_TIMEOUT, discovery_timeout / 2)


def spoken(result: Any) -> str | None:
    """The newest modern version a C{DiscoverResult} lists that the gateway speaks (None: none, or no such result)."""
    if type(result) is not dict or type(result.get("supportedVersions")) is not list:
        return None
    offered = result["supportedVersions"]
    for version in MODERN_VERSIONS[::-1]:
        if version in offered:
            return version
    return None


def _retry_version(e: JsonRpcError) -> str | None:
    """The modern version an answer -32022 says the server speaks and the gateway does too."""
    if e.code != UNSUPPORTED_PROTOCOL_VERSION or type(e.data) is not dict:
        return None
    supported = e.data.get("supported")
    if type(supported) is not list:
        return None
    return next((v for v in MODERN_VERSIONS[::-1] if v in supported), None)


async def settle(
    protocol: str,
    discover: Discover,
    initialize: Initialize,
    timeout: float,
    initialize_first: bool = False,
) -> Verdict:
    """
    The verdict for one connection to a server.

    @param protocol: the server's C{protocol} setting: C{auto}, C{legacy}
        or C{modern}.
    @param timeout: the discovery timeout; the probe has
        L{probe_timeout} of it, C{initialize} the whole.
    @param initialize_first: (C{auto}) the last process exited during the
        probe: send C{initialize} first this time (a -32022 answer still
        makes it modern).
    @raise ProbeFailed: no verdict (C{modern} refused, C{initialize}
        refused or unanswered); L{ExitedDuringProbe} when the server went
        away during the probe.
    """
    if protocol == "legacy":
        return Verdict("legacy", "pinned", None, await _initialize(initialize, timeout))
    if protocol == "modern":
        return await _modern(discover, timeout, "pinned", fallback=False)
    if initialize_first:
        why = "initialize first: the last process exited during the server/discover probe (pin protocol: legacy to skip the probe)"
        return await _legacy(discover, initialize, timeout, why)
    try:
        return await _modern(discover, probe_timeout(timeout), "discover", fallback=True)
    except _Fallback as e:
        return await _legacy(discover, initialize, timeout, str(e))
    except PeerGone as e:
        raise ExitedDuringProbe(f"the server went away during the server/discover probe ({e})")


#: The gateway's own errors of authorizing toward a server (not the server's answer).
_AUTHORIZATION_CODES = (errors.AUTHORIZATION_REQUIRED, errors.AUTHORIZATION_FAILED, errors.AUTHORIZATION_UNAVAILABLE)


class _Fallback(Exception):
    """The probe got no modern answer: fall back to initialize, for this reason."""


async def _modern(discover: Discover, timeout: float, how: str, fallback: bool) -> Verdict:
    """C{server/discover}, retried once at a version named by a -32022 answer."""
    version = MODERN_VERSIONS[-1]
    for attempt in range(2):
        try:
            result = await discover(version, timeout)
        except JsonRpcError as e:
            if isinstance(e, errors.GatewayError) and e.code in _AUTHORIZATION_CODES:
                # Refused for want of a token (auth: oauth): no verdict on its era.
                raise ProbeFailed(str(e))
            retry = _retry_version(e)
            if retry is not None and attempt == 0:
                version = retry
                continue
            answer = f"{e.code} {e.message[:200]}"
            if fallback:
                raise _Fallback(f"server/discover answered {answer}")
            raise ProbeFailed(f"server/discover was refused: {answer}")
        except RequestTimeout:
            why = f"no answer to server/discover within {timeout:g} s"
            raise (_Fallback(why) if fallback else ProbeFailed(why))
        adopted = spoken(result)
        if adopted is None:
            why = f"server/discover answered without a version the gateway speaks ({', '.join(MODERN_VERSIONS)}): {str(result)[:200]}"
            raise (_Fallback(why) if fallback else ProbeFailed(why))
        return Verdict("modern", how, adopted, result)
    raise AssertionError("unreachable")  # pragma: no cover


async def _legacy(discover: Discover, initialize: Initialize, timeout: float, why: str) -> Verdict:
    """C{initialize}; a -32022 answer means the server speaks only the new era: adopt it."""
    try:
        return Verdict("legacy", f"fallback: {why}", None, await initialize(timeout))
    except JsonRpcError as e:
        if e.code != UNSUPPORTED_PROTOCOL_VERSION:
            raise ProbeFailed(f"initialize was refused: {e}")
    try:
        return await _modern(discover, timeout, "discover (after initialize was refused -32022)", fallback=False)
    except PeerGone as e:
        raise ProbeFailed(f"the server went away during server/discover ({e})")


async def _initialize(initialize: Initialize, timeout: float) -> Any:
    try:
        return await initialize(timeout)
    except JsonRpcError as e:
        raise ProbeFailed(f"initialize was refused: {e}")


__all__ = ["ExitedDuringProbe", "ProbeFailed", "Verdict", "probe_timeout", "settle", "spoken"]
