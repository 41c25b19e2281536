"""
The MCP client side: what the gateway calls.  C{base} is a backend whatever
its transport, C{session} the MCP client session over a JSON-RPC peer,
C{supervisor} a backend's runs (bounded discovery, restarts); C{stdio}
supervises child processes, C{http} reaches HTTP MCP servers, C{stderr}
bounds what a child's stderr puts in the log.
"""
