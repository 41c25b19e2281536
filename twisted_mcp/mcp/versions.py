"""
The MCP protocol versions the gateway speaks, by era.

The handshake era negotiates a version once, in C{initialize}.  The
stateless era (2026-07-28) has no handshake; its clients probe
C{server/discover} first and fall back to C{initialize} when that fails.
"""

from twisted_mcp import __version__

#: Handshake-era versions, oldest first.
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]

CLIENT_INFO = {"name": "twisted-mcp", "version": __version__}
SERVER_INFO = {"name": "twisted-mcp", "title": "twisted-mcp gateway", "version": __version__}


def negotiate(requested: object) -> str:
    """The version to answer a client's C{initialize} with."""
    if requested in HANDSHAKE_VERSIONS:
        return requested
    return LATEST_HANDSHAKE
