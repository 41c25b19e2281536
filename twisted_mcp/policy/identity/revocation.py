"""
Revoked bearer tokens: how a token is named once revoked, and what a
request to revoke one may hold.

A token is never kept, logged or echoed once revoked: only its id is.  The
id of a JWT is its C{jti} claim; of a token without one (a JWT without
C{jti}, or any other bearer token), C{"sha256:"} and the hex SHA-256 digest
of the token.  The L{Authenticator<twisted_mcp.policy.identity.authenticator.Authenticator>}
refuses a token when either of its ids is among the revoked ones
(C{AUTHENTICATION_FAILED}, "the token was revoked").

Where the revoked ids live: C{policy.revoked} (a set of ids) on every
replica.  Without a C{state:} section, C{POST /revoke} (C{twisted-mcp
revoke}) adds to this process's set only, kept in memory: a restart forgets
every revocation (revoke the token at its issuer too, or give it a short
C{exp}).  With C{state: {redis: URL}}, the revocation is a flag in Redis
(kind C{revoked}, its value when the revocation may be forgotten: see
L{revocation_expiry}) that every replica applies within a second, and that
survives restarts for as long as Redis keeps it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

#: The longest token C{POST /revoke} takes, in characters.
MAX_TOKEN_CHARS = 16384
#: The longest C{jti} C{POST /revoke} takes, in characters.
MAX_JTI_CHARS = 256
#: The message a request with a revoked token is refused with.
REVOKED_MESSAGE = "the token was revoked"


def digest_id(token: str) -> str:
    """The C{sha256:...} id of C{token} (what L{Authenticator.verify_bearer} digests, as text)."""
    return "sha256:" + hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def jti_of(payload: Any) -> str | None:
    """The C{jti} claim of a JWT's payload, when it is a usable id (a non-empty string)."""
    if not isinstance(payload, dict):
        return None
    jti = payload.get("jti")
    return jti if isinstance(jti, str) and jti else None


def revocation_id(token: str) -> str:
    """
    The id C{token} is revoked under: its C{jti} when it is a JWT that
    has one (read without verifying: revoking needs no key), else its
    L{digest_id}.
    """
    import jwt  # PyJWT loads with the first token revoked or checked

    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return digest_id(token)
    return jti_of(payload) or digest_id(token)


#: How long a revocation is kept when the token's own expiry is not known (30 days), in seconds.
KEEP_UNKNOWN = 30 * 24 * 3600


def revocation_expiry(body: dict[str, Any], now: float) -> int:
    """
    When the revocation C{body} (a valid C{POST /revoke} body) asks for may
    be forgotten, in epoch seconds (the value of its C{revoked} flag): the
    token's C{exp} when it is a JWT that has one, but never sooner than
    L{KEEP_UNKNOWN} from C{now} (the claim is read without verifying the
    signature, so it may only make the revocation last longer); C{now} +
    L{KEEP_UNKNOWN} otherwise (a C{jti}, a token without C{exp}).
    """
    floor = int(now) + KEEP_UNKNOWN
    token = body.get("token")
    if not isinstance(token, str):
        return floor
    import jwt  # PyJWT loads with the first token revoked or checked

    try:
        payload = jwt.decode(token.strip(), options={"verify_signature": False})
    except jwt.PyJWTError:
        return floor
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, (int, float)) and not isinstance(exp, bool) and math.isfinite(exp) and exp < 2**53:
        return max(floor, int(exp))
    return floor


def is_revoked(revoked: Any, ids: tuple[str, ...]) -> bool:
    """Whether any of C{ids} (a token's digest id and jti) is in C{revoked}."""
    return bool(revoked) and any(i in revoked for i in ids)


def revoke_request_id(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """
    The id a C{POST /revoke} body names, or why the body is refused:
    C{{"token": "..."}} (the bearer token itself; never stored, only its
    id) or C{{"jti": "..."}} (a JWT's C{jti}, or an id as C{/revoke}
    answered it, C{sha256:...}).  Returns C{(id, None)} or C{(None, why)}.
    """
    usage = 'expected {"token": "<the bearer token>"} or {"jti": "<the token\'s jti claim>"}'
    unknown = sorted(set(body) - {"token", "jti"})
    if unknown:
        return None, f"unknown key(s) {', '.join(repr(k) for k in unknown)}: {usage}"
    if ("token" in body) == ("jti" in body):
        return None, usage
    if "token" in body:
        token = body["token"]
        if type(token) is not str or not token.strip():
            return None, f'"token" must be a non-empty string: {usage}'
        token = token.strip()
        if token[:7].lower() == "bearer ":
            return None, '"token": give the token alone, without "Bearer "'
        if len(token) > MAX_TOKEN_CHARS:
            return None, f'"token" is longer than {MAX_TOKEN_CHARS} characters: not a bearer token'
        if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
            return None, '"token" has characters a bearer token cannot hold (spaces, controls or non-ASCII)'
        return revocation_id(token), None
    jti = body["jti"]
    if type(jti) is not str or not jti:
        return None, f'"jti" must be a non-empty string: {usage}'
    if len(jti) > MAX_JTI_CHARS:
        return None, f'"jti" is longer than {MAX_JTI_CHARS} characters'
    if not jti.isprintable():
        return None, '"jti" has control characters'
    return jti, None


def revoked_ids(policy: Any) -> set[str]:
    """
    The set of revoked token ids C{policy} enforces (C{policy.revoked}),
    made empty on a policy that has none yet.  The set is changed in place
    (C{POST /revoke}) or replaced (C{policy.apply_flags} with the shared
    state's C{revoked} flags).
    """
    revoked = getattr(policy, "revoked", None)
    if revoked is None:
        revoked = policy.revoked = set()
    return revoked  # type: ignore[no-any-return]


__all__ = [
    "KEEP_UNKNOWN",
    "MAX_JTI_CHARS",
    "MAX_TOKEN_CHARS",
    "REVOKED_MESSAGE",
    "digest_id",
    "is_revoked",
    "jti_of",
    "revocation_expiry",
    "revocation_id",
    "revoke_request_id",
    "revoked_ids",
]
