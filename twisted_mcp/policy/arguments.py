"""
Argument checks: a call's C{arguments} against the tool's C{inputSchema},
with C{jsonschema} (JSON Schema 2020-12 unless the schema names another
draft in C{$schema}).  Validators are compiled once per tool definition;
remote C{$ref}s are never fetched.

Every regular expression of a schema (C{pattern}, C{patternProperties},
and the C{additionalProperties} / C{unevaluatedProperties} checks that
depend on them) runs on RE2, in time linear in the text: a backtracking
engine lets one short argument hold the event loop for as long as it likes.
RE2 has no backreferences and no lookaround; a pattern it cannot run is not
enforced (see L{Validators}).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterator

import re2
from jsonschema import _keywords, _legacy_keywords, _utils
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

from twisted_mcp.policy.argument_checks import ArgumentError

log = Logger()


def _no_retrieval(uri: str) -> Any:
    raise Unresolvable(uri)


_REGISTRY: Registry = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]

_RE2_OPTIONS = re2.Options()
# A refused pattern is reported by the gateway's log, not by RE2 on stderr.
_RE2_OPTIONS.log_errors = False
# Escape pairs, left to right, so that an escaped backslash is never
# mistaken for the start of an escape.
_ESCAPE_RE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|.)", re.S)


def _re2_syntax(pattern: str) -> str:
    """ECMA-262's C{\\uXXXX} in RE2's spelling (C{\\x{XXXX}}); the rest as written."""
    return _ESCAPE_RE.sub(lambda m: "\\x{%s}" % m.group(1) if m.group(1) else m.group(0), pattern)


@functools.lru_cache(maxsize=1024)
def linear_regex(pattern: str) -> tuple[Any, str | None]:
    """C{pattern} compiled by RE2 and None, or None and why RE2 cannot run it."""
    try:
        return re2.compile(_re2_syntax(pattern), _RE2_OPTIONS), None
    except UnicodeEncodeError:
        return None, "not valid Unicode (a lone surrogate)"
    except re2.error as e:
        why = e.args[0] if e.args else e
        return None, why.decode("utf-8", "replace") if isinstance(why, bytes) else str(why)


def linear_search(pattern: str, text: str) -> Any:
    """
    Whether C{pattern} matches somewhere in C{text}, in linear time.  A
    pattern RE2 cannot run counts as matching: it is not enforced (and was
    reported when the schema was compiled).  Text that is not valid Unicode
    (a lone surrogate) matches nothing.
    """
    regex = linear_regex(pattern)[0]
    if regex is None:
        return True
    try:
        return regex.search(text)
    except UnicodeEncodeError:
        return None


class _LinearRe:
    """
    Stands in for the C{re} module in jsonschema's keyword code, which only
    ever calls C{re.search(pattern, text)} (a unit test keeps it so): every
    path that matches a schema's pattern (C{pattern}, C{patternProperties},
    C{additionalProperties}, C{unevaluatedProperties}, in every draft) then
    runs on RE2 without copying jsonschema's keyword functions.
    """

    search = staticmethod(linear_search)


for _module in (_keywords, _legacy_keywords, _utils):
    _module.re = _LinearRe  # type: ignore[attr-defined]


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
            if linear_regex(bound)[0] is None:
                return None  # not enforced: jsonschema's path says so in the log
            tests.append(lambda v, p=bound: type(v) is not str or linear_search(p, v) is not None)
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


def _patterns(schema: Any) -> Iterator[tuple[str, str]]:
    """Every regular expression in C{schema}, as (keyword, pattern)."""
    todo = [schema]
    while todo:  # a loop, not recursion: schemas come from backends
        node = todo.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                yield "pattern", node["pattern"]
            if isinstance(node.get("patternProperties"), dict):
                yield from (("patternProperties", key) for key in node["patternProperties"])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)


def _usable_patterns(name: str, schema: Any) -> bool:
    """
    Log each pattern of C{schema} that RE2 cannot run.  A C{pattern} is then
    not enforced, the rest of the schema is (the backend still applies its
    own check).  A C{patternProperties} key decides which properties a
    subschema covers, and guessing either way could refuse valid calls:
    then the schema is unusable (False) and the tool's arguments are not
    checked, as for any other schema the gateway cannot use.
    """
    usable = True
    for keyword, pattern in _patterns(schema):
        why = linear_regex(pattern)[1]
        if why is None:
            continue
        usable = usable and keyword == "pattern"
        log.warn(
            "tool {tool}: {keyword} {pattern} cannot run in linear time ({why}); {outcome}",
            tool=name,
            keyword=keyword,
            pattern=pattern[:200],
            why=why,
            outcome="it is not enforced" if keyword == "pattern" else "the tool's arguments are not checked",
        )
    return usable


class Validators:
    """
    Compiled validators by tool definition (recompiled when it changes).
    Regular expressions run on RE2 (see the module's docstring); one that
    RE2 cannot run (backreferences, lookaround) is logged once per tool
    definition and not enforced.
    """

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
            # No format checker: its "regex" format would compile every
            # pattern with Python's backtracking engine; RE2 judges them below.
            cls.check_schema(schema, format_checker=None)
        except js_exceptions.SchemaError as e:
            log.warn("tool {tool}: its inputSchema is not a valid schema ({why}); arguments are not checked", tool=name, why=e.message)
            return None
        if not _usable_patterns(name, schema):
            return None
        return fast_check(schema), cls(schema, registry=_REGISTRY)

    def forget(self, names: set[str]) -> None:
        for n in list(self._cache):
            if n not in names:
                del self._cache[n]
