"""
Tests for bearer tokens on the Streamable HTTP front
(L{twisted_mcp.frontends.bearer}): every request's C{Authorization: Bearer}
token verified by the C{identity.jwt} rules, the 401 challenge, the RFC 9728
metadata document, sessions bound to the token's principal, and the token
kept out of logs, audit records, errors and what backends receive.  Over a
real L{McpSite} on a L{StringTransport}, with a L{Clock}, keys and tokens
made here with PyJWT.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import GatewaySettings
from twisted_mcp.config._check import ConfigError
from twisted_mcp.config.loader import build
from twisted_mcp.dispatch.gateway import Gateway
from twisted_mcp.frontends.bearer import bearer_token
from twisted_mcp.frontends.http import http_site
from twisted_mcp.frontends.http_config import HttpSettings, parse_http
from twisted_mcp.mcp import errors
from twisted_mcp.policy.identity import Authenticator, IdentityConfig, IdentityError, JwtConfig
from twisted_mcp.policy.peers import ConnectionIdentity
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import parse_policy

from .fakes import FakeBackend
from .test_http_front import INIT, Connection, Response, call
from .test_identity import b64, claims, unsigned
from .test_policy import Recorder

NOW = 1_700_000_000.0
SECRET = "bearer-s3cret-bearer-s3cret-bearer!"
ISSUER = "https://idp.example.com/"
AUDIENCE = "twisted-mcp"
METADATA = "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"


def token(secret: str = SECRET, alg: str = "HS256", **overrides: Any) -> str:
    payload = claims(**{"iss": ISSUER, "aud": AUDIENCE, **overrides})
    return jwt.encode(payload, secret, algorithm=alg)


class BearerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.backend = FakeBackend("alpha", ["echo", "delete_all"])
        self.backend._first_discovery_done()
        self.gateway = Gateway([self.backend], "__", self.clock, 5.0)
        problems: list[str] = []
        rules = parse_policy({"roles": {"dev": {"allow": ["alpha__echo"]}, "admin": {"allow": ["*"]}}}, None, problems, {"alpha"})
        self.assertEqual(problems, [])
        config = IdentityConfig(jwt=JwtConfig(tokenEnv="MCP_TOKEN", algorithms=("HS256",), secret=SECRET, issuer=ISSUER, audience=AUDIENCE))
        with capturedLogs():  # the stdio token is not set: logged, and irrelevant to HTTP
            self.auth = Authenticator(config, {}, self.clock)
            self.auth.start()
        self.audit = Recorder()
        identity = ConnectionIdentity(config, self.auth.authenticate)
        self.gateway.policy = Policy(rules, "__", self.clock, identity.resolve, self.audit)
        self.gateway.start()
        self.make_site(HttpSettings(authorizationServers=(ISSUER,)))

    def make_site(self, settings: HttpSettings, verify: Any = "auth") -> None:
        verify = self.auth.verify_bearer if verify == "auth" else verify
        self.site = http_site(self.gateway, self.clock, GatewaySettings(), settings, "http:tcp:8080:interface=127.0.0.1", None, verify)

    def exchange(self, body: Any = None, bearer: str | None = None, method: str = "POST", **headers: str | None) -> Response:
        c = Connection(self.site)
        h: dict[str, str | None] = {k.replace("_", "-"): v for k, v in headers.items()}
        if bearer is not None:
            h["authorization"] = f"Bearer {bearer}"
        c.send(method, body, h)
        return c.response()

    def initialize(self, bearer: str) -> str:
        r = self.exchange(INIT, bearer)
        self.assertEqual(r.status, 200, r.body)
        return r.headers["mcp-session-id"]

    def call(self, sid: str, bearer: str, rid: int, name: str) -> Connection:
        c = Connection(self.site)
        message = call(rid)
        message["params"]["name"] = name
        c.send(body=message, headers={"mcp-session-id": sid, "authorization": f"Bearer {bearer}"})
        return c

    def assertRefused(self, r: Response, secret: str | None, *words: str) -> None:
        """A 401 with the challenge, a JSON-RPC error, and the token nowhere in it."""
        self.assertEqual(r.status, 401)
        challenge = r.headers["www-authenticate"]
        self.assertTrue(challenge.startswith("Bearer "), challenge)
        self.assertIn(f'resource_metadata="{METADATA}"', challenge)
        body = r.json()
        self.assertEqual(body["error"]["code"], errors.AUTHENTICATION_FAILED)
        for w in words:
            self.assertIn(w, body["error"]["message"])
        if secret is not None:
            self.assertIn('error="invalid_token"', challenge)
            for part in [secret, *secret.split(".")]:
                if len(part) >= 8:
                    self.assertNotIn(part, challenge)
                    self.assertNotIn(part, r.body.decode())

    # -- served as the token's principal ------------------------------------------

    def test_aValidTokenIsServedAsItsPrincipalWithItsRoles(self) -> None:
        dev = token(sub="alice", roles=["dev"])
        sid = self.initialize(dev)
        r = self.exchange({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, dev, mcp_session_id=sid)
        self.assertEqual([t["name"] for t in r.json()["result"]["tools"]], ["alpha__echo"])
        r = self.call(sid, dev, 2, "alpha__delete_all").response()
        self.assertEqual(r.json()["error"]["code"], errors.ACCESS_DENIED)
        c = self.call(sid, dev, 3, "alpha__echo")
        (backend_call,) = self.backend.calls
        backend_call.deferred.callback({"content": []})
        self.assertEqual(c.response().json()["result"], {"content": []})
        # The backend got the call, never the token.
        self.assertNotIn(dev.split(".")[2], json.dumps(backend_call.params, default=str))
        allowed = [r for r in self.audit.records if r["method"] == "tools/call" and r["decision"] == "allow"]
        self.assertEqual({(r["principal"], tuple(r["roles"])) for r in allowed}, {("alice", ("dev",))})

    def test_anotherRoleSeesWhatItsRoleAllows(self) -> None:
        admin = token(sub="root", roles=["admin"])
        sid = self.initialize(admin)
        r = self.exchange({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, admin, mcp_session_id=sid)
        self.assertEqual(sorted(t["name"] for t in r.json()["result"]["tools"]), ["alpha__delete_all", "alpha__echo"])

    # -- refused -------------------------------------------------------------------

    def test_noTokenIs401WithTheChallengeAndNoSession(self) -> None:
        with capturedLogs() as logs:
            r = self.exchange(INIT)
        self.assertRefused(r, None, "no bearer token")
        self.assertEqual(r.headers["www-authenticate"], f'Bearer resource_metadata="{METADATA}"')
        self.assertEqual(len(self.site.resource_.table), 0)
        self.assertIn("refused (401)", "\n".join(formatEvent(e) for e in logs))
        # Another scheme is no bearer token either.
        r = self.exchange(INIT, authorization="Basic YWxpY2U6c2VjcmV0")
        self.assertRefused(r, None, "no bearer token")

    def test_badTokensAre401AndNeverEchoedLoggedOrAudited(self) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        bad = {
            "expired": (token(exp=NOW - 120, iat=NOW - 3600), "expired"),
            "wrong audience": (token(aud="someone-else"), "audience"),
            "wrong issuer": (token(iss="https://evil.example.com/"), "issued by"),
            "alg none": (unsigned({"alg": "none", "typ": "JWT"}, claims(iss=ISSUER, aud=AUDIENCE)), "alg: none"),
            "bad signature": (token(secret="another-secret-another-secret-another"), "signature"),
            "altered payload": (_altered(token(roles=["dev"])), "signature"),
            "unexpected algorithm": (jwt.encode(claims(iss=ISSUER, aud=AUDIENCE), other, algorithm="RS256"), "not allowed"),
            "not a JWT": ("abcdefgh.ijklmnop.qrstuvwx", "well-formed"),
            "not yet valid": (token(nbf=NOW + 3600), "not valid before"),
        }
        with capturedLogs() as logs:
            for name, (bad_token, words) in bad.items():
                r = self.exchange(INIT, bad_token)
                with self.subTest(name):
                    self.assertRefused(r, bad_token, words)
        self.assertEqual(len(self.site.resource_.table), 0)
        self.assertEqual(self.backend.calls, [])
        text = "\n".join(formatEvent(e) for e in logs) + json.dumps(self.audit.records, default=str)
        for bad_token, _ in bad.values():
            for part in [bad_token, *bad_token.split(".")]:
                if len(part) >= 8:
                    self.assertNotIn(part, text)
        denied = [r for r in self.audit.records if r["decision"] == "deny"]
        self.assertEqual(len(denied), len(bad))
        self.assertEqual({r["error_code"] for r in denied}, {errors.AUTHENTICATION_FAILED})
        self.assertEqual({r["method"] for r in denied}, {"http/POST"})

    def test_aTokenThatExpiresDuringTheSessionIsRefusedFromThen(self) -> None:
        short = token(exp=NOW + 60)
        sid = self.initialize(short)
        self.clock.advance(120)
        r = self.exchange({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, short, mcp_session_id=sid)
        self.assertRefused(r, short, "expired")
        # A fresh token of the same principal keeps the session.
        r = self.exchange({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, token(iat=NOW + 100, exp=NOW + 3600), mcp_session_id=sid)
        self.assertEqual(r.status, 200)

    def test_verifiedTokensAreRememberedBoundedAndStillTimeChecked(self) -> None:
        self.auth.bearer_cache_size = 2
        first = token(exp=NOW + 60)
        self.assertEqual(self.auth.verify_bearer(first).name, "alice")
        self.assertEqual(self.auth.verify_bearer(first).name, "alice")
        self.assertEqual(len(self.auth._verified), 1)
        for sub in ("bob", "carol", "dave"):
            self.auth.verify_bearer(token(sub=sub))
            self.assertLessEqual(len(self.auth._verified), 2)
        self.auth.verify_bearer(first)  # remembered again
        self.clock.advance(120)
        self.assertRaises(IdentityError, self.auth.verify_bearer, first)  # the time claims are checked every time

    def test_aRememberedTokenIsVerifiedAgainAfterAMinute(self) -> None:
        good = token()
        self.auth.verify_bearer(good)
        self.auth._static_keys.clear()  # the key is withdrawn
        self.auth.verify_bearer(good)  # still remembered
        self.clock.advance(self.auth.bearer_cache_seconds)
        e = self.assertRaises(IdentityError, self.auth.verify_bearer, good)
        self.assertIn("cannot be verified", e.message)
        self.assertEqual(self.auth._verified, {})

    def test_everyMethodNeedsTheToken(self) -> None:
        sid = self.initialize(token())
        self.assertRefused(self.exchange(None, None, "GET", mcp_session_id=sid, accept="text/event-stream"), None)
        self.assertRefused(self.exchange(None, None, "DELETE", mcp_session_id=sid), None)
        self.assertEqual(len(self.site.resource_.table), 1)

    # -- sessions ------------------------------------------------------------------

    def test_anotherPrincipalsSessionIdIs404(self) -> None:
        alice = token(sub="alice")
        sid = self.initialize(alice)
        for intruder in (token(sub="mallory"), token(sub="alice", roles=["admin"])):
            for method, body, extra in (
                ("POST", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {}),
                ("GET", None, {"accept": "text/event-stream"}),
                ("DELETE", None, {}),
            ):
                r = self.exchange(body, intruder, method, mcp_session_id=sid, **extra)
                self.assertEqual(r.status, 404, (method, r.body))
        # The session is alice's still, and open.
        r = self.exchange({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, alice, mcp_session_id=sid)
        self.assertEqual(r.status, 200)

    def test_optionalLetsARequestWithoutATokenRunAsTheConnection(self) -> None:
        self.make_site(HttpSettings(bearer="optional"))
        r = self.exchange(INIT)
        self.assertEqual(r.status, 200)
        sid = r.headers["mcp-session-id"]
        # No token, and no identity rule names this connection: the policy refuses its calls.
        r = self.exchange({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, mcp_session_id=sid)
        self.assertEqual(r.json()["error"]["code"], errors.AUTHENTICATION_FAILED)
        self.assertIn("no principal is configured for this client", r.json()["error"]["message"])
        # A bad token is refused all the same, and a good one is served as its principal.
        bad = token(aud="other")
        self.assertRefused(self.exchange(INIT, bad), bad, "audience")
        good = token()
        sid = self.initialize(good)
        r = self.exchange({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, good, mcp_session_id=sid)
        self.assertEqual([t["name"] for t in r.json()["result"]["tools"]], ["alpha__echo"])

    def test_offIgnoresTokensAndServesNoMetadata(self) -> None:
        self.make_site(HttpSettings(bearer="off"))
        self.assertEqual(self.metadata("/.well-known/oauth-protected-resource").status, 404)
        r = self.exchange(INIT, "not-even-a-jwt")
        self.assertEqual(r.status, 200)
        self.assertNotIn("www-authenticate", r.headers)

    # -- metadata ------------------------------------------------------------------

    def metadata(self, path: str, method: str = "GET") -> Response:
        c = Connection(self.site)
        c.channel.dataReceived(f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-length: 0\r\n\r\n".encode())
        return c.response()

    def test_theMetadataDocument(self) -> None:
        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
            r = self.metadata(path)
            self.assertEqual((r.status, r.headers["content-type"]), (200, "application/json"))
            self.assertEqual(
                r.json(),
                {"resource": "http://127.0.0.1:8080/mcp", "authorization_servers": [ISSUER], "bearer_methods_supported": ["header"]},
            )
        self.assertEqual(self.metadata("/.well-known/oauth-protected-resource", "POST").status, 405)

    def test_theConfiguredResourceNamesTheEndpointAndTheMetadata(self) -> None:
        self.make_site(HttpSettings(resource="https://mcp.example.com/tools/mcp", authorizationServers=(ISSUER,)))
        r = self.metadata("/.well-known/oauth-protected-resource/tools/mcp")
        self.assertEqual(r.json()["resource"], "https://mcp.example.com/tools/mcp")
        r = self.exchange(INIT)
        self.assertEqual(
            r.headers["www-authenticate"], 'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp"'
        )

    def test_aHostHeaderThatIsNotAHostIsNotReflected(self) -> None:
        c = Connection(self.site)
        c.channel.dataReceived(b'GET /.well-known/oauth-protected-resource HTTP/1.1\r\nhost: a"b<c>\r\n\r\n')
        self.assertEqual(c.response().json()["resource"], "http://127.0.0.1:8080/mcp")


def _altered(good: str) -> str:
    head, payload, signature = good.split(".")
    data = json.loads(jwt.utils.base64url_decode(payload))
    data["roles"] = ["admin"]
    return f"{head}.{b64(json.dumps(data).encode())}.{signature}"


class HeaderAndConfigTests(SynchronousTestCase):
    def test_bearerToken(self) -> None:
        self.assertEqual(bearer_token(b"Bearer abc.def-_~+/="), "abc.def-_~+/=")
        self.assertEqual(bearer_token(b"bearer   abc "), "abc")
        for header in (None, b"Basic abc", b"Bearer", b"Bearer a b", b'Bearer "abc"', b"Bearerabc"):
            self.assertIsNone(bearer_token(header), header)

    def test_settings(self) -> None:
        problems: list[str] = []
        s = parse_http({"bearer": "optional", "resource": "https://mcp.example.com/mcp", "authorizationServers": [ISSUER]}, "http", problems)
        self.assertEqual(problems, [])
        self.assertEqual((s.bearer, s.resource, s.authorizationServers), ("optional", "https://mcp.example.com/mcp", (ISSUER,)))
        self.assertEqual(HttpSettings().bearer_mode(True), "required")
        self.assertEqual(HttpSettings().bearer_mode(False), "off")
        parse_http({"bearer": "sometimes", "resource": "mcp.example.com", "authorizationServers": ["https://u:p@idp/"]}, "http", problems)
        self.assertEqual(len(problems), 3, problems)
        self.assertIn("required, optional, off", problems[0])

    def test_bearerWithoutJwtIsAConfigError(self) -> None:
        e = self.assertRaises(ConfigError, build, {"mcpServers": {}, "http": {"bearer": "required"}}, "test.yaml")
        self.assertIn("identity.jwt is not configured", str(e))
