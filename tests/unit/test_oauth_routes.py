"""
The HTTP front's C{/oauth/*} routes (L{twisted_mcp.frontends.oauth_routes},
design §4.4, §10.1) over a real L{McpSite} on a L{StringTransport}: the
client metadata document, connect links, the callback page, their headers
and escaping, the front's Host check; and which configurations get a connect
route at all (L{consent_for}).
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.backends.oauth.broker import Authorized
from twisted_mcp.backends.oauth.problems import AuthorizationFailed, AuthorizationUnavailable
from twisted_mcp.config import GatewaySettings
from twisted_mcp.dispatch.authorization import Consent, announce, consent_for
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.frontends.http import http_site
from twisted_mcp.frontends.http_config import HttpSettings

from .fakes import FakeBackend
from .oauth_fakes import MARK, settings
from .test_http_front import Connection, Response
from .test_oauth_consent import PUBLIC, FakeBroker


class RoutesBroker(FakeBroker):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.completions: list[tuple[dict[str, str], str, Deferred[Authorized]]] = []

    def complete(self, params: Mapping[str, str], redirect_uri: str) -> Deferred[Authorized]:
        d: Deferred[Authorized] = Deferred()
        self.completions.append((dict(params), redirect_uri, d))
        return d


class Browser(Connection):
    def get(self, path: str, host: str = "127.0.0.1:8080", method: str = "GET") -> None:
        self.channel.dataReceived(f"{method} {path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())


class RoutesCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        backend = FakeBackend("alpha", ["echo"])
        backend._first_discovery_done()
        self.gateway = Gateway([backend], "__", self.clock, 5.0)
        self.gateway.start()
        self.broker = RoutesBroker(self.clock)
        self.consent = Consent(self.broker, self.clock, PUBLIC, 30.0, connect=True)  # type: ignore[arg-type]
        self.gateway.consent = self.consent
        self.site = http_site(self.gateway, self.clock, GatewaySettings(), HttpSettings(), "http:tcp:8080:interface=127.0.0.1")

    def open(self, path: str, **kwargs: Any) -> tuple[Browser, Response]:
        browser = Browser(self.site)
        browser.get(path, **kwargs)
        return browser, browser.response()

    def assertPage(self, r: Response, status: int, *words: str) -> str:
        self.assertEqual(r.status, status)
        self.assertEqual(r.headers["content-type"], "text/html; charset=utf-8")
        self.assertEqual(r.headers["cache-control"], "no-store")
        self.assertEqual(r.headers["referrer-policy"], "no-referrer")
        self.assertIn("default-src 'none'", r.headers["content-security-policy"])
        text = r.body.decode()
        self.assertNotIn("<script", text)
        for w in words:
            self.assertIn(w, text)
        return text


class DocumentTests(RoutesCase):
    def test_theClientMetadataDocument(self) -> None:
        _, r = self.open("/oauth/client.json")
        self.assertEqual((r.status, r.headers["content-type"], r.headers["cache-control"]), (200, "application/json", "max-age=3600"))
        document = r.json()
        self.assertEqual(document["client_id"], PUBLIC + "/oauth/client.json")
        self.assertEqual(document["redirect_uris"][0], PUBLIC + "/oauth/callback")
        self.assertEqual(document["token_endpoint_auth_method"], "none")

    def test_aLoopbackHttpPublicUrlStillServesOne(self) -> None:
        self.broker.settings = settings(publicUrl="http://127.0.0.1:8080")
        self.gateway.consent = Consent(self.broker, self.clock, "http://127.0.0.1:8080", 30.0, connect=True)  # type: ignore[arg-type]
        self.site = http_site(self.gateway, self.clock, GatewaySettings(), HttpSettings(), "http:tcp:8080:interface=127.0.0.1")
        document = self.open("/oauth/client.json")[1].json()
        self.assertEqual(document["client_id"], "http://127.0.0.1:8080/oauth/client.json")
        self.assertEqual(document["redirect_uris"], ["http://127.0.0.1:8080/oauth/callback"])

    def test_theFrontsHostCheckApplies(self) -> None:
        _, r = self.open("/oauth/client.json", host="evil.example")
        self.assertEqual(r.status, 421)

    def test_onlyGet(self) -> None:
        _, r = self.open("/oauth/callback", method="DELETE")
        self.assertPage(r, 405)
        self.assertEqual(r.headers["allow"], "GET")

    def test_withoutAConnectRouteOnlyTheDocument(self) -> None:
        self.consent.connect = False
        link = self.consent.links.add("local", "alpha", "https://as.example/authorize", 600)
        self.assertPage(self.open(f"/oauth/connect/{link}")[1], 404, "twisted-mcp login")
        self.assertPage(self.open("/oauth/callback?state=s&code=c")[1], 404)
        self.assertEqual(self.broker.completions, [])
        self.assertEqual(self.open("/oauth/client.json")[1].status, 200)

    def test_withoutPublicUrlNoRoutes(self) -> None:
        self.gateway.consent = None
        site = http_site(self.gateway, self.clock, GatewaySettings(), HttpSettings(), "http:tcp:8080:interface=127.0.0.1")
        browser = Browser(site)
        browser.get("/oauth/client.json")
        r = browser.response()
        self.assertEqual(r.status, 404)
        self.assertIn(b"the MCP endpoint is /mcp", r.body)


class ConnectTests(RoutesCase):
    def test_aLinkRedirectsToTheAuthorizationServerOnce(self) -> None:
        url = f"https://as.example/authorize?state={MARK}"
        link = self.consent.links.add("local", "alpha", url, 600)
        with capturedLogs() as events:
            _, r = self.open(f"/oauth/connect/{link}")
        self.assertEqual((r.status, r.headers["location"]), (302, url))
        self.assertEqual(r.headers["cache-control"], "no-store")
        self.assertEqual(r.headers["referrer-policy"], "no-referrer")
        self.assertNotIn(MARK, "".join(formatEvent(e) for e in events))
        self.assertPage(self.open(f"/oauth/connect/{link}")[1], 404, "already used")

    def test_headSpendsNoLink(self) -> None:
        """A link checker's HEAD does not use up the single-use link."""
        url = f"https://as.example/authorize?state={MARK}"
        link = self.consent.links.add("local", "alpha", url, 600)
        _, r = self.open(f"/oauth/connect/{link}", method="HEAD")
        self.assertEqual(r.status, 200)
        _, r = self.open(f"/oauth/connect/{link}")
        self.assertEqual((r.status, r.headers["location"]), (302, url))

    def test_unknownAndExpiredLinks(self) -> None:
        link = self.consent.links.add("local", "alpha", "https://as.example/authorize", 10)
        self.clock.advance(11)
        for path in (f"/oauth/connect/{link}", "/oauth/connect/nope", "/oauth/connect/", "/oauth/connect/a/b", "/oauth/other"):
            self.assertEqual(self.open(path)[1].status, 404, path)


