"""
The gateway's seal on C{requestState} (MCP 2026-07-28, multi-round-trip
requests): a token a client must echo on its retry, which it can neither
forge nor take to another caller, another request or a later time.

A token is C{"tmcp1." + b64url(payload) + "." + b64url(HMAC-SHA256(key,
"tmcp1." + payload))}, the payload being canonical JSON (sorted keys, no
spaces) of the L{Claims}.  The first key of the ring seals; every key
verifies (to rotate keys without breaking calls under way).  With no key
configured, 32 random bytes per process: held calls die with the process
anyway.

Every failure is a C{-32602} whose message says why (tampered, expired,
another caller's, another request's) and never repeats the token: clients
log their errors, and a token is as good as the call it names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime

from twisted_mcp.wire.jsonrpc import INVALID_PARAMS, JsonRpcError

PREFIX = "tmcp1."
#: Seconds a token stays valid (the SDK's own default).
DEFAULT_TTL = 600.0
#: Longer tokens are refused unread (a pass token carries its backend's own state).
MAX_TOKEN_CHARS = 65536
#: The kind of token that names a call waiting for an OAuth authorization
#: (L{twisted_mcp.dispatch.authorization}); its state is the connect link's id.
AUTH = "auth"


@attrs.frozen
class Claims:
    """What a token says, each checked on the retry."""

    #: C{held} (names a held call), C{pass} (wraps a backend's own state) or
    #: C{auth} (a call that asked for an OAuth authorization).
    kind: str
    #: SHA-256 (hex) of the caller's stable identity (L{digest}).
    principal: str
    #: The method of the request the token belongs to.
    method: str
    #: SHA-256 (hex) of that request's name or URI and arguments (L{request_digest}).
    request: str
    #: The backend the call went to, and its handshake count (a restart ends the call).
    backend: str
    #: Clock seconds after which the token is refused.
    expires: float
    #: held: C{[held call id, round]}; pass: the backend's own state string;
    #: auth: the connect link's id.
    state: Any

    def as_json(self) -> dict[str, Any]:
        return {"k": self.kind, "p": self.principal, "m": self.method, "d": self.request, "b": self.backend, "x": self.expires, "s": self.state}


class StateRefused(JsonRpcError):
    """A C{requestState} the gateway does not accept: C{-32602}, and why."""

    def __init__(self, why: str) -> None:
        super().__init__(INVALID_PARAMS, f"Invalid params: {why}", {"reason": why})


def canonical(value: Any) -> bytes:
    """The one JSON encoding of C{value} that is hashed and signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def digest(value: Any) -> str:
    """SHA-256 (hex) of C{value}'s canonical JSON."""
    return hashlib.sha256(canonical(value)).hexdigest()


def request_digest(params: dict[str, Any]) -> str:
    """
    What binds a token to its request: the name (or URI) and the arguments,
    never C{_meta}, C{inputResponses} or C{requestState}, which change from
    one round to the next.
    """
    return digest({"name": params.get("name"), "uri": params.get("uri"), "arguments": params.get("arguments")})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Seal:
    """
    Seals and opens C{requestState} tokens.

    @param clock: the source of now (expiry).
    @param keys: HMAC keys, the first sealing; none: a random key of this process.
    @param ttl: seconds a new token is valid.
    """

    def __init__(self, clock: IReactorTime, keys: Sequence[bytes] = (), ttl: float = DEFAULT_TTL) -> None:
        self.clock = clock
        self._keys = tuple(keys) or (os.urandom(32),)
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"<Seal with {len(self._keys)} key(s), ttl {self.ttl:g} s>"

    def expiry(self) -> float:
        """The expiry of a token sealed now."""
        return self.clock.seconds() + self.ttl

    def seal(self, claims: Claims) -> str:
        body = PREFIX + _b64(canonical(claims.as_json()))
        return body + "." + _b64(self._mac(self._keys[0], body))

    def open(self, token: Any) -> Claims:
        """The claims of C{token}, once its integrity and expiry are checked; L{StateRefused} otherwise."""
        if type(token) is not str:
            raise StateRefused("requestState must be a string")
        if len(token) > MAX_TOKEN_CHARS or not token.startswith(PREFIX) or token.count(".") != 2:
            raise StateRefused("requestState was not issued by this gateway")
        body, _, mac = token.rpartition(".")
        try:
            given = _unb64(mac)
        except ValueError:
            raise StateRefused("requestState was not issued by this gateway") from None
        # Only the spelling sealed: base64 decoding ignores the unused low
        # bits of the last character (and characters outside the alphabet),
        # so that an altered token could read as the same MAC.
        if _b64(given) != mac or not any(hmac.compare_digest(given, self._mac(key, body)) for key in self._keys):
            raise StateRefused("requestState failed verification (altered, or sealed with another key)")
        try:
            raw = json.loads(_unb64(body[len(PREFIX) :]))
            claims = Claims(raw["k"], raw["p"], raw["m"], raw["d"], raw["b"], float(raw["x"]), raw["s"])
        except (ValueError, KeyError, TypeError):
            raise StateRefused("requestState was not issued by this gateway") from None
        if self.clock.seconds() > claims.expires:
            raise StateRefused("requestState expired; send the request again without it")
        return claims

    @staticmethod
    def _mac(key: bytes, body: str) -> bytes:
        return hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()


def check_binding(claims: Claims, kind: str, principal: str, method: str, request: str) -> None:
    """L{StateRefused} unless the token was sealed for this kind of state, this caller and this request."""
    if claims.kind != kind:
        raise StateRefused("requestState is of another kind")
    if not hmac.compare_digest(claims.principal, principal):
        raise StateRefused("requestState belongs to another caller")
    if claims.method != method or not hmac.compare_digest(claims.request, request):
        raise StateRefused("requestState is for another request (its name, URI or arguments differ)")


__all__ = ["AUTH", "DEFAULT_TTL", "Claims", "Seal", "StateRefused", "canonical", "check_binding", "digest", "request_digest"]
