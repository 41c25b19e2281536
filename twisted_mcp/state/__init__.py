"""
What replicas share: the state seam (L{twisted_mcp.state.base}), its
C{state:} config section (L{twisted_mcp.state.config}) and its Redis
implementation (L{twisted_mcp.state.redis}, imported only when configured:
it needs the optional txredisapi).
"""

from twisted_mcp.state.base import BucketSpec, SharedState, Unavailable
from twisted_mcp.state.config import StateSettings, parse_state

__all__ = ["BucketSpec", "SharedState", "StateSettings", "Unavailable", "parse_state"]
