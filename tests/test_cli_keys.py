"""`cds keys` and signed calls: the service receives a JWT it verifies with the JWK set `cds keys new` printed."""

import json
import stat
import time
import uuid
from pathlib import Path

import jwt
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.helpers import DATA, free_port, run_cds, serve_on_loopback

ISSUER = "https://ehr.example.org"
JKU = "https://ehr.example.org/.well-known/jwks.json"


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, dict]:
    """A private key file, and the public JWK set printed for the service."""
    key_file = tmp_path / "client-key.json"
    result = run_cds("keys", "new", "--out", key_file)
    assert result.exit_code == 0, result.stderr
    return key_file, json.loads(result.stdout)


@pytest.fixture
def tokens(httpserver_ipv4: HTTPServer) -> list[tuple[str, str]]:
    """(URL called, bearer token) for each call the loopback CDS service receives."""
    received: list[tuple[str, str]] = []

    def record(answer: dict):
        def handler(request: Request) -> Response:
            received.append((request.url, request.headers.get("Authorization", "").removeprefix("Bearer ")))
            return Response(json.dumps(answer), content_type="application/json")
        return handler

    httpserver_ipv4.expect_request("/cds-services", method="GET").respond_with_handler(
        record({"services": [{"id": "crd", "hook": "order-sign", "description": "coverage",
                              "prefetch": {"patient": "Patient/{{context.patientId}}"}}]}))
    httpserver_ipv4.expect_request("/cds-services/crd", method="POST").respond_with_handler(record({"cards": []}))
    httpserver_ipv4.expect_request("/fhir/Patient/pat1").respond_with_json({"resourceType": "Patient", "id": "pat1"})
    return received


def verify(token: str, jwks: dict, audience: str) -> tuple[dict, dict]:
    """Header and claims, after checking the signature as a service does: key by kid, ES384 only."""
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(token, key, algorithms=["ES384"], audience=audience, issuer=ISSUER,
                        options={"require": ["iss", "aud", "exp", "iat", "jti"]})
    return header, claims


