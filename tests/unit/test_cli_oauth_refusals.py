"""
C{twisted-mcp login} and C{tokens} when the gateway refuses with 502 (an
authorization server or store problem, -31042): the refusal's C{reason} is
shown and the exit status is 69, the way 409 refusals are shown with 77.
"""

from __future__ import annotations

import pytest

from tests.unit.test_cli_admin import FakeGateway, _no_token, gateway, run  # noqa: F401  (fixtures)

REFUSAL = {
    "error": "backend 'slow': the authorization server at http://127.0.0.1:9 did not answer within 1 s",
    "reason": "as-timeout",
    "code": -31042,
}


def test_login_shows_the_reason_of_a_502(capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:  # noqa: F811
    gateway.routes[("POST", "/oauth/begin")] = (502, REFUSAL)
    code, out, err = run(capsys, "login", "slow", "--as", "alice", "--admin", gateway.address, "--wait", "1")
    assert code == 69
    assert "Open this URL" not in out
    assert "slow: cannot begin the authorization: backend 'slow': the authorization server" in err
    assert err.rstrip().endswith("(as-timeout)"), err


def test_tokens_shows_the_reason_of_a_502(capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> None:  # noqa: F811
    gateway.routes[("POST", "/oauth/tokens")] = (502, {**REFUSAL, "reason": "store-unavailable"})
    code, _, err = run(capsys, "tokens", "--admin", gateway.address)
    assert code == 69
    assert "(store-unavailable)" in err


def test_a_5xx_the_command_does_not_expect_is_still_a_failure_to_reach(
    capsys: pytest.CaptureFixture[str],
    gateway: FakeGateway,  # noqa: F811
) -> None:
    gateway.routes[("POST", "/oauth/begin")] = (503, b"shutting down\n")
    code, _, err = run(capsys, "login", "slow", "--admin", gateway.address, "--wait", "1")
    assert code == 69
    assert f"the admin endpoint at {gateway.address} answered 503: shutting down" in err
