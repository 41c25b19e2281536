"""
Fuzz target: the config loader's load-from-text path
(L{twisted_mcp.config.reading.parse_text} then L{twisted_mcp.config.loader.build}).

Input: one byte choosing the file name (.yaml or .json), then the text.
Oracle: a Config or a ConfigError, nothing else.
"""

import sys

import atheris

with atheris.instrument_imports(include=["twisted_mcp"]):
    # parse_text imports the YAML reader on demand: imported here, it is instrumented too.
    import twisted_mcp.config.yaml_text  # noqa: F401
    from twisted_mcp.config import ConfigError, parse_text
    from twisted_mcp.config.loader import build

ENVIRON = {"HOME": "/home/fuzz", "TOKEN": "s3cret"}


def TestOneInput(data):
    if not data:
        return
    source = "/etc/twisted-mcp/gateway.json" if data[0] & 1 else "/etc/twisted-mcp/gateway.yaml"
    try:
        text = data[1:].decode("utf-8")
    except UnicodeDecodeError:
        return  # load() refuses non-UTF-8 files before parsing
    try:
        build(parse_text(text, source), source, ENVIRON, "/etc/twisted-mcp")
    except ConfigError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
