"""
The checks every configuration section uses: L{ConfigError} (all the
problems found, each with its key path), the problem collector
(L{_Checker}), key paths (L{_join}), values described for an error
(L{_describe}) and paths resolved against the config file's directory
(L{_resolve}).  A leaf: the policy's section parsers use it too.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigError(Exception):
    """A configuration that cannot be used; C{problems} lists every reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s) in the configuration:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class _Checker:
    """Collects problems, each with its key path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    def mapping(self, path: str, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_describe(value)}")
            return None
        return value

    def unknown(self, path: str, value: dict[str, Any], known: Any) -> None:
        for key in value:
            if key not in known:
                hint = ", ".join(sorted(known))
                self.problem(_join(path, key), f"unknown key (expected one of: {hint})")

    def unknown_keys(self, path: str, value: dict[Any, Any], known: tuple[str, ...]) -> None:
        """Each key of C{value} not in C{known}, reported at C{path} with the keys expected, in their order (design §2.4)."""
        for key in value:
            if key not in known:
                self.problem(path, f"unknown key {json.dumps(str(key))} (expected {', '.join(known)})")

    def string(self, path: str, value: Any, nonempty: bool = True) -> str | None:
        if not isinstance(value, str):
            self.problem(path, f"expected a string, got {_describe(value)}")
            return None
        if nonempty and not value:
            self.problem(path, "expected a non-empty string")
            return None
        return value

    def number(self, path: str, value: Any, minimum: float, maximum: float) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(path, f"expected a number of seconds, got {_describe(value)}")
            return None
        if not (minimum <= value <= maximum):
            self.problem(path, f"expected a number from {minimum:g} to {maximum:g}, got {value!r}")
            return None
        return float(value)

    def whole(self, path: str, value: Any) -> int | None:
        """C{value} if it is a whole number (not a boolean), else None (a problem reported)."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"expected a whole number, got {_describe(value)}")
            return None
        return value

    def integer(self, path: str, value: Any, minimum: int, maximum: int) -> int | None:
        number = self.whole(path, value)
        if number is None:
            return None
        if not (minimum <= number <= maximum):
            self.problem(path, f"expected a whole number from {minimum} to {maximum}, got {number}")
            return None
        return number

    def boolean(self, path: str, value: Any) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, f"expected true or false, got {_describe(value)}")
            return None
        return value

    def string_list(self, path: str, value: Any) -> tuple[str, ...] | None:
        if not isinstance(value, list):
            self.problem(path, f"expected a list of strings, got {_describe(value)}")
            return None
        out = []
        for i, item in enumerate(value):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            s = self.string(f"{path}[{i}]", item, nonempty=False)
            if s is not None:
                out.append(s)
        return tuple(out)


def _join(path: str, key: Any) -> str:
    key = str(key)
    if NAME_RE.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def glob_compiles(check: _Checker, path: str, glob: str, glob_problem: Callable[[str], str | None]) -> bool:
    """
    Whether C{glob} compiles in the roles' dialect; when it does not, the
    problem is reported at C{path}.  (C{glob_problem} says why a glob does
    not compile: the dialect's parser lives with the policy, above config.)
    """
    why = glob_problem(glob)
    if why is None:
        return True
    check.problem(path, f"{json.dumps(glob)} is not a valid glob: {why}")
    return False


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    kind = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
    text = json.dumps(value, default=str) if not isinstance(value, (dict, list)) else ""
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}".rstrip()


def _resolve(path: str, base_dir: str | None) -> str:
    path = os.path.expanduser(path)
    if not os.path.isabs(path) and base_dir is not None:
        path = os.path.normpath(os.path.join(base_dir, path))
    return path
