"""
Tests for L{twisted_mcp.backends.oauth.pkce}: verifiers, challenges and
states (RFC 7636), and the digest that is all a log may show of them.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from twisted_mcp.backends.oauth.pkce import challenge_for, digest, new_state, new_verifier

_B64URL_43 = re.compile(r"[A-Za-z0-9_-]{43}")


def test_rfc_7636_appendix_b():
    assert challenge_for("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_verifiers_are_43_base64url_characters_and_never_repeat():
    verifiers = {new_verifier() for _ in range(200)}
    assert len(verifiers) == 200
    assert all(_B64URL_43.fullmatch(v) for v in verifiers)


def test_states_are_43_base64url_characters_and_never_repeat():
    states = {new_state() for _ in range(200)}
    assert len(states) == 200
    assert all(_B64URL_43.fullmatch(s) for s in states)


def test_a_new_verifiers_challenge_is_its_s256():
    verifier = new_verifier()
    challenge = challenge_for(verifier)
    assert _B64URL_43.fullmatch(challenge)
    assert challenge != challenge_for(new_verifier())


@pytest.mark.parametrize("length", [43, 128])
def test_any_verifier_of_43_to_128_unreserved_characters(length):
    assert len(challenge_for(("a-._~Z9" * 20)[:length])) == 43


@pytest.mark.parametrize("verifier", ["a" * 42, "a" * 129, "a" * 42 + "+", "a" * 42 + "=", "é" * 43, ""])
def test_a_bad_verifier_is_refused_without_being_quoted(verifier):
    with pytest.raises(ValueError) as raised:
        challenge_for(verifier)
    if verifier:
        assert verifier not in str(raised.value)


def test_digest_is_the_first_eight_hex_digits_of_sha256():
    state = new_state()
    assert digest(state) == hashlib.sha256(state.encode()).hexdigest()[:8]
    assert re.fullmatch(r"[0-9a-f]{8}", digest(state))
    assert state not in digest(state)
    assert digest("\ud800") == hashlib.sha256("\ud800".encode("utf-8", "surrogatepass")).hexdigest()[:8]
