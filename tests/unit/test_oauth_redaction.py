"""
The OAuth field names that hold secrets are hidden by the one redaction
rule (C{docs/design/oauth.md} §8), and those that do not stay visible.
"""

from __future__ import annotations

import pytest

from twisted_mcp.redaction import is_secret_name


@pytest.mark.parametrize(
    "name",
    [
        "access_token", "refresh_token", "id_token", "client_secret", "code_verifier", "codeVerifier",
        "verifier", "client_assertion", "clientAssertion", "assertion", "subject_token", "actor_token",
        "authorization",
    ],
)  # fmt: skip
def test_oauth_secrets_are_hidden(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "code", "error", "error_description", "state_digest", "issuer", "scope", "resource", "client_id",
        "code_challenge", "code_challenge_method", "client_assertion_type", "token_type", "expires_in",
        "token_endpoint", "authorization_endpoint", "redirect_uri",
    ],
)  # fmt: skip
def test_oauth_names_that_hold_no_secret_stay_visible(name):
    assert not is_secret_name(name)
