"""The keys a JWT is verified with: PEM public keys and JWK sets."""

from __future__ import annotations

import json
from typing import Any

import attrs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

# -- keys ------------------------------------------------------------------


@attrs.frozen
class _Key:
    """One verification key, usable with exactly one algorithm."""

    alg: str
    key: Any = attrs.field(repr=False)
    kid: str | None = None


def _public_key_alg(key: Any) -> str:
    """The one algorithm a public key may verify, or raise ValueError."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"an RSA key of {key.key_size} bits is too short (at least 2048 bits)")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"an EC key on curve {key.curve.name} does not fit ES256 (which needs P-256)")
        return "ES256"
    raise ValueError(f"a {type(key).__name__} does not fit RS256 or ES256")


def load_pem(data: bytes) -> _Key:
    """A public key (or certificate) in PEM form; ValueError if unusable."""
    if b"PRIVATE KEY-----" in data:
        raise ValueError("holds a private key; give the public key only (openssl pkey -pubout)")
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        except ValueError as e:
            raise ValueError(f"not a readable PEM certificate ({e})") from None
    else:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"not a PEM public key ({e})") from None
    return _Key(alg=_public_key_alg(key), key=key)


def parse_jwks(data: bytes) -> tuple[list[_Key], list[str]]:
    """
    The verification keys of a JWKS document, and why others were
    skipped.  ValueError if the document is not a key set at all.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('not a JSON Web Key Set (expected an object with a "keys" list)')
    keys: list[_Key] = []
    skipped: list[str] = []
    for i, jwk in enumerate(doc["keys"]):
        if not isinstance(jwk, dict):
            skipped.append(f"keys[{i}]: not an object")
            continue
        kid = jwk.get("kid")
        label = f"keys[{i}]" + (f" (kid {kid!r})" if isinstance(kid, str) else "")
        if kid is not None and not isinstance(kid, str):
            skipped.append(f"{label}: kid is not a string")
            continue
        if jwk.get("use", "sig") != "sig":
            skipped.append(f"{label}: for use {jwk.get('use')!r}, not sig")
            continue
        kty = jwk.get("kty")
        if kty not in ("RSA", "EC"):
            skipped.append(f"{label}: key type {kty!r} (only RSA and EC public keys are used)")
            continue
        if "d" in jwk:
            skipped.append(f"{label}: holds private key material; publish public keys only")
            continue
        try:
            key = (RSAAlgorithm if kty == "RSA" else ECAlgorithm).from_jwk(jwk)
            alg = _public_key_alg(key)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as e:
            skipped.append(f"{label}: {e}")
            continue
        declared = jwk.get("alg")
        if declared is not None and declared != alg:
            skipped.append(f"{label}: declared for {declared!r}, not {alg}")
            continue
        keys.append(_Key(alg=alg, key=key, kid=kid))
    return keys, skipped
