"""
Fuzz target: the tool-pattern matcher (L{twisted_mcp.policy.rules.matches}).

Input: pattern, tool name and backend separated by NUL bytes (UTF-8,
invalid bytes replaced).  Oracle: matching raises nothing but PatternError,
and that only for a pattern compile_pattern refuses (config loading refuses
those patterns up front), for every separator, with or without a backend
and folding; a folded match (deny rules, kill switch) covers at least what
the exact match covers, and ignores ASCII case and the difference between
- and _ in the name.
"""

import sys

import atheris

with atheris.instrument_imports(include=["twisted_mcp"]):
    from twisted_mcp.policy.rules import PatternError, compile_pattern, matches

SEPARATORS = ("__", ".", "/", "-")


_ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_RENAME = str.maketrans(_ASCII_LETTERS + _ASCII_LETTERS.upper() + "-_", _ASCII_LETTERS.upper() + _ASCII_LETTERS + "_-")


def renamed(name):
    """The same tool name with the case of ASCII letters swapped and - and _ exchanged."""
    return name.translate(_RENAME)


def malformed(pattern):
    try:
        compile_pattern(pattern)
    except PatternError:
        return True
    return False


def TestOneInput(data):
    pattern, _, rest = data.decode("utf-8", "replace").partition("\0")
    name, _, backend = rest.partition("\0")
    try:
        check(pattern, name, backend)
    except PatternError:
        if not malformed(pattern):
            raise


def check(pattern, name, backend):
    for separator in SEPARATORS:
        for owner in (backend, None):
            exact = matches(pattern, name, separator, owner, fold=False)
            folded = matches(pattern, name, separator, owner, fold=True)
            if exact and not folded:
                raise AssertionError(f"{pattern!r} matches {name!r} exactly but not folded")
            # The callers always name the backend; without one, a bare backend pattern is exact.
            if owner is not None and folded != matches(pattern, renamed(name), separator, owner, fold=True):
                raise AssertionError(f"folded {pattern!r} tells {name!r} and {renamed(name)!r} apart")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
