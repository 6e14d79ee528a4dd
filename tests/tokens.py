"""A test EHR's signing keys, its registry entry, and JWTs minted the way CDS clients mint them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms

BASE = "http://cds.test"  # the public base URL the test app is configured with
EHR = "https://ehr.test"
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC_KEY = ec.generate_private_key(ec.SECP384R1())  # registered nowhere
SERVICE_PATH = "/cds-services/order-sign-crd"
DATA = Path(__file__).parent / "data"


def public_jwk(private_key: Any, kid: str, alg: str | None) -> dict:
    algorithm = ECAlgorithm if isinstance(private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    jwk = {**algorithm.to_jwk(private_key.public_key(), as_dict=True), "kid": kid, "use": "sig"}
    return {**jwk, "alg": alg} if alg else jwk


# The RSA key carries no `alg`, as many EHR key sets publish RSA keys.
EHR_JWKS = {"keys": [public_jwk(EC_KEY, "ehr-ec", "ES384"), public_jwk(RSA_KEY, "ehr-rsa", None)]}


def write_registry(folder: Path, *extra_clients: dict, fhir_servers: tuple[str, ...] = ("https://fhir.ehr.test/r4/",)
                   ) -> Path:
    """A clients file trusting the test EHR (with `fhir_servers`, its own) and `extra_clients`, written as JSON into
    `folder`."""
    path = folder / "clients.json"
    clients = [{"iss": EHR, "jwks": EHR_JWKS, "fhir_servers": list(fhir_servers)}, *extra_clients]
    path.write_text(json.dumps({"clients": clients}))
    return path


def claims_for(path: str = SERVICE_PATH, **claims: Any) -> dict:
    now = int(time.time())
    return {"iss": EHR, "aud": BASE + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **claims}


def mint(path: str = SERVICE_PATH, *, key: Any = EC_KEY, alg: str = "ES384", kid: str | None = "ehr-ec",
         headers: dict | None = None, drop: tuple[str, ...] = (), **claims: Any) -> str:
    """A JWT for a call to `path` signed by the test EHR; keyword arguments override or add claims."""
    payload = {name: value for name, value in claims_for(path, **claims).items() if name not in drop}
    header = {**({"kid": kid} if kid else {}), **(headers or {})}
    return jwt.encode(payload, key, algorithm=alg, headers=header)


def sign_raw(payload: dict, header: dict, key: Any = EC_KEY, alg: str = "ES384") -> str:
    """Signed as given: no claim or header checks on the way out (PyJWT's own encoder refuses some header values),
    so a test can sign what no client should send. A header's `alg` names the algorithm to sign with."""
    header = {"typ": "JWT", "alg": alg, **header}
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = get_default_algorithms()[header["alg"]].sign(signing_input.encode(), key)
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(path: str = SERVICE_PATH) -> str:
    """`alg: none`: a token with no signature at all."""
    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': 'ehr-ec'})}.{b64(claims_for(path))}."


def hs256_with_public_key(path: str = SERVICE_PATH) -> str:
    """Algorithm confusion: HS256 keyed with the client's public key, which anyone can read."""
    secret = RSA_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': 'ehr-rsa'})}.{b64(claims_for(path))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
