"""
Identity: who is calling.

Every request runs as a L{Principal}.  Where it comes from is configured
under the config file's top-level C{identity:} key:

    identity:
      principal: {name: alice, roles: [dev]}     # a fixed principal

    identity:
      jwt:                                       # a token from the environment
        tokenEnv: MCP_TOKEN
        algorithms: [RS256]
        jwksUrl: https://idp.example.com/.well-known/jwks.json
        issuer: https://idp.example.com/
        audience: twisted-mcp
        rolesClaim: realm_access.roles

With no C{identity:} at all, every request runs as one local principal with
every permission, and the gateway says so loudly at start-up.

A token is read from the environment once and verified once, in
L{Authenticator.start}: signature, algorithm, issuer and audience.  Its
time claims (C{exp}, C{nbf}, C{iat}) are compared with the injected clock
on every request, so an expiring token starts failing requests the moment
it expires.  A missing or bad token never stops the gateway: every request
then gets an L{IdentityError} saying what is wrong.

Algorithm confusion is ruled out by construction: every key has one
algorithm, fixed by its kind (a shared secret: HS256; an RSA public key:
RS256; a P-256 public key: ES256), and PyJWT is asked to verify a token
with that single algorithm only.  An asymmetric public key is never used as
an HMAC secret, and C{alg: none} is never in the allowed list.

The modules: C{config} (the C{identity:} section), C{keys} (PEM keys and
JWK sets), C{authenticator} (L{Authenticator}); who a request runs as is
L{twisted_mcp.policy.principal}.
"""

from typing import TYPE_CHECKING

from twisted_mcp.lazy import lazy_exports
from twisted_mcp.policy.identity.config import ALGORITHMS, LOCAL_WARNING, IdentityConfig, JwtConfig, parse_identity
from twisted_mcp.policy.principal import LOCAL_PRINCIPAL, IdentityError, Principal

if TYPE_CHECKING:
    from twisted_mcp.policy.identity.authenticator import Authenticator
    from twisted_mcp.policy.identity.keys import load_pem, parse_jwks

# The authenticator (PyJWT, treq) and the key parsers (cryptography) load with the first identity that needs them.
__getattr__ = lazy_exports(__name__, {"Authenticator": "authenticator", "load_pem": "keys", "parse_jwks": "keys"})

__all__ = [
    "ALGORITHMS",
    "LOCAL_PRINCIPAL",
    "LOCAL_WARNING",
    "Authenticator",
    "IdentityConfig",
    "IdentityError",
    "JwtConfig",
    "Principal",
    "load_pem",
    "parse_identity",
    "parse_jwks",
]
