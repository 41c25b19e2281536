"""
What can go wrong when authorizing toward a backend, as exceptions that
carry the fixed C{reason} vocabulary of C{docs/design/oauth.md} §9 and turn
into the gateway's JSON-RPC errors -31040 to -31042.

Messages never contain a token, a code, a verifier, a client secret or a
whole C{state}: they are shown to clients and written to logs.
"""

from __future__ import annotations

from typing import Any

from twisted_mcp.mcp import errors
from twisted_mcp.mcp.errors import GatewayError

#: C{reason}s of L{AuthorizationRequired} (-31040).
REQUIRED_REASONS = frozenset(
    {
        "authorization-required",
        "reauthorization-required",
        "token-rejected",
        "insufficient-scope",
        "declined",
        "consent-pending",
        "expired",
    }
)
#: C{reason}s of L{AuthorizationFailed} (-31041).
FAILED_REASONS = frozenset({"consent-refused", "state-mismatch", "iss-mismatch", "token-request-failed", "step-up-limit"})
#: C{reason}s of L{AuthorizationUnavailable} (-31042).
UNAVAILABLE_REASONS = frozenset(
    {
        "as-unavailable",
        "as-timeout",
        "metadata-origin",
        "metadata-unavailable",
        "metadata-invalid",
        "no-resource-metadata",
        "resource-mismatch",
        "no-authorization-server-metadata",
        "issuer-mismatch",
        "issuer-not-allowed",
        "pkce-unsupported",
        "insecure-endpoint",
        "no-client-identity",
        "registration-refused",
        "client-rejected",
        "client-issuer-changed",
        "store-unavailable",
        "unsupported-token-type",
    }
)


class OAuthProblem(Exception):
    """
    An authorization problem with a C{reason} from the fixed vocabulary and a
    message written for the person who reads it.

    @ivar data: more members of the JSON-RPC error's C{data} (C{error}, the
        authorization server's RFC 6749 error code; C{scopes}), never secret.
    """

    code: int = 0
    reasons: frozenset[str] = frozenset()

    def __init__(self, reason: str, message: str, **data: Any) -> None:
        if reason not in self.reasons:
            raise ValueError(f"{type(self).__name__}: unknown reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.data = data

    def to_error(self, backend: str) -> GatewayError:
        """The JSON-RPC error a client sees for this problem on C{backend}."""
        return errors.backend_error(self.code, backend, self.message, reason=self.reason, **self.data)


class AuthorizationRequired(OAuthProblem):
    """-31040: the principal must (re)authorize; C{data.login} names the command."""

    code = errors.AUTHORIZATION_REQUIRED
    reasons = REQUIRED_REASONS


class AuthorizationFailed(OAuthProblem):
    """-31041: a flow ran and failed for a reason the principal can see."""

    code = errors.AUTHORIZATION_FAILED
    reasons = FAILED_REASONS


class AuthorizationUnavailable(OAuthProblem):
    """-31042: the authorization server or the gateway's OAuth side is not usable now."""

    code = errors.AUTHORIZATION_UNAVAILABLE
    reasons = UNAVAILABLE_REASONS


__all__ = [
    "AuthorizationFailed",
    "AuthorizationRequired",
    "AuthorizationUnavailable",
    "FAILED_REASONS",
    "OAuthProblem",
    "REQUIRED_REASONS",
    "UNAVAILABLE_REASONS",
]