class CallbackTests(RoutesCase):
    def callback(self, query: str) -> tuple[Browser, Deferred[Authorized]]:
        browser = Browser(self.site)
        browser.get(f"/oauth/callback?{query}")
        self.assertEqual(browser.transport.value(), b"")  # answered once the broker is done
        (params, redirect_uri, d) = self.broker.completions[-1]
        self.assertEqual(redirect_uri, PUBLIC + "/oauth/callback")
        self.params = params
        return browser, d

    def test_aCompletedAuthorizationSaysWhoIsAuthorized(self) -> None:
        browser, d = self.callback(f"code=c{MARK}&state=s{MARK}&iss=https%3A%2F%2Fas.example")
        self.assertEqual(self.params, {"code": f"c{MARK}", "state": f"s{MARK}", "iss": "https://as.example"})
        d.callback(Authorized("config:<b>bob</b>", "alpha", "https://as.example", ("read",), None, True))
        text = self.assertPage(browser.response(), 200, "alpha is now authorized for config:&lt;b&gt;bob&lt;/b&gt;; you can close this tab")
        self.assertNotIn("<b>", text)
        self.assertNotIn(MARK, text)

    def test_aForgedStateIs400StateMismatch(self) -> None:
        browser, d = self.callback(f"code=c{MARK}&state=forged")
        d.errback(AuthorizationFailed("state-mismatch", "no authorization is waiting for this callback (state 1234): start it again"))
        text = self.assertPage(browser.response(), 400, "state-mismatch", "start it again")
        self.assertNotIn(MARK, text)
        self.assertNotIn("forged", text)

    def test_anIssMismatchNeverShowsTheServersDescription(self) -> None:
        browser, d = self.callback("error=access_denied&error_description=click+evil.example&state=s")
        problem = AuthorizationFailed("iss-mismatch", "backend 'alpha': the callback does not come from https://as.example")
        problem.description = "click evil.example"  # type: ignore[attr-defined]
        d.errback(problem)
        text = self.assertPage(browser.response(), 400, "iss-mismatch")
        self.assertNotIn("evil.example", text)

    def test_aRefusedConsentShowsItsDescriptionToThePerson(self) -> None:
        browser, d = self.callback("error=access_denied&error_description=%3Cscript%3Ex&state=s")
        problem = AuthorizationFailed("consent-refused", "backend 'alpha': the authorization server refused: access_denied", error="access_denied")
        problem.description = "<script>x"  # type: ignore[attr-defined]
        d.errback(problem)
        self.assertPage(browser.response(), 400, "consent-refused", "access_denied", "&lt;script&gt;x")

    def test_anUnavailableServerIs503(self) -> None:
        browser, d = self.callback("code=c&state=s")
        d.errback(AuthorizationUnavailable("as-unavailable", "the authorization callback: the AS did not answer"))
        self.assertPage(browser.response(), 503, "as-unavailable")

    def test_aRepeatedParameterIsRefusedUnread(self) -> None:
        self.assertPage(self.open("/oauth/callback?state=a&state=b&code=c")[1], 400, "repeats")
        self.assertEqual(self.broker.completions, [])

    def test_aBrowserThatLeftIsNotAnswered(self) -> None:
        browser, d = self.callback("code=c&state=s")
        browser.close()
        d.callback(Authorized("local", "alpha", "https://as.example", (), None, False))
        self.assertEqual(browser.transport.value(), b"")


