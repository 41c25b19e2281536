"""
Argument checks: a call's C{arguments} against the tool's C{inputSchema},
with C{jsonschema} (JSON Schema 2020-12 unless the schema names another
draft in C{$schema}).  Validators are compiled once per tool definition;
remote C{$ref}s are never fetched.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import exceptions as js_exceptions
from jsonschema.validators import (
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
    validator_for,
)
from referencing import Registry
from referencing.exceptions import Unresolvable
from twisted.logger import Logger

log = Logger()


def _no_retrieval(uri: str) -> Any:
    raise Unresolvable(uri)


_REGISTRY: Registry = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]


class ArgumentError(Exception):
    def __init__(self, path: str, reason: str, keyword: str = "schema") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        #: The schema keyword that failed (safe to log: no argument value).
        self.keyword = keyword


_SIMPLE_TYPES: dict[str, Any] = {
    "string": lambda v: type(v) is str,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) is int or type(v) is float,
}
_ANNOTATIONS = {"description", "title", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "format"}
_NUMERIC = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_STRING = {"minLength", "maxLength", "pattern"}


def _is_number(v: Any) -> bool:
    return type(v) is int or type(v) is float


def _constraint(spec: dict[str, Any]) -> Any:
    """A checker for the numeric and string keywords of C{spec}, or None
    if one of them is not a plain value; True if there are none."""
    tests = []
    for key in _NUMERIC & set(spec):
        bound = spec[key]
        if not _is_number(bound):
            return None  # e.g. draft 4's boolean exclusiveMaximum
        if key == "minimum":
            tests.append(lambda v, b=bound: not _is_number(v) or v >= b)
        elif key == "maximum":
            tests.append(lambda v, b=bound: not _is_number(v) or v <= b)
        elif key == "exclusiveMinimum":
            tests.append(lambda v, b=bound: not _is_number(v) or v > b)
        else:
            tests.append(lambda v, b=bound: not _is_number(v) or v < b)
    for key in _STRING & set(spec):
        bound = spec[key]
        if key == "pattern":
            if type(bound) is not str:
                return None
            try:
                regex = re.compile(bound)
            except re.error:
                return None
            tests.append(lambda v, r=regex: type(v) is not str or r.search(v) is not None)
        else:
            if type(bound) is not int:
                return None
            if key == "minLength":
                tests.append(lambda v, b=bound: type(v) is not str or len(v) >= b)
            else:
                tests.append(lambda v, b=bound: type(v) is not str or len(v) <= b)
    if not tests:
        return True
    return lambda v: all(t(v) for t in tests)
_TOP_SIMPLE = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "$schema", "$id"}


def _type_check(spec: Any) -> Any:
    """A checker for C{{"type": ...}} (one name or a list), or None."""
    names = spec if isinstance(spec, list) else [spec]
    checks = [_SIMPLE_TYPES.get(n) for n in names if isinstance(n, str)]
    if not checks or None in checks or len(checks) != len(names):
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda v: any(c(v) for c in checks)


def fast_check(schema: dict[str, Any]) -> Any:
    """
    For the schemas most tools have (an object of typed properties, some
    required), a plain function that says whether arguments are valid;
    None when the schema uses anything more, and jsonschema decides.  An
    invalid verdict is always re-checked by jsonschema for its message.
    """
    if not set(schema) <= _TOP_SIMPLE or schema.get("type", "object") != "object":
        return None
    if "$schema" in schema and validator_for(schema, default=Draft202012Validator) not in _MODERN:
        return None  # older drafts differ (1.0 is not an integer in draft 4)
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if type(properties) is not dict or type(required) is not list or type(extra) is not bool:
        return None
    if not all(type(r) is str for r in required):
        return None
    checks = {}
    for name, spec in properties.items():
        if type(spec) is not dict or not set(spec) <= _ANNOTATIONS | _NUMERIC | _STRING | {"type"}:
            return None
        constraint = _constraint(spec)
        if constraint is None:
            return None
        check = _type_check(spec["type"]) if "type" in spec else (lambda v: True)
        if check is None:
            return None
        if constraint is not True:
            check = (lambda c, k: lambda v: c(v) and k(v))(check, constraint)
        checks[name] = check
    required_t = tuple(required)

    def valid(arguments: Any) -> bool:
        if type(arguments) is not dict:
            return False
        for r in required_t:
            if r not in arguments:
                return False
        for key, value in arguments.items():
            check = checks.get(key)
            if check is None:
                if not extra and key not in properties:
                    return False
                continue
            if not check(value):
                return False
        return True

    return valid


_MODERN: tuple[Any, ...] = (Draft6Validator, Draft7Validator, Draft201909Validator, Draft202012Validator)


class Validators:
    """Compiled validators by tool definition (recompiled when it changes)."""

    def __init__(self) -> None:
        # The definition itself is kept (and compared with `is`): an id()
        # could be reused by a newer definition.
        self._cache: dict[str, tuple[Any, Any]] = {}

    def check(self, name: str, definition: dict[str, Any], arguments: Any) -> None:
        """Raise L{ArgumentError} unless C{arguments} fit the tool's schema."""
        entry = self._cache.get(name)
        if entry is None or entry[0] is not definition:
            try:
                compiled = self._compile(name, definition)
            except Exception as e:
                log.warn("tool {tool}: its inputSchema cannot be used ({why}); arguments are not checked", tool=name, why=str(e)[:200])
                compiled = None
            entry = (definition, compiled)
            self._cache[name] = entry
        compiled = entry[1]
        if compiled is None:
            return
        fast, validator = compiled
        value = {} if arguments is None else arguments
        if fast is not None and fast(value):
            return
        try:
            if validator.is_valid(value):
                return
            error = js_exceptions.best_match(validator.iter_errors(value))
        except Unresolvable as e:
            raise ArgumentError("/", f"the tool's schema refers to {e}, which the gateway does not fetch", "$ref")
        except RecursionError:
            raise ArgumentError("/", "the arguments are nested too deeply to check", "depth")
        path = "/" + "/".join(str(p) for p in error.absolute_path)
        raise ArgumentError(path, error.message, str(error.validator))

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
        return fast_check(schema), cls(schema, registry=_REGISTRY)

    def forget(self, names: set[str]) -> None:
        for n in list(self._cache):
            if n not in names:
                del self._cache[n]
