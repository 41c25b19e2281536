"""
Tests for L{twisted_mcp.backends.oauth.fetch}: one bounded request to an
authorization server.  Redirects come back as they are, no cookie is kept,
the body is capped, and the timeout covers the headers and the body.  Over
treq's L{StubTreq} (a real twisted.web resource in memory) or the fake
response of L{http_fakes}, with a L{Clock}.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_mcp.backends.oauth.fetch import AuthHttp, Fetched, cookieless_client, origin_of
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable

from .http_fakes import FakeResponse


class Recording(Resource):
    """Answers every request with a fixed status, headers and body, and
    records what it received."""

    isLeaf = True

    def __init__(self, status: int = 200, body: bytes = b"{}", headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__()
        self.status = status
        self.body = body
        self.headers = headers or {b"Content-Type": b"application/json"}
        self.received: list[dict[str, Any]] = []
        self.hang = False
        self.held: list[Request] = []

    def render(self, request: Request) -> Any:
        self.received.append(
            {
                "method": request.method,
                "path": request.uri,
                "headers": {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()},
                "body": request.content.read(),
            }
        )
        if self.hang:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


class Hanging:
    """A treq-like client whose answers the test fires."""

    def __init__(self) -> None:
        self.requests: list[Deferred[Any]] = []
        self.cancelled = 0

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        d: Deferred[Any] = Deferred(cancel)
        self.requests.append(d)
        return d


class FetchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Recording()
        self.fetch = AuthHttp(self.clock, 10.0, 1000, http=StubTreq(self.resource))

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_get_json(self) -> None:
        """A GET asks for JSON and returns status, headers and the whole body."""
        self.resource.body = b'{"issuer": "https://as.example"}'
        got = self.successResultOf(self.fetch.get("https://as.example/.well-known/oauth-authorization-server"))
        self.assertIsInstance(got, Fetched)
        self.assertEqual(got.status, 200)
        self.assertEqual(got.body, b'{"issuer": "https://as.example"}')
        self.assertEqual(got.header("content-type"), "application/json")
        [sent] = self.resource.received
        self.assertEqual(sent["method"], b"GET")
        self.assertEqual(sent["headers"][b"accept"], [b"application/json"])

    def test_post_form(self) -> None:
        """A form POST is url-encoded, with the extra headers given."""
        self.successResultOf(
            self.fetch.post_form(
                "https://as.example/token", {"grant_type": "refresh_token", "x": "a b&c"}, {b"Authorization": b"Basic eA=="}
            )
        )
        [sent] = self.resource.received
        self.assertEqual(sent["method"], b"POST")
        self.assertEqual(sent["body"], b"grant_type=refresh_token&x=a+b%26c")
        self.assertEqual(sent["headers"][b"content-type"], [b"application/x-www-form-urlencoded"])
        self.assertEqual(sent["headers"][b"authorization"], [b"Basic eA=="])
        self.assertEqual(sent["headers"][b"accept"], [b"application/json"])

    def test_post_json(self) -> None:
        """A JSON POST sends the object as JSON."""
        self.successResultOf(self.fetch.post_json("https://as.example/register", {"client_name": "gw"}))
        [sent] = self.resource.received
        self.assertEqual(json.loads(sent["body"]), {"client_name": "gw"})
        self.assertEqual(sent["headers"][b"content-type"], [b"application/json"])

    def test_redirect_not_followed(self) -> None:
        """A 3xx comes back as it is; its Location is never requested."""
        self.resource.status = 302
        self.resource.headers = {b"Location": b"http://169.254.169.254/latest/meta-data"}
        got = self.successResultOf(self.fetch.get("https://as.example/.well-known/oauth-authorization-server"))
        self.assertEqual(got.status, 302)
        self.assertEqual(len(self.resource.received), 1)

    def test_no_cookies(self) -> None:
        """With the gateway's own client, a cookie one answer sets is not
        sent with the next request."""
        self.resource.headers = {b"Set-Cookie": b"sid=abc; Path=/"}
        fetch = AuthHttp(self.clock, 10.0, 1000, http=cookieless_client(RequestTraversalAgent(self.resource)))
        self.successResultOf(fetch.get("https://as.example/a"))
        self.successResultOf(fetch.get("https://as.example/b"))
        self.assertNotIn(b"cookie", self.resource.received[1]["headers"])

    def test_stubtreq_would_send_the_cookie(self) -> None:
        """The control for L{test_no_cookies}: a default treq jar replays it."""
        self.resource.headers = {b"Set-Cookie": b"sid=abc; Path=/"}
        self.successResultOf(self.fetch.get("https://as.example/a"))
        self.successResultOf(self.fetch.get("https://as.example/b"))
        self.assertIn(b"cookie", self.resource.received[1]["headers"])

    def test_real_client(self) -> None:
        """Without an injected client, the gateway builds its own over a
        connection pool of its own, closed by L{AuthHttp.close}."""
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        real = AuthHttp(reactor, 10.0, 1000)
        d = real.get("https://127.0.0.1:8443/")
        [(host, port, _, timeout, _)] = reactor.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 8443, 10.0))
        d.cancel()
        self.failureResultOf(d)
        self.successResultOf(real.close())

    def test_body_over_cap(self) -> None:
        """A body larger than the cap is metadata-invalid."""
        self.resource.body = b"x" * 1001
        f = self.failureResultOf(self.fetch.get("https://as.example/big"), AuthorizationUnavailable)
        self.assertEqual(f.value.reason, "metadata-invalid")
        self.assertIn("https://as.example", f.value.message)
        self.assertNotIn("/big", f.value.message)

    def test_post_answer_over_cap(self) -> None:
        """An over-large answer to a POST (a token endpoint's) is as-unavailable, not metadata."""
        self.resource.body = b"x" * 1001
        f = self.failureResultOf(self.fetch.post_form("https://as.example/token", {"grant_type": "x"}), AuthorizationUnavailable)
        self.assertEqual(f.value.reason, "as-unavailable")
        self.assertEqual(f.value.message, "the authorization server at https://as.example answered a POST with more than 1000 bytes")

    def test_body_at_cap(self) -> None:
        """A body of exactly the cap is read."""
        self.resource.body = b"x" * 1000
        self.assertEqual(len(self.successResultOf(self.fetch.get("https://as.example/")).body), 1000)

    def test_streamed_body_over_cap_stops_reading(self) -> None:
        """A body without a length that grows past the cap stops being read."""
        http = Hanging()
        fetch = AuthHttp(self.clock, 10.0, 10, http=http)
        d = fetch.get("https://as.example/")
        response = FakeResponse(200)
        http.requests[0].callback(response)
        response.push(b"12345")
        self.assertNoResult(d)
        response.push(b"678901")
        self.assertEqual(self.failureResultOf(d, AuthorizationUnavailable).value.reason, "metadata-invalid")
        self.assertEqual(response.stopped, 1)

    def test_connection_refused(self) -> None:
        """A connection error is as-unavailable, naming the origin only."""

        class Refusing:
            def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
                return fail(ConnectionRefusedError("127.0.0.1", 9))

        fetch = AuthHttp(self.clock, 10.0, 1000, http=Refusing())
        f = self.failureResultOf(fetch.post_form("https://as.example:8443/token?x=1", {}), AuthorizationUnavailable)
        self.assertEqual(f.value.reason, "as-unavailable")
        self.assertIn("https://as.example:8443", f.value.message)
        self.assertNotIn("token", f.value.message)

    def test_timeout_waiting_for_headers(self) -> None:
        """No headers within the request timeout: as-timeout, the request cancelled."""
        http = Hanging()
        fetch = AuthHttp(self.clock, 10.0, 1000, http=http)
        d = fetch.get("https://as.example/")
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        f = self.failureResultOf(d, AuthorizationUnavailable)
        self.assertEqual(f.value.reason, "as-timeout")
        self.assertIn("10 s", f.value.message)
        self.assertEqual(http.cancelled, 1)

    def test_timeout_over_stubtreq(self) -> None:
        """An AS that takes the request and never answers ends in as-timeout."""
        self.resource.hang = True
        d = self.fetch.get("https://as.example/")
        self.clock.advance(10)
        self.assertEqual(self.failureResultOf(d, AuthorizationUnavailable).value.reason, "as-timeout")

    def test_timeout_covers_the_body(self) -> None:
        """Headers in time and a body that stalls: the same timeout stops the read."""
        http = Hanging()
        fetch = AuthHttp(self.clock, 10.0, 1000, http=http)
        d = fetch.get("https://as.example/")
        self.clock.advance(6)
        response = FakeResponse(200)
        http.requests[0].callback(response)
        response.push(b'{"a":')
        self.clock.advance(3.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.failureResultOf(d, AuthorizationUnavailable).value.reason, "as-timeout")
        self.assertEqual(response.stopped, 1)

    def test_body_broken(self) -> None:
        """A body whose connection drops is as-unavailable."""
        from .http_fakes import broken

        http = Hanging()
        fetch = AuthHttp(self.clock, 10.0, 1000, http=http)
        d = fetch.get("https://as.example/")
        response = FakeResponse(200)
        http.requests[0].callback(response)
        response.end(broken())
        self.assertEqual(self.failureResultOf(d, AuthorizationUnavailable).value.reason, "as-unavailable")

    def test_cancel(self) -> None:
        """Cancelling the request cancels the timer and the request."""
        http = Hanging()
        fetch = AuthHttp(self.clock, 10.0, 1000, http=http)
        d = fetch.get("https://as.example/")
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(http.cancelled, 1)

    def test_origin_of(self) -> None:
        """Only scheme, host and port of a URL are ever shown."""
        self.assertEqual(origin_of("https://user:pw@as.example/p?q=1"), "https://as.example")
        self.assertEqual(origin_of("http://[::1]:8080/x"), "http://[::1]:8080")
