"""
The bottom layer: bytes and JSON-RPC, knowing nothing of MCP.  Line framing
(C{framing}), JSON-RPC 2.0 messages and a peer that correlates requests with
answers (C{jsonrpc}), server-sent events (C{sse}), and coalesced writes to
pipes and sockets (C{_writer}).
"""
