"""
Names a package exports but imports only when first used (PEP 562), so that
a gateway whose configuration leaves a feature out never loads its modules,
nor the libraries they bring (sqlite3, PyJWT, treq...).  What it loads still
loads at start-up whenever the configuration names it: the sections are
parsed and checked in full before anything starts.

A shared leaf: it imports nothing of the package.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """
    A module C{__getattr__} for C{package}: each of C{names} (an exported
    name -> the submodule of C{package} that defines it) is imported on
    first access, then kept in C{package} like any other attribute; so is
    each of those submodules, as an attribute of C{package}.
    """
    submodules = frozenset(names.values())

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        submodule = names.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
