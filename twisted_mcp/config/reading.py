"""
Reading configuration text, bounded: a file of at most a size, YAML or JSON
parsed with limits on depth and on what aliases expand to, duplicate keys
refused (YAML in L{twisted_mcp.config.yaml_text}, imported only for a file
that is not JSON).  The gateway's config, the pin lock file and the client configs
`import` reads all go through it.
"""

from __future__ import annotations

import json
from typing import Any

from twisted_mcp.config._check import ConfigError

#: Bounds on every configuration file the gateway reads (its config, the pin
#: lock file, and, with a larger size, the client configs `import` reads), so
#: that a hostile or broken file costs a clear error, not minutes of work or
#: gigabytes of memory.  Each is far beyond what a real configuration needs.
MAX_FILE_BYTES = 4 * 1024 * 1024
#: Mappings and lists inside one another.
MAX_DEPTH = 64
#: The nodes that YAML aliases (``*name``) stand for, counted each time one is
#: used: anchors for shared blocks are fine, a "billion laughs" is not.
MAX_ALIAS_NODES = 10_000


def too_deep(source: str, where: str = "") -> str:
    """The problem of a document nested deeper than L{MAX_DEPTH} (C{where}: at which line, if known)."""
    return f"{source}: nested deeper than {MAX_DEPTH} levels (the limit){where}"


def _check_depth(data: Any, source: str) -> None:
    """Raise L{ConfigError} if C{data} nests deeper than L{MAX_DEPTH}."""
    todo = [(data, 1)]
    while todo:
        node, depth = todo.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise ConfigError(source, [too_deep(source)])
        todo.extend((child, depth + 1) for child in children)


def json_document(text: str, source: str, pairs: Any) -> Any:
    """
    C{json.loads} within the bounds of a configuration file (deep nesting
    is a L{ConfigError}, not a C{RecursionError}); C{pairs} is its
    C{object_pairs_hook}.  Invalid JSON raises C{ValueError}.
    """
    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except RecursionError:
        raise ConfigError(source, [too_deep(source)]) from None
    _check_depth(data, source)
    return data


def read_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """
    The UTF-8 text of the file at C{path}, of at most C{max_bytes}: no more
    than that is ever read, whatever the file is (C{/dev/zero}, a pipe).

    @raise ConfigError: the file is larger.
    @raise OSError: it cannot be read.
    @raise UnicodeDecodeError: it is not UTF-8.
    """
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(path, [f"{path}: larger than {_size(max_bytes)} (the limit for this file)"])
    return data.decode("utf-8")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n} bytes"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_text(text: str, source: str) -> Any:
    """Parse YAML or JSON text; a syntax error becomes a L{ConfigError}."""
    stripped = text.lstrip()
    if source.endswith(".json") or stripped.startswith("{"):
        try:
            return json_document(text, source, _no_duplicates)
        except ValueError as e:
            if source.endswith(".json"):
                raise ConfigError(source, [f"not valid JSON: {e}"])
    # PyYAML is imported only for a file that is not JSON.
    from twisted_mcp.config.yaml_text import load_yaml

    return load_yaml(text, source)
