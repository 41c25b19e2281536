"""
Tests for L{twisted_mcp.backends.oauth.flow}: the authorization URL and
pending record of §4.2, and the callback's checks in §4.3's order (state,
single use, redirect URI, expiry, the C{iss} table, C{error}, C{code}),
against the fake AS over L{StubTreq}, which checks PKCE at its token
endpoint.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.discovery import Discovered, Discovery
from twisted_mcp.backends.oauth.flow import Authorization, Flows, choose_scopes
from twisted_mcp.backends.oauth.metadata import parse_resource_metadata, parse_server_metadata
from twisted_mcp.backends.oauth.pkce import digest
from twisted_mcp.backends.oauth.problems import AuthorizationFailed
from twisted_mcp.backends.oauth.registration import Registrar
from twisted_mcp.config.models import OAuthAuth

from .oauth_fakes import BACKEND_URL, ISSUER, MARK, FakeAS, fake_http, memory_stores, resource_metadata, server_metadata, settings

LOOPBACK = "http://127.0.0.1:5000/oauth/callback"
NOW = 1_700_000_000.0


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class FlowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.peer = FakeAS()
        self.http = fake_http(self.clock, self.peer)
        self.stores = memory_stores(self.clock)
        self.settings = settings(maxPendingPerPrincipal=2)
        self.flows = Flows(
            self.clock, self.http, Registrar(self.clock, self.http, self.stores.clients, self.settings), self.stores.pending, self.settings
        )
        self.discovered = self.successResultOf(Discovery(self.clock, self.http).discover("alpha", BACKEND_URL))

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def begin(self, auth: OAuthAuth | None = None, principal: str = "local", **kwargs: Any) -> Authorization:
        return self.successResultOf(
            self.flows.begin(principal, "alpha", auth or OAuthAuth(), kwargs.pop("discovered", self.discovered), LOOPBACK, **kwargs)
        )

    def test_authorization_url(self) -> None:
        """The URL carries code, client, redirect, state, S256 challenge, resource and scope."""
        started = self.begin(OAuthAuth(scopes=("write",), extraAuthorizeParams={"access_type": "offline", "state": "x"}))
        self.assertTrue(started.url.startswith("https://as.example/authorize?"))
        params = query(started.url)
        self.assertEqual(params["response_type"], "code")
        self.assertEqual(params["client_id"], "dcr-client-1")
        self.assertEqual(params["redirect_uri"], LOOPBACK)
        self.assertEqual(params["code_challenge_method"], "S256")
        self.assertEqual(len(params["code_challenge"]), 43)
        self.assertEqual(params["resource"], BACKEND_URL)
        self.assertEqual(params["scope"], "read write")
        self.assertEqual(params["access_type"], "offline")
        self.assertNotEqual(params["state"], "x")
        self.assertEqual(started.state_digest, digest(params["state"]))
        self.assertEqual(started.expires_at, NOW + 600)
        self.assertEqual(started.scopes, ("read", "write"))
        self.assertNotIn(params["state"], repr(started))

    def test_send_resource_false(self) -> None:
        """sendResource: false leaves resource out of the URL and the token request."""
        started = self.begin(OAuthAuth(sendResource=False))
        self.assertNotIn("resource", query(started.url))
        self.successResultOf(self.flows.complete(self.peer.authorize(started.url), LOOPBACK))
        self.assertNotIn("resource", self.peer.token_forms[0])

    def test_scope_choice(self) -> None:
        """Challenge scope first, else scopes_supported, else none; then config, held, extra; offline_access when listed."""
        resource = parse_resource_metadata(json.dumps(resource_metadata(scopes_supported=None)).encode(), BACKEND_URL)
        server = parse_server_metadata(json.dumps(server_metadata(scopes_supported=["a", "offline_access"])).encode(), ISSUER)
        self.assertEqual(choose_scopes(Discovered(resource, server, None), (), (), ()), ("offline_access",))
        self.assertEqual(choose_scopes(Discovered(resource, self.discovered.server, None), (), (), ()), ())
        self.assertEqual(
            choose_scopes(Discovered(self.discovered.resource, self.discovered.server, ("c",)), ("d", "c"), ("e",), ("f", "e")),
            ("c", "d", "e", "f"),
        )
        self.assertEqual(choose_scopes(self.discovered, (), (), ()), ("read",))

    def test_no_scope_parameter_without_scopes(self) -> None:
        """No scope known: the parameter is omitted."""
        resource = parse_resource_metadata(json.dumps(resource_metadata(scopes_supported=None)).encode(), BACKEND_URL)
        started = self.begin(discovered=Discovered(resource, self.discovered.server, None))
        self.assertNotIn("scope", query(started.url))

    def test_offline_access_prompts_consent(self) -> None:
        """offline_access asked for: prompt=consent."""
        server = parse_server_metadata(json.dumps(server_metadata(scopes_supported=["read", "offline_access"])).encode(), ISSUER)
        started = self.begin(discovered=Discovered(self.discovered.resource, server, None))
        params = query(started.url)
        self.assertEqual(params["scope"], "read offline_access")
        self.assertEqual(params["prompt"], "consent")

    def test_complete(self) -> None:
        """A good callback: the code is exchanged with the verifier (the AS checks PKCE) for a token."""
        started = self.begin(principal="jwt:alice")
        done = self.successResultOf(self.flows.complete(self.peer.authorize(started.url), LOOPBACK))
        self.assertEqual((done.principal, done.backend, done.issuer, done.resource), ("jwt:alice", "alpha", ISSUER, BACKEND_URL))
        self.assertEqual(done.record.access_token, f"access-1-{MARK}")
        self.assertEqual(done.client.client_id, "dcr-client-1")
        form = self.peer.token_forms[0]
        self.assertEqual(form["grant_type"], "authorization_code")
        self.assertEqual(form["resource"], BACKEND_URL)
        self.assertEqual(form["client_id"], "dcr-client-1")

    def failed(self, params: dict[str, str], reason: str, redirect_uri: str = LOOPBACK) -> AuthorizationFailed:
        f = self.failureResultOf(self.flows.complete(params, redirect_uri), AuthorizationFailed)
        self.assertEqual(f.value.reason, reason, f.value.message)
        return f.value

    def test_state_single_use(self) -> None:
        """A replayed callback is state-mismatch."""
        started = self.begin()
        callback = self.peer.authorize(started.url)
        self.successResultOf(self.flows.complete(callback, LOOPBACK))
        self.failed(callback, "state-mismatch")

    def test_unknown_state_leaves_the_real_one(self) -> None:
        """A wrong state is refused and the real flow still completes."""
        started = self.begin()
        callback = self.peer.authorize(started.url)
        self.failed({**callback, "state": "forged"}, "state-mismatch")
        self.failed({"code": "x"}, "state-mismatch")
        self.successResultOf(self.flows.complete(callback, LOOPBACK))

    def test_other_redirect_uri(self) -> None:
        """A callback arriving at another address than the flow's is refused (and the flow is spent)."""
        started = self.begin()
        callback = self.peer.authorize(started.url)
        self.failed(callback, "state-mismatch", "https://gw.example/oauth/callback")
        self.failed(callback, "state-mismatch")
        self.assertEqual(self.peer.token_forms, [])

    def test_expired(self) -> None:
        """A callback after authorizationTimeout is refused."""
        started = self.begin()
        self.clock.advance(601)
        self.failed(self.peer.authorize(started.url), "state-mismatch")

    def test_iss_table(self) -> None:
        """iss: present must be identical; absent is refused only when the AS advertises it."""
        advertised = parse_server_metadata(
            json.dumps(server_metadata(authorization_response_iss_parameter_supported=True)).encode(), ISSUER
        )
        for server, iss, outcome in [
            (self.discovered.server, ISSUER, None),
            (self.discovered.server, None, None),
            (self.discovered.server, ISSUER + "/", "iss-mismatch"),
            (self.discovered.server, "https://AS.example", "iss-mismatch"),
            (advertised, ISSUER, None),
            (advertised, None, "iss-mismatch"),
        ]:
            started = self.begin(discovered=Discovered(self.discovered.resource, server, None))
            callback = self.peer.authorize(started.url)
            del callback["iss"]
            if iss is not None:
                callback["iss"] = iss
            if outcome is None:
                self.successResultOf(self.flows.complete(callback, LOOPBACK))
            else:
                self.failed(callback, outcome)

    def test_iss_checked_before_error(self) -> None:
        """A wrong iss with an error: iss-mismatch, the AS's error not shown."""
        started = self.begin()
        problem = self.failed(
            {"state": query(started.url)["state"], "iss": "https://evil.example", "error": "access_denied"}, "iss-mismatch"
        )
        self.assertNotIn("access_denied", problem.message)
        self.assertEqual(problem.data, {})

    def test_consent_refused(self) -> None:
        """error: consent-refused with the AS's error code only."""
        started = self.begin()
        problem = self.failed(
            {"state": query(started.url)["state"], "error": "access_denied", "error_description": "user said no"}, "consent-refused"
        )
        self.assertEqual(problem.data, {"error": "access_denied"})
        self.assertNotIn("user said no", problem.message)
        self.assertEqual(self.peer.token_forms, [])

    def test_token_request_failed(self) -> None:
        """A refused code: token-request-failed with the AS's error."""
        started = self.begin()
        callback = self.peer.authorize(started.url)
        problem = self.failed({**callback, "code": "stolen"}, "token-request-failed")
        self.assertEqual(problem.data, {"error": "invalid_grant"})

    def test_invalid_client_forgets_the_registration(self) -> None:
        """invalid_client at the token endpoint: the DCR registration is forgotten."""
        started = self.begin()
        self.peer.token_replies.append((401, {"error": "invalid_client"}))
        self.failed(self.peer.authorize(started.url), "token-request-failed")
        self.begin()
        self.assertEqual(len(self.peer.registrations), 2)

    def test_max_pending_per_principal(self) -> None:
        """Beyond maxPendingPerPrincipal the oldest flow is dropped; other principals are not affected."""
        first = self.begin()
        other = self.begin(principal="jwt:bob")
        second = self.begin()
        third = self.begin()
        self.failed(self.peer.authorize(first.url), "state-mismatch")
        for started in (second, third, other):
            self.successResultOf(self.flows.complete(self.peer.authorize(started.url), LOOPBACK))

    def test_nothing_secret_logged(self) -> None:
        """Neither the state, the verifier, the code nor a token reaches the log."""
        with capturedLogs() as events:
            started = self.begin()
            callback = self.peer.authorize(started.url)
            done = self.successResultOf(self.flows.complete(callback, LOOPBACK))
            self.failed(callback, "state-mismatch")
        text = "\n".join(formatEvent(e) + repr(e) for e in events)
        self.assertIn(started.state_digest, text)
        for secret in (callback["state"], callback["code"], self.peer.token_forms[0]["code_verifier"], done.record.access_token, MARK):
            self.assertNotIn(secret, text)
        self.assertNotIn(MARK, repr(done))
