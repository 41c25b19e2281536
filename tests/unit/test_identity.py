"""
Tests for L{twisted_mcp.policy.identity}: tokens signed with HS256, RS256
and ES256, keys from a secret, a PEM file, a JWKS file and a JWKS URL
(through L{treq.testing.StubTreq}), time claims checked on an injected
L{Clock} per request, the attacks (forged signatures, C{alg: none},
algorithm confusion), and the configuration's problems with key paths.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from treq.testing import StringStubbingResource, StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.policy.identity import (
    LOCAL_WARNING,
    Authenticator,
    IdentityConfig,
    IdentityError,
    JwtConfig,
    Principal,
    parse_identity,
)
from twisted_mcp.urls import shown_url

NOW = 1_700_000_000.0
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"  # 35 bytes
ENV = "MCP_TOKEN"


@lru_cache(maxsize=None)
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@lru_cache(maxsize=None)
def ec_key(n: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private: Any) -> bytes:
    return bytes(private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def jwk(private: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else ECAlgorithm
    key = algorithm.to_jwk(private.public_key(), as_dict=True)
    if kid is not None:
        key["kid"] = kid
    key.update(extra)
    return key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"sub": "alice", "roles": ["dev", "ops"], "iat": NOW, "exp": NOW + 3600}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing_input + "." + b64(signature)


def hs256_with(key: bytes, payload: dict[str, Any], **header: Any) -> str:
    """An HS256 token signed with any bytes (PyJWT refuses PEM keys as HMAC
    secrets, so the attack is built by hand)."""
    head = {"alg": "HS256", "typ": "JWT", **header}
    signing_input = b64(json.dumps(head).encode()) + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


class IdentityTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def file(self, name: str, data: bytes) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def authenticator(self, token: str | None, http: Any = None, **config: Any) -> Authenticator:
        config.setdefault("tokenEnv", ENV)
        environ = {} if token is None else {ENV: token}
        auth = Authenticator(IdentityConfig(jwt=JwtConfig(**config)), environ, self.clock, http)
        d = auth.start()
        self.assertIsNone(self.successResultOf(d))
        return auth

    def refused(self, auth: Authenticator, *words: str, token: str | None = None) -> IdentityError:
        e = self.assertRaises(IdentityError, auth.authenticate)
        for w in words:
            self.assertIn(w, e.message)
        if token:
            self.assertNotIn(token, e.message)
            signature = token.split(".")[-1]
            if signature:
                self.assertNotIn(signature, e.message)
        return e


class TokenTests(IdentityTestCase):
    def test_hs256(self) -> None:
        token = jwt.encode(claims(), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
        self.assertEqual(
            auth.authenticate(),
            Principal(name="alice", roles=("dev", "ops"), source="jwt", expires_at=NOW + 3600),
        )
        self.assertIsNone(auth.warning)

    def test_rs256_pem(self) -> None:
        key = rsa_key()
        token = jwt.encode(claims(sub="bob", roles=["admin"]), key, algorithm="RS256")
        auth = self.authenticator(token, algorithms=("RS256",), publicKeyFile=self.file("rsa.pem", public_pem(key)))
        principal = auth.authenticate()
        self.assertEqual((principal.name, principal.roles, principal.source), ("bob", ("admin",), "jwt"))
        self.assertEqual(principal.expires_at, NOW + 3600)
        self.assertFalse(principal.all_access)

    def test_es256_pem(self) -> None:
        key = ec_key()
        token = jwt.encode(claims(sub="carol", exp=NOW + 60), key, algorithm="ES256")
        auth = self.authenticator(token, algorithms=("ES256",), publicKeyFile=self.file("ec.pem", public_pem(key)))
        principal = auth.authenticate()
        self.assertEqual((principal.name, principal.roles, principal.expires_at), ("carol", ("dev", "ops"), NOW + 60))

    def test_no_exp(self) -> None:
        """exp is optional: a token without one does not expire."""
        token = jwt.encode(claims(exp=None), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
        self.assertIsNone(auth.authenticate().expires_at)
        self.clock.advance(10 * 365 * 86400)
        self.assertEqual(auth.authenticate().name, "alice")

    def test_name_claim(self) -> None:
        token = jwt.encode(claims(email="alice@example.com"), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET, nameClaim="email")
        self.assertEqual(auth.authenticate().name, "alice@example.com")

    def test_missing_name(self) -> None:
        token = jwt.encode(claims(sub=None), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
        self.refused(auth, "'sub'", "nameClaim", token=token)

    def test_roles_dotted_claim(self) -> None:
        token = jwt.encode(claims(roles=None, realm_access={"roles": ["viewer", "dev"]}), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET, rolesClaim="realm_access.roles")
        self.assertEqual(auth.authenticate().roles, ("viewer", "dev"))

    def test_roles_namespaced_claim(self) -> None:
        """A claim whose own name has dots (a URL) is found before a dotted path is walked."""
        token = jwt.encode(claims(roles=None, **{"https://example.com/roles": ["dev"]}), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET, rolesClaim="https://example.com/roles")
        self.assertEqual(auth.authenticate().roles, ("dev",))

    def test_roles_space_separated(self) -> None:
        token = jwt.encode(claims(roles=None, scope="read  write admin"), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET, rolesClaim="scope")
        self.assertEqual(auth.authenticate().roles, ("read", "write", "admin"))

    def test_roles_not_strings(self) -> None:
        """A roles claim of the wrong shape gives no roles and a warning, not a crash."""
        for value in ({"admin": True}, ["dev", 3], 7):
            token = jwt.encode(claims(roles=value), SECRET, algorithm="HS256")
            with capturedLogs() as events:
                auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
            principal = auth.authenticate()
            self.assertEqual((principal.name, principal.roles), ("alice", ()))
            warnings = [e for e in events if "not a list of strings" in e.get("log_format", "")]
            self.assertEqual(len(warnings), 1, value)
            self.assertEqual(warnings[0]["log_level"].name, "warn")


class RefusalTests(IdentityTestCase):
    def test_forged_signature(self) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(claims(), other, algorithm="RS256")
        auth = self.authenticator(token, algorithms=("RS256",), publicKeyFile=self.file("rsa.pem", public_pem(rsa_key())))
        e = self.refused(auth, "signature does not verify", token=token)
        self.assertEqual(e.reason, "signature")

    def test_wrong_secret(self) -> None:
        token = jwt.encode(claims(), "another-secret-another-secret-another", algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
        self.refused(auth, "signature does not verify", token=token)

    def test_altered_payload(self) -> None:
        """A valid signature over other claims: a promoted role does not verify."""
        token = jwt.encode(claims(roles=["viewer"]), SECRET, algorithm="HS256")
        head, _, sig = token.split(".")
        forged = head + "." + b64(json.dumps(claims(roles=["admin"])).encode()) + "." + sig
        auth = self.authenticator(forged, algorithms=("HS256",), secret=SECRET)
        self.refused(auth, "signature does not verify", token=forged)

    def test_expired(self) -> None:
        token = jwt.encode(claims(iat=NOW - 7200, exp=NOW - 3600), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
        e = self.refused(auth, "the token expired at 2023-11-14T21:13:20Z", ENV, token=token)
        self.assertEqual(e.reason, "expired")

    def test_expires_later(self) -> None:
        """Expiry is checked on every request, on the clock, with the leeway."""
        token = jwt.encode(claims(exp=NOW + 100), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET, leeway=30)
        self.assertEqual(auth.authenticate().name, "alice")
        self.clock.advance(129)
        self.assertEqual(auth.authenticate().name, "alice")  # within the leeway
        self.clock.advance(1)
        self.refused(auth, "expired at", token=token)
        self.refused(auth, "expired at", token=token)  # and on the next request too

    def test_not_yet_valid(self) -> None:
        token = jwt.encode(claims(nbf=NOW + 300), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET, leeway=30)
        e = self.refused(auth, "not valid before 2023-11-14T22:18:20Z", token=token)
        self.assertEqual(e.reason, "not-yet-valid")
        self.clock.advance(270)
        self.assertEqual(auth.authenticate().name, "alice")

    def test_issued_in_the_future(self) -> None:
        token = jwt.encode(claims(iat=NOW + 600), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
        self.refused(auth, "issued at", "in the future", token=token)
        self.clock.advance(600)
        self.assertEqual(auth.authenticate().name, "alice")

    def test_non_finite_time(self) -> None:
        """NaN would compare false with every time and never expire."""
        payload = b64(b'{"sub": "alice", "exp": NaN}')
        head = b64(b'{"alg": "HS256", "typ": "JWT"}')
        signature = hmac.new(SECRET.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{head}.{payload}.{b64(signature)}"
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
        self.refused(auth, "'exp'", "not a finite time", token=token)

    def test_time_not_a_number(self) -> None:
        token = jwt.encode(claims(exp="tomorrow"), SECRET, algorithm="HS256")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
        self.refused(auth, "'exp'", "not a time", token=token)

    def test_issuer(self) -> None:
        config = {"algorithms": ("HS256",), "secret": SECRET, "issuer": "https://idp.example.com/"}
        good = jwt.encode(claims(iss="https://idp.example.com/"), SECRET, algorithm="HS256")
        self.assertEqual(self.authenticator(good, **config).authenticate().name, "alice")
        bad = jwt.encode(claims(iss="https://evil.example.com/"), SECRET, algorithm="HS256")
        e = self.refused(self.authenticator(bad, **config), "not issued by 'https://idp.example.com/'", token=bad)
        self.assertEqual(e.reason, "issuer")
        missing = jwt.encode(claims(), SECRET, algorithm="HS256")
        self.refused(self.authenticator(missing, **config), "no 'iss' claim", "identity.jwt.issuer", token=missing)

    def test_audience(self) -> None:
        config = {"algorithms": ("HS256",), "secret": SECRET, "audience": "twisted-mcp"}
        good = jwt.encode(claims(aud=["other", "twisted-mcp"]), SECRET, algorithm="HS256")
        self.assertEqual(self.authenticator(good, **config).authenticate().name, "alice")
        bad = jwt.encode(claims(aud="other"), SECRET, algorithm="HS256")
        e = self.refused(self.authenticator(bad, **config), "not meant for audience 'twisted-mcp'", token=bad)
        self.assertEqual(e.reason, "audience")
        missing = jwt.encode(claims(), SECRET, algorithm="HS256")
        self.refused(self.authenticator(missing, **config), "no 'aud' claim", token=missing)

    def test_alg_none(self) -> None:
        token = unsigned({"alg": "none", "typ": "JWT"}, claims())
        for algorithms in (("HS256",), ("HS256", "RS256")):
            auth = self.authenticator(
                token, algorithms=algorithms, secret=SECRET,
                publicKeyFile=self.file("rsa.pem", public_pem(rsa_key())) if "RS256" in algorithms else None,
            )
            e = self.refused(auth, "unsigned (alg: none)", token=token)
            self.assertEqual(e.reason, "algorithm")
        auth = self.authenticator(unsigned({"alg": "None"}, claims()), algorithms=("HS256",), secret=SECRET)
        self.refused(auth, "unsigned")

    def test_algorithm_not_allowed(self) -> None:
        token = jwt.encode(claims(), SECRET * 2, algorithm="HS512")
        auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
        self.refused(auth, "signed with 'HS512', which is not allowed", "HS256", token=token)

    def test_algorithm_confusion_rs256_only(self) -> None:
        """An HS256 token whose HMAC key is the server's public PEM."""
        pem = public_pem(rsa_key())
        token = hs256_with(pem, claims(roles=["admin"]))
        auth = self.authenticator(token, algorithms=("RS256",), publicKeyFile=self.file("rsa.pem", pem))
        e = self.refused(auth, "'HS256', which is not allowed", token=token)
        self.assertEqual(e.reason, "algorithm")

    def test_algorithm_confusion_both_families(self) -> None:
        """With HS256 and RS256 both allowed, an HS256 token is checked with
        the secret only, never with the public key."""
        pem = public_pem(rsa_key())
        path = self.file("rsa.pem", pem)
        config = {"algorithms": ("HS256", "RS256"), "secret": SECRET, "publicKeyFile": path}
        for key in (pem, pem.strip(), pem.decode("ascii").encode("utf-8")):
            token = hs256_with(key, claims(roles=["admin"]))
            e = self.refused(self.authenticator(token, **config), "signature does not verify", token=token)
            self.assertEqual(e.reason, "signature")
        # Both kinds of genuine token pass.
        rs = jwt.encode(claims(sub="rs"), rsa_key(), algorithm="RS256")
        self.assertEqual(self.authenticator(rs, **config).authenticate().name, "rs")
        hs = jwt.encode(claims(sub="hs"), SECRET, algorithm="HS256")
        self.assertEqual(self.authenticator(hs, **config).authenticate().name, "hs")

    def test_es_token_on_rsa_key(self) -> None:
        token = jwt.encode(claims(), ec_key(), algorithm="ES256")
        auth = self.authenticator(token, algorithms=("RS256", "ES256"), publicKeyFile=self.file("rsa.pem", public_pem(rsa_key())))
        e = self.refused(auth, "no ES256 key", token=token)
        self.assertEqual(e.reason, "keys")

    def test_token_missing(self) -> None:
        auth = self.authenticator(None, algorithms=("HS256",), secret=SECRET)
        e = self.refused(auth, "environment variable MCP_TOKEN is not set")
        self.assertEqual(e.reason, "missing")
        self.refused(self.authenticator("  \n", algorithms=("HS256",), secret=SECRET), "MCP_TOKEN is empty")

    def test_token_read_once(self) -> None:
        environ = {ENV: jwt.encode(claims(), SECRET, algorithm="HS256")}
        auth = Authenticator(IdentityConfig(jwt=JwtConfig(tokenEnv=ENV, algorithms=("HS256",), secret=SECRET)), environ, self.clock)
        auth.start()
        environ[ENV] = "changed"
        self.assertEqual(auth.authenticate().name, "alice")

    def test_garbage(self) -> None:
        for token in ("not-a-token", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.!!!.xyz", "x" * 5000):
            auth = self.authenticator(token, algorithms=("HS256",), secret=SECRET)
            e = self.refused(auth, "not a well-formed JWT", token=token)
            self.assertEqual(e.reason, "malformed")

    def test_token_trailing_newline(self) -> None:
        token = jwt.encode(claims(), SECRET, algorithm="HS256")
        self.assertEqual(self.authenticator(token + "\n", algorithms=("HS256",), secret=SECRET).authenticate().name, "alice")

    def test_before_start(self) -> None:
        token = jwt.encode(claims(), SECRET, algorithm="HS256")
        auth = Authenticator(IdentityConfig(jwt=JwtConfig(tokenEnv=ENV, algorithms=("HS256",), secret=SECRET)), {ENV: token}, self.clock)
        e = self.refused(auth, "starting")
        self.assertEqual(e.reason, "starting")

    def test_unreadable_key_file(self) -> None:
        """A key file that went away after the config was checked: refused, not crashed."""
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256")
        auth = self.authenticator(token, algorithms=("RS256",), publicKeyFile=os.path.abspath("gone.pem"))
        self.refused(auth, "no RS256 key", "cannot read", "gone.pem", token=token)


class JwksFileTests(IdentityTestCase):
    def test_two_keys_by_kid(self) -> None:
        one, two = rsa_key(0), rsa_key(1)
        self.assertIsNot(one, two)
        path = self.file("jwks.json", json.dumps({"keys": [jwk(one, "k1"), jwk(two, "k2"), jwk(ec_key(), "e1")]}).encode())
        config = {"algorithms": ("RS256", "ES256"), "jwksFile": path}
        for key, kid, alg in ((one, "k1", "RS256"), (two, "k2", "RS256"), (ec_key(), "e1", "ES256")):
            token = jwt.encode(claims(sub=kid), key, algorithm=alg, headers={"kid": kid})
            self.assertEqual(self.authenticator(token, **config).authenticate().name, kid)
        # Signed by one key but naming the other: the named key decides.
        token = jwt.encode(claims(), one, algorithm="RS256", headers={"kid": "k2"})
        self.refused(self.authenticator(token, **config), "signature does not verify", token=token)
        token = jwt.encode(claims(), one, algorithm="RS256", headers={"kid": "k9"})
        e = self.refused(self.authenticator(token, **config), "no RS256 key with id (kid) 'k9'", token=token)
        self.assertEqual(e.reason, "keys")
        token = jwt.encode(claims(), one, algorithm="RS256")
        self.refused(self.authenticator(token, **config), "names no key id (kid) and 2 RS256 keys", token=token)

    def test_skipped_keys(self) -> None:
        """Keys for encryption, with private parts or of another type are not used."""
        one = rsa_key()
        private = RSAAlgorithm.to_jwk(one, as_dict=True)
        keys = [jwk(one, "enc", use="enc"), dict(private, kid="private"), {"kty": "oct", "k": b64(SECRET.encode()), "kid": "oct"}, jwk(one, "ok")]
        path = self.file("jwks.json", json.dumps({"keys": keys}).encode())
        for kid in ("enc", "private"):
            token = jwt.encode(claims(), one, algorithm="RS256", headers={"kid": kid})
            self.refused(self.authenticator(token, algorithms=("RS256",), jwksFile=path), f"kid) {kid!r}", token=token)
        token = jwt.encode(claims(), one, algorithm="RS256", headers={"kid": "ok"})
        self.assertEqual(self.authenticator(token, algorithms=("RS256",), jwksFile=path).authenticate().name, "alice")


def jwks_body(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


class JwksServer:
    """Serves a JWKS document through L{StubTreq}; counts the requests."""

    def __init__(self, body: bytes, code: int = 200) -> None:
        self.body = body
        self.code = code
        self.requests: list[tuple[bytes, str]] = []
        self.client = StubTreq(StringStubbingResource(self.respond))

    def respond(self, method: bytes, url: str, params: Any, headers: Any, data: Any) -> tuple[int, dict[bytes, bytes], bytes]:
        self.requests.append((method, url))
        return self.code, {b"content-type": b"application/json"}, self.body


class HangingClient:
    """A client whose requests never answer (until cancelled)."""

    def __init__(self) -> None:
        self.requests: list[Deferred[Any]] = []

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.requests.append(d)
        return d


URL = "https://idp.example.com/jwks.json"


class JwksUrlTests(IdentityTestCase):
    def test_fetched_at_start(self) -> None:
        server = JwksServer(jwks_body(jwk(rsa_key(), "k1")))
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256", headers={"kid": "k1"})
        auth = self.authenticator(token, http=server.client, algorithms=("RS256",), jwksUrl=URL)
        self.assertEqual(server.requests, [(b"GET", URL)])
        self.assertEqual(auth.authenticate().name, "alice")
        auth.authenticate()
        self.assertEqual(len(server.requests), 1)  # cached

    def test_unknown_kid_refetched_rate_limited(self) -> None:
        one, two = rsa_key(0), rsa_key(1)
        server = JwksServer(jwks_body(jwk(one, "old")))
        token = jwt.encode(claims(), two, algorithm="RS256", headers={"kid": "new"})
        auth = self.authenticator(token, http=server.client, algorithms=("RS256",), jwksUrl=URL)
        self.assertEqual(len(server.requests), 1)
        self.refused(auth, "no RS256 key with id (kid) 'new'", token=token)
        self.clock.advance(30)
        self.refused(auth, "kid) 'new'", token=token)
        self.assertEqual(len(server.requests), 1)  # not yet: at most once a minute
        self.clock.advance(30)
        self.refused(auth, "kid) 'new'", token=token)  # this request starts a fetch; the key set has not changed
        self.assertEqual(len(server.requests), 2)
        self.refused(auth, "kid) 'new'", token=token)
        self.assertEqual(len(server.requests), 2)
        server.body = jwks_body(jwk(one, "old"), jwk(two, "new"))  # the key is rotated in
        self.clock.advance(60)
        self.refused(auth, "kid) 'new'", token=token)  # this one started the fetch
        self.assertEqual(len(server.requests), 3)
        self.assertEqual(auth.authenticate().name, "alice")

    def test_fetch_fails_then_recovers(self) -> None:
        server = JwksServer(b"oops", code=503)
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256", headers={"kid": "k1"})
        auth = self.authenticator(token, http=server.client, algorithms=("RS256",), jwksUrl=URL)
        self.refused(auth, "could not be fetched: HTTP 503", shown_url(URL), token=token)
        server.code, server.body = 200, jwks_body(jwk(rsa_key(), "k1"))
        self.refused(auth, "HTTP 503", token=token)
        self.assertEqual(len(server.requests), 1)
        self.clock.advance(60)
        self.refused(auth, "HTTP 503", token=token)
        self.assertEqual(auth.authenticate().name, "alice")
        self.assertEqual(len(server.requests), 2)

    def test_not_a_key_set(self) -> None:
        server = JwksServer(b"<html>login</html>")
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256")
        auth = self.authenticator(token, http=server.client, algorithms=("RS256",), jwksUrl=URL)
        self.refused(auth, "could not be fetched: not JSON", token=token)

    def test_redirect_not_followed(self) -> None:
        server = JwksServer(b"", code=302)
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256")
        auth = self.authenticator(token, http=server.client, algorithms=("RS256",), jwksUrl=URL)
        self.refused(auth, "HTTP 302", "redirects are not followed", token=token)

    def test_too_large(self) -> None:
        server = JwksServer(b" " * 100 + jwks_body(jwk(rsa_key(), "k1")))
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256", headers={"kid": "k1"})
        config = IdentityConfig(jwt=JwtConfig(tokenEnv=ENV, algorithms=("RS256",), jwksUrl=URL))
        auth = Authenticator(config, {ENV: token}, self.clock, server.client)
        auth.jwks_max_bytes = 100
        self.successResultOf(auth.start())
        self.refused(auth, "larger than 100 bytes", token=token)

    def test_timeout(self) -> None:
        client = HangingClient()
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256")
        auth = Authenticator(IdentityConfig(jwt=JwtConfig(tokenEnv=ENV, algorithms=("RS256",), jwksUrl=URL)), {ENV: token}, self.clock, client)
        d = auth.start()
        self.assertNoResult(d)
        self.refused(auth, "starting")
        self.clock.advance(auth.jwks_timeout)
        self.assertIsNone(self.successResultOf(d))
        self.refused(auth, f"no answer within {auth.jwks_timeout:g} s", token=token)

    def test_needs_a_client(self) -> None:
        config = IdentityConfig(jwt=JwtConfig(tokenEnv=ENV, algorithms=("RS256",), jwksUrl=URL))
        self.assertRaises(ValueError, Authenticator, config, {}, self.clock)


SECRET_URL = "https://jwks-user:userinfo-pw@idp.example.com/path-token-42/jwks.json?key=query-token-7"
SECRET_PARTS = ("jwks-user", "userinfo-pw", "path-token-42", "query-token-7")


class RefusingClient:
    """A client whose every request fails: the connection is refused."""

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return fail(ConnectionRefusedError("Connection was refused by other side"))


class JwksUrlSecretTests(IdentityTestCase):
    """
    A JWKS URL may carry credentials or tokens in its userinfo, path and
    query: when its fetch fails, the error the client gets (which is also
    the audit record's reason) and every log line show it through
    L{shown_url}.
    """

    def assertNoSecret(self, auth: Authenticator, events: list[Any]) -> None:
        shown = [self.refused(auth, shown_url(SECRET_URL)).message]
        shown += [formatEvent(e) for e in events] + [repr(e) for e in events]
        for text in shown:
            for secret in SECRET_PARTS:
                self.assertNotIn(secret, text)

    def fetch_fails(self, client: Any, max_bytes: int | None = None) -> None:
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256", headers={"kid": "k1"})
        config = IdentityConfig(jwt=JwtConfig(tokenEnv=ENV, algorithms=("RS256",), jwksUrl=SECRET_URL))
        with capturedLogs() as events:
            auth = Authenticator(config, {ENV: token}, self.clock, client)
            if max_bytes is not None:
                auth.jwks_max_bytes = max_bytes
            d = auth.start()
            self.clock.advance(auth.jwks_timeout)
            self.successResultOf(d)
            self.assertRaises(IdentityError, auth.authenticate)
            self.clock.advance(auth.jwks_refetch_interval)  # the refetch is logged too
            self.assertRaises(IdentityError, auth.authenticate)
            self.clock.advance(auth.jwks_timeout)
        self.assertTrue(events)
        self.assertNoSecret(auth, events)

    def test_too_large(self) -> None:
        self.fetch_fails(JwksServer(b" " * 200).client, max_bytes=100)

    def test_timeout(self) -> None:
        self.fetch_fails(HangingClient())

    def test_refused(self) -> None:
        self.fetch_fails(RefusingClient())

    def test_no_usable_key(self) -> None:
        self.fetch_fails(JwksServer(jwks_body(jwk(rsa_key(), "k1", use="enc"))).client)


class PrincipalTests(IdentityTestCase):
    def test_config_principal(self) -> None:
        principal = Principal(name="alice", roles=("dev",), source="config")
        auth = Authenticator(IdentityConfig(principal=principal), {}, self.clock)
        self.assertIsNone(self.successResultOf(auth.start()))
        self.assertIs(auth.authenticate(), principal)
        self.assertFalse(auth.authenticate().all_access)
        self.assertIsNone(auth.warning)

    def test_no_identity(self) -> None:
        auth = Authenticator(None, {ENV: "ignored"}, self.clock)
        self.assertIsNone(self.successResultOf(auth.start()))
        principal = auth.authenticate()
        self.assertEqual(principal, Principal(name="local", roles=(), source="local", all_access=True))
        self.assertEqual(auth.warning, LOCAL_WARNING)
        self.assertIn("every permission", LOCAL_WARNING)

    def test_hashable(self) -> None:
        """The pipeline caches decisions per principal."""
        self.assertEqual(hash(Principal("a", ("x",))), hash(Principal("a", ("x",))))


class ParseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        for name, data in (
            ("rsa.pem", public_pem(rsa_key())),
            ("ec.pem", public_pem(ec_key())),
            ("jwks.json", jwks_body(jwk(rsa_key(), "k1"))),
            ("private.pem", rsa_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
            ("short.pem", public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))),
            ("p384.pem", public_pem(ec.generate_private_key(ec.SECP384R1()))),
            ("empty.json", b'{"keys": []}'),
        ):
            with open(os.path.join(self.base, name), "wb") as f:
                f.write(data)

    def parse(self, data: Any) -> tuple[IdentityConfig | None, list[str]]:
        problems: list[str] = []
        return parse_identity(data, "identity", self.base, problems), problems

    def problems(self, data: Any) -> list[str]:
        config, problems = self.parse(data)
        self.assertIsNone(config)
        self.assertTrue(problems)
        return problems

    def assertProblem(self, problems: list[str], path: str, *words: str) -> None:
        for p in problems:
            if p.startswith(path + ": ") and all(w in p for w in words):
                return
        self.fail(f"no problem about {path!r} mentioning {words!r} in {problems!r}")

    def test_principal(self) -> None:
        config, problems = self.parse({"principal": {"name": "alice", "roles": ["dev", "ops"]}})
        self.assertEqual(problems, [])
        self.assertEqual(config, IdentityConfig(principal=Principal(name="alice", roles=("dev", "ops"), source="config")))

    def test_jwt(self) -> None:
        config, problems = self.parse(
            {"jwt": {"tokenEnv": "T", "algorithms": ["RS256", "HS256"], "secret": SECRET, "publicKeyFile": "rsa.pem",
                     "issuer": "i", "audience": "a", "rolesClaim": "realm_access.roles", "nameClaim": "email", "leeway": 5}}
        )
        self.assertEqual(problems, [])
        assert config is not None and config.jwt is not None
        self.assertEqual(config.jwt.publicKeyFile, os.path.join(self.base, "rsa.pem"))
        self.assertEqual(config.jwt.algorithms, ("RS256", "HS256"))
        self.assertEqual((config.jwt.rolesClaim, config.jwt.leeway), ("realm_access.roles", 5.0))
        self.assertNotIn(SECRET, repr(config))

    def test_algorithms(self) -> None:
        problems = self.problems({"jwt": {"tokenEnv": "T", "algorithms": ["HS256", "none", "RS512", 3], "secret": SECRET}})
        self.assertIn("identity.jwt.algorithms[1]: expected one of HS256, RS256, ES256, got 'none'", problems)
        self.assertProblem(problems, "identity.jwt.algorithms[2]", "'RS512'")
        self.assertProblem(problems, "identity.jwt.algorithms[3]", "a number 3")
        self.assertProblem(self.problems({"jwt": {"tokenEnv": "T", "algorithms": [], "secret": SECRET}}), "identity.jwt.algorithms", "non-empty")
        self.assertProblem(self.problems({"jwt": {"tokenEnv": "T", "secret": SECRET}}), "identity.jwt.algorithms", "missing")

    def test_required_and_unknown(self) -> None:
        problems = self.problems({"jwt": {"algorithms": ["HS256"], "secret": SECRET, "tokenenv": "T"}, "extra": 1})
        self.assertProblem(problems, "identity.jwt.tokenEnv", "missing")
        self.assertProblem(problems, "identity.jwt.tokenenv", "unknown key")
        self.assertProblem(problems, "identity.extra", "unknown key")
        self.assertProblem(self.problems({"jwt": {"tokenEnv": "MY-TOKEN", "algorithms": ["HS256"], "secret": SECRET}}), "identity.jwt.tokenEnv", "environment variable name")
        self.assertProblem(self.problems({"principal": {"roles": ["dev"], "group": "x"}}), "identity.principal.name", "missing")
        self.assertProblem(self.problems({"principal": {"name": "a", "group": "x"}}), "identity.principal.group", "unknown key")
        self.assertProblem(self.problems({"principal": {"name": "a", "roles": "dev"}}), "identity.principal.roles", "list of strings")

    def test_exactly_one(self) -> None:
        both = {"principal": {"name": "a"}, "jwt": {"tokenEnv": "T", "algorithms": ["HS256"], "secret": SECRET}}
        self.assertProblem(self.problems(both), "identity", "not both")
        self.assertProblem(self.problems({}), "identity", "expected principal", "peers")
        self.assertProblem(self.problems(None), "identity", "expected a mapping")

    def test_key_sources(self) -> None:
        jwt_ = {"tokenEnv": "T"}
        self.assertProblem(self.problems({"jwt": dict(jwt_, algorithms=["HS256"])}), "identity.jwt.secret", "missing", "HS256")
        self.assertProblem(self.problems({"jwt": dict(jwt_, algorithms=["RS256"], secret=SECRET)}), "identity.jwt", "RS256", "publicKeyFile, jwksFile or jwksUrl")
        self.assertProblem(self.problems({"jwt": dict(jwt_, algorithms=["RS256"], secret=SECRET, publicKeyFile="rsa.pem")}), "identity.jwt.secret", "HS256 is not in algorithms")
        self.assertProblem(self.problems({"jwt": dict(jwt_, algorithms=["HS256"], secret=SECRET, publicKeyFile="rsa.pem")}), "identity.jwt.publicKeyFile", "never be used")
        self.assertProblem(self.problems({"jwt": dict(jwt_, algorithms=["RS256"], publicKeyFile="rsa.pem", jwksUrl=URL)}), "identity.jwt", "only one")
        self.assertProblem(self.problems({"jwt": dict(jwt_, algorithms=["ES256"], publicKeyFile="rsa.pem")}), "identity.jwt.publicKeyFile", "fit RS256", "not in algorithms")
        self.assertProblem(self.problems({"jwt": dict(jwt_, algorithms=["RS256"], jwksFile="jwks.json", publicKeyFile="ec.pem")}), "identity.jwt", "only one")

    def test_secret(self) -> None:
        jwt_ = {"tokenEnv": "T", "algorithms": ["HS256"]}
        self.assertProblem(self.problems({"jwt": dict(jwt_, secret="short")}), "identity.jwt.secret", "at least 32 bytes")
        pem = public_pem(rsa_key()).decode()
        self.assertProblem(self.problems({"jwt": dict(jwt_, secret=pem)}), "identity.jwt.secret", "never used as an HMAC secret")

    def test_key_files(self) -> None:
        jwt_ = {"tokenEnv": "T", "algorithms": ["RS256", "ES256"]}
        for key, name, words in (
            ("publicKeyFile", "missing.pem", ("cannot read", os.path.join(self.base, "missing.pem"))),
            ("publicKeyFile", "private.pem", ("private key",)),
            ("publicKeyFile", "short.pem", ("1024 bits", "too short")),
            ("publicKeyFile", "p384.pem", ("secp384r1", "P-256")),
            ("publicKeyFile", "jwks.json", ("not a PEM public key",)),
            ("jwksFile", "rsa.pem", ("not JSON",)),
            ("jwksFile", "empty.json", ("no usable key",)),
        ):
            self.assertProblem(self.problems({"jwt": dict(jwt_, **{key: name})}), f"identity.jwt.{key}", *words)
        config, problems = self.parse({"jwt": dict(jwt_, jwksFile="jwks.json")})
        self.assertEqual(problems, [])
        assert config is not None and config.jwt is not None
        self.assertEqual(config.jwt.jwksFile, os.path.join(self.base, "jwks.json"))

    def test_jwks_url(self) -> None:
        jwt_ = {"tokenEnv": "T", "algorithms": ["RS256"]}
        self.assertProblem(self.problems({"jwt": dict(jwt_, jwksUrl="http://idp.example.com/jwks")}), "identity.jwt.jwksUrl", "https://")
        self.assertProblem(self.problems({"jwt": dict(jwt_, jwksUrl="file:///etc/jwks")}), "identity.jwt.jwksUrl", "https://")
        for url in (URL, "http://127.0.0.1:8080/jwks", "http://localhost/jwks"):
            config, problems = self.parse({"jwt": dict(jwt_, jwksUrl=url)})
            self.assertEqual(problems, [])
            self.assertEqual(config and config.jwt and config.jwt.jwksUrl, url)

    def test_unreadable_jwks_url(self) -> None:
        """An address urlsplit refuses is a problem of its key, shown without its secrets."""
        jwt_ = {"tokenEnv": "T", "algorithms": ["RS256"]}
        problems = self.problems({"jwt": dict(jwt_, jwksUrl="https://idp[example.com/s3cret-path")})
        self.assertProblem(problems, "identity.jwt.jwksUrl", "https://")
        self.assertNotIn("s3cret", "\n".join(problems))

    def test_values(self) -> None:
        jwt_ = {"tokenEnv": "T", "algorithms": ["HS256"], "secret": SECRET}
        self.assertProblem(self.problems({"jwt": dict(jwt_, leeway=-1)}), "identity.jwt.leeway", "from 0 to 600")
        self.assertProblem(self.problems({"jwt": dict(jwt_, leeway="30s")}), "identity.jwt.leeway", "a number")
        self.assertProblem(self.problems({"jwt": dict(jwt_, rolesClaim="a..b")}), "identity.jwt.rolesClaim", "dotted path")
        self.assertProblem(self.problems({"jwt": dict(jwt_, issuer="")}), "identity.jwt.issuer", "non-empty")
        self.assertProblem(self.problems({"jwt": dict(jwt_, audience=["a"])}), "identity.jwt.audience", "a string")
