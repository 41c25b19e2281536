"""
Tests for L{twisted_mcp.backends.oauth.registration}: §4.1's order
(pre-registered, CIMD, DCR, none), the CIMD document, dynamic registration
against the fake AS (over L{StubTreq}) kept and reused per (issuer, redirect
set), and a rejected registration forgotten.
"""

from __future__ import annotations

import json

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.metadata import parse_server_metadata
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable
from twisted_mcp.backends.oauth.registration import (
    Registrar,
    choose_auth_method,
    client_metadata_document,
    client_metadata_url,
    redirect_digest,
)
from twisted_mcp.config.models import OAuthAuth, OAuthClient

from .oauth_fakes import ISSUER, MARK, FakeAS, fake_http, memory_stores, server_metadata, settings

LOOPBACK = "http://127.0.0.1:5000/oauth/callback"


def metadata(**changes: object):  # type: ignore[no-untyped-def]
    return parse_server_metadata(json.dumps(server_metadata(**changes)).encode(), ISSUER)


class RegistrationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.peer = FakeAS()
        self.stores = memory_stores(self.clock)
        self.registrar = Registrar(self.clock, fake_http(self.clock, self.peer), self.stores.clients, settings())

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_dcr(self) -> None:
        """Without a client or CIMD: a public native client is registered for the loopback redirect."""
        record = self.successResultOf(self.registrar.client_for("alpha", OAuthAuth(), metadata(), [LOOPBACK]))
        self.assertEqual((record.client_id, record.kind, record.auth_method), ("dcr-client-1", "dcr", "none"))
        self.assertIsNone(record.client_secret)
        self.assertEqual(record.redirect_uris, (LOOPBACK,))
        self.assertEqual(
            self.peer.registrations,
            [
                {
                    "client_name": "twisted-mcp",
                    "redirect_uris": [LOOPBACK],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "none",
                    "application_type": "native",
                }
            ],
        )

    def test_dcr_web(self) -> None:
        """A public redirect makes the registration a web one."""
        self.successResultOf(
            self.registrar.client_for("alpha", OAuthAuth(), metadata(), ["https://gw.example/oauth/callback"])
        )
        self.assertEqual(self.peer.registrations[0]["application_type"], "web")

    def test_dcr_reused(self) -> None:
        """A registration is kept per (issuer, redirect set) and reused; another redirect set registers anew."""
        first = self.successResultOf(self.registrar.client_for("alpha", OAuthAuth(), metadata(), [LOOPBACK]))
        again = self.successResultOf(self.registrar.client_for("beta", OAuthAuth(), metadata(), [LOOPBACK]))
        self.assertEqual(again.client_id, first.client_id)
        self.assertEqual(len(self.peer.registrations), 1)
        stored = self.successResultOf(self.stores.clients.get((ISSUER, redirect_digest([LOOPBACK]))))
        self.assertEqual(stored[0].client_id, "dcr-client-1")
        other = self.successResultOf(
            self.registrar.client_for("alpha", OAuthAuth(), metadata(), ["http://127.0.0.1:6000/oauth/callback"])
        )
        self.assertEqual(other.client_id, "dcr-client-2")

    def test_dcr_with_secret(self) -> None:
        """A secret the AS returns is kept (sealed), with its auth method; never in the repr."""
        self.peer.registration_reply = (201, {"client_id": "c1", "client_secret": f"sec-{MARK}"})
        record = self.successResultOf(self.registrar.client_for("alpha", OAuthAuth(), metadata(), [LOOPBACK]))
        self.assertEqual((record.client_secret, record.auth_method), (f"sec-{MARK}", "client_secret_basic"))
        self.assertNotIn(MARK, repr(record))

    def test_rejected_registration_forgotten(self) -> None:
        """invalid_client on a DCR client: forgotten, the next flow registers again."""
        record = self.successResultOf(self.registrar.client_for("alpha", OAuthAuth(), metadata(), [LOOPBACK]))
        self.assertTrue(self.successResultOf(self.registrar.rejected(ISSUER, record)))
        again = self.successResultOf(self.registrar.client_for("alpha", OAuthAuth(), metadata(), [LOOPBACK]))
        self.assertEqual(again.client_id, "dcr-client-2")

    def test_registration_refused(self) -> None:
        """A 4xx with an RFC 7591 error: registration-refused carrying the error."""
        self.peer.registration_reply = (400, {"error": "invalid_redirect_uri", "error_description": "no loopback"})
        f = self.failureResultOf(
            self.registrar.client_for("alpha", OAuthAuth(), metadata(), [LOOPBACK]), AuthorizationUnavailable
        )
        self.assertEqual(f.value.reason, "registration-refused")
        self.assertEqual(f.value.data, {"error": "invalid_redirect_uri"})
        self.assertIn("invalid_redirect_uri (no loopback)", f.value.message)

    def test_registration_without_client_id(self) -> None:
        """An answer without a client_id is refused."""
        self.peer.registration_reply = (201, {"client_name": "x"})
        f = self.failureResultOf(
            self.registrar.client_for("alpha", OAuthAuth(), metadata(), [LOOPBACK]), AuthorizationUnavailable
        )
        self.assertEqual(f.value.reason, "registration-refused")

    def test_no_client_identity(self) -> None:
        """No registration endpoint, no CIMD: no-client-identity naming the config key."""
        f = self.failureResultOf(
            self.registrar.client_for("alpha", OAuthAuth(), metadata(registration_endpoint=None), [LOOPBACK]),
            AuthorizationUnavailable,
        )
        self.assertEqual(f.value.reason, "no-client-identity")
        self.assertIn("mcpServers.alpha.auth.oauth.client", f.value.message)

    def test_preregistered_first(self) -> None:
        """A configured client is used as is, even when DCR and CIMD are possible."""
        auth = OAuthAuth(client=OAuthClient(id="pre", secret=f"s-{MARK}"))
        registrar = Registrar(self.clock, self.registrar.http, self.stores.clients, settings(publicUrl="https://gw.example"))
        record = self.successResultOf(
            registrar.client_for("alpha", auth, metadata(client_id_metadata_document_supported=True), [LOOPBACK])
        )
        self.assertEqual((record.client_id, record.kind, record.auth_method), ("pre", "preregistered", "client_secret_basic"))
        self.assertEqual(self.peer.registrations, [])

    def test_preregistered_issuer_binding(self) -> None:
        """A pre-registered client without a pinned issuer is bound to the first; another is client-issuer-changed."""
        auth = OAuthAuth(client=OAuthClient(id="pre"))
        self.successResultOf(self.registrar.client_for("alpha", auth, metadata(), [LOOPBACK]))
        other = attrs.evolve(metadata(), issuer="https://other.example")
        f = self.failureResultOf(self.registrar.client_for("alpha", auth, other, [LOOPBACK]), AuthorizationUnavailable)
        self.assertEqual(f.value.reason, "client-issuer-changed")
        pinned = OAuthAuth(client=OAuthClient(id="pre"), issuer="https://other.example")
        self.successResultOf(self.registrar.client_for("alpha", pinned, other, [LOOPBACK]))

    def test_preregistered_not_redone(self) -> None:
        """invalid_client on a pre-registered client cannot be redone."""
        record = self.successResultOf(
            self.registrar.client_for("alpha", OAuthAuth(client=OAuthClient(id="pre")), metadata(), [LOOPBACK])
        )
        self.assertFalse(self.successResultOf(self.registrar.rejected(ISSUER, record)))

    def test_cimd(self) -> None:
        """CIMD when the AS supports it and there is an https public URL: client_id is the document URL."""
        registrar = Registrar(self.clock, self.registrar.http, self.stores.clients, settings(publicUrl="https://gw.example"))
        record = self.successResultOf(
            registrar.client_for("alpha", OAuthAuth(), metadata(client_id_metadata_document_supported=True), [LOOPBACK])
        )
        self.assertEqual((record.client_id, record.kind, record.auth_method), ("https://gw.example/oauth/client.json", "cimd", "none"))
        self.assertEqual(self.peer.registrations, [])

    def test_cimd_needs_support_and_url(self) -> None:
        """Without AS support, or without a public URL, DCR is used."""
        registrar = Registrar(self.clock, self.registrar.http, self.stores.clients, settings(publicUrl="https://gw.example"))
        self.assertEqual(self.successResultOf(registrar.client_for("alpha", OAuthAuth(), metadata(), [LOOPBACK])).kind, "dcr")
        record = self.successResultOf(
            self.registrar.client_for("alpha", OAuthAuth(), metadata(client_id_metadata_document_supported=True), [LOOPBACK])
        )
        self.assertEqual(record.kind, "dcr")

    def test_cimd_document(self) -> None:
        """The document names itself, the public and loopback callbacks, and a public web client."""
        document = client_metadata_document(settings(publicUrl="https://gw.example/", clientName="gw at example"))
        self.assertEqual(
            document,
            {
                "client_id": "https://gw.example/oauth/client.json",
                "client_name": "gw at example",
                "redirect_uris": [
                    "https://gw.example/oauth/callback",
                    "http://127.0.0.1/oauth/callback",
                    "http://[::1]/oauth/callback",
                ],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "application_type": "web",
            },
        )
        self.assertIsNone(client_metadata_document(settings()))

    def test_client_metadata_url(self) -> None:
        """clientMetadataUrl wins; it must be https with a path."""
        self.assertEqual(
            client_metadata_url(settings(clientMetadataUrl="https://conformance-test.local/client-metadata.json")),
            "https://conformance-test.local/client-metadata.json",
        )
        self.assertIsNone(client_metadata_url(settings(clientMetadataUrl="https://x.example/")))
        self.assertIsNone(client_metadata_url(settings(publicUrl="http://127.0.0.1:8080")))

    def test_choose_auth_method(self) -> None:
        """Configured, else none without a secret, else basic unless only post is offered."""
        self.assertEqual(choose_auth_method("s", "client_secret_post", None), "client_secret_post")
        self.assertEqual(choose_auth_method(None, None, ["client_secret_basic"]), "none")
        self.assertEqual(choose_auth_method("s", None, None), "client_secret_basic")
        self.assertEqual(choose_auth_method("s", None, ["client_secret_post"]), "client_secret_post")
        self.assertEqual(choose_auth_method("s", None, ["client_secret_post", "client_secret_basic"]), "client_secret_basic")

    def test_redirect_digest_sorted(self) -> None:
        """The digest ignores order and duplicates."""
        self.assertEqual(redirect_digest(["b", "a", "a"]), redirect_digest(["a", "b"]))
        self.assertNotEqual(redirect_digest(["a"]), redirect_digest(["a", "b"]))
