"""
Tests for L{twisted_mcp.backends.oauth.challenge}: C{WWW-Authenticate}
read as RFC 9110 §11.6.1 and RFC 6750 §3 write it, and garbage that never
raises.
"""

from __future__ import annotations

import pytest

from twisted_mcp.backends.oauth.challenge import Challenge, bearer_challenge, parse_challenges


def test_a_bearer_challenge_with_the_three_parameters_the_gateway_reads():
    [challenge] = parse_challenges(
        [
            b'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource", '
            b'scope="files:read files:write", error="insufficient_scope"'
        ]
    )
    assert challenge.scheme == "bearer"
    assert challenge.resource_metadata == "https://mcp.example.com/.well-known/oauth-protected-resource"
    assert challenge.scope == ("files:read", "files:write")
    assert challenge.error == "insufficient_scope"


def test_token_form_values_and_bad_whitespace_around_the_equals_sign():
    [challenge] = parse_challenges(["Bearer error=invalid_token , scope = read,realm=\tapi"])
    assert challenge.params == {"error": "invalid_token", "scope": "read", "realm": "api"}


def test_quoted_strings_keep_commas_and_escaped_quotes():
    [challenge] = parse_challenges([r'Bearer realm="a, \"quoted\" realm", scope="x,y", error_description="a\\b"'])
    assert challenge.params["realm"] == 'a, "quoted" realm'
    assert challenge.params["scope"] == "x,y"
    assert challenge.scope == ("x,y",)
    assert challenge.params["error_description"] == "a\\b"


def test_several_challenges_in_one_header():
    # RFC 9110 §11.6.1's own example, with a Bearer one at the end.
    header = 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple", Bearer scope="s"'
    challenges = parse_challenges([header])
    assert [c.scheme for c in challenges] == ["newauth", "basic", "bearer"]
    assert challenges[0].params == {"realm": "apps", "type": "1", "title": 'Login to "apps"'}
    assert challenges[1].params == {"realm": "simple"}
    assert challenges[2].scope == ("s",)


def test_several_headers_in_order():
    challenges = parse_challenges([b'Basic realm="x"', "DPoP algs=\"ES256\"", b"Bearer error=invalid_token"])
    assert [c.scheme for c in challenges] == ["basic", "dpop", "bearer"]
    assert bearer_challenge([b'Basic realm="x"', b"Bearer error=invalid_token"]) == Challenge(
        "bearer", {"error": "invalid_token"}
    )


def test_bearer_challenge_is_the_first_bearer_one_and_none_without():
    values = [b'Negotiate, Bearer scope="first"', b'Bearer scope="second"']
    challenge = bearer_challenge(values)
    assert challenge is not None and challenge.scope == ("first",)
    assert bearer_challenge([b'Basic realm="x"', b"Negotiate abc=="]) is None
    assert bearer_challenge([]) is None


def test_unknown_schemes_and_schemes_without_parameters():
    challenges = parse_challenges(["Private-Scheme-9 a=1, Negotiate, Bearer"])
    assert [(c.scheme, dict(c.params)) for c in challenges] == [
        ("private-scheme-9", {"a": "1"}),
        ("negotiate", {}),
        ("bearer", {}),
    ]
    assert challenges[2].scope is None and challenges[2].resource_metadata is None and challenges[2].error is None


@pytest.mark.parametrize(
    "header, token68",
    [
        ("Negotiate YIIBhwYGKwYBBQUC", "YIIBhwYGKwYBBQUC"),
        ("Negotiate abc/+_~.-xyz==", "abc/+_~.-xyz=="),
        ("Negotiate a=", "a="),
        ("Negotiate abc==  ", "abc=="),
    ],
)
def test_token68_forms(header, token68):
    [challenge] = parse_challenges([header])
    assert challenge.token68 == token68
    assert challenge.params == {}


def test_a_token68_then_another_challenge():
    challenges = parse_challenges(['Negotiate abc==, Bearer resource_metadata="https://r/x"'])
    assert [c.scheme for c in challenges] == ["negotiate", "bearer"]
    assert challenges[0].token68 == "abc=="
    assert challenges[1].resource_metadata == "https://r/x"


def test_duplicated_parameters_first_one_wins():
    [challenge] = parse_challenges(['Bearer scope="a", Scope="b", SCOPE=c'])
    assert challenge.scope == ("a",)


def test_names_and_schemes_are_case_insensitive():
    [challenge] = parse_challenges(['BEARER Resource_Metadata="https://r/m", SCOPE="Read Write", Error=x'])
    assert challenge.scheme == "bearer"
    assert challenge.resource_metadata == "https://r/m"
    # values keep their case
    assert challenge.scope == ("Read", "Write")
    assert challenge.error == "x"


def test_an_empty_scope_is_no_scopes_not_absent():
    [challenge] = parse_challenges(['Bearer scope=""'])
    assert challenge.scope == ()


def test_empty_list_elements_are_skipped():
    challenges = parse_challenges([", ,Bearer ,, scope=a ,, , Basic ,"])
    assert [(c.scheme, dict(c.params)) for c in challenges] == [("bearer", {"scope": "a"}), ("basic", {})]


def test_latin1_bytes_are_read():
    [challenge] = parse_challenges([b'Bearer realm="caf\xe9"'])
    assert challenge.params["realm"] == "caf\u00e9"


@pytest.mark.parametrize(
    "header",
    [
        "",
        " ",
        ",,,",
        "=",
        "==, =x",
        '"',
        'Bearer realm="unclosed, scope=a',
        "Bearer realm=",
        "Bearer =value",
        'Bearer realm="x" trailing junk, scope="s"',
        "Bearer \\",
        "Bearer scope=\x00\x01",
        "\u2603 Bearer",
        'Bearer realm="\\',
        "Bearer realm=@@@, scope=ok",
        "realm=x, scope=y",
        "Bearer" + ' a="b",' * 2000,
    ],
)
def test_garbage_never_raises(header):
    challenges = parse_challenges([header, header.encode("utf-8")])
    assert all(isinstance(c, Challenge) for c in challenges)


def test_garbage_keeps_what_it_can_read():
    # parameters before any scheme have no challenge to belong to
    assert parse_challenges(["realm=x, scope=y"]) == []
    # an unclosed quoted string runs to the end
    [unclosed] = parse_challenges(['Bearer realm="unclosed, scope=a'])
    assert unclosed.params == {"realm": "unclosed, scope=a"}
    # junk after a value is skipped up to the next comma
    [junk] = parse_challenges(['Bearer realm="x" trailing junk, scope="s"'])
    assert junk.params == {"realm": "x", "scope": "s"}
    # a value that is neither a token nor a quoted string is dropped, the rest kept
    [bad] = parse_challenges(["Bearer realm=@@@, scope=ok"])
    assert bad.params == {"scope": "ok"}
