"""
MCP vocabulary, without I/O: protocol versions (C{versions}), the gateway's
error codes (C{errors}), how tools and prompts are named in the merged
catalog (C{names}), and the gateway's form of resource URIs with URI
template matching (C{uris}).
"""
