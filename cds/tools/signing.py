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
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ALGORITHM = "ES384"  # CDS Hooks recommends ES384 or RS384
LIFETIME_SECONDS = 300  # CDS Hooks: "expiration … no more than 5 minutes"
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "n", "e", "kid", "alg", "use")  # an allow-list: nothing private leaks


class KeyFileError(ValueError):
    """The key file cannot sign: the message says why, never what the key holds."""


def new_private_jwk() -> dict[str, Any]:
    """A new ES384 (P-384) private key as a JWK, its kid the RFC 7638 thumbprint of the public key."""
    jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()), as_dict=True)
    return {**jwk, "kid": thumbprint(jwk), "alg": ALGORITHM, "use": "sig"}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required public members of an EC key, in lexical order, no whitespace."""
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwks(private_jwk: dict[str, Any]) -> dict[str, Any]:
    """The JWK set a service registers for this client: the public half only."""
    return {"keys": [{name: private_jwk[name] for name in PUBLIC_MEMBERS if name in private_jwk}]}


def write_private_jwk(path: Path, jwk: dict[str, Any]) -> None:
    """Create the key file readable by its owner only; never overwrite an existing key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(jwk, file, indent=2)
        file.write("\n")


def read_private_jwk(path: Path) -> dict[str, Any]:
    try:
        jwk = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(f"{path} is not a readable JSON Web Key ({type(exc).__name__})") from None
    if not isinstance(jwk, dict) or "d" not in jwk:
        raise KeyFileError(f"{path} is not a private JSON Web Key (as `cds keys new` writes)")
    if not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
        raise KeyFileError(f"{path} has no kid; the service finds the key to verify with by its kid")
    return jwk


@dataclass(frozen=True)
class Signer:
    """Signs each call as CDS Hooks requires: aud = the URL called, a fresh jti, a 5-minute expiry."""

    key: jwt.PyJWK
    issuer: str
    jku: str | None = None

    @classmethod
    def from_file(cls, path: Path, issuer: str, jku: str | None = None) -> Signer:
        jwk = read_private_jwk(path)
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
