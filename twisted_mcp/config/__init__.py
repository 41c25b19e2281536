"""
The gateway's configuration: its models (C{models}), the checks every section
uses (C{_check}), bounded reading of YAML and JSON text (C{reading}), and the
loader that turns a file into a L{Config} (C{loader}: C{load}, C{build}).

The loader is not imported here: it lists every section, the policy's too,
and the policy's section parsers import C{_check}; importing the loader here
would make that a cycle.
"""

from twisted_mcp.config._check import ConfigError
from twisted_mcp.config.models import (
    DEFAULT_INHERIT_ENV,
    Config,
    GatewaySettings,
    HttpServer,
    ServerConfig,
    StdioServer,
)
from twisted_mcp.config.reading import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    json_document,
    parse_text,
    read_file,
)

__all__ = [
    "DEFAULT_INHERIT_ENV",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "Config",
    "ConfigError",
    "GatewaySettings",
    "HttpServer",
    "ServerConfig",
    "StdioServer",
    "json_document",
    "parse_text",
    "read_file",
]
