"""
What a POST to a Streamable HTTP server of the stateless era (2026-07-28)
carries besides its body, and which of its tools the gateway may call.

Every request repeats parts of its body in headers, so that intermediaries
can route without reading it (C{streamable-http.mdx} §Request Metadata):
C{MCP-Protocol-Version} (the envelope's version), C{Mcp-Method}, C{Mcp-Name}
(the name of a C{tools/call} or C{prompts/get}, the URI of a
C{resources/read}) and, for a C{tools/call}, one C{Mcp-Param-<name>} for
each argument whose property in the tool's C{inputSchema} carries
C{x-mcp-header}.  Values that are not plain visible ASCII travel in the
sentinel form of L{twisted_mcp.mcp.http_headers.encode_value}.

A tool whose C{x-mcp-header} annotations are invalid must not be offered
(§Schema Extension: HTTP clients I{MUST} drop it from C{tools/list});
L{ToolHeaders} drops it, with a warning naming it and why.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from twisted.logger import Logger
from twisted.web.http_headers import Headers

from twisted_mcp.mcp.http_headers import NAMED, encode_value
from twisted_mcp.mcp.meta import PROTOCOL_VERSION
from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

log = Logger()

ANNOTATION = "x-mcp-header"
_PARAM_PREFIX = b"mcp-param-"
#: An HTTP field name (RFC 9110 token).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: The only types an annotated property may have (C{number} is not one).
_HEADER_TYPES = ("string", "integer", "boolean")
#: JavaScript's safe integers: an annotated integer outside them is not sent.
_SAFE_INTEGER = 2**53 - 1
#: Schema keywords whose values are data, not schemas: never searched.
_DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples"})

#: A property path (the chain of C{properties} keys) and its header's name.
Annotation = tuple[tuple[str, ...], bytes]


class InvalidAnnotation(ValueError):
    """A tool's C{x-mcp-header} annotation breaks the spec's rules; the message says which and where."""


def request_headers(base: Headers, message: dict[str, Any], params_headers: list[tuple[bytes, bytes]]) -> Headers:
    """
    C{base} (not changed) with the headers of a 2026-07-28 request:
    the version its envelope names, its method, the name or URI it acts on,
    and C{params_headers} (see L{ToolHeaders.for_call}).
    """
    headers = base.copy()
    method = message.get("method")
    params = message.get("params")
    params = params if type(params) is dict else {}
    meta = params.get("_meta")
    version = meta.get(PROTOCOL_VERSION) if type(meta) is dict else None
    if isinstance(version, str):
        headers.setRawHeaders(b"mcp-protocol-version", [encode_value(version)])
    if isinstance(method, str):
        headers.setRawHeaders(b"mcp-method", [encode_value(method)])
        key = NAMED.get(method)
        if key is not None and isinstance(params.get(key), str):
            headers.setRawHeaders(b"mcp-name", [encode_value(params[key])])
    for name, value in params_headers:
        headers.setRawHeaders(name, [value])
    return headers


def header_annotations(schema: Any) -> list[Annotation]:
    """
    The C{x-mcp-header} annotations of a tool's C{inputSchema}, each with
    the path of the property it is on.

    @raise InvalidAnnotation: one of them is invalid: not reachable through
        C{properties} alone (from the root, never through C{items},
        C{oneOf}, C{$defs}...), not a field name, on a property that is not
        a string, integer or boolean, or the same (ignoring case) as another.
    """
    found: list[Annotation] = []
    seen: dict[str, str] = {}
    for path, node in _schemas(schema):
        if ANNOTATION not in node:
            continue
        where = ".".join(str(key) for key in path if key is not None) or "the schema's root"
        if not path or path[0] is None:
            raise InvalidAnnotation(f"{ANNOTATION} on {where} is not reachable through properties alone")
        name = node[ANNOTATION]
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InvalidAnnotation(f"{ANNOTATION} of property {where!r} is not an HTTP field name: {str(name)[:100]!r}")
        if node.get("type") not in _HEADER_TYPES:
            raise InvalidAnnotation(
                f"{ANNOTATION} of property {where!r} is on a property of type {str(node.get('type'))[:50]!r}, "
                "not string, integer or boolean"
            )
        if name.lower() in seen:
            raise InvalidAnnotation(f"{ANNOTATION} {name!r} of property {where!r} repeats that of {seen[name.lower()]!r}")
        seen[name.lower()] = where
        found.append((path, _PARAM_PREFIX + name.encode("ascii")))
    return found


def _schemas(root: Any) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """
    Every schema within C{root} with its path: the chain of C{properties}
    keys while it is unbroken, else a path starting with C{None} (an
    explicit stack: any depth).
    """
    stack: list[tuple[tuple[Any, ...], Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if type(node) is not dict:
            continue
        yield path, node
        for key, value in node.items():
            if key == ANNOTATION or key in _DATA_KEYWORDS:
                continue
            if key == "properties" and type(value) is dict:
                stack.extend(((*path, name), sub) for name, sub in value.items())
            elif type(value) is dict:
                stack.append((_broken(path), value))
            elif type(value) is list:
                stack.extend((_broken(path), sub) for sub in value)


def _broken(path: tuple[Any, ...]) -> tuple[Any, ...]:
    return path if path[:1] == (None,) else (None, *path)


class ToolHeaders:
    """
    A stateless-era server's tools over HTTP: those the gateway may offer
    (L{usable}: without those whose C{x-mcp-header} annotations are
    invalid, each dropped with a warning naming it), and the
    C{Mcp-Param-*} headers of a call to each.
    """

    def __init__(self, tools: list[dict[str, Any]], backend: str) -> None:
        self.usable: list[dict[str, Any]] = []
        self._by_name: dict[str, list[Annotation]] = {}
        for tool in tools:
            try:
                found = header_annotations(tool.get("inputSchema"))
            except InvalidAnnotation as e:
                log.warn(
                    "backend {backend}: tool {tool!r} is not offered: {why} (2026-07-28 HTTP clients must drop such tools)",
                    backend=backend,
                    tool=str(tool.get("name"))[:200],
                    why=str(e),
                )
                continue
            self.usable.append(tool)
            if found and isinstance(tool.get("name"), str):
                self._by_name[tool["name"]] = found

    def check(self, params: dict[str, Any]) -> None:
        """
        Refuse (-32602, naming the argument) a C{tools/call} whose value for
        an annotated parameter cannot travel in its header: the spec allows
        strings, integers within +/-(2**53 - 1) and booleans there, and a
        value given must be mirrored (the server refuses the call otherwise).
        """
        found = self._by_name.get(params.get("name"))  # type: ignore[arg-type]
        if not found:
            return
        arguments = params.get("arguments")
        for path, name in found:
            value = _value_at(arguments, path)
            if value is not None and _header_text(value) is None:
                where = ".".join(path)
                raise JsonRpcError(
                    INVALID_PARAMS,
                    f"Invalid params: argument {where!r} must be a string, a boolean or an integer of at most 2^53 - 1 "
                    f"in size: the server takes it in the header {name.decode('ascii')}",
                    {"argument": where},
                )

    def for_call(self, params: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """The C{Mcp-Param-*} headers of a C{tools/call} with these C{params}: one for each annotated argument given."""
        found = self._by_name.get(params.get("name"))  # type: ignore[arg-type]
        if not found:
            return []
        arguments = params.get("arguments")
        headers = []
        for path, name in found:
            text = _header_text(_value_at(arguments, path))
            if text is not None:
                headers.append((name, encode_value(text)))
        return headers


def _value_at(arguments: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if type(arguments) is not dict:
            return None
        arguments = arguments.get(key)
    return arguments


def _header_text(value: Any) -> str | None:
    """A value as its header says it (None: no header: absent, null, or not of a header's type)."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int:
        return str(value) if -_SAFE_INTEGER <= value <= _SAFE_INTEGER else None
    if type(value) is str:
        return value
    return None


__all__ = ["ANNOTATION", "InvalidAnnotation", "ToolHeaders", "header_annotations", "request_headers"]
