"""
Tests for L{twisted_mcp.backends.oauth.broker}: a principal's token from
consent to refresh to loss, against the fake resource and authorization
server (over L{StubTreq}) with the real stores in memory and a L{Clock}:
the refresh window, single flight, rotation written before use,
C{invalid_grant}, outages and backoff, a backend's 401, the catalog
principal, client credentials, listing, logout, status, and no secret in
any log, message or repr.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.broker import Authorized, Bearer, OAuthBroker, refresh_window_opens
from twisted_mcp.backends.oauth.problems import (
    AuthorizationFailed,
    AuthorizationRequired,
    AuthorizationUnavailable,
    OAuthProblem,
)
from twisted_mcp.backends.oauth.store import TokenRecord
from twisted_mcp.config.models import ClientCredentialsAuth, OAuthAuth, OAuthClient

from .oauth_fakes import BACKEND_URL, ISSUER, MARK, TOKEN_URL, FakeAS, fake_http, memory_stores, server_metadata, settings

LOOPBACK = "http://127.0.0.1:5000/oauth/callback"
NOW = 1_700_000_000.0
KEY = ("local", ISSUER, BACKEND_URL)


class BrokerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.peer = FakeAS()
        self.http = fake_http(self.clock, self.peer)
        self.stores = memory_stores(self.clock)
        self.broker = OAuthBroker(self.clock, self.http, self.stores.tokens, self.stores.clients, self.stores.pending, settings())
        self.broker.add_backend("alpha", BACKEND_URL, OAuthAuth())
        self.authorized: list[tuple[str, str]] = []
        self.broker.on_authorized(lambda backend, principal: self.authorized.append((backend, principal)))

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def login(self, principal: str = "local", backend: str = "alpha") -> Authorized:
        started = self.successResultOf(self.broker.begin(principal, backend, LOOPBACK))
        return self.successResultOf(self.broker.complete(self.peer.authorize(started.url), LOOPBACK))

    def token(self, principal: str | None = "local", backend: str = "alpha") -> Bearer:
        return self.successResultOf(self.broker.token_for(principal, backend))

    def problem(self, d: Deferred[Any], kind: type[OAuthProblem], reason: str) -> OAuthProblem:
        f = self.failureResultOf(d, kind)
        self.assertEqual(f.value.reason, reason, f.value.message)
        return f.value  # type: ignore[no-any-return]

    def refreshes(self) -> int:
        return sum(1 for _, url, _, body in self.peer.requests if url == TOKEN_URL and b"grant_type=refresh_token" in body)

    def stored(self, key: tuple[str, str, str] = KEY) -> tuple[TokenRecord, int] | None:
        return self.successResultOf(self.stores.tokens.get(key))

    # -- without a token -------------------------------------------------

    def test_a_failed_flow_is_told_to_who_waits_for_it(self) -> None:
        """A consent refused at the AS ends with -31041 for the CLI and is told to on_failed (whose flow it was)."""
        told: list[tuple[str, str, str]] = []
        self.broker.on_failed(lambda backend, principal, problem: told.append((backend, principal, problem.reason)))
        started = self.successResultOf(self.broker.begin("jwt:alice", "alpha", LOOPBACK))
        params = self.peer.authorize(started.url)
        refused = {"state": params["state"], "iss": params["iss"], "error": "access_denied"}
        self.failureResultOf(self.broker.complete(refused, LOOPBACK), AuthorizationFailed)
        self.assertEqual(told, [("alpha", "jwt:alice", "consent-refused")])
        # A callback that names no flow tells nobody.
        self.failureResultOf(self.broker.complete({"state": "forged", "code": "x"}, LOOPBACK), AuthorizationFailed)
        self.assertEqual(len(told), 1)

    def test_no_token(self) -> None:
        """No record: -31040 authorization-required naming the login command."""
        problem = self.problem(self.broker.token_for("local", "alpha"), AuthorizationRequired, "authorization-required")
        self.assertEqual(problem.message, "backend 'alpha' needs your authorization: run `twisted-mcp login alpha`")
        self.assertEqual(problem.data, {"login": "twisted-mcp login alpha"})

    def test_no_token_other_principal(self) -> None:
        """For another principal than local, the operator's --as form is named too."""
        problem = self.problem(self.broker.token_for("jwt:alice", "alpha"), AuthorizationRequired, "authorization-required")
        self.assertIn("`twisted-mcp login alpha`", problem.message)
        self.assertIn("--as jwt:alice", problem.message)

    def test_discovery_failure(self) -> None:
        """A discovery failure is the call's -31042, and shows in the status."""
        self.peer.serve("mcp.example/.well-known/oauth-protected-resource/mcp", 503)
        self.problem(self.broker.token_for("local", "alpha"), AuthorizationUnavailable, "metadata-unavailable")
        self.assertEqual(self.broker.status("alpha")["state"], "unavailable")
        self.assertEqual(self.broker.status("alpha")["reason"], "metadata-unavailable")

    def test_metadata_outage_after_discovery(self) -> None:
        """Metadata that cannot be fetched again later (503): the last found is used, stored tokens keep working."""
        self.login()
        self.peer.serve("mcp.example/.well-known/oauth-protected-resource/mcp", 503)
        self.clock.advance(61)
        self.assertEqual(self.token().token, f"access-1-{MARK}")
        self.assertEqual(self.broker.status("alpha")["reason"], "metadata-unavailable")
        self.assertEqual(self.peer.urls()[-1], "https://mcp.example/.well-known/oauth-protected-resource/mcp")

    def test_metadata_changed_for_the_worse(self) -> None:
        """A permanent discovery failure later (the resource now names another server) is not papered over."""
        self.login()
        self.peer.serve_json(
            "mcp.example/.well-known/oauth-protected-resource/mcp",
            {"resource": "https://other.example/", "authorization_servers": [ISSUER]},
        )
        self.clock.advance(61)
        self.problem(self.broker.token_for("local", "alpha"), AuthorizationUnavailable, "resource-mismatch")

    # -- consent ---------------------------------------------------------

    def test_login_then_token(self) -> None:
        """A completed authorization is stored; token_for hands its token out."""
        done = self.login("jwt:alice")
        self.assertEqual(done, Authorized("jwt:alice", "alpha", ISSUER, ("read",), NOW + 3600, True))
        self.assertEqual(self.authorized, [("alpha", "jwt:alice")])
        bearer = self.token("jwt:alice")
        self.assertEqual((bearer.token, bearer.principal), (f"access-1-{MARK}", "jwt:alice"))
        self.problem(self.broker.token_for("jwt:bob", "alpha"), AuthorizationRequired, "authorization-required")

    def test_login_again_replaces(self) -> None:
        """A second authorization replaces the record (compare-and-set on the version read)."""
        self.login()
        self.login()
        self.assertEqual(self.token().token, f"access-2-{MARK}")

    def test_begin_keeps_granted_scopes(self) -> None:
        """A new authorization asks for the scopes already granted, plus the extra ones."""
        self.peer.token_replies.append((200, {"access_token": "a", "token_type": "Bearer", "scope": "read admin"}))
        self.login()
        started = self.successResultOf(self.broker.begin("local", "alpha", LOOPBACK, ["write"]))
        self.assertEqual(started.scopes, ("read", "admin", "write"))

    def test_begin_uses_the_challenge(self) -> None:
        """The backend's 401 challenge scope comes first."""
        self.broker.challenged("alpha", [b'Bearer error="invalid_token", scope="files:read"'])
        started = self.successResultOf(self.broker.begin("local", "alpha", LOOPBACK))
        self.assertEqual(started.scopes, ("files:read",))

    # -- the refresh window ----------------------------------------------

    def test_refresh_window(self) -> None:
        """An hour's token is refreshed 5 minutes before expiry (not at 80 %), a minute's at 48 s."""
        record = TokenRecord(
            access_token="a", expires_at=NOW + 3600, refresh_token="r", scope=(), granted_at=NOW, client_id="c", backend="b"
        )
        self.assertEqual(refresh_window_opens(record, 0.8, 300), NOW + 3300)
        short = TokenRecord(
            access_token="a", expires_at=NOW + 60, refresh_token="r", scope=(), granted_at=NOW, client_id="c", backend="b"
        )
        self.assertEqual(refresh_window_opens(short, 0.8, 300), NOW + 48)
        eight_hours = TokenRecord(
            access_token="a", expires_at=NOW + 28800, refresh_token="r", scope=(), granted_at=NOW, client_id="c", backend="b"
        )
        self.assertEqual(refresh_window_opens(eight_hours, 0.8, 300), NOW + 28500)
        unknown = TokenRecord(
            access_token="a", expires_at=None, refresh_token="r", scope=(), granted_at=NOW, client_id="c", backend="b"
        )
        self.assertIsNone(refresh_window_opens(unknown, 0.8, 300))

    def test_refresh_when_the_window_opens(self) -> None:
        """Before the window: the stored token, no request; in it: refreshed, with resource."""
        self.login()
        self.clock.advance(3299)
        self.assertEqual(self.token().token, f"access-1-{MARK}")
        self.assertEqual(self.refreshes(), 0)
        self.clock.advance(1)
        bearer = self.token()
        self.assertEqual(bearer.token, f"access-2-{MARK}")
        [form] = [f for f in self.peer.token_forms if f["grant_type"] == "refresh_token"]
        self.assertEqual(form["refresh_token"], f"refresh-1-{MARK}")
        self.assertEqual(form["resource"], BACKEND_URL)
        self.assertEqual(self.token().token, f"access-2-{MARK}")
        self.assertEqual(self.refreshes(), 1)

    def test_rotation_written_before_use(self) -> None:
        """The rotated refresh token is in the store, at the version handed out, when the token is returned."""
        self.login()
        self.clock.advance(3300)
        bearer = self.token()
        record, version = self.stored()  # type: ignore[misc]
        self.assertEqual(version, bearer.version)
        self.assertEqual(record.access_token, bearer.token)
        self.assertEqual(record.refresh_token, f"refresh-2-{MARK}")
        self.assertEqual(record.rotation, 1)

    def test_single_flight(self) -> None:
        """Ten concurrent token_for in the window: one refresh POST; each caller its own Deferred."""
        self.login()
        self.clock.advance(3300)
        self.peer.hold_tokens = True
        waiting = [self.broker.token_for("local", "alpha") for _ in range(10)]
        self.assertEqual(self.refreshes(), 1)
        waiting[0].cancel()
        self.failureResultOf(waiting[0])
        self.peer.release()
        self.http.http.flush()
        tokens = {self.successResultOf(d).token for d in waiting[1:]}
        self.assertEqual(tokens, {f"access-2-{MARK}"})
        self.assertEqual(self.refreshes(), 1)

    def test_spent_refresh_token_never_resent(self) -> None:
        """A caller that read the record before another refresh finished uses the new record."""
        self.login()
        self.clock.advance(3300)
        self.peer.rotate = True
        first = self.token()
        held = self.stored()
        assert held is not None
        # A refresh started from the old version finds the new one and sends nothing.
        b = self.broker._backends["alpha"]
        discovered = self.successResultOf(self.broker.discovery.discover("alpha", BACKEND_URL))
        again = self.successResultOf(self.broker._refresh(b, discovered, KEY, first.version - 1))
        self.assertEqual(again[0].access_token, first.token)
        self.assertEqual(self.refreshes(), 1)

    def test_conflict_uses_theirs(self) -> None:
        """Another writer rotated first (compare-and-set lost): their record is used."""
        self.login()
        self.clock.advance(3300)
        self.peer.hold_tokens = True
        d = self.broker.token_for("local", "alpha")
        record, version = self.stored()  # type: ignore[misc]
        theirs = TokenRecord(
            access_token="theirs",
            expires_at=NOW + 9000,
            refresh_token="r",
            scope=(),
            granted_at=NOW + 3300,
            client_id="c",
            backend="alpha",
        )
        self.successResultOf(self.stores.tokens.put(KEY, theirs, version))
        self.peer.release()
        self.http.http.flush()
        self.assertEqual(self.successResultOf(d).token, "theirs")

    def test_invalid_grant(self) -> None:
        """invalid_grant: the record is deleted and the call gets reauthorization-required."""
        self.login()
        self.clock.advance(3300)
        self.peer.live_refresh.clear()
        problem = self.problem(self.broker.token_for("local", "alpha"), AuthorizationRequired, "reauthorization-required")
        self.assertEqual(problem.data["login"], "twisted-mcp login alpha")
        self.assertIsNone(self.stored())

    def test_outage_keeps_the_record_and_backs_off(self) -> None:
        """503: the record is kept and the old token used; retries wait 1 s, then 2 s."""
        self.login()
        self.clock.advance(3300)
        self.peer.serve("as.example/token", 503)
        self.assertEqual(self.token().token, f"access-1-{MARK}")
        self.assertEqual(self.refreshes(), 1)
        self.clock.advance(0.5)
        self.assertEqual(self.token().token, f"access-1-{MARK}")
        self.assertEqual(self.refreshes(), 1)
        self.clock.advance(0.5)
        self.token()
        self.assertEqual(self.refreshes(), 2)
        self.clock.advance(1.5)
        self.token()
        self.assertEqual(self.refreshes(), 2)
        self.clock.advance(0.5)
        self.token()
        self.assertEqual(self.refreshes(), 3)
        self.assertIsNotNone(self.stored())
        del self.peer.documents["as.example/token"]
        self.clock.advance(4)
        self.assertEqual(self.token().token, f"access-2-{MARK}")

    def test_outage_after_expiry(self) -> None:
        """The AS down and the token expired: -31042 as-unavailable, the record kept."""
        self.login()
        self.peer.serve("as.example/token", 502)
        self.clock.advance(3600)
        self.problem(self.broker.token_for("local", "alpha"), AuthorizationUnavailable, "as-unavailable")
        self.assertIsNotNone(self.stored())

    def test_timeout_keeps_the_record(self) -> None:
        """An AS that never answers: as-timeout after requestTimeout, old token used while valid."""
        self.login()
        self.clock.advance(3300)
        self.peer.hold_tokens = True
        d = self.broker.token_for("local", "alpha")
        self.clock.advance(10)
        self.assertEqual(self.successResultOf(d).token, f"access-1-{MARK}")
        self.peer.held.clear()

    def test_expired_without_refresh_token(self) -> None:
        """No refresh token: usable until expiry, then expired."""
        self.peer.with_refresh = False
        self.login()
        self.clock.advance(3599)
        self.assertEqual(self.token().token, f"access-1-{MARK}")
        self.clock.advance(1)
        self.problem(self.broker.token_for("local", "alpha"), AuthorizationRequired, "expired")

    def test_invalid_client_dcr(self) -> None:
        """invalid_client on a refresh with a registered client: registration and record dropped, consent again."""
        self.login()
        self.clock.advance(3300)
        self.peer.token_replies.append((401, {"error": "invalid_client"}))
        self.problem(self.broker.token_for("local", "alpha"), AuthorizationRequired, "reauthorization-required")
        self.assertIsNone(self.stored())
        self.assertEqual(self.successResultOf(self.stores.clients.keys()), [])

    def test_invalid_client_preregistered(self) -> None:
        """invalid_client with a configured client: client-rejected in the status; the token is used while valid."""
        self.broker.add_backend("alpha", BACKEND_URL, OAuthAuth(client=OAuthClient(id="pre", secret=f"s-{MARK}")))
        self.login()
        self.clock.advance(3300)
        self.peer.token_replies.append((401, {"error": "invalid_client"}))
        self.assertEqual(self.token().token, f"access-1-{MARK}")
        self.assertEqual(self.broker.status("alpha")["reason"], "client-rejected")
        self.assertIsNotNone(self.stored())

    def test_refresh_authenticates_the_registered_client(self) -> None:
        """A registration that came with a secret: the refresh authenticates with it (Basic)."""
        self.peer.registration_reply = (201, {"client_id": "conf-1", "client_secret": f"cs-{MARK}"})
        self.login()
        self.clock.advance(3300)
        self.token()
        self.assertTrue(self.peer.token_headers[-1]["authorization"][0].startswith("Basic "))
        self.assertNotIn("client_id", self.peer.token_forms[-1])

    def test_send_resource_false_on_refresh(self) -> None:
        """sendResource: false: no resource on the refresh either; the record is still keyed by the PRM resource."""
        self.broker.add_backend("alpha", BACKEND_URL, OAuthAuth(sendResource=False))
        self.login()
        self.clock.advance(3300)
        self.token()
        self.assertNotIn("resource", self.peer.token_forms[-1])
        self.assertEqual(self.peer.token_forms[-1]["grant_type"], "refresh_token")
        self.assertIsNotNone(self.stored())

    # -- a backend's 401 -------------------------------------------------

    def test_rejected_refreshes_once(self) -> None:
        """A 401: one refresh and the new token; a 401 to that one: deleted, token-rejected."""
        self.login()
        first = self.token()
        second = self.successResultOf(self.broker.rejected(first, "alpha", [b'Bearer error="invalid_token"']))
        self.assertEqual(second.token, f"access-2-{MARK}")
        self.assertEqual(self.refreshes(), 1)
        self.problem(self.broker.rejected(second, "alpha", [b"Bearer"]), AuthorizationRequired, "token-rejected")
        self.assertIsNone(self.stored())
        self.assertEqual(self.refreshes(), 1)

    def test_rejected_stale_version(self) -> None:
        """A 401 to a token already replaced: the current one, without a refresh."""
        self.login()
        first = self.token()
        self.successResultOf(self.broker.rejected(first, "alpha", []))
        again = self.successResultOf(self.broker.rejected(first, "alpha", []))
        self.assertEqual(again.token, f"access-2-{MARK}")
        self.assertEqual(self.refreshes(), 1)

    def test_rejected_without_refresh_token(self) -> None:
        """A 401 and nothing to refresh with: deleted, token-rejected."""
        self.peer.with_refresh = False
        self.login()
        self.problem(self.broker.rejected(self.token(), "alpha", []), AuthorizationRequired, "token-rejected")
        self.assertIsNone(self.stored())

    def test_rejected_then_login_again(self) -> None:
        """After token-rejected, a new login gives the principal a token that can be refreshed after a 401 again."""
        self.peer.with_refresh = False
        self.login()
        self.failureResultOf(self.broker.rejected(self.token(), "alpha", []))
        self.peer.with_refresh = True
        self.login()
        bearer = self.token()
        self.assertEqual(self.successResultOf(self.broker.rejected(bearer, "alpha", [])).token, f"access-3-{MARK}")

    # -- the catalog principal -------------------------------------------

    def test_catalog_principal(self) -> None:
        """principal None: catalogAs, else the last principal used, else any holder, else -31040."""
        self.problem(self.broker.token_for(None, "alpha"), AuthorizationRequired, "authorization-required")
        self.login("jwt:bob")
        self.login("jwt:alice")
        fresh = OAuthBroker(self.clock, self.http, self.stores.tokens, self.stores.clients, self.stores.pending, settings())
        fresh.add_backend("alpha", BACKEND_URL, OAuthAuth())
        self.assertEqual(self.successResultOf(fresh.token_for(None, "alpha")).principal, "jwt:alice")
        self.successResultOf(fresh.token_for("jwt:bob", "alpha"))
        self.assertEqual(self.successResultOf(fresh.token_for(None, "alpha")).principal, "jwt:bob")
        fresh.add_backend("alpha", BACKEND_URL, OAuthAuth(catalogAs="jwt:alice"))
        self.assertEqual(self.successResultOf(fresh.token_for(None, "alpha")).principal, "jwt:alice")

    # -- client credentials ----------------------------------------------

    def test_client_credentials(self) -> None:
        """One machine token fetched on demand, reused, never stored; refreshed in the window."""
        self.broker.add_backend(
            "billing", BACKEND_URL, ClientCredentialsAuth(id="gw", secret=f"s-{MARK}", scopes=("billing.read",))
        )
        first = self.token("jwt:anyone", "billing")
        self.assertEqual(first.token, f"access-1-{MARK}")
        self.assertEqual(self.token(None, "billing"), first)
        [form] = self.peer.token_forms
        self.assertEqual(
            (form["grant_type"], form["scope"], form["resource"]), ("client_credentials", "billing.read", BACKEND_URL)
        )
        self.assertIn("authorization", self.peer.token_headers[0])
        self.assertEqual(self.successResultOf(self.stores.tokens.keys()), [])
        self.clock.advance(3300)
        self.assertEqual(self.token(None, "billing").token, f"access-2-{MARK}")
        self.assertEqual(self.broker.status("billing")["clientIdKind"], "clientCredentials")

    def test_client_credentials_token_endpoint(self) -> None:
        """With tokenEndpoint: no discovery at all, resource = the backend URL."""
        self.broker.add_backend(
            "billing", BACKEND_URL, ClientCredentialsAuth(id="gw", secret="s", tokenEndpoint="https://as.example/token")
        )
        self.token(None, "billing")
        self.assertEqual(self.peer.urls(), ["https://as.example/token"])

    def test_client_credentials_outage(self) -> None:
        """The AS down before any machine token: -31042 as-unavailable."""
        self.broker.add_backend("billing", BACKEND_URL, ClientCredentialsAuth(id="gw", secret="s"))
        self.peer.serve("as.example/token", 503)
        self.problem(self.broker.token_for(None, "billing"), AuthorizationUnavailable, "as-unavailable")

    def test_store_failure(self) -> None:
        """The store failing under a refresh: -31042 store-unavailable."""
        self.login()
        self.clock.advance(3300)

        def broken(*args: object) -> Deferred[int]:
            raise OSError(28, "No space left on device")

        self.stores.tokens.put = broken  # type: ignore[method-assign]
        self.problem(self.broker.token_for("local", "alpha"), AuthorizationUnavailable, "store-unavailable")

    def test_client_credentials_rejected(self) -> None:
        """A 401: a new machine token once; a 401 to that one: client-rejected."""
        self.broker.add_backend("billing", BACKEND_URL, ClientCredentialsAuth(id="gw", secret="s"))
        first = self.token(None, "billing")
        second = self.successResultOf(self.broker.rejected(first, "billing", []))
        self.assertNotEqual(second.token, first.token)
        self.problem(self.broker.rejected(second, "billing", []), AuthorizationUnavailable, "client-rejected")

    def test_client_credentials_refused(self) -> None:
        """The AS refuses the credentials: -31042 with its error."""
        self.broker.add_backend("billing", BACKEND_URL, ClientCredentialsAuth(id="gw", secret="s"))
        self.peer.token_replies.append((401, {"error": "invalid_client"}))
        problem = self.problem(self.broker.token_for(None, "billing"), AuthorizationUnavailable, "client-rejected")
        self.assertEqual(problem.data, {"error": "invalid_client"})

    # -- listing, logout, status -----------------------------------------

    def test_list_tokens(self) -> None:
        """Rows name principal, backend, issuer, resource, scopes, expiry, state; no secret."""
        self.login("jwt:alice")
        self.login("jwt:bob")
        rows = self.successResultOf(self.broker.list_tokens())
        self.assertEqual([row["principal"] for row in rows], ["jwt:alice", "jwt:bob"])
        self.assertEqual(
            rows[0],
            {
                "principal": "jwt:alice",
                "backend": "alpha",
                "issuer": ISSUER,
                "resource": BACKEND_URL,
                "scopes": ["read"],
                "expires_at": NOW + 3600,
                "refreshable": True,
                "state": "valid",
            },
        )
        self.assertEqual(len(self.successResultOf(self.broker.list_tokens("jwt:bob"))), 1)
        self.assertEqual(self.successResultOf(self.broker.list_tokens(backend="other")), [])
        self.assertNotIn(MARK, repr(rows))
        self.clock.advance(3300)
        self.assertEqual(self.successResultOf(self.broker.list_tokens("jwt:bob"))[0]["state"], "refresh-due")

    def test_logout_revokes(self) -> None:
        """logout with revoke: the refresh token is revoked at the AS, the record deleted."""
        self.login()
        result = self.successResultOf(self.broker.logout("local", "alpha", revoke=True))
        self.assertEqual(result, {"principal": "local", "backend": "alpha", "removed": True, "revoked": True})
        self.assertEqual(
            self.peer.revocations,
            [{"token": f"refresh-1-{MARK}", "token_type_hint": "refresh_token", "client_id": "dcr-client-1"}],
        )
        self.assertIsNone(self.stored())
        self.problem(self.broker.token_for("local", "alpha"), AuthorizationRequired, "authorization-required")
        self.assertFalse(self.successResultOf(self.broker.logout("local", "alpha"))["removed"])

    def test_logout_without_revoke(self) -> None:
        """logout alone contacts no endpoint."""
        self.login()
        self.successResultOf(self.broker.logout("local", "alpha"))
        self.assertEqual(self.peer.revocations, [])

    def test_status(self) -> None:
        """Status: issuer, resource, client kind, authorized principals, state."""
        self.assertEqual(self.broker.status("alpha")["state"], "undiscovered")
        self.failureResultOf(self.broker.token_for("local", "alpha"))
        self.assertEqual(
            self.broker.status("alpha"),
            {
                "issuer": ISSUER,
                "resource": BACKEND_URL,
                "clientIdKind": "dcr",
                "principalsAuthorized": 0,
                "state": "needs-authorization",
                "reason": None,
            },
        )
        self.login()
        self.assertEqual(self.broker.status("alpha")["principalsAuthorized"], 1)
        self.assertEqual(self.broker.status("alpha")["state"], "ready")

    # -- secrets ---------------------------------------------------------

    def test_no_secret_anywhere(self) -> None:
        """Through consent, refresh, a 401, failures and logout, nothing the AS issued (all carrying
        MARK), no code, verifier or state reaches a log event, an exception message or a repr."""
        self.broker.add_backend("billing", BACKEND_URL, ClientCredentialsAuth(id="gw", secret=f"cs-{MARK}"))
        self.peer.registration_reply = (201, {"client_id": "conf-1", "client_secret": f"dcr-{MARK}"})
        seen: list[str] = []
        with capturedLogs() as events:
            started = self.successResultOf(self.broker.begin("jwt:alice", "alpha", LOOPBACK))
            callback = self.peer.authorize(started.url)
            seen.append(repr(self.successResultOf(self.broker.complete(callback, LOOPBACK))))
            seen.append(self.failureResultOf(self.broker.complete(callback, LOOPBACK)).value.message)
            bearer = self.token("jwt:alice")
            seen.append(repr(bearer))
            self.clock.advance(3300)
            seen.append(repr(self.token("jwt:alice")))
            seen.append(repr(self.successResultOf(self.broker.rejected(self.token("jwt:alice"), "alpha", []))))
            seen.append(repr(self.token(None, "billing")))
            self.peer.token_replies.append((400, {"error": "invalid_grant", "error_description": f"bad {MARK}"}))
            self.clock.advance(3600)
            failure = self.failureResultOf(self.broker.token_for("jwt:alice", "alpha"))
            seen.append(str(failure.value))
            seen.append(repr(failure.value.data))
            seen.append(repr(self.successResultOf(self.broker.list_tokens())))
            seen.append(repr(self.broker.status("alpha")))
            self.login("jwt:alice")
            seen.append(repr(self.successResultOf(self.broker.logout("jwt:alice", "alpha", revoke=True))))
        seen.extend(formatEvent(event) for event in events)
        seen.extend(repr(event) for event in events)
        text = "\n".join(seen)
        self.assertIn(started.state_digest, text)
        secrets = [MARK, callback["state"], callback["code"]]
        secrets.extend(form["code_verifier"] for form in self.peer.token_forms if "code_verifier" in form)
        for secret in secrets:
            self.assertNotIn(secret, text)
        self.assertGreater(len(events), 3)


