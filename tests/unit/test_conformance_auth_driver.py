"""
Tests for the conformance suite's auth/* driver (tests/conformance/auth_driver.py)
and the part of tests/conformance/run.py that lists those scenarios: the gateway
configuration written per scenario (accepted by the real loader, secrets only in
0600 files), when the driver logs in again or stops, and the parsing of what the
suite and the CLI print.
"""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.conformance import auth_driver as driver
from tests.conformance.run import AUTH_SECRETS, auth_scenario_names, client_output, leaked_secrets
from twisted_mcp.config.loader import build
from twisted_mcp.config.models import ClientCredentialsAuth, OAuthAuth

URL = "http://localhost:4100/mcp"
SECRET = "conformance-client-s3cret"


class GatewayConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="auth-driver-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def config(self, scenario: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
        return driver.gateway_config(scenario, URL, context or {}, self.directory)

    def loaded_auth(self, config: dict[str, Any]) -> Any:
        """The backend's auth as the gateway's own loader reads the written configuration."""
        loaded = build(json.loads(json.dumps(config)), "test", environ={}, base_dir=str(self.directory))
        (server,) = loaded.servers
        return server.auth

    def test_discovered_client(self) -> None:
        """No context: `auth: oauth` with nothing pre-set (discovery, then DCR), a sealed store."""
        config = self.config("auth/metadata-default")
        backend = config["mcpServers"][driver.BACKEND]
        self.assertEqual((backend["type"], backend["url"]), ("http", URL))
        self.assertEqual(backend["auth"], {"oauth": {}})
        auth = self.loaded_auth(config)
        self.assertIsInstance(auth, OAuthAuth)
        self.assertIsNone(auth.client)
        self.assertNotIn("clientMetadataUrl", config["oauth"])

    def test_store_key(self) -> None:
        """The store's key: 32 random bytes as base64 text (the loader strips whitespace), mode 0600."""
        config = self.config("auth/metadata-default")
        key = Path(config["oauth"]["store"]["keyFile"])
        self.assertEqual(stat.S_IMODE(key.stat().st_mode), 0o600)
        self.assertEqual(len(key.read_bytes()), 44)
        first = key.read_bytes()
        self.config("auth/metadata-default")
        self.assertNotEqual(key.read_bytes(), first)
        self.assertTrue(str(Path(config["oauth"]["store"]["path"])).startswith(str(self.directory)))

    def test_pre_registered_client(self) -> None:
        """client_id and client_secret in the context: a pre-registered client, its secret in a 0600 file only."""
        config = self.config("auth/pre-registration", {"client_id": "pre-id", "client_secret": SECRET})
        client = config["mcpServers"][driver.BACKEND]["auth"]["oauth"]["client"]
        self.assertEqual(client["id"], "pre-id")
        secret_file = Path(client["secretFile"])
        self.assertEqual(secret_file.read_text(), SECRET)
        self.assertEqual(stat.S_IMODE(secret_file.stat().st_mode), 0o600)
        self.assertNotIn(SECRET, json.dumps(config))
        auth = self.loaded_auth(config)
        self.assertEqual((auth.client.id, auth.client.secret), ("pre-id", SECRET))

    def test_public_pre_registered_client(self) -> None:
        """A client_id without a secret: a public pre-registered client."""
        config = self.config("auth/pre-registration", {"client_id": "public-id"})
        self.assertEqual(config["mcpServers"][driver.BACKEND]["auth"], {"oauth": {"client": {"id": "public-id"}}})

    def test_cimd(self) -> None:
        """auth/basic-cimd: the suite's fixed client metadata document URL."""
        config = self.config("auth/basic-cimd")
        self.assertEqual(config["oauth"]["clientMetadataUrl"], "https://conformance-test.local/client-metadata.json")
        self.loaded_auth(config)

    def test_client_credentials(self) -> None:
        """auth/client-credentials-*: `auth: {clientCredentials}` with the context's client."""
        config = self.config("auth/client-credentials-basic", {"client_id": "machine", "client_secret": SECRET})
        spec = config["mcpServers"][driver.BACKEND]["auth"]["clientCredentials"]
        self.assertEqual(spec["id"], "machine")
        self.assertNotIn(SECRET, json.dumps(config))
        auth = self.loaded_auth(config)
        self.assertIsInstance(auth, ClientCredentialsAuth)
        self.assertEqual((auth.id, auth.secret), ("machine", SECRET))


