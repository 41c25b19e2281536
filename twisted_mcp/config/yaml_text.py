"""
YAML configuration text, bounded (see L{twisted_mcp.config.reading}): nesting
and what aliases expand to are limited while the document is composed, and
duplicate keys are refused.  Imported only to read a file that is not JSON,
so that a gateway with a JSON config never loads PyYAML.
"""

from __future__ import annotations

from typing import Any

import yaml

from twisted_mcp.config._check import ConfigError, _join
from twisted_mcp.config.reading import MAX_ALIAS_NODES, MAX_DEPTH, too_deep


def _duplicate_keys(node: yaml.Node, path: str, found: list[str]) -> None:
    """Find repeated keys in a composed YAML document, with their key paths."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
                where = _join(path, key)
                if key in seen:
                    found.append(f"{where}: duplicate key (line {key_node.start_mark.line + 1}); each key may appear once")
                seen.add(key)
            else:
                where = path
            _duplicate_keys(value_node, where, found)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{i}]", found)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _BoundedLoader(yaml.SafeLoader):
    """
    A SafeLoader that refuses, while it composes the document (before any
    value is built, and before anything walks the document as a tree),
    nesting deeper than L{MAX_DEPTH} and aliases that stand for more than
    L{MAX_ALIAS_NODES} nodes in all.
    """

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.depth = 0
        self.alias_nodes = 0
        #: id(node) -> how many nodes it holds with its aliases expanded;
        #: a node being composed has none yet.
        self.sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        node: Any
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(id(node))
            if size is None:
                raise ConfigError(self.source, [f"{self.source}: a YAML alias inside the node it refers to (recursive), at line {line}"])
            self.alias_nodes += size
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise ConfigError(
                    self.source,
                    [f"{self.source}: YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (the limit), at line {line}"],
                )
            return node
        if self.depth >= MAX_DEPTH:
            raise ConfigError(self.source, [too_deep(self.source, f" at line {line}")])
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self.sizes[id(node)] = 1 + sum(self.sizes[id(child)] for child in _children(node))
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A value that does not fit its tag (``!!int abc``, ``!!bool maybe``,
        # ``!!int`` with no value, the timestamp ``0000-00-00``) fails in
        # SafeConstructor with whatever Python error its conversion raised.
        try:
            return super().construct_object(node, deep)
        except (ValueError, LookupError, AttributeError, OverflowError):
            mark = node.start_mark
            where = f"at line {mark.line + 1}, column {mark.column + 1}"
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise ConfigError(self.source, [f"not valid YAML {where}: the value does not fit its type ({tag})"]) from None


def _load_document(text: str, source: str) -> Any:
    loader = _BoundedLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates: list[str] = []
        _duplicate_keys(node, "", duplicates)
        if duplicates:
            raise ConfigError(source, duplicates)
        return loader.construct_document(node)
    except TypeError as e:
        # An unhashable mapping key (``? [a, b]``).
        raise ConfigError(source, [f"not valid here: {e} (mapping keys must be plain values)"])
    finally:
        loader.dispose()


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text within the bounds; a syntax error becomes a L{ConfigError}."""
    try:
        return _load_document(text, source)
    except yaml.YAMLError as e:
        raise ConfigError(source, [_yaml_problem(e)])


def _yaml_problem(e: yaml.YAMLError) -> str:
    """Where and what, without quoting the file's text (it may hold secrets)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or type(e).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {what}"
