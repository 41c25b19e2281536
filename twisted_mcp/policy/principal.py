"""
Who a request runs as (L{Principal}), the local principal used when no
identity is configured, and the error for a caller whose identity cannot be
established.  A leaf of the policy: identity, peers and the pipeline use it.
"""

from __future__ import annotations

import attrs


@attrs.frozen(cache_hash=True)
class Principal:
    """
    Who a request runs as.

    @ivar source: where the identity came from: C{"local"} (no identity
        configured), C{"config"} (a principal named in the config),
        C{"jwt"}; later C{"peer"} and C{"bearer"} for the socket and HTTP
        front-ends.
    @ivar expires_at: when the credential expires (epoch seconds), or None.
    @ivar all_access: every permission, whatever the access rules say; only
        the local principal used when no identity is configured has it.
    """

    name: str
    roles: tuple[str, ...] = ()
    source: str = "local"
    expires_at: float | None = None
    all_access: bool = False


LOCAL_PRINCIPAL = Principal(name="local", roles=(), source="local", all_access=True)


class IdentityError(Exception):
    """
    The caller's identity cannot be established.

    @ivar message: what is wrong, for the operator and the client; never
        contains the token.
    @ivar reason: a short machine-readable kind: C{missing}, C{malformed},
        C{algorithm}, C{signature}, C{issuer}, C{audience}, C{claims},
        C{keys}, C{expired}, C{not-yet-valid}, C{starting}.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


__all__ = ["LOCAL_PRINCIPAL", "IdentityError", "Principal"]
