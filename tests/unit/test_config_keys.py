"""
Tests for L{twisted_mcp.config.keys}: a key named by exactly one of
C{keyFile}, C{keyEnv}, C{keyCredential}, read for the audit trail and the
OAuth store alike, and never shown.
"""

from __future__ import annotations

import os

import attrs
import pytest

from twisted_mcp.config import keys
from twisted_mcp.config.keys import KEY_SOURCES, load_key, read_key
from twisted_mcp.policy.audit import keys as audit_keys

SECRET = "k3y-that-is-long-enough-for-the-store-0123456789"


@attrs.frozen
class StoreSection:
    """The shape of the config helper's C{OAuthStoreSettings}: absent sources are C{None}."""

    path: str = "/var/lib/x"
    keyFile: str | None = None
    keyEnv: str | None = None
    keyCredential: str | None = None


def _file(tmp_path, name: str = "store.key", content: str = SECRET + "\n") -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


def test_the_audit_module_reexports_what_moved():
    assert audit_keys.KEY_SOURCES is KEY_SOURCES == ("keyFile", "keyEnv", "keyCredential")
    assert audit_keys.load_key is read_key
    assert audit_keys.MIN_KEY_BYTES == keys.MIN_KEY_BYTES == 16


def test_key_file_from_a_mapping_or_a_model(tmp_path):
    path = _file(tmp_path)
    assert load_key({"keyFile": path}, "oauth.store") == SECRET.encode()
    assert load_key(StoreSection(keyFile=path), "oauth.store") == SECRET.encode()


def test_key_env(monkeypatch):
    assert load_key({"keyEnv": "STORE_KEY"}, "oauth.store", environ={"STORE_KEY": f"  {SECRET}\n"}) == SECRET.encode()
    monkeypatch.setenv("TWISTED_MCP_TEST_STORE_KEY", SECRET)
    assert load_key(StoreSection(keyEnv="TWISTED_MCP_TEST_STORE_KEY"), "oauth.store") == SECRET.encode()


def test_key_credential(tmp_path):
    _file(tmp_path, "oauth.key")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert load_key(StoreSection(keyCredential="oauth.key"), "oauth.store", environ=environ) == SECRET.encode()


@pytest.mark.parametrize(
    "section, environ, message",
    [
        ({}, {}, "oauth.store needs a key (keyFile, keyEnv or keyCredential)"),
        (StoreSection(), {}, "oauth.store needs a key (keyFile, keyEnv or keyCredential)"),
        ({"keyFile": None, "keyEnv": None}, {}, "oauth.store needs a key"),
        ({"keyFile": "/x", "keyEnv": "X"}, {}, "oauth.store: only one of keyFile, keyEnv, keyCredential may be given"),
        (StoreSection(keyEnv="X", keyCredential="y"), {}, "oauth.store: only one of"),
        ({"keyEnv": ""}, {}, "oauth.store.keyEnv: expected a non-empty string"),
        ({"keyEnv": 7}, {}, "oauth.store.keyEnv: expected a non-empty string"),
        ({"keyEnv": "STORE_KEY"}, {}, "oauth.store.keyEnv: the environment variable STORE_KEY is not set"),
        ({"keyFile": "/nonexistent/store.key"}, {}, "oauth.store.keyFile: cannot read /nonexistent/store.key"),
        ({"keyCredential": "oauth.key"}, {}, "oauth.store.keyCredential: $CREDENTIALS_DIRECTORY is not set"),
        (
            {"keyCredential": "../oauth.key"},
            {"CREDENTIALS_DIRECTORY": "/run/credentials/x"},
            "oauth.store.keyCredential: expected a credential name",
        ),
    ],
)
def test_refusals_name_the_key_path(section, environ, message):
    with pytest.raises(ValueError) as raised:
        load_key(section, "oauth.store", environ=environ)
    assert str(raised.value).startswith(message)


def test_a_short_key_is_refused_without_being_shown():
    short = "s3cr3t-but-short"  # 16 bytes: enough for the audit trail, not for the store
    assert load_key({"keyEnv": "K"}, "audit", environ={"K": short}) == short.encode()
    with pytest.raises(ValueError) as raised:
        load_key({"keyEnv": "K"}, "oauth.store", environ={"K": short}, min_bytes=32)
    message = str(raised.value)
    assert message.startswith("oauth.store.keyEnv: the key is 16 byte(s); it needs at least 32")
    assert "head -c 32 /dev/urandom | base64" in message
    assert short not in message


def test_no_message_ever_holds_the_key(tmp_path):
    path = _file(tmp_path, content="tiny-secret")
    for section, environ in (
        ({"keyFile": path}, {}),
        ({"keyEnv": "K"}, {"K": "tiny-secret"}),
        ({"keyCredential": "store.key"}, {"CREDENTIALS_DIRECTORY": str(tmp_path)}),
    ):
        with pytest.raises(ValueError) as raised:
            load_key(section, "oauth.store", environ=environ)
        assert "tiny-secret" not in str(raised.value)


def test_a_huge_key_file_is_read_only_up_to_a_bound(tmp_path):
    path = tmp_path / "big.key"
    path.write_bytes(b"x" * (1 << 20))
    assert len(read_key("keyFile", str(path), os.environ)) == 1 << 16
