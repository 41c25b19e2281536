"""
Tests for L{twisted_mcp.backends.oauth.discovery} asking a backend for its
challenge: when neither well-known URL has the protected resource metadata
and no 401 has been seen yet, a C{ping} without a token is POSTed to the
backend and its 401's C{resource_metadata} is followed (the suite's
C{auth/metadata-var3}: metadata at a custom path, named only in the
challenge).
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.challenge import bearer_challenge
from twisted_mcp.backends.oauth.discovery import Discovery
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable

from .oauth_fakes import ASM_URL, BACKEND_URL, ISSUER, PRM_URL, FakeAS, fake_http, resource_metadata, server_metadata

PRM_ROOT = "https://mcp.example/.well-known/oauth-protected-resource"
CUSTOM = "https://mcp.example/custom/metadata/location.json"
AS2 = "https://as2.example"


class AskForChallengeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.peer = FakeAS()
        del self.peer.documents["mcp.example/.well-known/oauth-protected-resource/mcp"]
        self.peer.serve_json("mcp.example/custom/metadata/location.json", resource_metadata())
        self.discovery = Discovery(self.clock, fake_http(self.clock, self.peer))

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def challenge_at_backend(self, value: str, status: int = 401) -> None:
        self.peer.serve("mcp.example/mcp", status, b'{"error":"invalid_token"}', headers={"WWW-Authenticate": value})

    def problem(self, reason: str) -> AuthorizationUnavailable:
        f = self.failureResultOf(self.discovery.discover("alpha", BACKEND_URL), AuthorizationUnavailable)
        self.assertEqual(f.value.reason, reason, f.value.message)
        return f.value

    def test_follows_the_challenge_of_a_request_without_token(self) -> None:
        """Both well-known URLs 404: the backend's 401 names the metadata; its scope is the challenge scope."""
        self.challenge_at_backend(f'Bearer resource_metadata="{CUSTOM}", scope="mcp:basic"')
        found = self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(found.resource.resource, BACKEND_URL)
        self.assertEqual(found.server.issuer, ISSUER)
        self.assertEqual(found.challenge_scope, ("mcp:basic",))
        self.assertEqual(self.peer.urls(), [PRM_URL, PRM_ROOT, BACKEND_URL, CUSTOM, ASM_URL])

    def test_the_request_is_a_ping_without_token(self) -> None:
        """What is sent to ask: a JSON-RPC ping, POSTed, with no Authorization header."""
        self.challenge_at_backend(f'Bearer resource_metadata="{CUSTOM}"')
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        (asked,) = [r for r in self.peer.requests if r[1] == BACKEND_URL]
        method, _, headers, body = asked
        self.assertEqual(method, "POST")
        self.assertNotIn("authorization", headers)
        self.assertEqual(headers["content-type"], ["application/json"])
        message = json.loads(body)
        self.assertEqual((message["jsonrpc"], message["method"]), ("2.0", "ping"))
        self.assertIn("id", message)

    def test_cached_for_the_same_challenge(self) -> None:
        """A later 401 naming the same metadata is answered from the cache: nothing is fetched again."""
        self.challenge_at_backend(f'Bearer resource_metadata="{CUSTOM}"')
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.peer.requests.clear()
        again = bearer_challenge([f'Bearer resource_metadata="{CUSTOM}"'.encode()])
        found = self.successResultOf(self.discovery.discover("alpha", BACKEND_URL, challenge=again))
        self.assertEqual(found.resource.resource, BACKEND_URL)
        self.assertEqual(self.peer.requests, [])

    def test_not_asked_when_a_challenge_is_given(self) -> None:
        """A challenge without resource_metadata: the well-known URLs only; the backend is not asked again."""
        self.challenge_at_backend(f'Bearer resource_metadata="{CUSTOM}"')
        given = bearer_challenge([b'Bearer scope="read"'])
        f = self.failureResultOf(self.discovery.discover("alpha", BACKEND_URL, challenge=given), AuthorizationUnavailable)
        self.assertEqual(f.value.reason, "no-resource-metadata")
        self.assertEqual(self.peer.urls(), [PRM_URL, PRM_ROOT])

    def test_not_asked_when_well_known_answers(self) -> None:
        """The path-specific well-known URL answers: the backend is not sent anything."""
        self.peer.serve_json("mcp.example/.well-known/oauth-protected-resource/mcp", resource_metadata())
        self.challenge_at_backend(f'Bearer resource_metadata="{CUSTOM}"')
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(self.peer.urls(), [PRM_URL, ASM_URL])

    def test_answer_other_than_401(self) -> None:
        """A backend that answers the ping (200) names nothing: no-resource-metadata, as before."""
        self.challenge_at_backend(f'Bearer resource_metadata="{CUSTOM}"', status=200)
        self.problem("no-resource-metadata")
        self.assertEqual(self.peer.urls(), [PRM_URL, PRM_ROOT, BACKEND_URL])

    def test_401_without_resource_metadata(self) -> None:
        """A 401 whose challenge names no metadata: no-resource-metadata."""
        self.challenge_at_backend('Bearer scope="read"')
        self.problem("no-resource-metadata")
        self.assertEqual(self.peer.urls(), [PRM_URL, PRM_ROOT, BACKEND_URL])

    def test_401_naming_another_origin(self) -> None:
        """The challenge's metadata on another origin is not fetched: metadata-origin."""
        self.challenge_at_backend('Bearer resource_metadata="https://evil.example/prm"')
        problem = self.problem("metadata-origin")
        self.assertIn("https://evil.example", problem.message)
        self.assertEqual(self.peer.urls(), [PRM_URL, PRM_ROOT, BACKEND_URL])

    def test_failure_is_cached(self) -> None:
        """A failed ask is remembered like any discovery failure: no second ping within 30 s."""
        self.challenge_at_backend('Bearer scope="read"')
        self.problem("no-resource-metadata")
        self.peer.requests.clear()
        self.problem("no-resource-metadata")
        self.assertEqual(self.peer.requests, [])


class ExpireTests(SynchronousTestCase):
    """L{Discovery.expire}: the next discovery fetches afresh (a resource that moved to another
    authorization server is seen at once), while the last success stays for outages."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.peer = FakeAS()
        self.discovery = Discovery(self.clock, fake_http(self.clock, self.peer))
        self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.peer.serve_json("as2.example/.well-known/oauth-authorization-server", server_metadata(issuer=AS2))
        self.peer.serve_json(
            "mcp.example/.well-known/oauth-protected-resource/mcp", resource_metadata(authorization_servers=[AS2])
        )
        self.peer.requests.clear()

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cached_without_expire(self) -> None:
        found = self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(found.server.issuer, ISSUER)
        self.assertEqual(self.peer.requests, [])

    def test_expire_fetches_afresh(self) -> None:
        self.discovery.expire("alpha")
        found = self.successResultOf(self.discovery.discover("alpha", BACKEND_URL))
        self.assertEqual(found.server.issuer, AS2)
        self.assertEqual(self.peer.urls(), [PRM_URL, "https://as2.example/.well-known/oauth-authorization-server"])

    def test_expire_keeps_last_success(self) -> None:
        self.discovery.expire("alpha")
        cached = self.discovery.cached("alpha")
        assert cached is not None
        self.assertEqual(cached.server.issuer, ISSUER)

    def test_expire_unknown_backend(self) -> None:
        self.discovery.expire("nobody")
        self.assertIsNone(self.discovery.cached("nobody"))
