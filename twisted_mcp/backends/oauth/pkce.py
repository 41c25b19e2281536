"""
PKCE (RFC 7636) and C{state}: random values of an authorization, and the
only form of them that may be logged.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

__all__ = ["challenge_for", "digest", "new_state", "new_verifier"]

#: RFC 7636 §4.1: 43 to 128 unreserved characters.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_verifier() -> str:
    """A code verifier: 32 random bytes, base64url without padding (43 characters)."""
    return _b64url(secrets.token_bytes(32))


def challenge_for(verifier: str) -> str:
    """
    The C{S256} code challenge of C{verifier}: base64url of its SHA-256,
    without padding (RFC 7636 §4.2).

    @raise ValueError: C{verifier} is not 43 to 128 unreserved characters
        (the message does not hold it).
    """
    if not _VERIFIER.fullmatch(verifier):
        raise ValueError("a code verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.1)")
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def new_state() -> str:
    """A C{state}: 32 random bytes, base64url without padding."""
    return _b64url(secrets.token_bytes(32))


def digest(value: str) -> str:
    """The first 8 hex digits of C{value}'s SHA-256: how a state or record key is logged."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
