"""The client side of CDS Hooks authentication: a key pair, and a fresh signed JWT for every call."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ALGORITHM = "ES384"  # CDS Hooks recommends ES384 or RS384
LIFETIME_SECONDS = 300  # CDS Hooks: "expiration … no more than 5 minutes"
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "n", "e", "kid", "alg", "use")  # an allow-list: nothing private leaks
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}  # RFC 7638 section 3.2
CURVE_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
PEM_MARK = b"-----BEGIN"


class KeyFileError(ValueError):
    """The key file cannot sign: the message says why, never what the key holds."""


def new_private_jwk() -> dict[str, Any]:
    """A new ES384 (P-384) private key as a JWK, its kid the RFC 7638 thumbprint of the public key."""
    return private_jwk(ec.generate_private_key(ec.SECP384R1()))


def private_jwk(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, kid: str | None = None) -> dict[str, Any]:
    """A private key as a JWK with `kid` (default: its RFC 7638 thumbprint), `alg` and `use: sig`."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
        alg = CURVE_ALGORITHMS.get(jwk["crv"])
    else:
        jwk, alg = RSAAlgorithm.to_jwk(key, as_dict=True), "RS384"  # CDS Hooks recommends RS384
    if alg is None:
        raise KeyFileError(f"an EC key on {jwk['crv']} cannot sign CDS Hooks calls; use P-256, P-384 or P-521")
    return {**jwk, "kid": kid or thumbprint(jwk), "alg": alg, "use": "sig"}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required public members, in lexical order, no whitespace."""
    members = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwks(private_jwk: dict[str, Any]) -> dict[str, Any]:
    """The JWK set a service registers for this client: the public half only."""
    return {"keys": [{name: private_jwk[name] for name in PUBLIC_MEMBERS if name in private_jwk}]}


def write_private_key(path: Path, text: str) -> None:
    """Create the key file readable by its owner only; never overwrite an existing key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def jwk_text(jwk: dict[str, Any]) -> str:
    return json.dumps(jwk, indent=2) + "\n"


def private_pem(jwk: dict[str, Any]) -> str:
    """The private key of a JWK as PKCS#8 PEM, unencrypted (the file it goes to is readable by its owner only)."""
    return _key_object(jwk).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()


def public_pem(jwk: dict[str, Any]) -> str:
    """The public key of a JWK as SubjectPublicKeyInfo PEM."""
    return _key_object(jwk).public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _key_object(jwk: dict[str, Any]) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    algorithm = ECAlgorithm if jwk.get("kty") == "EC" else RSAAlgorithm
    return algorithm.from_jwk(jwk)  # type: ignore[return-value]  # a private JWK gives a private key


def read_private_jwk(path: Path, kid: str | None = None) -> dict[str, Any]:
    """The private key in a file, as a JWK: a private JWK (as `cds keys new` writes it) or an unencrypted
    PEM private key (PKCS#8, SEC1 or PKCS#1). `kid` names the key as the service has it registered; a PEM key
    without one is named by its RFC 7638 thumbprint, as `cds keys import` names it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be read ({exc.strerror})") from None
    if raw.lstrip().startswith(PEM_MARK):
        return _pem_jwk(path, raw, kid)
    try:
        jwk = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError(f"{path} is neither a JSON Web Key nor a PEM private key") from None
    if not isinstance(jwk, dict) or "d" not in jwk:
        raise KeyFileError(f"{path} is not a private JSON Web Key (as `cds keys new` writes)")
    if kid:
        jwk = {**jwk, "kid": kid}
    if not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
        raise KeyFileError(f"{path} has no kid; the service finds the key to verify with by its kid (give --kid)")
    return jwk


def _pem_jwk(path: Path, raw: bytes, kid: str | None) -> dict[str, Any]:
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except TypeError:
        raise KeyFileError(f"{path} is an encrypted PEM key; decrypt it first (openssl pkey)") from None
    except ValueError:
        raise KeyFileError(f"{path} holds no PEM private key (a public key or certificate cannot sign)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise KeyFileError(f"{path}: only EC and RSA keys can sign CDS Hooks calls")
    return private_jwk(key, kid)


@dataclass(frozen=True)
class Signer:
    """Signs each call as CDS Hooks requires: aud = the URL called, a fresh jti, a 5-minute expiry."""

    key: jwt.PyJWK
    issuer: str
    jku: str | None = None

    @classmethod
    def from_file(cls, path: Path, issuer: str, jku: str | None = None, kid: str | None = None) -> Signer:
        jwk = read_private_jwk(path, kid)
        try:
            # RSA keys without an alg would default to RS256; CDS Hooks recommends RS384.
            key = jwt.PyJWK(jwk, jwk.get("alg") or ("RS384" if jwk.get("kty") == "RSA" else None))
        except jwt.PyJWTError:
            raise KeyFileError(f"{path} holds no signing key PyJWT can use") from None
        if key.algorithm_name not in ASYMMETRIC_ALGORITHMS:
            raise KeyFileError(f"{path}: {key.algorithm_name} is not a public-key algorithm CDS Hooks accepts")
        return cls(key, issuer, jku)

    def token(self, audience: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": audience, "exp": now + LIFETIME_SECONDS, "iat": now,
                  "jti": str(uuid.uuid4())}
        headers = {"kid": self.key.key_id, "typ": "JWT", **({"jku": self.jku} if self.jku else {})}
        return jwt.encode(claims, self.key.key, algorithm=self.key.algorithm_name, headers=headers)
