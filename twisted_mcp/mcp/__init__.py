"""
MCP vocabulary, without I/O: protocol versions (C{versions}), the gateway's
error codes (C{errors}) and how tools are named in the merged catalog
(C{names}).
"""
