"""
The MCP client side: what the gateway calls.  C{base} is a backend whatever
its transport (the MCP client session, supervision, discovery); C{stdio}
supervises child processes, C{http} reaches HTTP MCP servers, C{stderr}
bounds what a child's stderr puts in the log.
"""
