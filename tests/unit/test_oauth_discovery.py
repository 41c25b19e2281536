"""
Tests for L{twisted_mcp.backends.oauth.discovery}: §3's chain against the
fake resource and authorization server (over L{StubTreq}), its failures by
C{reason}, and its cache on a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.challenge import bearer_challenge
from twisted_mcp.backends.oauth.discovery import Discovered, Discovery
from twisted_mcp.backends.oauth.fetch import Fetched
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable

from .oauth_fakes import ASM_URL, BACKEND_URL, ISSUER, PRM_URL, FakeAS, fake_http, resource_metadata, server_metadata

PRM_ROOT = "https://mcp.example/.well-known/oauth-protected-resource"


class DiscoveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.peer = FakeAS()
        self.discovery = Discovery(self.clock, fake_http(self.clock, self.peer))

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def problem(self, reason: str, **kwargs: object) -> AuthorizationUnavailable:
        f = self.failureResultOf(self.discovery.discover("alpha", BACKEND_URL, **kwargs), AuthorizationUnavailable)  # type: ignore[arg-type]
        self.assertEqual(f.value.reason, reason, f.value.message)
        return f.value

    def test_well_known_chain(self) -> None:
        """Without a challenge: the path-specific PRM, then the ASM of its first AS."""
        found = self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertIsInstance(found, Discovered)
        self.assertEqual(found.resource.resource, BACKEND_URL)
        self.assertEqual(found.server.issuer, ISSUER)
        self.assertEqual(found.server.token_endpoint, "https://as.example/token")
        self.assertIsNone(found.challenge_scope)
        self.assertEqual(self.peer.urls(), [PRM_URL, ASM_URL])

    def test_root_prm_after_404(self) -> None:
        """A 404 at the path-specific URL: the root one is tried."""
        del self.peer.documents["mcp.example/.well-known/oauth-protected-resource/mcp"]
        self.peer.serve_json("mcp.example/.well-known/oauth-protected-resource", resource_metadata())
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(self.peer.urls(), [PRM_URL, PRM_ROOT, ASM_URL])

    def test_challenge_resource_metadata(self) -> None:
        """The challenge's resource_metadata is fetched instead of the well-known URLs; its scope is kept."""
        self.peer.serve_json("mcp.example/custom/prm", resource_metadata())
        challenge = bearer_challenge([b'Bearer resource_metadata="https://mcp.example/custom/prm", scope="read write"'])
        found = self.successResultOf(self.discovery.discover("alpha", BACKEND_URL, challenge=challenge))
        self.assertEqual(found.challenge_scope, ("read", "write"))
        self.assertEqual(self.peer.urls(), ["https://mcp.example/custom/prm", ASM_URL])

    def test_metadata_origin(self) -> None:
        """resource_metadata on another origin is not fetched."""
        challenge = bearer_challenge([b'Bearer resource_metadata="https://evil.example/prm"'])
        problem = self.problem("metadata-origin", challenge=challenge)
        self.assertIn("https://evil.example", problem.message)
        self.assertEqual(self.peer.requests, [])

    def test_both_404(self) -> None:
        """No PRM at either well-known URL, and the backend names none when asked: no-resource-metadata."""
        del self.peer.documents["mcp.example/.well-known/oauth-protected-resource/mcp"]
        self.problem("no-resource-metadata")
        self.assertEqual(self.peer.urls(), [PRM_URL, PRM_ROOT, BACKEND_URL])

    def test_prm_unavailable(self) -> None:
        """5xx and 429 end discovery without trying the next URL."""
        for status in (503, 429):
            self.discovery.forget("alpha")
            self.peer.requests.clear()
            self.peer.serve("mcp.example/.well-known/oauth-protected-resource/mcp", status)
            self.problem("metadata-unavailable")
            self.assertEqual(self.peer.urls(), [PRM_URL])

    def test_redirect_not_followed(self) -> None:
        """A 3xx is a failure naming the Location's origin; nothing more is fetched."""
        self.peer.serve(
            "mcp.example/.well-known/oauth-protected-resource/mcp", 302, headers={"Location": "http://10.0.0.1/secret/path"}
        )
        problem = self.problem("metadata-unavailable")
        self.assertIn("302", problem.message)
        self.assertIn("http://10.0.0.1", problem.message)
        self.assertNotIn("/secret/path", problem.message)
        self.assertEqual(self.peer.urls(), [PRM_URL])

    def test_prm_invalid(self) -> None:
        """The PRM's own validation applies (resource mismatch)."""
        self.peer.serve_json(
            "mcp.example/.well-known/oauth-protected-resource/mcp", resource_metadata(resource="https://other.example/mcp")
        )
        self.problem("resource-mismatch")

    def test_pinned_issuer(self) -> None:
        """A pinned issuer among the ASes is used; one not listed is refused, no AS contacted."""
        self.peer.serve_json(
            "mcp.example/.well-known/oauth-protected-resource/mcp",
            resource_metadata(authorization_servers=["https://first.example", ISSUER]),
        )
        found = self.successResultOf(self.discovery.discover("alpha", BACKEND_URL, issuer=ISSUER))
        self.assertEqual(found.server.issuer, ISSUER)
        self.discovery.forget("alpha")
        self.peer.requests.clear()
        self.problem("issuer-not-allowed", issuer="https://pinned.example")
        self.assertEqual(self.peer.urls(), [PRM_URL])

    def test_asm_order_with_path(self) -> None:
        """An issuer with a path: the three ASM URLs in order, until one answers."""
        issuer = "https://as.example/t1"
        self.peer.serve_json(
            "mcp.example/.well-known/oauth-protected-resource/mcp", resource_metadata(authorization_servers=[issuer])
        )
        self.peer.serve_json("as.example/t1/.well-known/openid-configuration", server_metadata(issuer=issuer))
        found = self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(found.server.issuer, issuer)
        self.assertEqual(
            self.peer.urls()[1:],
            [
                "https://as.example/.well-known/oauth-authorization-server/t1",
                "https://as.example/.well-known/openid-configuration/t1",
                "https://as.example/t1/.well-known/openid-configuration",
            ],
        )

    def test_no_asm(self) -> None:
        """No ASM at any URL: no-authorization-server-metadata."""
        del self.peer.documents["as.example/.well-known/oauth-authorization-server"]
        self.problem("no-authorization-server-metadata")

    def test_asm_unavailable(self) -> None:
        """A 5xx from an ASM URL: metadata-unavailable."""
        self.peer.serve("as.example/.well-known/oauth-authorization-server", 500)
        self.problem("metadata-unavailable")

    def test_issuer_mismatch(self) -> None:
        """The ASM's issuer must be identical."""
        self.peer.serve_json("as.example/.well-known/oauth-authorization-server", server_metadata(issuer="https://as.example/"))
        self.problem("issuer-mismatch")

    def test_cached_60_s_by_default(self) -> None:
        """A success is reused for 60 s without requests, then fetched again."""
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.clock.advance(59)
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(len(self.peer.requests), 2)
        self.clock.advance(1)
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(len(self.peer.requests), 4)

    def test_cache_control(self) -> None:
        """max-age lengthens the cache (the smallest of the answers' counts), at most a day."""
        self.peer.serve_json(
            "mcp.example/.well-known/oauth-protected-resource/mcp", resource_metadata(), headers={"Cache-Control": "max-age=600"}
        )
        self.peer.serve_json(
            "as.example/.well-known/oauth-authorization-server", server_metadata(), headers={"Cache-Control": "public, max-age=999999"}
        )
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.clock.advance(599)
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(len(self.peer.requests), 2)
        self.clock.advance(1)
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(len(self.peer.requests), 4)

    def test_failure_cached_30_s(self) -> None:
        """A failure is remembered for 30 s, then tried again."""
        self.peer.serve("mcp.example/.well-known/oauth-protected-resource/mcp", 503)
        self.problem("metadata-unavailable")
        self.clock.advance(29)
        self.problem("metadata-unavailable")
        self.assertEqual(len(self.peer.requests), 1)
        self.clock.advance(1)
        self.peer.serve_json("mcp.example/.well-known/oauth-protected-resource/mcp", resource_metadata())
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))

    def test_new_resource_metadata_rediscovers(self) -> None:
        """A challenge naming another resource_metadata than the cached one bypasses the cache."""
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.peer.serve_json("mcp.example/other/prm", resource_metadata())
        challenge = bearer_challenge([b'Bearer resource_metadata="https://mcp.example/other/prm"'])
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL, challenge=challenge))
        self.assertEqual(self.peer.urls()[2:], ["https://mcp.example/other/prm", ASM_URL])
        self.assertEqual(self.discovery.cached("alpha").resource.resource, BACKEND_URL)  # type: ignore[union-attr]

    def test_single_flight(self) -> None:
        """Concurrent discoveries of one backend share one chain of requests."""
        http = fake_http(self.clock, self.peer)
        discovery = Discovery(self.clock, http)
        held: list[tuple[str, Deferred[Fetched]]] = []
        real_get = http.get

        def get(url: str) -> Deferred[Fetched]:
            later: Deferred[Fetched] = Deferred()
            held.append((url, later))
            return later

        http.get = get  # type: ignore[method-assign]
        first = discovery.discover("alpha", BACKEND_URL)
        second = discovery.discover("alpha", BACKEND_URL)
        while held:
            url, later = held.pop(0)
            real_get(url).chainDeferred(later)
        self.assertIs(self.successResultOf(first), self.successResultOf(second))
        self.assertEqual(self.peer.urls(), [PRM_URL, ASM_URL])
