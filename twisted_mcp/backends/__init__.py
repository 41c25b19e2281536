"""
The MCP client side: what the gateway calls.  C{base} is a backend whatever
its transport (and C{BackendEvents}, where the server's own requests and
notifications go), C{session} the MCP client session over a JSON-RPC peer,
C{listings} what a server lists (tools, prompts, resources, templates) and
how it is paged, C{server_requests} the server's requests being answered,
C{supervisor} a backend's runs (bounded discovery, restarts); C{stdio}
supervises child processes, C{http} reaches HTTP MCP servers, C{stderr}
bounds what a child's stderr puts in the log.
"""