class StepUpTests(SynchronousTestCase):
    """§7.4: a backend's 403 insufficient_scope, for a principal's token and for a machine token."""

    INSUFFICIENT = [b'Bearer error="insufficient_scope", scope="read write", error_description="write is needed"']

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.peer = FakeAS()
        self.http = fake_http(self.clock, self.peer)
        self.stores = memory_stores(self.clock)
        self.broker = OAuthBroker(self.clock, self.http, self.stores.tokens, self.stores.clients, self.stores.pending, settings())
        self.broker.add_backend("alpha", BACKEND_URL, OAuthAuth())

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def login(self, principal: str = "jwt:alice", scopes: tuple[str, ...] = ()) -> Authorized:
        started = self.successResultOf(self.broker.begin(principal, "alpha", LOOPBACK, scopes))
        return self.successResultOf(self.broker.complete(self.peer.authorize(started.url), LOOPBACK))

    def token(self, principal: str | None = "jwt:alice", backend: str = "alpha") -> Bearer:
        return self.successResultOf(self.broker.token_for(principal, backend))

    def forbidden(self, bearer: Bearer, tool: str = "write_note", backend: str = "alpha", challenge: Any = None) -> Any:
        return self.broker.forbidden(bearer, backend, self.INSUFFICIENT if challenge is None else challenge, tool)

    def problem(self, d: Deferred[Any], kind: type[OAuthProblem], reason: str) -> OAuthProblem:
        f = self.failureResultOf(d, kind)
        self.assertEqual(f.value.reason, reason, f.value.message)
        return f.value  # type: ignore[no-any-return]

    def test_insufficient_scope_asks_for_the_union(self) -> None:
        """-31040 insufficient-scope with the union (granted, configured, asked) and the command
        with the missing --scope; the next authorization asks for that union, and gets it."""
        self.broker.add_backend("alpha", BACKEND_URL, OAuthAuth(scopes=("profile",)))
        self.assertEqual(self.login().scopes, ("read", "profile"))
        problem = self.problem(self.forbidden(self.token()), AuthorizationRequired, "insufficient-scope")
        self.assertEqual(problem.data, {"login": "twisted-mcp login alpha --scope write", "scopes": ["read", "profile", "write"]})
        self.assertEqual(
            problem.message,
            "backend 'alpha' needs more scopes for write_note (read profile write): "
            "run `twisted-mcp login alpha --scope write` (or ask the operator to run it with `--as jwt:alice`)",
        )
        self.assertEqual(problem.code, -31040)
        # The token is kept: the principal's other calls go on with it.
        self.assertEqual(self.token().token, f"access-1-{MARK}")
        # The next login (without --scope) asks for the union; the CLI's --scope is added.
        started = self.successResultOf(self.broker.begin("jwt:alice", "alpha", LOOPBACK, ["admin"]))
        self.assertEqual(started.scopes, ("read", "profile", "write", "admin"))
        self.assertIn("scope=read+profile+write+admin", started.url)
        done = self.successResultOf(self.broker.complete(self.peer.authorize(started.url), LOOPBACK))
        self.assertEqual(done.scopes, ("read", "profile", "write", "admin"))
        self.assertNotIn(MARK, problem.message + repr(problem.data))

    def test_union_is_per_principal_and_backend(self) -> None:
        """Alice's step-up does not widen Bob's authorization."""
        self.login("jwt:alice")
        self.login("jwt:bob")
        self.failureResultOf(self.forbidden(self.token("jwt:alice")), AuthorizationRequired)
        self.assertEqual(self.broker.step_up_scopes("jwt:alice", "alpha"), ("read", "write"))
        self.assertEqual(self.successResultOf(self.broker.begin("jwt:bob", "alpha", LOOPBACK)).scopes, ("read",))
        self.assertEqual(self.successResultOf(self.broker.begin("jwt:alice", "alpha", LOOPBACK)).scopes, ("read", "write"))

    def test_union_grows_across_step_ups(self) -> None:
        """A second challenge for another scope keeps the first one's scopes too."""
        self.login()
        self.failureResultOf(self.forbidden(self.token()), AuthorizationRequired)
        problem = self.problem(
            self.forbidden(self.token(), "delete_note", challenge=[b'Bearer error="insufficient_scope", scope="delete"']),
            AuthorizationRequired,
            "insufficient-scope",
        )
        self.assertEqual(problem.data["scopes"], ["read", "write", "delete"])
        self.assertEqual(problem.data["login"], "twisted-mcp login alpha --scope write --scope delete")

    def test_limit(self) -> None:
        """Two step-ups per principal, backend and tool within authorizationTimeout; the third is -31041."""
        self.login()
        for _ in range(2):
            self.problem(self.forbidden(self.token()), AuthorizationRequired, "insufficient-scope")
            self.login()  # granted, but the backend still refuses
        problem = self.problem(self.forbidden(self.token()), AuthorizationFailed, "step-up-limit")
        self.assertEqual(problem.code, -31041)
        self.assertEqual(
            problem.message, "backend 'alpha' still refuses after 2 authorizations with more scopes (it asked for: read write)"
        )
        self.assertEqual(problem.data, {"scopes": ["read", "write"]})
        # Another tool, another principal: their own counts.
        self.problem(self.forbidden(self.token(), "other_tool"), AuthorizationRequired, "insufficient-scope")
        self.login("jwt:bob")
        self.problem(self.forbidden(self.token("jwt:bob")), AuthorizationRequired, "insufficient-scope")
        # Past authorizationTimeout (600 s), step-ups count from zero again.
        self.clock.advance(599)
        self.problem(self.forbidden(self.token()), AuthorizationFailed, "step-up-limit")
        self.clock.advance(2)
        self.problem(self.forbidden(self.token()), AuthorizationRequired, "insufficient-scope")

    def test_refusals_of_one_token_are_one_step_up(self) -> None:
        """Calls at once, or a retry before the new consent, refused with the same token: counted once, never the limit."""
        self.login()
        token = self.token()
        for _ in range(5):
            self.problem(self.forbidden(token), AuthorizationRequired, "insufficient-scope")
        self.login()
        self.problem(self.forbidden(self.token()), AuthorizationRequired, "insufficient-scope")
        self.login()
        self.problem(self.forbidden(self.token()), AuthorizationFailed, "step-up-limit")

    def test_replaced_token_is_sent_again(self) -> None:
        """A 403 to a token a new login replaced meanwhile: the new token, nothing counted."""
        self.login()
        old = self.token()
        self.login(scopes=("write",))
        fresh = self.successResultOf(self.forbidden(old))
        self.assertEqual(fresh, self.token())
        self.assertEqual(self.broker.step_up_scopes("jwt:alice", "alpha"), ())

    def test_without_a_record(self) -> None:
        """The record was deleted meanwhile: still a step-up, asking for what the backend named."""
        self.login()
        bearer = self.token()
        self.successResultOf(self.broker.logout("jwt:alice", "alpha"))
        problem = self.problem(self.forbidden(bearer), AuthorizationRequired, "insufficient-scope")
        self.assertEqual(problem.data["scopes"], ["read", "write"])
        self.assertEqual(problem.data["login"], "twisted-mcp login alpha --scope read --scope write")

    def test_scopes_shown_safely(self) -> None:
        """A scope a shell would read is quoted in the command; what is not a scope is dropped."""
        self.login()
        challenge = [b'Bearer error="insufficient_scope", scope="x;reboot \xe9t\xe9 $(id)"']
        problem = self.problem(self.forbidden(self.token(), challenge=challenge), AuthorizationRequired, "insufficient-scope")
        self.assertEqual(problem.data["scopes"], ["read", "x;reboot", "$(id)"])
        self.assertEqual(problem.data["login"], "twisted-mcp login alpha --scope 'x;reboot' --scope '$(id)'")

    def test_local_principal_message(self) -> None:
        """For the local principal, no --as hint."""
        self.login("local")
        problem = self.problem(self.forbidden(self.token("local")), AuthorizationRequired, "insufficient-scope")
        self.assertNotIn("--as", problem.message)

    # -- client credentials ----------------------------------------------

    def machine(self, **changes: Any) -> None:
        auth = ClientCredentialsAuth(id="gw", secret=f"s-{MARK}", scopes=("billing.read",), **changes)
        self.broker.add_backend("billing", BACKEND_URL, auth)

    def test_client_credentials_never_go_to_another_authorization_server(self) -> None:
        """The server's metadata names a new authorization server: its secret is not sent there."""
        self.machine()
        self.token(None, "billing")
        posts = len(self.peer.token_forms)
        self.peer.serve_json(
            "mcp.example/.well-known/oauth-protected-resource/mcp",
            {"resource": BACKEND_URL, "authorization_servers": ["https://evil.example"]},
        )
        self.peer.serve_json(
            "evil.example/.well-known/oauth-authorization-server",
            {**server_metadata(), "issuer": "https://evil.example", "token_endpoint": "https://evil.example/token"},
        )
        self.clock.advance(3600)  # the token expired, the metadata cache too
        problem = self.problem(self.broker.token_for(None, "billing"), AuthorizationUnavailable, "client-issuer-changed")
        self.assertIn("https://evil.example", problem.message)
        self.assertEqual(len(self.peer.token_forms), posts)
        self.assertNotIn("https://evil.example/token", self.peer.urls())

    def test_client_credentials_step_up(self) -> None:
        """A 403: one new machine token asked with the union, kept for the next fetches; a 403 to it is -31041."""
        self.machine()
        first = self.token(None, "billing")
        challenge = [b'Bearer error="insufficient_scope", scope="billing.write"']
        second = self.successResultOf(self.forbidden(first, "pay", "billing", challenge))
        self.assertNotEqual(second.token, first.token)
        self.assertEqual(self.token(None, "billing"), second)
        self.assertEqual(self.peer.token_forms[-1]["scope"], "billing.read billing.write")
        self.assertEqual(self.peer.token_forms[-1]["grant_type"], "client_credentials")
        # The refresh in the window asks for the union again.
        self.clock.advance(3300)
        third = self.token(None, "billing")
        self.assertEqual(self.peer.token_forms[-1]["scope"], "billing.read billing.write")
        # A 403 to a token a step-up did not produce: once more.
        fourth = self.successResultOf(self.forbidden(third, "pay", "billing", challenge))
        problem = self.problem(self.forbidden(fourth, "pay", "billing", challenge), AuthorizationFailed, "step-up-limit")
        self.assertEqual(problem.data, {"scopes": ["billing.read", "billing.write"]})
        self.assertEqual(len(self.peer.token_forms), 4)
        self.assertNotIn(MARK, problem.message)

    def test_client_credentials_step_up_refused(self) -> None:
        """The AS refuses the union (invalid_scope): -31041 with its error; the old token and scopes stay."""
        self.machine()
        first = self.token(None, "billing")
        self.peer.token_replies.append((400, {"error": "invalid_scope"}))
        problem = self.problem(
            self.forbidden(first, "pay", "billing", [b'Bearer error="insufficient_scope", scope="billing.admin"']),
            AuthorizationFailed,
            "token-request-failed",
        )
        self.assertEqual(problem.data, {"scopes": ["billing.read", "billing.admin"], "error": "invalid_scope"})
        self.assertEqual(self.token(None, "billing"), first)
        self.clock.advance(3300)
        self.token(None, "billing")
        self.assertEqual(self.peer.token_forms[-1]["scope"], "billing.read")

    def test_client_credentials_step_up_outage(self) -> None:
        """The AS down during the step-up: -31042 as-unavailable."""
        self.machine()
        first = self.token(None, "billing")
        self.peer.serve("as.example/token", 503)
        self.problem(self.forbidden(first, "pay", "billing"), AuthorizationUnavailable, "as-unavailable")

    def test_no_secret_in_step_ups(self) -> None:
        """Step-ups, the limit, and a machine step-up log and say no token or secret."""
        self.machine()
        seen: list[str] = []
        with capturedLogs() as events:
            self.login()
            for _ in range(3):
                failure = self.failureResultOf(self.forbidden(self.token()))
                seen.extend([str(failure.value), repr(failure.value.data)])
                self.login()  # granted again, and still refused
            machine = self.successResultOf(self.forbidden(self.token(None, "billing"), "pay", "billing"))
            seen.append(repr(machine))
            failure = self.failureResultOf(self.forbidden(machine, "pay", "billing"))
            seen.extend([str(failure.value), repr(failure.value.data)])
        seen.extend(formatEvent(event) for event in events)
        text = "\n".join(seen)
        self.assertIn("step-up 2 asks for read write", text)
        self.assertIn("still refuses", text)
        self.assertNotIn(MARK, text)

    def test_client_credentials_reload_forgets_the_union(self) -> None:
        """The backend configured again (a reload): its machine tokens are asked with the configured scopes again."""
        self.machine()
        first = self.token(None, "billing")
        self.successResultOf(
            self.forbidden(first, "pay", "billing", [b'Bearer error="insufficient_scope", scope="billing.write"'])
        )
        self.machine()
        self.clock.advance(3300)
        self.token(None, "billing")
        self.assertEqual(self.peer.token_forms[-1]["scope"], "billing.read")
