"""The benchmark's EHR: a registered CDS client with its own key, signing every call as CDS Hooks 2.0 asks (a
fresh `jti`, `aud` the URL called). Tokens are minted before a timed run, never during it.

ES384 by default, as `cds keys new` makes; RS384 (the other algorithm CDS Hooks recommends) for comparison:
verifying it costs the service far less CPU."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from cds.tools.signing import Signer, new_private_jwk, public_jwks

ISSUER = "https://ehr.bench.example.org"
ALGORITHMS = ("ES384", "RS384")


def new_key(alg: str = "ES384") -> dict[str, Any]:
    """A private JWK for `alg` with a kid."""
    if alg == "ES384":
        return new_private_jwk()
    if alg == "RS384":
        key = RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048), as_dict=True)
        return {**key, "kid": "bench-rsa", "alg": alg, "use": "sig"}
    raise ValueError(f"the bench EHR signs with {' or '.join(ALGORITHMS)}, not {alg}")


@dataclass(frozen=True)
class BenchEhr:
    """Picklable (the load generator's processes mint their own tokens): the private JWK travels as a dict."""

    private_jwk: dict[str, Any] = field(default_factory=new_key, repr=False)
    iss: str = ISSUER

    def write_registry(self, path: Path, fhir_servers: tuple[str, ...] = ()) -> Path:
        """The service's CDS_CLIENTS_FILE: this EHR, its public key pinned, and the FHIR servers it names."""
        entry = {"iss": self.iss, "jwks": public_jwks(self.private_jwk), "fhir_servers": list(fhir_servers)}
        path.write_text(json.dumps({"clients": [entry]}))
        return path

    def tokens(self, audience: str, count: int) -> list[str]:
        """`count` distinct signed JWTs for calls to `audience` (each valid for CDS Hooks' 5 minutes)."""
        signer = Signer(jwt.PyJWK(self.private_jwk, self.private_jwk["alg"]), self.iss)
        return [signer.token(audience) for _ in range(count)]

    def authorization(self, audience: str) -> str:
        return f"Bearer {self.tokens(audience, 1)[0]}"
