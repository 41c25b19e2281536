"""
Protected resource metadata (RFC 9728) and authorization server metadata
(RFC 8414, OpenID Connect Discovery), read and checked as the table of
C{docs/design/oauth.md} §3 says: what is accepted, and which C{reason}
each refusal carries.  Metadata is not secret, but a body is never quoted
in a message: only the names and URLs that were checked.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from attrs import frozen

from twisted_mcp.backends.oauth.problems import AuthorizationUnavailable
from twisted_mcp.backends.oauth.urls import is_https_or_loopback, resource_covers
from twisted_mcp.urls import shown_url, split_url

__all__ = ["ResourceMetadata", "ServerMetadata", "parse_resource_metadata", "parse_server_metadata"]


@frozen
class ResourceMetadata:
    """
    What the gateway uses of a protected resource's metadata.

    @ivar resource: the resource identifier, sent as C{resource}.
    @ivar authorization_servers: issuers, in the metadata's order.
    @ivar scopes_supported: the scopes it lists, or C{None} when absent.
    """

    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] | None


@frozen
class ServerMetadata:
    """What the gateway uses of an authorization server's metadata."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None
    revocation_endpoint: str | None
    scopes_supported: tuple[str, ...] | None
    token_endpoint_auth_methods_supported: tuple[str, ...] | None
    grant_types_supported: tuple[str, ...] | None
    code_challenge_methods_supported: tuple[str, ...]
    client_id_metadata_document_supported: bool
    authorization_response_iss_parameter_supported: bool


def _invalid(what: str, message: str) -> NoReturn:
    raise AuthorizationUnavailable("metadata-invalid", f"the {what} is not usable: {message}")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate member {name!r}")
        result[name] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        # A duplicate member's name is all the message may say of the body.
        reason = str(e) if str(e).startswith("duplicate member") else "not JSON"
        _invalid(what, reason)
    if not isinstance(document, dict):
        _invalid(what, "not a JSON object")
    return document


def _string(document: dict[str, Any], name: str, what: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        _invalid(what, f"{name} must be a non-empty string")
    return value


def _optional_string(document: dict[str, Any], name: str, what: str) -> str | None:
    return None if document.get(name) is None else _string(document, name, what)


def _strings(document: dict[str, Any], name: str, what: str) -> tuple[str, ...] | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        _invalid(what, f"{name} must be a list of strings")
    return tuple(value)


def _flag(document: dict[str, Any], name: str, what: str) -> bool:
    value = document.get(name, False)
    if not isinstance(value, bool):
        _invalid(what, f"{name} must be true or false")
    return value


def parse_resource_metadata(body: bytes, backend_url: str) -> ResourceMetadata:
    """
    The protected resource metadata C{body}, fetched for the backend at
    C{backend_url}.

    @raise AuthorizationUnavailable: C{metadata-invalid} (not a JSON
        object, a member of the wrong type, no authorization server),
        C{resource-mismatch} (its C{resource} is not the backend's URL or a
        parent of it on the same origin), C{insecure-endpoint} (an
        authorization server that is neither https nor loopback http).
    """
    what = "protected resource metadata"
    document = _object(body, what)
    resource = _string(document, "resource", what)
    servers = _strings(document, "authorization_servers", what)
    if not servers or not all(servers):
        _invalid(what, "authorization_servers must list at least one authorization server")
    scopes = _strings(document, "scopes_supported", what)
    parts = split_url(resource)
    if parts is None or parts.scheme.lower() not in ("http", "https") or not resource_covers(resource, backend_url):
        raise AuthorizationUnavailable(
            "resource-mismatch",
            f"the protected resource metadata is for {shown_url(resource)}, "
            f"which is not {shown_url(backend_url)} or a parent of it",
        )
    for server in servers:
        if not is_https_or_loopback(server):
            raise AuthorizationUnavailable(
                "insecure-endpoint",
                f"the authorization server {shown_url(server)} is neither https nor http to this machine",
            )
    return ResourceMetadata(resource, servers, scopes)


def parse_server_metadata(body: bytes, expected_issuer: str) -> ServerMetadata:
    """
    The authorization server metadata C{body}, fetched from a URL built
    from C{expected_issuer}.

    @raise AuthorizationUnavailable: C{issuer-mismatch} (its C{issuer} is
        not C{expected_issuer}, character for character: a trailing slash
        or a change of case is a mismatch), C{pkce-unsupported}
        (C{code_challenge_methods_supported} absent or without C{S256}),
        C{insecure-endpoint} (an endpoint neither https nor loopback http),
        C{metadata-invalid} (not a JSON object, a member of the wrong type,
        no authorization or token endpoint).
    """
    what = "authorization server metadata"
    document = _object(body, what)
    issuer = document.get("issuer")
    if issuer != expected_issuer:
        named = f"names the issuer {issuer!r}" if isinstance(issuer, str) else "names no issuer"
        raise AuthorizationUnavailable(
            "issuer-mismatch",
            f"the authorization server metadata fetched for {expected_issuer!r} {named}; it must be identical",
        )
    authorization_endpoint = _string(document, "authorization_endpoint", what)
    token_endpoint = _string(document, "token_endpoint", what)
    registration_endpoint = _optional_string(document, "registration_endpoint", what)
    revocation_endpoint = _optional_string(document, "revocation_endpoint", what)
    methods = _strings(document, "code_challenge_methods_supported", what)
    scopes = _strings(document, "scopes_supported", what)
    auth_methods = _strings(document, "token_endpoint_auth_methods_supported", what)
    grant_types = _strings(document, "grant_types_supported", what)
    cimd = _flag(document, "client_id_metadata_document_supported", what)
    iss_parameter = _flag(document, "authorization_response_iss_parameter_supported", what)
    if methods is None or "S256" not in methods:
        raise AuthorizationUnavailable(
            "pkce-unsupported",
            f"the authorization server {issuer} does not list S256 in code_challenge_methods_supported, "
            "and the gateway never authorizes without PKCE",
        )
    endpoints = {
        "authorization_endpoint": authorization_endpoint,
        "token_endpoint": token_endpoint,
        "registration_endpoint": registration_endpoint,
        "revocation_endpoint": revocation_endpoint,
    }
    for name, url in endpoints.items():
        if url is not None and not is_https_or_loopback(url):
            raise AuthorizationUnavailable(
                "insecure-endpoint",
                f"the {name} of {issuer} ({shown_url(url)}) is neither https nor http to this machine",
            )
    return ServerMetadata(
        issuer=issuer,
        authorization_endpoint=authorization_endpoint,
        token_endpoint=token_endpoint,
        registration_endpoint=registration_endpoint,
        revocation_endpoint=revocation_endpoint,
        scopes_supported=scopes,
        token_endpoint_auth_methods_supported=auth_methods,
        grant_types_supported=grant_types,
        code_challenge_methods_supported=methods,
        client_id_metadata_document_supported=cimd,
        authorization_response_iss_parameter_supported=iss_parameter,
    )
