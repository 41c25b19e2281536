"""
Tests for L{twisted_mcp.backends.oauth.urls}: where metadata is looked
for, which endpoints may be used, origins, and whether a resource covers a
backend URL.
"""

from __future__ import annotations

import pytest

from twisted_mcp.backends.oauth.urls import (
    authorization_server_metadata_urls,
    is_https_or_loopback,
    is_loopback_host,
    origin,
    protected_resource_metadata_urls,
    resource_covers,
    same_origin,
)


def test_protected_resource_metadata_urls_the_specs_example():
    assert protected_resource_metadata_urls("https://example.com/public/mcp") == [
        "https://example.com/.well-known/oauth-protected-resource/public/mcp",
        "https://example.com/.well-known/oauth-protected-resource",
    ]


@pytest.mark.parametrize("url", ["https://example.com", "https://example.com/", "https://EXAMPLE.com:443/"])
def test_protected_resource_metadata_urls_without_a_path_only_the_root(url):
    assert protected_resource_metadata_urls(url) == ["https://example.com/.well-known/oauth-protected-resource"]


def test_protected_resource_metadata_urls_a_trailing_slash_is_removed():
    assert protected_resource_metadata_urls("https://example.com/public/mcp/") == [
        "https://example.com/.well-known/oauth-protected-resource/public/mcp",
        "https://example.com/.well-known/oauth-protected-resource",
    ]


def test_protected_resource_metadata_urls_keep_port_and_query_drop_user_information():
    assert protected_resource_metadata_urls("http://u:pw@127.0.0.1:8080/mcp?tenant=a") == [
        "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp?tenant=a",
        "http://127.0.0.1:8080/.well-known/oauth-protected-resource",
    ]


def test_authorization_server_metadata_urls_the_specs_example_with_a_path():
    assert authorization_server_metadata_urls("https://auth.example.com/tenant1") == [
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example.com/.well-known/openid-configuration/tenant1",
        "https://auth.example.com/tenant1/.well-known/openid-configuration",
    ]


@pytest.mark.parametrize("issuer", ["https://auth.example.com", "https://auth.example.com/"])
def test_authorization_server_metadata_urls_without_a_path(issuer):
    assert authorization_server_metadata_urls(issuer) == [
        "https://auth.example.com/.well-known/oauth-authorization-server",
        "https://auth.example.com/.well-known/openid-configuration",
    ]


def test_authorization_server_metadata_urls_a_trailing_slash_is_removed():
    assert authorization_server_metadata_urls("https://auth.example.com:8443/a/tenant1/") == [
        "https://auth.example.com:8443/.well-known/oauth-authorization-server/a/tenant1",
        "https://auth.example.com:8443/.well-known/openid-configuration/a/tenant1",
        "https://auth.example.com:8443/a/tenant1/.well-known/openid-configuration",
    ]


@pytest.mark.parametrize("url", ["", "not a url", "/relative/path", "https://[::1/x", "https://h:99999/"])
def test_metadata_urls_of_unreadable_urls_raise_value_error(url):
    with pytest.raises(ValueError):
        protected_resource_metadata_urls(url)
    with pytest.raises(ValueError):
        authorization_server_metadata_urls(url)


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("::2", False),
        ("localhost.example.com", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://example.com/token", True),
        ("HTTPS://example.com", True),
        ("http://127.0.0.2/token", True),
        ("http://127.0.0.1:9000/token", True),
        ("http://localhost:8080/authorize", True),
        ("http://[::1]:8080/authorize", True),
        ("http://example.com/token", False),
        ("http://10.0.0.1/token", False),
        ("ftp://example.com/token", False),
        ("https:///no-host", False),
        ("/relative", False),
        ("https://[::1/broken", False),
        ("", False),
    ],
)
def test_is_https_or_loopback(url, allowed):
    assert is_https_or_loopback(url) is allowed


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("https://example.com/a", "https://example.com/b?x", True),
        ("https://example.com", "https://EXAMPLE.com:443/", True),
        ("http://example.com:80/", "HTTP://example.com", True),
        ("https://u:p@example.com/", "https://example.com/", True),
        ("https://example.com", "http://example.com", False),
        ("https://example.com", "https://example.com:8443", False),
        ("https://example.com", "https://www.example.com", False),
        ("https://example.com", "not a url", False),
        ("/x", "/x", False),
    ],
)
def test_same_origin(a, b, same):
    assert same_origin(a, b) is same


def test_origin():
    assert origin("https://User:pw@Example.COM:443/path?q#f") == "https://example.com"
    assert origin("http://example.com:8080/x") == "http://example.com:8080"
    assert origin("http://[::1]:3000/mcp") == "http://[::1]:3000"
    with pytest.raises(ValueError):
        origin("/relative")


@pytest.mark.parametrize(
    "resource, backend, covers",
    [
        ("https://example.com/mcp", "https://example.com/mcp", True),
        ("https://example.com/mcp/", "https://example.com/mcp", True),
        ("https://example.com/mcp", "https://example.com/mcp/", True),
        ("https://example.com", "https://example.com/public/mcp", True),
        ("https://example.com/", "https://example.com/public/mcp", True),
        ("https://example.com/public", "https://example.com/public/mcp", True),
        ("https://EXAMPLE.com:443/public", "https://example.com/public/mcp", True),
        # a sibling, a child, a prefix that is not a segment
        ("https://example.com/other", "https://example.com/public/mcp", False),
        ("https://example.com/public/mcp/deeper", "https://example.com/public/mcp", False),
        ("https://example.com/mcp", "https://example.com/mcpx", False),
        ("https://example.com/mcpx", "https://example.com/mcp", False),
        # other origins
        ("https://example.com:8443/mcp", "https://example.com/mcp", False),
        ("http://example.com/mcp", "https://example.com/mcp", False),
        ("https://evil.example.com/mcp", "https://example.com/mcp", False),
        # paths are case-sensitive; fragments never; queries only when equal
        ("https://example.com/MCP", "https://example.com/mcp", False),
        ("https://example.com/mcp#x", "https://example.com/mcp", False),
        ("https://example.com/mcp?t=a", "https://example.com/mcp?t=a", True),
        ("https://example.com/mcp?t=a", "https://example.com/mcp?t=b", False),
        ("https://example.com/?t=a", "https://example.com/mcp?t=a", False),
        ("not a url", "https://example.com/mcp", False),
    ],
)
def test_resource_covers(resource, backend, covers):
    assert resource_covers(resource, backend) is covers


@pytest.mark.parametrize(
    "url",
    ["https://as.example/authoriz\u00e9", "https://as.example/a b", "https://as.example/a\r\nSet-Cookie: x=1", "https://as.example/\x7f"],
)
def test_endpoints_must_be_printable_ascii(url: str) -> None:
    """An endpoint is put in a Location header and request lines as it is: nothing to encode, nothing to inject."""
    assert not is_https_or_loopback(url)
