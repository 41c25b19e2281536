"""
Tests for the OAuth configuration (design §2): a backend's C{auth:} and the
gateway-wide C{oauth:} section, as L{twisted_mcp.config.loader} reads them.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any

import attrs
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import ConfigError
from twisted_mcp.config.loader import build, load
from twisted_mcp.config.models import (
    ClientCredentialsAuth,
    Config,
    OAuthAuth,
    OAuthClient,
    OAuthSettings,
    OAuthStoreSettings,
)

SECRET = "s3cr3t-client-secret-value"
KEYED = {"store": {"keyEnv": "OAUTH_KEY"}}


def server(**spec: Any) -> dict[str, Any]:
    return {"url": "https://mcp.example.com/mcp", **spec}


class OAuthConfigTestCase(SynchronousTestCase):
    def build(self, servers: dict[str, Any], oauth: Any = KEYED, environ: dict[str, str] | None = None, **top: Any) -> Config:
        data: dict[str, Any] = {"mcpServers": servers, **top}
        if oauth is not None:
            data["oauth"] = oauth
        return build(data, "test.yaml", {} if environ is None else environ, self.base_dir())

    def problems(self, servers: dict[str, Any], oauth: Any = KEYED, environ: dict[str, str] | None = None) -> list[str]:
        e = self.assertRaises(ConfigError, self.build, servers, oauth, environ)
        return e.problems

    def assertProblem(self, problems: list[str], path: str, *words: str) -> None:
        """One of C{problems} is about C{path} and mentions every word."""
        for p in problems:
            if p.startswith(path + ": ") and all(w in p for w in words):
                return
        self.fail(f"no problem about {path!r} mentioning {words!r} in {problems!r}")

    def base_dir(self) -> str:
        if not hasattr(self, "_base"):
            self._base = os.path.abspath(self.mktemp())
            os.makedirs(self._base)
        return self._base

    def secret_file(self, text: str = SECRET + "\n", mode: int = 0o600, name: str = "client.secret") -> str:
        path = os.path.join(self.base_dir(), name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        return path


class AuthFormsTests(OAuthConfigTestCase):
    def test_oauth_shorthand(self) -> None:
        config = self.build({"gh": server(auth="oauth")})
        self.assertEqual(config.servers[0].auth, OAuthAuth())  # type: ignore[union-attr]

    def test_no_auth(self) -> None:
        config = self.build({"gh": server()}, oauth=None)
        self.assertIsNone(config.servers[0].auth)  # type: ignore[union-attr]
        self.assertIsNone(config.oauth)

    def test_oauth_full(self) -> None:
        config = self.build(
            {
                "linear": server(
                    auth={
                        "oauth": {
                            "scopes": ["read", "write"],
                            "client": {"id": "cid", "secret": SECRET, "authMethod": "client_secret_post"},
                            "issuer": "https://linear.app",
                            "extraAuthorizeParams": {"prompt": "consent", "max_age": 60},
                            "sendResource": False,
                            "catalogAs": "alice",
                        }
                    }
                )
            }
        )
        self.assertEqual(
            config.servers[0].auth,  # type: ignore[union-attr]
            OAuthAuth(
                scopes=("read", "write"),
                client=OAuthClient(id="cid", secret=SECRET, authMethod="client_secret_post"),
                issuer="https://linear.app",
                extraAuthorizeParams={"prompt": "consent", "max_age": "60"},
                sendResource=False,
                catalogAs="alice",
            ),
        )

    def test_oauth_empty_mapping(self) -> None:
        config = self.build({"gh": server(auth={"oauth": None})})
        self.assertEqual(config.servers[0].auth, OAuthAuth())  # type: ignore[union-attr]

    def test_public_client(self) -> None:
        config = self.build({"gh": server(auth={"oauth": {"client": {"id": "cid", "authMethod": "none"}}})})
        self.assertEqual(config.servers[0].auth.client, OAuthClient(id="cid", secret=None, authMethod="none"))  # type: ignore[union-attr]

    def test_client_credentials(self) -> None:
        config = self.build(
            {
                "billing": server(
                    auth={
                        "clientCredentials": {
                            "id": "gateway-billing",
                            "secret": SECRET,
                            "scopes": ["billing.read"],
                            "tokenEndpoint": "https://idp.internal/oauth2/token",
                            "authMethod": "client_secret_basic",
                        }
                    }
                )
            },
            oauth=None,
        )
        self.assertEqual(
            config.servers[0].auth,  # type: ignore[union-attr]
            ClientCredentialsAuth(
                id="gateway-billing",
                secret=SECRET,
                authMethod="client_secret_basic",
                scopes=("billing.read",),
                tokenEndpoint="https://idp.internal/oauth2/token",
            ),
        )
        # No oauth: section and no store key needed: the machine token stays in memory;
        # the section's defaults are there for the broker.
        assert config.oauth is not None
        self.assertEqual(config.oauth.store.keyFile, None)
        self.assertEqual(config.oauth.requestTimeout, 10.0)

    def test_client_credentials_needs_secret(self) -> None:
        problems = self.problems({"b": server(auth={"clientCredentials": {"id": "g"}})})
        self.assertProblem(problems, "mcpServers.b.auth.clientCredentials", "secret or secretFile")

    def test_client_credentials_no_public_client(self) -> None:
        problems = self.problems({"b": server(auth={"clientCredentials": {"id": "g", "authMethod": "none"}})})
        self.assertProblem(problems, "mcpServers.b.auth.clientCredentials.authMethod", "client_secret_basic")

    def test_other_forms_refused(self) -> None:
        for value in ("bearer", True, ["oauth"], {"oauth": {}, "clientCredentials": {"id": "x"}}, {"basic": {}}, {}):
            problems = self.problems({"gh": server(auth=value)})
            self.assertProblem(problems, "mcpServers.gh.auth", "auth: oauth", "{oauth:", "{clientCredentials:")

    def test_token_in_auth_not_quoted(self) -> None:
        problems = self.problems({"gh": server(auth="Bearer " + SECRET)})
        self.assertProblem(problems, "mcpServers.gh.auth", "a string")
        self.assertNotIn(SECRET, "\n".join(problems))

    def test_unknown_keys(self) -> None:
        problems = self.problems(
            {
                "a": server(auth={"oauth": {"scope": ["x"]}}),
                "b": server(auth={"oauth": {"client": {"id": "c", "secrett": "x"}}}),
                "c": server(auth={"clientCredentials": {"id": "c", "secret": "x", "privateKeyFile": "/k"}}),
            }
        )
        self.assertProblem(problems, "mcpServers.a.auth.oauth.scope", "unknown key", "scopes")
        self.assertProblem(problems, "mcpServers.b.auth.oauth.client.secrett", "unknown key")
        self.assertProblem(problems, "mcpServers.c.auth.clientCredentials.privateKeyFile", "unknown key")

    def test_client_needs_id(self) -> None:
        problems = self.problems({"gh": server(auth={"oauth": {"client": {"secret": SECRET}}})})
        self.assertProblem(problems, "mcpServers.gh.auth.oauth.client.id", "missing")

    def test_auth_method(self) -> None:
        problems = self.problems(
            {
                "a": server(auth={"oauth": {"client": {"id": "c", "authMethod": "private_key_jwt", "secret": "x"}}}),
                "b": server(auth={"oauth": {"client": {"id": "c", "authMethod": "none", "secret": SECRET}}}),
                "c": server(auth={"oauth": {"client": {"id": "c", "authMethod": "client_secret_basic"}}}),
            }
        )
        self.assertProblem(problems, "mcpServers.a.auth.oauth.client.authMethod", "client_secret_basic, client_secret_post, none")
        self.assertProblem(problems, "mcpServers.b.auth.oauth.client.authMethod", "public client")
        self.assertProblem(problems, "mcpServers.c.auth.oauth.client.authMethod", "needs the client's secret")
        self.assertNotIn(SECRET, "\n".join(problems))

    def test_scopes(self) -> None:
        problems = self.problems(
            {"a": server(auth={"oauth": {"scopes": "read write"}}), "b": server(auth={"oauth": {"scopes": ["read write"]}})}
        )
        self.assertProblem(problems, "mcpServers.a.auth.oauth.scopes", "list of strings")
        self.assertProblem(problems, "mcpServers.b.auth.oauth.scopes[0]", "one word")

    def test_issuer_https_or_loopback(self) -> None:
        problems = self.problems({"a": server(auth={"oauth": {"issuer": "http://idp.example.com"}})})
        self.assertProblem(problems, "mcpServers.a.auth.oauth.issuer", "https://")
        config = self.build({"a": server(auth={"oauth": {"issuer": "http://127.0.0.1:9000"}})})
        self.assertEqual(config.servers[0].auth.issuer, "http://127.0.0.1:9000")  # type: ignore[union-attr]

    def test_token_endpoint_https(self) -> None:
        problems = self.problems({"b": server(auth={"clientCredentials": {"id": "g", "secret": "x", "tokenEndpoint": "http://idp/t"}})})
        self.assertProblem(problems, "mcpServers.b.auth.clientCredentials.tokenEndpoint", "https://")

    def test_extra_params_may_not_override(self) -> None:
        reserved = ("response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "resource", "scope")
        for name in reserved:
            problems = self.problems({"gh": server(auth={"oauth": {"extraAuthorizeParams": {name: "x"}}})})
            self.assertProblem(problems, f"mcpServers.gh.auth.oauth.extraAuthorizeParams.{name}", "sets", name)

    def test_send_resource_boolean(self) -> None:
        problems = self.problems({"gh": server(auth={"oauth": {"sendResource": "no"}})})
        self.assertProblem(problems, "mcpServers.gh.auth.oauth.sendResource", "true or false")


class AuthRulesTests(OAuthConfigTestCase):
    def test_stdio_refused(self) -> None:
        problems = self.problems({"local": {"command": "uvx", "auth": "oauth"}})
        self.assertProblem(problems, "mcpServers.local.auth", "stdio servers take credentials from their environment", "SHOULD NOT use OAuth")
        self.assertEqual([p for p in problems if "unknown key" in p], [])

    def test_authorization_header_refused(self) -> None:
        problems = self.problems({"gh": server(auth="oauth", headers={"authorization": "Bearer " + SECRET})})
        self.assertProblem(problems, "mcpServers.gh.auth", "has auth and an Authorization header", "keep one of them")
        self.assertNotIn(SECRET, "\n".join(problems))

    def test_url_credentials_refused(self) -> None:
        problems = self.problems({"gh": {"url": f"https://user:{SECRET}@mcp.example.com/mcp", "auth": "oauth"}})
        self.assertProblem(problems, "mcpServers.gh.auth", "has auth and an Authorization header")
        self.assertNotIn(SECRET, "\n".join(problems))

    def test_other_headers_allowed(self) -> None:
        config = self.build({"gh": server(auth="oauth", headers={"X-Tenant": "a"})})
        self.assertEqual(config.servers[0].headers, {"X-Tenant": "a"})  # type: ignore[union-attr]

    def test_per_session_refused(self) -> None:
        problems = self.problems({"gh": server(auth="oauth", perSession=True)})
        self.assertProblem(problems, "mcpServers.gh.auth", "perSession: true", "not supported")
        config = self.build({"b": server(perSession=True, auth={"clientCredentials": {"id": "g", "secret": "x"}})})
        self.assertTrue(config.servers[0].perSession)

    def test_plain_http_refused(self) -> None:
        problems = self.problems({"gh": {"url": "http://mcp.example.com/mcp", "auth": "oauth"}})
        self.assertProblem(problems, "mcpServers.gh.url", "https://", "loopback")

    def test_loopback_http_warned(self) -> None:
        for url in ("http://127.0.0.1:8080/mcp", "http://localhost/mcp", "http://[::1]:9/mcp", "http://127.3.4.5/mcp"):
            with capturedLogs() as events:
                config = self.build({"gh": {"url": url, "auth": "oauth"}})
            self.assertEqual(config.servers[0].url, url)  # type: ignore[union-attr]
            warnings = [formatEvent(e) for e in events if e["log_level"].name == "warn"]
            self.assertEqual(len(warnings), 1, warnings)
            self.assertIn("mcpServers.gh.url", warnings[0])

    def test_http_without_auth_unchanged(self) -> None:
        config = self.build({"gh": {"url": "http://mcp.example.com/mcp"}}, oauth=None)
        self.assertEqual(config.servers[0].url, "http://mcp.example.com/mcp")  # type: ignore[union-attr]

    def test_oauth_needs_store_key(self) -> None:
        for oauth in (None, {}, {"store": {"path": "/var/lib/x"}}, {"publicUrl": "https://gw.example.com"}):
            problems = self.problems({"gh": server(auth="oauth")}, oauth=oauth)
            self.assertIn(
                "oauth.store: needs a key (keyFile, keyEnv or keyCredential): tokens are never stored unencrypted", problems
            )

    def test_changed_auth_is_a_changed_server(self) -> None:
        """The reload compares servers with ==: a changed auth restarts the backend."""
        one = self.build({"gh": server(auth={"oauth": {"scopes": ["a"]}})}).servers[0]
        same = self.build({"gh": server(auth={"oauth": {"scopes": ["a"]}})}).servers[0]
        other = self.build({"gh": server(auth={"oauth": {"scopes": ["b"]}})}).servers[0]
        secret = self.build({"gh": server(auth={"clientCredentials": {"id": "g", "secret": "one"}})}).servers[0]
        secret2 = self.build({"gh": server(auth={"clientCredentials": {"id": "g", "secret": "two"}})}).servers[0]
        self.assertEqual(one, same)
        self.assertNotEqual(one, other)
        self.assertNotEqual(secret, secret2)
        self.assertNotEqual(one, self.build({"gh": server()}, oauth=None).servers[0])


class SecretTests(OAuthConfigTestCase):
    def test_secret_file(self) -> None:
        path = self.secret_file()
        config = self.build({"gh": server(auth={"oauth": {"client": {"id": "c", "secretFile": path}}})})
        self.assertEqual(config.servers[0].auth.client.secret, SECRET)  # type: ignore[union-attr]

    def test_secret_file_relative_to_config(self) -> None:
        self.secret_file(name="rel.secret")
        config = self.build({"b": server(auth={"clientCredentials": {"id": "g", "secretFile": "rel.secret"}})})
        self.assertEqual(config.servers[0].auth.secret, SECRET)  # type: ignore[union-attr]

    def test_secret_file_readable_by_others_warned(self) -> None:
        path = self.secret_file(mode=0o644)
        with capturedLogs() as events:
            config = self.build({"gh": server(auth={"oauth": {"client": {"id": "c", "secretFile": path}}})})
        self.assertEqual(config.servers[0].auth.client.secret, SECRET)  # type: ignore[union-attr]
        warnings = [formatEvent(e) for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("mcpServers.gh.auth.oauth.client.secretFile", warnings[0])
        self.assertIn("group or others", warnings[0])
        self.assertNotIn(SECRET, warnings[0])

    def test_secret_file_private_not_warned(self) -> None:
        path = self.secret_file(mode=0o400)
        with capturedLogs() as events:
            self.build({"gh": server(auth={"oauth": {"client": {"id": "c", "secretFile": path}}})})
        self.assertEqual([e for e in events if e["log_level"].name == "warn"], [])

    def test_secret_file_problems_never_quote(self) -> None:
        empty = self.secret_file(text="\n", name="empty")
        binary = os.path.join(self.base_dir(), "binary")
        with open(binary, "wb") as f:
            f.write(b"\xff" + SECRET.encode())
        os.chmod(binary, 0o600)
        problems = self.problems(
            {
                "a": server(auth={"oauth": {"client": {"id": "c", "secretFile": os.path.join(self.base_dir(), "missing")}}}),
                "b": server(auth={"oauth": {"client": {"id": "c", "secretFile": empty}}}),
                "c": server(auth={"oauth": {"client": {"id": "c", "secretFile": binary}}}),
                "d": server(auth={"oauth": {"client": {"id": "c", "secretFile": empty, "secret": SECRET}}}),
            }
        )
        self.assertProblem(problems, "mcpServers.a.auth.oauth.client.secretFile", "cannot read")
        self.assertProblem(problems, "mcpServers.b.auth.oauth.client.secretFile", "empty")
        self.assertProblem(problems, "mcpServers.c.auth.oauth.client.secretFile", "not UTF-8")
        self.assertProblem(problems, "mcpServers.d.auth.oauth.client.secretFile", "only one of secret, secretFile")
        self.assertNotIn(SECRET, "\n".join(problems))

    def test_secret_from_environment(self) -> None:
        path = os.path.join(self.base_dir(), "gateway.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                "mcpServers:\n"
                "  b:\n"
                "    url: https://mcp.example.com/mcp\n"
                "    auth: {clientCredentials: {id: g, secret: '${BILLING_SECRET}'}}\n"
            )
        config = load(path, {"BILLING_SECRET": SECRET})
        self.assertEqual(config.servers[0].auth.secret, SECRET)  # type: ignore[union-attr]
        e = self.assertRaises(ConfigError, load, path, {})
        self.assertIn("BILLING_SECRET is not set", str(e))

    def test_secrets_not_in_repr(self) -> None:
        path = self.secret_file()
        config = self.build(
            {
                "a": server(auth={"oauth": {"client": {"id": "c", "secret": SECRET}}}),
                "b": server(auth={"clientCredentials": {"id": "g", "secretFile": path}}),
            },
            oauth={"store": {"keyEnv": "K"}, "browserCheck": "none", "browserCheckClient": {"id": "gw", "secret": SECRET}},
        )
        self.assertIn("OAuthClient(id='c'", repr(config))
        self.assertNotIn(SECRET, repr(config))
        self.assertNotIn(SECRET, str(config.servers))


class SectionTests(OAuthConfigTestCase):
    def test_defaults(self) -> None:
        config = self.build({"gh": server(auth="oauth")}, environ={"HOME": "/home/u"})
        self.assertEqual(
            config.oauth,
            OAuthSettings(store=OAuthStoreSettings(path="/home/u/.local/state/twisted-mcp/oauth", keyFile=None, keyEnv="OAUTH_KEY", keyCredential=None)),
        )
        assert config.oauth is not None
        self.assertEqual(
            attrs.asdict(config.oauth, recurse=False) | {"store": None},
            {
                "publicUrl": None,
                "clientName": "twisted-mcp",
                "clientMetadataUrl": None,
                "store": None,
                "browserCheck": None,
                "browserCheckClient": None,
                "authorizationTimeout": 600.0,
                "consentWait": 120.0,
                "refreshBefore": 0.8,
                "refreshMaxEarly": 300.0,
                "requestTimeout": 10.0,
                "maxMetadataBytes": 65536,
                "maxPendingPerPrincipal": 4,
            },
        )

    def test_null_is_the_default(self) -> None:
        nulls = {"publicUrl": None, "clientMetadataUrl": None, "browserCheck": None, "browserCheckClient": None}
        config = self.build({"gh": server(auth="oauth")}, oauth={**KEYED, **nulls})
        assert config.oauth is not None
        self.assertEqual(
            (config.oauth.publicUrl, config.oauth.clientMetadataUrl, config.oauth.browserCheck, config.oauth.browserCheckClient),
            (None, None, None, None),
        )

    def test_state_directory(self) -> None:
        config = self.build({"gh": server(auth="oauth")}, environ={"STATE_DIRECTORY": "/var/lib/twisted-mcp:/var/lib/other"})
        assert config.oauth is not None
        self.assertEqual(config.oauth.store.path, "/var/lib/twisted-mcp/oauth")

    def test_no_section_no_auth(self) -> None:
        self.assertIsNone(self.build({"gh": server()}, oauth=None).oauth)

    def test_every_key(self) -> None:
        config = self.build(
            {"gh": server(auth="oauth")},
            oauth={
                "publicUrl": "https://gw.example.com/base",
                "clientName": "twisted-mcp at example.com",
                "clientMetadataUrl": "https://gw.example.com/client.json",
                "store": {"path": "oauth-store", "keyFile": "oauth.key", "oldKeyFiles": ["old1.key", "/etc/old2.key"]},
                "browserCheck": "none",
                "authorizationTimeout": 300,
                "consentWait": 60,
                "refreshBefore": 0.5,
                "refreshMaxEarly": 120,
                "requestTimeout": 5,
                "maxMetadataBytes": 32768,
                "maxPendingPerPrincipal": 2,
            },
        )
        base = self.base_dir()
        self.assertEqual(
            config.oauth,
            OAuthSettings(
                publicUrl="https://gw.example.com/base",
                clientName="twisted-mcp at example.com",
                clientMetadataUrl="https://gw.example.com/client.json",
                store=OAuthStoreSettings(
                    path=os.path.join(base, "oauth-store"),
                    keyFile=os.path.join(base, "oauth.key"),
                    keyEnv=None,
                    keyCredential=None,
                    oldKeyFiles=(os.path.join(base, "old1.key"), "/etc/old2.key"),
                ),
                browserCheck="none",
                authorizationTimeout=300.0,
                consentWait=60.0,
                refreshBefore=0.5,
                refreshMaxEarly=120.0,
                requestTimeout=5.0,
                maxMetadataBytes=32768,
                maxPendingPerPrincipal=2,
            ),
        )

    def test_key_credential(self) -> None:
        config = self.build({"gh": server(auth="oauth")}, oauth={"store": {"keyCredential": "oauth-key"}})
        assert config.oauth is not None
        self.assertEqual(config.oauth.store.keyCredential, "oauth-key")

    def test_key_sources(self) -> None:
        problems = self.problems({"gh": server(auth="oauth")}, oauth={"store": {"keyFile": "/k", "keyEnv": "K"}})
        self.assertProblem(problems, "oauth.store.keyEnv", "only one of keyFile, keyEnv, keyCredential")
        problems = self.problems({"gh": server(auth="oauth")}, oauth={"store": {"keyCredential": "/etc/k"}})
        self.assertProblem(problems, "oauth.store.keyCredential", "credential name")
        problems = self.problems({"gh": server(auth="oauth")}, oauth={"store": {"keyEnv": "NOT A NAME"}})
        self.assertProblem(problems, "oauth.store.keyEnv", "environment variable")

    def test_public_url(self) -> None:
        cases = {
            "http://gw.example.com": "https://",
            "https://gw.example.com/?a=b": "query",
            "https://gw.example.com/#top": "fragment",
            "ftp://gw.example.com": "https://",
            "gw.example.com": "https://",
        }
        for url, word in cases.items():
            problems = self.problems({"gh": server(auth="oauth")}, oauth={**KEYED, "publicUrl": url})
            self.assertProblem(problems, "oauth.publicUrl", word)
        config = self.build({"gh": server(auth="oauth")}, oauth={**KEYED, "publicUrl": "http://127.0.0.1:8765"})
        assert config.oauth is not None
        self.assertEqual(config.oauth.publicUrl, "http://127.0.0.1:8765")

    def test_browser_check(self) -> None:
        problems = self.problems({"gh": server(auth="oauth")}, oauth={**KEYED, "browserCheck": "password"})
        self.assertProblem(problems, "oauth.browserCheck", "oidc or none")
        problems = self.problems({"gh": server(auth="oauth")}, oauth={**KEYED, "browserCheck": "oidc"})
        self.assertProblem(problems, "oauth.browserCheck", "browserCheckClient")

    def test_numbers(self) -> None:
        for key in ("authorizationTimeout", "consentWait", "refreshMaxEarly", "requestTimeout", "maxMetadataBytes", "maxPendingPerPrincipal"):
            for bad in (0, -1, "ten", True):
                problems = self.problems({"gh": server(auth="oauth")}, oauth={**KEYED, key: bad})
                self.assertProblem(problems, f"oauth.{key}", "expected")

    def test_refresh_before(self) -> None:
        for bad in (0, 1, 1.5, -0.2, "0.8", None):
            problems = self.problems({"gh": server(auth="oauth")}, oauth={**KEYED, "refreshBefore": bad})
            self.assertProblem(problems, "oauth.refreshBefore", "between 0 and 1")

    def test_unknown_keys(self) -> None:
        problems = self.problems({"gh": server(auth="oauth")}, oauth={"store": {"keyEnv": "K", "key": "x"}, "publicURL": "https://x"})
        self.assertProblem(problems, "oauth.publicURL", "unknown key", "publicUrl")
        self.assertProblem(problems, "oauth.store.key", "unknown key", "keyFile")

    def test_section_must_be_mapping(self) -> None:
        problems = self.problems({"gh": server()}, oauth=["store"])
        self.assertProblem(problems, "oauth", "expected a mapping")

    def test_browser_check_oidc_needs_identity_issuer(self) -> None:
        oauth = {**KEYED, "browserCheck": "oidc", "browserCheckClient": {"id": "gw-connect", "secret": SECRET}}
        problems = self.problems({"gh": server(auth="oauth")}, oauth=oauth)
        self.assertProblem(problems, "oauth.browserCheck", "identity.jwt", "issuer")
        self.assertNotIn(SECRET, "\n".join(problems))
        config = self.build(
            {"gh": server(auth="oauth")},
            oauth=oauth,
            identity={"jwt": {"tokenEnv": "T", "algorithms": ["HS256"], "secret": "k" * 32, "issuer": "https://idp.example.com"}},
        )
        assert config.oauth is not None
        self.assertEqual(config.oauth.browserCheckClient, OAuthClient(id="gw-connect", secret=SECRET))


class CheckConfigTests(OAuthConfigTestCase):
    def test_check_config_accepts_the_new_keys(self) -> None:
        from twisted_mcp.cli import main

        path = os.path.join(self.base_dir(), "gateway.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                "oauth:\n"
                "  publicUrl: https://gw.example.com\n"
                "  store: {keyEnv: OAUTH_KEY}\n"
                "mcpServers:\n"
                "  github: {url: 'https://api.example.com/mcp/', auth: oauth}\n"
                "  billing:\n"
                "    url: https://billing.example.com/mcp\n"
                f"    auth: {{clientCredentials: {{id: g, secret: {SECRET}}}}}\n"
            )
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(main(["check-config", path]), 0)
        self.assertIn("OK, 2 server(s)", out.getvalue())
        self.assertNotIn(SECRET, out.getvalue())
