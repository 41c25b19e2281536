"""
Tests for L{twisted_mcp.backends.oauth.problems}: the fixed C{reason}
vocabulary, as the README publishes it, and the JSON-RPC errors the
problems become.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from twisted_mcp.backends.oauth.problems import (
    FAILED_REASONS,
    REQUIRED_REASONS,
    UNAVAILABLE_REASONS,
    AuthorizationFailed,
    AuthorizationRequired,
    AuthorizationUnavailable,
)
from twisted_mcp.mcp import errors
from twisted_mcp.mcp.errors import GatewayError

README = Path(__file__).resolve().parents[2] / "README.md"


def published() -> dict[int, set[str]]:
    """The README's table of reasons, by code."""
    rows = re.findall(r"^\| (-3104\d) \| (`[^|]*`) \|$", README.read_text(), re.MULTILINE)
    return {int(code): set(re.findall(r"`([a-z-]+)`", reasons)) for code, reasons in rows}


def test_readme_publishes_every_reason_and_only_those() -> None:
    assert published() == {
        errors.AUTHORIZATION_REQUIRED: set(REQUIRED_REASONS),
        errors.AUTHORIZATION_FAILED: set(FAILED_REASONS),
        errors.AUTHORIZATION_UNAVAILABLE: set(UNAVAILABLE_REASONS),
    }


def test_an_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        AuthorizationRequired("as-timeout", "a reason of -31042 given to -31040")


@pytest.mark.parametrize(
    "problem, code",
    [
        (AuthorizationRequired("expired", "log in again", login="twisted-mcp login gh"), errors.AUTHORIZATION_REQUIRED),
        (AuthorizationFailed("iss-mismatch", "the redirect named another issuer"), errors.AUTHORIZATION_FAILED),
        (AuthorizationUnavailable("as-timeout", "no answer within 10 s"), errors.AUTHORIZATION_UNAVAILABLE),
    ],
)
def test_the_error_a_client_sees(problem, code) -> None:
    error = problem.to_error("gh")
    assert isinstance(error, GatewayError)
    assert error.code == code and error.code in errors.GATEWAY_CODES
    assert error.message == problem.message
    assert error.data["backend"] == "gh" and error.data["reason"] == problem.reason
    for key, value in problem.data.items():
        assert error.data[key] == value
