# A twistd plugin dropin: it only names the module that builds the service,
# so that `twistd --help` imports nothing heavy.
from twisted.application.service import ServiceMaker

mcpGateway = ServiceMaker(
    "twisted-mcp gateway",
    "twisted_mcp.tap",
    "An MCP gateway: one MCP endpoint in front of many supervised MCP servers.",
    "mcp-gateway",
)