class NextStepTests(SynchronousTestCase):
    def test_done(self) -> None:
        self.assertEqual(driver.next_step(driver.Answer(text="test"), 1), "done")

    def test_authorization_required_logs_in(self) -> None:
        """-31040, whatever its reason (no token yet, insufficient-scope): log in and call again."""
        for reason in ("authorization-required", "insufficient-scope", "reauthorization-required"):
            answer = driver.Answer(code=-31040, reason=reason)
            self.assertEqual(driver.next_step(answer, 1), "login")

    def test_login_limit(self) -> None:
        """The driver's own limit is above the gateway's three attempts: it stops only after four logins."""
        answer = driver.Answer(code=-31040, reason="insufficient-scope")
        self.assertEqual(driver.next_step(answer, 3), "login")
        self.assertEqual(driver.next_step(answer, 4), "stop")
        self.assertGreater(driver.MAX_LOGINS, 3)

    def test_catalog_wait(self) -> None:
        """The first login waits longest; the retries stay far inside the 60 s discovery cache."""
        self.assertEqual(driver.catalog_wait(0), driver.CATALOG_SECONDS)
        self.assertEqual(driver.catalog_wait(1), driver.CATALOG_SECONDS)
        retries = sum(driver.catalog_wait(n) for n in range(2, driver.MAX_LOGINS + 1))
        self.assertLess(driver.CATALOG_SECONDS + retries, 30)

    def test_step_up_limit_stops(self) -> None:
        """-31041 step-up-limit: the gateway gave up; so does the driver."""
        self.assertEqual(driver.next_step(driver.Answer(code=-31041, reason="step-up-limit"), 1), "stop")

    def test_other_errors_stop(self) -> None:
        for code in (-31042, -31035, -32603):
            self.assertEqual(driver.next_step(driver.Answer(code=code), 1), "stop")

    def test_unknown_tool_asks_status(self) -> None:
        """An unknown tool (its backend is down) means log in only when the status says it waits for one."""
        answer = driver.Answer(code=-32602, message="Unknown tool")
        self.assertEqual(driver.next_step(answer, 1, None), "stop")
        self.assertEqual(driver.next_step(answer, 1, status(auth={"state": "ready"})), "stop")
        self.assertEqual(driver.next_step(answer, 1, status(auth={"state": "needs-authorization"})), "login")
        self.assertEqual(driver.next_step(answer, 4, status(auth={"state": "needs-authorization"})), "stop")


def status(name: str = driver.BACKEND, **fields: Any) -> dict[str, Any]:
    return {"backends": [{"name": "other", "auth": {"state": "needs-authorization"}}, {"name": name, **fields}]}


class NeedsAuthorizationTests(SynchronousTestCase):
    def test_state(self) -> None:
        self.assertTrue(driver.needs_authorization(status(auth={"state": "needs-authorization"})))
        self.assertFalse(driver.needs_authorization(status(auth={"state": "ready"})))

    def test_last_error(self) -> None:
        """A tool listing refused with -31040 (e.g. insufficient scope) also waits for a login."""
        refused = "tools/list was refused: backend 'conformance' needs your authorization: run `twisted-mcp login` (-31040)"
        self.assertTrue(driver.needs_authorization(status(auth={"state": "ready"}, lastError=refused)))
        self.assertFalse(driver.needs_authorization(status(auth={"state": "ready"}, lastError="HTTP 500 (-31035)")))

    def test_other_backend_or_nothing(self) -> None:
        self.assertFalse(driver.needs_authorization(status(name="elsewhere")))
        self.assertFalse(driver.needs_authorization(None))
        self.assertFalse(driver.needs_authorization({"backends": "garbage"}))
        self.assertFalse(driver.needs_authorization(status(auth=None, lastError=None)))


