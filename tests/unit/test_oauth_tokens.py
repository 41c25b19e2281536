"""
Tests for L{twisted_mcp.backends.oauth.tokens}: the three grants and
revocation against a fake token endpoint (over L{StubTreq}), client
authentication, C{resource} on every request, response validation and
RFC 6749 §5.2 error parsing.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote_plus

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable
from twisted_mcp.backends.oauth.store import ClientRecord, TokenRecord
from twisted_mcp.backends.oauth.tokens import TokenEndpoint, TokenError, client_authentication, parse_error

from .oauth_fakes import BACKEND_URL, MARK, TOKEN_URL, FakeAS, fake_http

NOW = 1_700_000_000.0


def client(method: str = "none", secret: str | None = None, client_id: str = "gw") -> ClientRecord:
    return ClientRecord(client_id=client_id, client_secret=secret, auth_method=method, registered_at=NOW, kind="preregistered")


class TokensTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.peer = FakeAS()
        self.http = fake_http(self.clock, self.peer)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def endpoint(self, who: ClientRecord | None = None, resource: str | None = BACKEND_URL) -> TokenEndpoint:
        return TokenEndpoint(self.http, TOKEN_URL, who or client(), resource, "alpha", "https://as.example/revoke")

    def test_authorization_code(self) -> None:
        """The code grant sends code, redirect_uri, verifier, resource and the
        public client's id; the answer becomes a record."""
        record = self.successResultOf(
            self.endpoint().authorization_code("the-code", "http://127.0.0.1:5000/oauth/callback", "the-verifier", ["read"])
        )
        [form] = self.peer.token_forms
        self.assertEqual(
            form,
            {
                "grant_type": "authorization_code",
                "code": "the-code",
                "redirect_uri": "http://127.0.0.1:5000/oauth/callback",
                "code_verifier": "the-verifier",
                "client_id": "gw",
                "resource": BACKEND_URL,
            },
        )
        self.assertIsInstance(record, TokenRecord)
        self.assertEqual(record.access_token, f"access-1-{MARK}")
        self.assertEqual(record.refresh_token, f"refresh-1-{MARK}")
        self.assertEqual(record.token_type, "Bearer")
        self.assertEqual(record.expires_at, NOW + 3600)
        self.assertEqual(record.granted_at, NOW)
        self.assertEqual(record.scope, ("read",))
        self.assertEqual((record.client_id, record.backend), ("gw", "alpha"))

    def test_send_resource_false(self) -> None:
        """Without a resource (sendResource: false) none is sent."""
        self.successResultOf(self.endpoint(resource=None).authorization_code("c", "http://127.0.0.1/cb", "v", []))
        self.assertNotIn("resource", self.peer.token_forms[0])

    def test_refresh(self) -> None:
        """A refresh sends the refresh token and resource, no scope; a new
        refresh token replaces the old one (rotation counted)."""
        endpoint = self.endpoint()
        first = self.successResultOf(endpoint.authorization_code("c", "http://127.0.0.1/cb", "v", ["read"]))
        self.clock.advance(100)
        second = self.successResultOf(endpoint.refresh(first))
        form = self.peer.token_forms[1]
        self.assertEqual(
            form, {"grant_type": "refresh_token", "refresh_token": first.refresh_token, "client_id": "gw", "resource": BACKEND_URL}
        )
        self.assertEqual(second.access_token, f"access-2-{MARK}")
        self.assertEqual(second.refresh_token, f"refresh-2-{MARK}")
        self.assertEqual(second.rotation, 1)
        self.assertEqual(second.refreshed_at, NOW + 100)
        self.assertEqual(second.scope, ("read",))

    def test_refresh_without_new_refresh_token_keeps_the_old(self) -> None:
        """No refresh_token in the answer: the old one is kept, no rotation."""
        self.peer.rotate = False
        endpoint = self.endpoint()
        first = self.successResultOf(endpoint.authorization_code("c", "http://127.0.0.1/cb", "v", ["read"]))
        second = self.successResultOf(endpoint.refresh(first))
        self.assertEqual(second.refresh_token, first.refresh_token)
        self.assertEqual(second.rotation, 0)

    def test_client_credentials(self) -> None:
        """The client credentials grant sends scope and resource."""
        endpoint = self.endpoint(client("client_secret_post", f"secret-{MARK}"))
        record = self.successResultOf(endpoint.client_credentials(["billing.read", "x"]))
        self.assertEqual(
            self.peer.token_forms[0],
            {
                "grant_type": "client_credentials",
                "scope": "billing.read x",
                "client_id": "gw",
                "client_secret": f"secret-{MARK}",
                "resource": BACKEND_URL,
            },
        )
        self.assertIsNone(record.refresh_token)
        self.assertEqual(record.scope, ("billing.read", "x"))

    def test_client_secret_basic(self) -> None:
        """client_secret_basic: the form-urlencoded id and secret in a Basic header, not in the form."""
        endpoint = self.endpoint(client("client_secret_basic", "p@ss word:1", client_id="id:1"))
        self.successResultOf(endpoint.client_credentials([]))
        [header] = self.peer.token_headers[0]["authorization"]
        self.assertTrue(header.startswith("Basic "))
        raw = base64.b64decode(header[6:]).decode()
        self.assertEqual(raw, "id%3A1:p%40ss+word%3A1")
        user, password = raw.split(":")
        self.assertEqual((unquote_plus(user), unquote_plus(password)), ("id:1", "p@ss word:1"))
        self.assertNotIn("client_secret", self.peer.token_forms[0])
        self.assertNotIn("client_id", self.peer.token_forms[0])

    def test_client_authentication_forms(self) -> None:
        """none sends the id only; a secret method without a secret falls back to none."""
        self.assertEqual(client_authentication(client("none")), ({"client_id": "gw"}, {}))
        self.assertEqual(client_authentication(client("client_secret_basic")), ({"client_id": "gw"}, {}))

    def test_scope_in_answer(self) -> None:
        """The scope the AS granted replaces the one asked for."""
        self.peer.token_replies.append((200, {"access_token": "a", "token_type": "Bearer", "scope": "read write"}))
        record = self.successResultOf(self.endpoint().authorization_code("c", "http://127.0.0.1/cb", "v", ["read"]))
        self.assertEqual(record.scope, ("read", "write"))
        self.assertIsNone(record.expires_at)

    def test_expires_in_forms(self) -> None:
        """expires_in as digits is accepted; nonsense means unknown expiry."""
        for value, expected in [("60", NOW + 60), (True, None), (-5, None), ("soon", None), (1.5, NOW + 1.5)]:
            self.peer.token_replies.append((200, {"access_token": "a", "token_type": "Bearer", "expires_in": value}))
            record = self.successResultOf(self.endpoint().client_credentials([]))
            self.assertEqual(record.expires_at, expected, value)

    def test_token_type_not_bearer(self) -> None:
        """A DPoP (or any other) token type is unsupported-token-type; the token is not named."""
        self.peer.token_replies.append((200, {"access_token": f"tok-{MARK}", "token_type": "DPoP"}))
        f = self.failureResultOf(self.endpoint().client_credentials([]), AuthorizationUnavailable)
        self.assertEqual(f.value.reason, "unsupported-token-type")
        self.assertIn("'DPoP'", f.value.message)
        self.assertNotIn(MARK, f.value.message)

    def test_garbage(self) -> None:
        """A 200 that is not a token answer is a TokenError without an error code (transient)."""
        for body in [[1], {"token_type": "Bearer"}, {"access_token": 5, "token_type": "Bearer"}]:
            self.peer.token_replies.append((200, body))  # type: ignore[arg-type]
            f = self.failureResultOf(self.endpoint().client_credentials([]), TokenError)
            self.assertIsNone(f.value.error)
            self.assertTrue(f.value.transient)
        self.peer.serve("as.example/token", 200, b"<html>")
        f = self.failureResultOf(self.endpoint().client_credentials([]), TokenError)
        self.assertIn("not JSON", str(f.value))

    def test_refusal(self) -> None:
        """A 400 with an RFC 6749 error: the code and the description are kept, not transient."""
        self.peer.token_replies.append(
            (400, {"error": "invalid_grant", "error_description": "grant revoked " + "x" * 300, "token": f"t-{MARK}"})
        )
        f = self.failureResultOf(self.endpoint().client_credentials([]), TokenError)
        self.assertEqual((f.value.status, f.value.error), (400, "invalid_grant"))
        assert f.value.description is not None
        self.assertEqual(len(f.value.description), 200)
        self.assertFalse(f.value.transient)
        self.assertEqual(str(f.value), "the token endpoint answered 400: invalid_grant")

    def test_outage_is_transient(self) -> None:
        """A 503 is transient."""
        self.peer.serve("as.example/token", 503, b"down")
        f = self.failureResultOf(self.endpoint().client_credentials([]), TokenError)
        self.assertTrue(f.value.transient)
        self.assertEqual(f.value.status, 503)

    def test_parse_error(self) -> None:
        """Only RFC 6749 characters are kept."""
        self.assertEqual(parse_error(b'{"error": "access_denied"}'), ("access_denied", None))
        self.assertEqual(parse_error(b'{"error": "bad\\"quote", "error_description": "line\\nbreak"}'), (None, None))
        self.assertEqual(parse_error(b'{"error": "' + b"x" * 65 + b'"}'), (None, None))
        self.assertEqual(parse_error(b"[]"), (None, None))
        self.assertEqual(parse_error(b"\xff"), (None, None))

    def test_revoke(self) -> None:
        """Revocation posts the token, its hint and the client's authentication."""
        self.assertTrue(self.successResultOf(self.endpoint().revoke(f"refresh-{MARK}", "refresh_token")))
        self.assertEqual(
            self.peer.revocations, [{"token": f"refresh-{MARK}", "token_type_hint": "refresh_token", "client_id": "gw"}]
        )

    def test_revoke_without_endpoint(self) -> None:
        """No revocation endpoint: nothing is sent."""
        endpoint = TokenEndpoint(self.http, TOKEN_URL, client(), BACKEND_URL, "alpha", None)
        self.assertFalse(self.successResultOf(endpoint.revoke("t", "access_token")))
        self.assertEqual(self.peer.requests, [])

    def test_no_secret_in_repr(self) -> None:
        """Neither the endpoint's repr nor the record's names a secret."""
        endpoint = self.endpoint(client("client_secret_post", f"secret-{MARK}"))
        record = self.successResultOf(endpoint.authorization_code("c", "http://127.0.0.1/cb", "v", []))
        self.assertNotIn(MARK, repr(endpoint))
        self.assertNotIn(MARK, repr(record))
