"""twisted-mcp: a Model Context Protocol gateway built on Twisted."""

__version__ = "0.1.0"