class Config:
    def __init__(self, identity: Any = None, **oauth: Any) -> None:
        self.identity = identity
        self.oauth = settings(**oauth)


class ConsentForTests(SynchronousTestCase):
    def consent(self, config: Config) -> Consent | None:
        return consent_for(config, FakeBroker(Clock()), Clock())  # type: ignore[arg-type]

    def test_noPublicUrlNoRoute(self) -> None:
        self.assertIsNone(self.consent(Config()))
        self.assertIsNone(consent_for(Config(publicUrl=PUBLIC), None, Clock()))  # type: ignore[arg-type]

    def test_whoGetsAConnectPage(self) -> None:
        cases = [
            (None, None, True),  # one local principal: nobody to phish
            (None, "none", True),
            ("identities", "none", True),  # written explicitly (and warned about)
            ("identities", None, False),
            ("identities", "oidc", False),  # not built yet
            (None, "oidc", False),
        ]
        for identity, check, connect in cases:
            consent = self.consent(Config(identity, publicUrl=PUBLIC, browserCheck=check))
            assert consent is not None
            self.assertEqual(consent.connect, connect, (identity, check))
            self.assertEqual(consent.callback_url, PUBLIC + "/oauth/callback")

    def test_aWarningAtStartForBrowserCheckNoneWithIdentities(self) -> None:
        config = Config("identities", publicUrl=PUBLIC, browserCheck="none")
        with capturedLogs() as events:
            announce(self.consent(config), config)  # type: ignore[arg-type]
        (event,) = events
        self.assertEqual(event["log_level"].name, "warn")
        self.assertIn("oauth.browserCheck is none", formatEvent(event))
        config = Config(publicUrl=PUBLIC)
        with capturedLogs() as events:
            announce(self.consent(config), config)  # type: ignore[arg-type]
        self.assertEqual(events, [])
        config = Config("identities", publicUrl=PUBLIC)
        with capturedLogs() as events:
            announce(self.consent(config), config)  # type: ignore[arg-type]
        self.assertIn("twisted-mcp login", formatEvent(events[0]))