class ParsingTests(SynchronousTestCase):
    def test_login_url(self) -> None:
        """The URL `twisted-mcp login` prints, indented on its own line; nothing else."""
        url = "http://localhost:1/authorize?response_type=code&client_id=x"
        self.assertEqual(driver.login_url(f"  {url}\n"), url)
        self.assertIsNone(driver.login_url("Open this URL in a browser on this machine to authorize conformance for local:\n"))
        self.assertIsNone(driver.login_url(f"{url}\n"))
        self.assertIsNone(driver.login_url("  see http://x/ for more\n"))

    def test_context(self) -> None:
        self.assertEqual(driver.parse_context(None), {})
        self.assertEqual(driver.parse_context(""), {})
        self.assertEqual(driver.parse_context('{"name": "auth/x", "client_id": "c"}')["client_id"], "c")
        self.assertRaises(ValueError, driver.parse_context, "[1]")

    def test_scenario_kinds(self) -> None:
        self.assertTrue(driver.is_auth("auth/metadata-default"))
        self.assertFalse(driver.is_auth("tools_call"))
        self.assertTrue(driver.uses_client_credentials("auth/client-credentials-basic"))
        self.assertFalse(driver.uses_client_credentials("auth/pre-registration"))

    def test_auth_scenario_names(self) -> None:
        """The client auth/* scenarios of the suite's `list`, not its server or AS ones."""
        listing = (
            "Server scenarios (test against a server):\n"
            "  - server-initialize [2025-06-18,2025-11-25]\n"
            "  - auth/not-a-client-scenario [2025-11-25]\n"
            "\n"
            "Client scenarios (test against a client):\n"
            "  - initialize [2025-06-18,2025-11-25]\n"
            "  - auth/metadata-default [2025-11-25,2026-07-28]\n"
            "  - auth/dpop [extension]\n"
            "  - sep-2322-client-request-state [2026-07-28]\n"
            "\n"
            "Authorization server scenarios (test against an authorization server):\n"
            "  - authorization-code-grant [2025-03-26]\n"
        )
        self.assertEqual(auth_scenario_names(listing), ["auth/metadata-default", "auth/dpop"])


class LeakTests(SynchronousTestCase):
    def test_leaked_secrets(self) -> None:
        """Each code, token and client secret of the suite is found in what the client printed."""
        clean = "login: authorized for local (issuer http://localhost:1, scopes: mcp:basic)\nthe tool answered: test\n"
        self.assertEqual(leaked_secrets(clean), [])
        self.assertEqual(leaked_secrets(clean + "Authorization: Bearer test-token-1733212345678"), ["test-token"])
        self.assertEqual(leaked_secrets("?code=test-auth-code&state=x"), ["test-auth-code"])
        for secret in AUTH_SECRETS:
            self.assertIn(secret, leaked_secrets(f"... {secret} ..."))

    def test_client_output(self) -> None:
        """The stdout and stderr the suite saved for the client, under its per-scenario directory."""
        directory = Path(tempfile.mkdtemp(prefix="auth-output-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        run = directory / "auth" / "metadata-default-2026-12-03T08-00-00-000Z"
        run.mkdir(parents=True)
        (run / "stdout.txt").write_text("out\n")
        (run / "stderr.txt").write_text("gateway log test-token-1\n")
        (run / "checks.json").write_text('[{"details": "test-token-2"}]')
        self.assertEqual(client_output(directory), "gateway log test-token-1\nout\n")
