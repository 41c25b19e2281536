"""
Tests for L{twisted_mcp.urls}: how addresses are shown, and credentials in
a URL turned into an Authorization header.
"""

from __future__ import annotations

import base64
import hashlib

from twisted_mcp.urls import shown_args, shown_url, split_credentials, split_url


def _digest(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:8]


def test_a_secret_in_the_path_is_shown_as_a_digest():
    url = "https://mcp.example.com/mcp/tok_9f8e7d6c5b4a"
    shown = shown_url(url)
    assert "tok_9f8e7d6c5b4a" not in shown
    assert shown == f"https://mcp.example.com/[path {_digest('/mcp/tok_9f8e7d6c5b4a')}]"


def test_credentials_query_and_fragment_are_never_shown():
    shown = shown_url("https://alice:pw%40x@[::1]:8443/?api_key=K1#frag")
    assert shown == "https://[::1]:8443/?…"


def test_a_relative_address_is_shown_as_a_digest_of_its_path():
    assert shown_url("/other/secret") == f"/[path {_digest('/other/secret')}]"


def test_urls_inside_arguments_are_shown_the_same_way():
    args = ["--db=postgresql://app:pw@db:5432/app", "https://h/x?token=abc", "plain"]
    shown = shown_args(args)
    assert "pw" not in shown and "abc" not in shown
    assert shown == f"--db=postgresql://db:5432/[path {_digest('/app')}] https://h/[path {_digest('/x')}]?… plain"


def test_an_unreadable_address_is_never_split_and_shown_without_raising():
    for url in ("http://[::1/mcp", "https://u:s3cret@example[com/k3y", "http://h:99999/", "http://h:abc/", "http://\u00e9..x/"):
        assert split_url(url) is None
        assert shown_url(url) == "[an unreadable address]"
    assert split_url("http://[::1]:8080/mcp").port == 8080


def test_userinfo_becomes_basic_authorization():
    url, header = split_credentials("https://al%20ice:p%3Ass@host:8443/mcp?x=1")
    assert url == "https://host:8443/mcp?x=1"
    assert header == "Basic " + base64.b64encode(b"al ice:p:ss").decode()


def test_a_url_without_userinfo_is_left_alone():
    assert split_credentials("http://127.0.0.1:9/mcp") == ("http://127.0.0.1:9/mcp", None)
