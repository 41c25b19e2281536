"""
Argument checks: a call's C{arguments} against the tool's C{inputSchema},
with C{jsonschema} (JSON Schema 2020-12 unless the schema names another
draft in C{$schema}).  Validators are compiled once per tool definition;
remote C{$ref}s are never fetched.
"""

from __future__ import annotations

from typing import Any

from jsonschema import exceptions as js_exceptions
from jsonschema.validators import Draft202012Validator, validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable
from twisted.logger import Logger

log = Logger()


def _no_retrieval(uri: str) -> Any:
    raise Unresolvable(uri)


_REGISTRY: Registry = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]


class ArgumentError(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class Validators:
    """Compiled validators by tool definition (recompiled when it changes)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, Any]] = {}

    def check(self, name: str, definition: dict[str, Any], arguments: Any) -> None:
        """Raise L{ArgumentError} unless C{arguments} fit the tool's schema."""
        entry = self._cache.get(name)
        if entry is None or entry[0] != id(definition):
            entry = (id(definition), self._compile(name, definition))
            self._cache[name] = entry
        validator = entry[1]
        if validator is None:
            return
        value = {} if arguments is None else arguments
        try:
            if validator.is_valid(value):
                return
            error = js_exceptions.best_match(validator.iter_errors(value))
        except Unresolvable as e:
            raise ArgumentError("/", f"the tool's schema refers to {e}, which the gateway does not fetch")
        path = "/" + "/".join(str(p) for p in error.absolute_path)
        raise ArgumentError(path, error.message)

    def _compile(self, name: str, definition: dict[str, Any]) -> Any:
        schema = definition.get("inputSchema")
        if not isinstance(schema, dict):
            return None
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
        except js_exceptions.SchemaError as e:
            log.warn("tool {tool}: its inputSchema is not a valid schema ({why}); arguments are not checked", tool=name, why=e.message)
            return None
        return cls(schema, registry=_REGISTRY)

    def forget(self, names: set[str]) -> None:
        for n in list(self._cache):
            if n not in names:
                del self._cache[n]