def test_keys_new_writes_a_private_key_and_prints_only_the_public_half(key_pair):
    key_file, jwks = key_pair
    [public] = jwks["keys"]
    assert (public["kty"], public["crv"], public["alg"], public["use"]) == ("EC", "P-384", "ES384", "sig")
    assert public["kid"]
    assert "d" not in public
    private = json.loads(key_file.read_text())
    assert private["d"] and private["kid"] == public["kid"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_keys_new_never_overwrites_a_key(key_pair):
    key_file, _ = key_pair
    before = key_file.read_text()
    result = run_cds("keys", "new", "--out", key_file)
    assert result.exit_code == 2
    assert "exists; it is not overwritten" in result.stderr
    assert key_file.read_text() == before


def test_keys_public_prints_the_same_jwk_set_again(key_pair):
    key_file, jwks = key_pair
    result = run_cds("keys", "public", key_file)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == jwks


def test_signed_send_carries_a_fresh_jwt_per_call_with_the_url_called_as_audience(key_pair, tokens, httpserver_ipv4):
    key_file, jwks = key_pair
    url = httpserver_ipv4.url_for("/cds-services/crd")
    result = run_cds("send", url, DATA / "inferno-order-sign.json", DATA / "sandbox-order-sign-rx.json",
                     "--key", key_file, "--iss", ISSUER, "--jku", JKU)
    assert result.exit_code == 0, result.stderr
    assert [called for called, _ in tokens] == [url, url]
    seen = set()
    for _, token in tokens:
        header, claims = verify(token, jwks, audience=url)
        assert header == {"alg": "ES384", "kid": jwks["keys"][0]["kid"], "typ": "JWT", "jku": JKU}
        assert claims["exp"] - claims["iat"] == 300
        assert abs(claims["iat"] - time.time()) < 60
        assert uuid.UUID(claims["jti"]).version == 4
        assert "sub" not in claims
        seen.add(claims["jti"])
    assert len(seen) == 2


def test_signed_discovery_and_order_name_each_url_they_call(key_pair, tokens, httpserver_ipv4):
    key_file, jwks = key_pair
    base = httpserver_ipv4.url_for("/").rstrip("/")
    result = run_cds("discover", base, "--key", key_file, "--iss", ISSUER)
    assert result.exit_code == 0, result.stderr
    result = run_cds("order", base, "--fhir-server", f"{base}/fhir", "--patient", "pat1", "--code", "hcpcs|E0221",
                     "--key", key_file, "--iss", ISSUER)
    assert result.exit_code == 0, result.stderr
    audiences = [f"{base}/cds-services", f"{base}/cds-services", f"{base}/cds-services/crd"]
    assert [called for called, _ in tokens] == audiences
    for (_, token), audience in zip(tokens, audiences, strict=True):
        header, _ = verify(token, jwks, audience)
        assert "jku" not in header


def test_unsigned_calls_carry_no_authorization(tokens, httpserver_ipv4):
    result = run_cds("discover", httpserver_ipv4.url_for("/"))
    assert result.exit_code == 0
    assert tokens == [(httpserver_ipv4.url_for("/cds-services"), "")]


@pytest.mark.parametrize(("args", "says"), [
    (["--key", "{key}"], "--key needs --iss"),
    (["--iss", ISSUER], "--iss, --kid and --jku sign calls and need --key"),
    (["--key", "{public}", "--iss", ISSUER], "is not a private JSON Web Key"),
    (["--key", "{missing}", "--iss", ISSUER], "cannot be read (No such file or directory)"),
])
def test_signing_options_that_cannot_sign_are_refused(key_pair, tokens, httpserver_ipv4, tmp_path, args, says):
    key_file, jwks = key_pair
    public = tmp_path / "public.json"
    public.write_text(json.dumps(jwks["keys"][0]))
    paths = {"key": key_file, "public": public, "missing": tmp_path / "missing.json"}
    result = run_cds("discover", httpserver_ipv4.url_for("/"), *(arg.format(**paths) for arg in args))
    assert result.exit_code == 2
    assert says in result.stderr
    assert tokens == []



def test_signed_calls_are_accepted_by_the_real_service_with_the_key_registered(key_pair, make_app, tmp_path):
    key_file, jwks = key_pair
    registry = tmp_path / "clients.json"
    registry.write_text(json.dumps({"clients": [{"iss": ISSUER, "jwks": jwks}]}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"  # the public URL the service knows itself by: the audience of each JWT
    server = serve_on_loopback(make_app(clients_file=str(registry), public_base_url=(base,)), port)
    assert next(server) == base
    try:
        request = DATA / "sandbox-order-sign-rx.json"
        signed = run_cds("send", base, request, "--key", key_file, "--iss", ISSUER, "--json")
        assert signed.exit_code == 0, signed.stderr
        assert json.loads(signed.stdout)["cards"] == []
        unsigned = run_cds("send", base, request)
        assert unsigned.exit_code == 1
        assert "401" in unsigned.stderr
    finally:
        server.close()


SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"  # as tests/data/sandbox-jwks.json registers the key


def test_the_sandbox_pem_key_signs_calls_the_demo_service_accepts(make_app):
    """Demo mode trusts the sandbox's published key; its private key ships as PEM and is used as it is."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = serve_on_loopback(make_app(demo=True, clients_file="", public_base_url=(base,)), port)
    assert next(server) == base
    try:
        request = DATA / "sandbox-order-sign-rx.json"
        signed = run_cds("send", base, request, "--key", DATA / "sandbox-ecprivkey.pem", "--kid", SANDBOX_KID,
                         "--iss", "https://sandbox.cds-hooks.org", "--json")
        assert signed.exit_code == 0, signed.stderr
        wrong_kid = run_cds("send", base, request, "--key", DATA / "sandbox-ecprivkey.pem",
                            "--iss", "https://sandbox.cds-hooks.org")
        assert wrong_kid.exit_code == 1 and "401" in wrong_kid.stderr  # named by its thumbprint: not registered
    finally:
        server.close()


def test_import_turns_a_pem_key_into_a_jwk_named_by_its_thumbprint(tmp_path):
    out = tmp_path / "sandbox.json"
    result = run_cds("keys", "import", DATA / "sandbox-ecprivkey.pem", "--out", out)
    assert result.exit_code == 0, result.stderr
    [public] = json.loads(result.stdout)["keys"]
    [registered] = json.loads((DATA / "sandbox-jwks.json").read_text())["keys"]
    assert (public["x"], public["y"], public["crv"]) == (registered["x"], registered["y"], registered["crv"])
    assert public["kid"] == "s9fOe-KDYD1myZ8YCzleUqJQgrYZL49kVijBxhnZvZc"  # RFC 7638 thumbprint
    assert json.loads(out.read_text())["d"] and stat.S_IMODE(out.stat().st_mode) == 0o600
    named = run_cds("keys", "import", DATA / "sandbox-ecprivkey.pem", "--out", tmp_path / "named.json",
                    "--kid", SANDBOX_KID)
    assert json.loads(named.stdout)["keys"][0]["kid"] == SANDBOX_KID


def test_export_and_import_round_trip_a_key_that_still_signs(key_pair, tokens, httpserver_ipv4, tmp_path):
    key_file, jwks = key_pair
    pem = tmp_path / "key.pem"
    assert run_cds("keys", "export", key_file, "--out", pem).exit_code == 0
    assert pem.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    again = run_cds("keys", "export", key_file, "--out", pem)
    assert again.exit_code == 2 and "exists; it is not overwritten" in again.stderr
    back = tmp_path / "back.json"
    assert json.loads(run_cds("keys", "import", pem, "--out", back).stdout) == jwks  # same kid: the thumbprint
    assert run_cds("discover", httpserver_ipv4.url_for("/"), "--key", pem, "--iss", ISSUER).exit_code == 0
    [(url, token)] = tokens
    verify(token, jwks, url)


def test_public_pem_and_a_pem_key_pair(tmp_path):
    result = run_cds("keys", "new", "--out", tmp_path / "key.pem", "--format", "pem")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    assert (tmp_path / "key.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    again = run_cds("keys", "public", tmp_path / "key.pem", "--format", "pem")
    assert again.stdout == result.stdout
    bogus = run_cds("keys", "new", "--out", tmp_path / "x", "--format", "der")
    assert bogus.exit_code == 2 and "'der' is not one of 'jwk', 'pem'" in bogus.stderr


def test_an_rsa_pem_key_signs_with_rs384(tmp_path, tokens, httpserver_ipv4):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    jwks = json.loads(run_cds("keys", "public", pem).stdout)
    assert jwks["keys"][0]["alg"] == "RS384" and "d" not in jwks["keys"][0]
    assert run_cds("discover", httpserver_ipv4.url_for("/"), "--key", pem, "--iss", ISSUER).exit_code == 0
    [(url, token)] = tokens
    key_set = jwt.PyJWKSet.from_dict(jwks)
    jwt.decode(token, key_set[jwt.get_unverified_header(token)["kid"]], algorithms=["RS384"], audience=url)


def test_a_public_key_or_garbage_is_no_signing_key(tmp_path):
    public = tmp_path / "public.pem"
    public.write_text(run_cds("keys", "new", "--out", tmp_path / "k.json", "--format", "jwk").stdout)
    public.write_text(run_cds("keys", "public", tmp_path / "k.json", "--format", "pem").stdout)
    result = run_cds("keys", "import", public, "--out", tmp_path / "out.json")
    assert result.exit_code == 2 and "holds no PEM private key (a public key or certificate cannot sign)" \
        in result.stderr
    garbage = tmp_path / "garbage"
    garbage.write_text("hello")
    result = run_cds("keys", "public", garbage)
    assert result.exit_code == 2 and "is neither a JSON Web Key nor a PEM private key" in result.stderr
