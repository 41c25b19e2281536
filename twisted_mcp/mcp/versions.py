"""
The MCP protocol versions the gateway speaks, by era.

The handshake era negotiates a version once, in C{initialize}.  The
stateless era (2026-07-28) has no handshake: every request names its
version (and the client's capabilities) in its C{_meta}, and clients probe
C{server/discover} to learn what a server speaks.
"""

from twisted_mcp import __version__

#: Handshake-era versions, oldest first.
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]
#: Stateless-era versions.
MODERN_VERSIONS = ("2026-07-28",)
#: Every version, newest first: what C{server/discover} lists and every
#: "unsupported protocol version" error names.
SUPPORTED_VERSIONS = MODERN_VERSIONS + tuple(reversed(HANDSHAKE_VERSIONS))

CLIENT_INFO = {"name": "twisted-mcp", "version": __version__}
SERVER_INFO = {"name": "twisted-mcp", "title": "twisted-mcp gateway", "version": __version__}


def negotiate(requested: object) -> str:
    """The version to answer a client's C{initialize} with."""
    if requested in HANDSHAKE_VERSIONS:
        return requested
    return LATEST_HANDSHAKE
