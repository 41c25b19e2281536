"""
The argument checks as the pipeline holds them: L{ArgumentError}, and
L{Validators}, which imports L{twisted_mcp.policy.arguments} (jsonschema and
RE2, several MB) with the first call it checks, not at start-up: a gateway
that has not yet been called does not hold them.
"""

from __future__ import annotations

from typing import Any


class ArgumentError(Exception):
    def __init__(self, path: str, reason: str, keyword: str = "schema") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        #: The schema keyword that failed (safe to log: no argument value).
        self.keyword = keyword


class Validators:
    """
    L{twisted_mcp.policy.arguments.Validators}, made on first use; from
    then on its methods are this object's own (no step in between).
    """

    def __init__(self) -> None:
        self._validators: Any = None

    def check(self, name: str, definition: dict[str, Any], arguments: Any) -> None:
        """Raise L{ArgumentError} unless C{arguments} fit the tool's schema."""
        self._made().check(name, definition, arguments)

    def forget(self, names: set[str]) -> None:
        """Forget the validators of tools not in C{names} (none are kept before the first check)."""
        if self._validators is not None:
            self._validators.forget(names)

    def _made(self) -> Any:
        if self._validators is None:
            from twisted_mcp.policy.arguments import Validators

            self._validators = Validators()
            self.check = self._validators.check  # type: ignore[method-assign]
            self.forget = self._validators.forget  # type: ignore[method-assign]
        return self._validators
