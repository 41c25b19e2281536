"""
Tests for L{twisted_mcp.redaction}: one rule for secret names, used by the
log observer's safety net and the audit trail's argument redaction.
"""

from __future__ import annotations

import io
import json

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.ops import logs
from twisted_mcp.policy import audit
from twisted_mcp.redaction import is_secret_name

SECRET_NAMES = (
    # password and friends
    "password", "Password", "passwd", "pass", "db_pass", "passphrase", "passcode", "newPassword", "dbpassword",
    # secrets and tokens
    "secret", "client_secret", "clientSecret", "token", "access_token", "refreshToken", "id_token",
    "GITHUB_TOKEN", "githubtoken", "tokens",
    # keys
    "key", "keys", "api_key", "apiKey", "APIKey", "X-API-KEY", "apikey", "private_key", "privateKey",
    "ssh_key", "sshKey", "access_key", "AWS_SECRET_ACCESS_KEY", "accessKeyId", "myapikey",
    # headers and sessions
    "auth", "Authorization", "proxy-authorization", "auth_header", "bearer", "Bearer", "jwt", "JWT",
    "cookie", "Set-Cookie", "cookies", "session", "session_id", "sessionId", "SESSIONID", "Mcp-Session-Id",
    # credentials, codes, signatures
    "credential", "credentials", "creds", "pin", "PIN", "pin_code", "otp", "totp", "otp_code", "mfa_code",
    "private", "signature", "X-Hub-Signature-256", "cvv",
)  # fmt: skip

PLAIN_NAMES = (
    # substrings of secret words inside other words
    "keyword", "keywords", "monkey", "turkey", "hockey", "passage", "bypass", "compass", "passthrough",
    "spinner", "opinion", "pinned", "tokenizer", "secretary", "possession", "authenticated", "oauth_scope",
    # names that describe a secret rather than hold one
    "session_count", "sessionCount", "max_tokens", "num_tokens", "token_count", "total_tokens", "tokens_used",
    "key_name", "secret_name", "password_file", "api_key_path", "token_type", "auth_url", "token_expires_in",
    "is_private", "has_password", "password_length", "keyCount",
    # ordinary fields
    "request", "request_id", "backend", "tool", "api", "query", "name", "user", "url", "text", "path", "",
)  # fmt: skip


class SecretNameTests(SynchronousTestCase):
    def test_secretNames(self) -> None:
        self.assertEqual([n for n in SECRET_NAMES if not is_secret_name(n)], [])

    def test_plainNames(self) -> None:
        self.assertEqual([n for n in PLAIN_NAMES if is_secret_name(n)], [])

    def test_longNames(self) -> None:
        """Names too long to be cached are judged the same way."""
        self.assertTrue(is_secret_name("the_" * 40 + "password"))
        self.assertFalse(is_secret_name("the_" * 40 + "keyword"))


class OneRuleTests(SynchronousTestCase):
    """The audit trail and the log hide the same names."""

    ARGUMENTS = {
        **{name: f"value-of-{name}" for name in SECRET_NAMES + PLAIN_NAMES},
        "nested": [{"ssh_key": "ssh-ed25519 AAAA", "keyword": "visible"}],
    }

    def hidden(self, copy: dict, marker: str) -> set[str]:
        return {k for k, v in copy.items() if v == marker}

    def test_audit(self) -> None:
        copy = audit.redact(self.ARGUMENTS)
        self.assertEqual(self.hidden(copy, audit.REDACTED), set(SECRET_NAMES))
        self.assertEqual(copy["nested"], [{"ssh_key": audit.REDACTED, "keyword": "visible"}])

    def test_log(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="t", observer=logs.observer_for("json", "-", True, stream=out))
        log.info("call", arguments=self.ARGUMENTS, **self.ARGUMENTS)
        line = json.loads(out.getvalue())
        self.assertEqual(self.hidden(line, logs.REDACTED), set(SECRET_NAMES))
        self.assertEqual(self.hidden(line["arguments"], logs.REDACTED), set(SECRET_NAMES))
        self.assertEqual(line["arguments"]["nested"], [{"ssh_key": logs.REDACTED, "keyword": "visible"}])
