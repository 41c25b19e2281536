"""
Tests for L{twisted_mcp.backends.oauth.metadata}: protected resource
metadata and authorization server metadata accepted and refused row by
row of C{docs/design/oauth.md} §3 (steps 2 and 4), each refusal with its
C{reason}.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from twisted_mcp.backends.oauth.metadata import (
    ResourceMetadata,
    ServerMetadata,
    parse_resource_metadata,
    parse_server_metadata,
)
from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable

BACKEND = "https://mcp.example.com/public/mcp"
ISSUER = "https://auth.example.com/tenant1"


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


def _prm(**changes: Any) -> bytes:
    document = {
        "resource": BACKEND,
        "authorization_servers": [ISSUER, "https://other.example.com"],
        "scopes_supported": ["files:read", "files:write"],
        "bearer_methods_supported": ["header"],
    }
    document.update(changes)
    return _body({k: v for k, v in document.items() if v is not _ABSENT})


def _asm(**changes: Any) -> bytes:
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": "https://auth.example.com/tenant1/authorize",
        "token_endpoint": "https://auth.example.com/tenant1/token",
        "code_challenge_methods_supported": ["plain", "S256"],
        "response_types_supported": ["code"],
    }
    document.update(changes)
    return _body({k: v for k, v in document.items() if v is not _ABSENT})


_ABSENT = object()


def _refused(reason: str, call: Any, *args: Any) -> AuthorizationUnavailable:
    with pytest.raises(AuthorizationUnavailable) as raised:
        call(*args)
    assert raised.value.reason == reason, raised.value.message
    return raised.value


# -- step 2: protected resource metadata --------------------------------------


def test_resource_metadata_accepted():
    assert parse_resource_metadata(_prm(), BACKEND) == ResourceMetadata(
        resource=BACKEND,
        authorization_servers=(ISSUER, "https://other.example.com"),
        scopes_supported=("files:read", "files:write"),
    )


def test_resource_metadata_without_scopes():
    assert parse_resource_metadata(_prm(scopes_supported=_ABSENT), BACKEND).scopes_supported is None


@pytest.mark.parametrize(
    "resource",
    ["https://mcp.example.com/public/mcp/", "https://mcp.example.com/public", "https://mcp.example.com", "https://MCP.example.com:443/public"],
)
def test_resource_may_be_the_backend_url_or_a_parent(resource):
    assert parse_resource_metadata(_prm(resource=resource), BACKEND).resource == resource


def test_a_loopback_http_authorization_server_is_accepted():
    metadata = parse_resource_metadata(_prm(authorization_servers=["http://127.0.0.1:9000"]), BACKEND)
    assert metadata.authorization_servers == ("http://127.0.0.1:9000",)


@pytest.mark.parametrize(
    "resource",
    [
        "https://mcp.example.com/other",
        "https://mcp.example.com/public/mcpx",
        "https://mcp.example.com/public/mcp/deeper",
        "https://mcp.example.com:8443/public/mcp",
        "http://mcp.example.com/public/mcp",
        "https://evil.example.com/public/mcp",
        "https://mcp.example.com/public/mcp#frag",
        "ftp://mcp.example.com/public/mcp",
        "not a url",
    ],
)
def test_resource_mismatch(resource):
    _refused("resource-mismatch", parse_resource_metadata, _prm(resource=resource), BACKEND)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"[" * 100000,
        b'{"resource": NaN}',
        b'{"resource": "https://mcp.example.com/public/mcp", "resource": "https://evil.example.com/"}',
    ],
)
def test_resource_metadata_not_a_json_object(body):
    _refused("metadata-invalid", parse_resource_metadata, body, BACKEND)


@pytest.mark.parametrize(
    "changes",
    [
        {"resource": _ABSENT},
        {"resource": None},
        {"resource": 7},
        {"resource": ""},
        {"authorization_servers": _ABSENT},
        {"authorization_servers": []},
        {"authorization_servers": "https://auth.example.com"},
        {"authorization_servers": [ISSUER, 3]},
        {"authorization_servers": [""]},
        {"scopes_supported": "files:read"},
        {"scopes_supported": [1]},
    ],
)
def test_resource_metadata_wrong_types(changes):
    _refused("metadata-invalid", parse_resource_metadata, _prm(**changes), BACKEND)


@pytest.mark.parametrize(
    "server", ["http://auth.example.com", "http://10.0.0.1/as", "ftp://auth.example.com", "auth.example.com"]
)
def test_an_authorization_server_neither_https_nor_loopback(server):
    _refused("insecure-endpoint", parse_resource_metadata, _prm(authorization_servers=[ISSUER, server]), BACKEND)


def test_a_refusal_never_quotes_the_body_or_a_secret_in_the_backend_path():
    backend = "https://mcp.example.com/mcp/tok_s3cr3t"
    problem = _refused(
        "resource-mismatch",
        parse_resource_metadata,
        _prm(resource="https://mcp.example.com/other", note="body-marker"),
        backend,
    )
    assert "tok_s3cr3t" not in problem.message and "body-marker" not in problem.message
    problem = _refused("metadata-invalid", parse_resource_metadata, b'{"resource": 1, "x": "body-marker"}', BACKEND)
    assert "body-marker" not in problem.message


# -- step 4: authorization server metadata -------------------------------------


def test_server_metadata_accepted_with_the_defaults():
    assert parse_server_metadata(_asm(), ISSUER) == ServerMetadata(
        issuer=ISSUER,
        authorization_endpoint="https://auth.example.com/tenant1/authorize",
        token_endpoint="https://auth.example.com/tenant1/token",
        registration_endpoint=None,
        revocation_endpoint=None,
        scopes_supported=None,
        token_endpoint_auth_methods_supported=None,
        grant_types_supported=None,
        code_challenge_methods_supported=("plain", "S256"),
        client_id_metadata_document_supported=False,
        authorization_response_iss_parameter_supported=False,
    )


def test_server_metadata_every_field():
    metadata = parse_server_metadata(
        _asm(
            registration_endpoint="https://auth.example.com/register",
            revocation_endpoint="https://auth.example.com/revoke",
            scopes_supported=["openid", "offline_access"],
            token_endpoint_auth_methods_supported=["client_secret_basic", "none"],
            grant_types_supported=["authorization_code", "refresh_token"],
            client_id_metadata_document_supported=True,
            authorization_response_iss_parameter_supported=True,
        ),
        ISSUER,
    )
    assert metadata.registration_endpoint == "https://auth.example.com/register"
    assert metadata.revocation_endpoint == "https://auth.example.com/revoke"
    assert metadata.scopes_supported == ("openid", "offline_access")
    assert metadata.token_endpoint_auth_methods_supported == ("client_secret_basic", "none")
    assert metadata.grant_types_supported == ("authorization_code", "refresh_token")
    assert metadata.client_id_metadata_document_supported is True
    assert metadata.authorization_response_iss_parameter_supported is True


def test_loopback_http_endpoints_are_accepted():
    issuer = "http://127.0.0.1:9000"
    metadata = parse_server_metadata(
        _asm(issuer=issuer, authorization_endpoint="http://localhost:9000/auth", token_endpoint="http://[::1]:9000/t"),
        issuer,
    )
    assert metadata.token_endpoint == "http://[::1]:9000/t"


@pytest.mark.parametrize(
    "issuer",
    [
        ISSUER + "/",  # a trailing slash
        "https://Auth.example.com/tenant1",  # case
        "https://auth.example.com/Tenant1",
        "https://auth.example.com:443/tenant1",  # the same origin, not the same string
        "https://auth.example.com",
        "https://evil.example.com/tenant1",
        _ABSENT,
        None,
        7,
    ],
)
def test_issuer_must_be_identical(issuer):
    problem = _refused("issuer-mismatch", parse_server_metadata, _asm(issuer=issuer), ISSUER)
    assert ISSUER in problem.message


def test_issuer_is_checked_before_anything_else():
    # metadata of another issuer is not used at all, however broken the rest
    _refused("issuer-mismatch", parse_server_metadata, _asm(issuer="https://x", token_endpoint=7), ISSUER)


@pytest.mark.parametrize(
    "methods", [_ABSENT, None, [], ["plain"], ["s256"], ["S256 "]]
)
def test_pkce_s256_is_required(methods):
    _refused("pkce-unsupported", parse_server_metadata, _asm(code_challenge_methods_supported=methods), ISSUER)


@pytest.mark.parametrize(
    "name", ["authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"]
)
@pytest.mark.parametrize("url", ["http://auth.example.com/x", "http://192.168.1.1/x", "javascript:alert(1)"])
def test_endpoints_must_be_https_or_loopback(name, url):
    problem = _refused("insecure-endpoint", parse_server_metadata, _asm(**{name: url}), ISSUER)
    assert name in problem.message


@pytest.mark.parametrize(
    "changes",
    [
        {"authorization_endpoint": _ABSENT},
        {"token_endpoint": _ABSENT},
        {"token_endpoint": ""},
        {"token_endpoint": ["https://auth.example.com/token"]},
        {"registration_endpoint": 1},
        {"revocation_endpoint": {}},
        {"code_challenge_methods_supported": "S256"},
        {"code_challenge_methods_supported": ["S256", 1]},
        {"scopes_supported": "openid"},
        {"token_endpoint_auth_methods_supported": [None]},
        {"grant_types_supported": {"a": 1}},
        {"client_id_metadata_document_supported": "true"},
        {"authorization_response_iss_parameter_supported": 1},
    ],
)
def test_server_metadata_wrong_types(changes):
    _refused("metadata-invalid", parse_server_metadata, _asm(**changes), ISSUER)


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"1e999999", b'{"issuer": Infinity}', b"{" * 100000])
def test_server_metadata_not_a_json_object(body):
    _refused("metadata-invalid", parse_server_metadata, body, ISSUER)


def test_a_duplicated_issuer_is_refused():
    body = b'{"issuer": "https://evil.example.com", "issuer": "https://auth.example.com/tenant1"}'
    problem = _refused("metadata-invalid", parse_server_metadata, body, ISSUER)
    assert "evil" not in problem.message
