"""
The MCP server side, whatever the transport: the gateway over its backends
and their merged catalog (C{gateway}, C{catalog}), and one client's session
(C{session}), which front-ends hand decoded messages to.
"""
