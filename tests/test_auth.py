"""JWT client authentication over the real HTTP interface: who gets answers, and the bare 401 for the rest."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm
from werkzeug.wrappers import Response

from cds import auth
from cds.auth import RegistryError, load_registry
from cds.config import SANDBOX_CLIENTS_FILE
from tests import tokens
from tests.helpers import load
from tests.records import recorded_caller
from tests.tokens import BASE, EHR, OTHER_EC_KEY, RSA_KEY, SERVICE_PATH, bearer, mint

FEEDBACK_PATH = f"{SERVICE_PATH}/feedback"
BARE_401 = {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "login", "diagnostics": "Authentication failed."}]}
FEEDBACK = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}


def authenticator(client) -> auth.Authenticator:
    return client.application.extensions["cds_auth"]


def call(client, token: str | None, body: dict, path: str = SERVICE_PATH):
    headers = bearer(token) if token is not None else {"Authorization": ""}
    return client.post(path, json=body, headers=headers)


def assert_bare_401(response) -> None:
    assert response.status_code == 401
    assert response.get_json() == BARE_401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_es384_token_is_accepted(client, order_sign):
    assert call(client, mint(), order_sign).status_code == 200


def test_rs384_token_is_accepted_with_an_rsa_key_published_without_alg(client, order_sign):
    token = mint(key=RSA_KEY, alg="RS384", kid="ehr-rsa")
    assert call(client, token, order_sign).status_code == 200


def test_the_authenticated_client_is_what_the_pipeline_records(client, order_sign):
    assert call(client, mint(), order_sign).status_code == 200
    assert recorded_caller(client.application, order_sign["hookInstance"]) == (EHR, None)


def test_the_authenticated_client_carries_its_registered_fhir_servers(app):
    with app.test_request_context(SERVICE_PATH, method="POST", headers=bearer(mint())):
        from flask import request

        client = app.extensions["cds_auth"].authenticate(request)
    assert client == auth.RegisteredClient(iss=EHR, tenant=None, fhir_servers=("https://fhir.ehr.test/r4",))


def test_feedback_is_authenticated_for_its_own_url(client):
    assert call(client, mint(FEEDBACK_PATH), FEEDBACK, FEEDBACK_PATH).status_code == 200
    assert_bare_401(call(client, mint(SERVICE_PATH), FEEDBACK, FEEDBACK_PATH))
    assert_bare_401(call(client, None, FEEDBACK, FEEDBACK_PATH))


def test_aud_may_be_an_array_and_may_end_in_one_slash(client, order_sign):
    assert call(client, mint(aud=["https://other.example", BASE + SERVICE_PATH]), order_sign).status_code == 200
    assert call(client, mint(aud=BASE + SERVICE_PATH + "/"), order_sign).status_code == 200
    assert_bare_401(call(client, mint(aud=BASE + SERVICE_PATH + "//"), order_sign))


def test_every_configured_public_base_url_is_an_audience(make_app, order_sign):
    client = make_app(public_base_url=(BASE, "https://cds.alias.example/")).test_client()
    assert call(client, mint(aud="https://cds.alias.example" + SERVICE_PATH), order_sign).status_code == 200
    assert call(client, mint(aud=BASE + SERVICE_PATH), order_sign).status_code == 200


# Each refusal: the token, and the reason that must reach the log (never the body).
REFUSALS = {
    "no token": (lambda: None, "no Bearer token"),
    "empty bearer": (lambda: "", "no Bearer token"),
    "garbage": (lambda: "not-a-jwt", "not a readable JWT"),
    "garbage segments": (lambda: "a.b.c", "not a readable JWT"),
    "garbage signature": (lambda: mint().rpartition(".")[0] + ".!!!!", "not a readable JWT"),
    "claims not an object": (lambda: f"{tokens.b64({'alg': 'ES384', 'kid': 'ehr-ec'})}.{tokens.b64([1])}.c2ln",
                             "not a readable JWT"),
    "alg none": (tokens.unsigned, "alg 'none' is not allowed"),
    "HS256 keyed with the public key": (tokens.hs256_with_public_key, "alg 'HS256' is not allowed"),
    "RS256 not in the allow-list": (lambda: mint(key=RSA_KEY, alg="RS256", kid="ehr-rsa"), "alg 'RS256'"),
    "wrong key": (lambda: mint(key=OTHER_EC_KEY), "InvalidSignatureError"),
    "ES384 kid used with RS384": (lambda: mint(key=RSA_KEY, alg="RS384", kid="ehr-ec"), "no RS384 key with kid"),
    "unknown kid": (lambda: mint(kid="nobody"), "no ES384 key with kid 'nobody'"),
    "missing kid": (lambda: mint(kid=None), "no kid in the JWT header"),
    "unknown iss": (lambda: mint(iss="https://evil.example"), "unknown iss 'https://evil.example'"),
    "no iss": (lambda: mint(drop=("iss",)), "unknown iss 'None'"),
    "untrusted jku": (lambda: mint(headers={"jku": "https://evil.example/jwks.json"}), "untrusted jku"),
    "wrong aud": (lambda: mint(aud=BASE + "/cds-services/order-select-crd"), "InvalidAudienceError"),
    "aud of another host": (lambda: mint(aud="https://evil.example" + SERVICE_PATH), "InvalidAudienceError"),
    "no aud": (lambda: mint(drop=("aud",)), "MissingRequiredClaimError"),
    "expired": (lambda: mint(iat=int(time.time()) - 900, exp=int(time.time()) - 61), "ExpiredSignatureError"),
    "iat in the future": (lambda: mint(iat=int(time.time()) + 120, exp=int(time.time()) + 400),
                          "ImmatureSignatureError"),
    "no exp": (lambda: mint(drop=("exp",)), "MissingRequiredClaimError"),
    "no iat": (lambda: mint(drop=("iat",)), "MissingRequiredClaimError"),
    "no jti": (lambda: mint(drop=("jti",)), "MissingRequiredClaimError"),
    "empty jti": (lambda: mint(jti=""), "jti empty or too long"),
    "tenant not a string": (lambda: mint(tenant=["t"]), "tenant is not a string"),
    "tampered claims": (lambda: tampered(mint()), "InvalidSignatureError"),
}


def tampered(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{tokens.b64(tokens.claims_for(iss=EHR))}.{signature}"


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_refused_with_a_bare_401_and_the_reason_only_in_the_log(client, order_sign, caplog, case):
    make, reason = REFUSALS[case]
    token = make()
    with caplog.at_level(logging.INFO):
        response = call(client, token, order_sign)
    assert_bare_401(response)
    assert reason in caplog.text
    signature = token.rpartition(".")[2] if token else ""
    assert not token or token not in caplog.text  # the log names the problem, never the token
    assert len(signature) < 16 or signature not in caplog.text


def test_within_the_clock_skew_is_accepted(client, order_sign):
    now = int(time.time())
    assert call(client, mint(iat=now + 30, exp=now - 30 + 300), order_sign).status_code == 200
    assert call(client, mint(iat=now - 400, exp=now - 30), order_sign).status_code == 200


def test_a_replayed_token_is_refused(client, order_sign, caplog):
    token = mint()
    assert call(client, token, order_sign).status_code == 200
    assert_bare_401(call(client, token, order_sign))
    assert "replayed jti" in caplog.text


def test_the_same_jti_from_another_client_is_not_a_replay(make_app, tmp_path, order_sign):
    other = {"iss": "https://other-ehr.test", "jwks": tokens.EHR_JWKS}
    client = make_app(clients_file=str(tokens.write_registry(tmp_path, other))).test_client()
    assert call(client, mint(jti="same"), order_sign).status_code == 200
    assert call(client, mint(jti="same", iss="https://other-ehr.test"), order_sign).status_code == 200
    assert_bare_401(call(client, mint(jti="same"), order_sign))


def test_tenant_is_checked_when_the_client_lists_tenants(make_app, tmp_path, order_sign):
    tenanted = {"iss": "https://multi.test", "jwks": tokens.EHR_JWKS, "tenants": ["north", "south"]}
    client = make_app(clients_file=str(tokens.write_registry(tmp_path, tenanted))).test_client()
    assert call(client, mint(iss="https://multi.test", tenant="south"), order_sign).status_code == 200
    assert recorded_caller(client.application, order_sign["hookInstance"]) == ("https://multi.test", "south")
    assert_bare_401(call(client, mint(iss="https://multi.test", tenant="west"), order_sign))
    assert_bare_401(call(client, mint(iss="https://multi.test"), order_sign))
    assert call(client, mint(tenant="anything"), order_sign).status_code == 200  # EHR lists no tenants


def test_discovery_is_open_by_default_and_authenticated_when_configured(make_app):
    assert make_app().test_client().get("/cds-services", headers={"Authorization": ""}).status_code == 200
    client = make_app(auth_discovery=True).test_client()
    assert_bare_401(client.get("/cds-services", headers={"Authorization": ""}))
    assert client.get("/cds-services", headers=bearer(mint("/cds-services"))).status_code == 200
    assert_bare_401(client.get("/cds-services", headers=bearer(mint(SERVICE_PATH))))


def test_preflight_needs_no_token(make_app):
    client = make_app(auth_discovery=True).test_client()
    for path in ("/cds-services", SERVICE_PATH, FEEDBACK_PATH):
        assert client.options(path, headers={"Origin": "https://ehr.example.org"}).status_code == 204


def test_a_401_carries_cors_headers(client, order_sign):
    response = client.post(SERVICE_PATH, json=order_sign, headers={"Origin": "https://ehr.example.org",
                                                                   "Authorization": ""})
    assert_bare_401(response)
    assert response.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"


def test_authentication_comes_before_anything_else_about_the_call(client):
    assert_bare_401(client.post("/cds-services/no-such-service", data="{", content_type="text/plain",
                                headers={"Authorization": ""}))


# --- The CDS Hooks specification's example (2.0.1, "Trusting CDS Clients") ---------------------------

SPEC_TOKEN = (
    "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImV4YW1wbGUta2lkIiwiamt1IjoiaHR0cHM6Ly9maGlyLWVoci5leGFtcGxlLmNvbS9"
    "qd2tfdXJpIn0.eyJpc3MiOiJodHRwczovL2ZoaXItZWhyLmV4YW1wbGUuY29tLyIsImF1ZCI6Imh0dHBzOi8vY2RzLmV4YW1wbGUub3JnL2Nkc"
    "y1zZXJ2aWNlcy9zb21lLXNlcnZpY2UiLCJleHAiOjE0MjI1Njg4NjAsImlhdCI6MTMxMTI4MDk3MCwianRpIjoiZWUyMmIwMjEtZTFiNy00NjE"
    "xLWJhNWItOGVlYzZhMzNhYzFlIiwidGVuYW50IjoiMmRkZDZjM2EtOGU5YS00NGM2LWEzMDUtNTIxMTFhZDMwMmEyIn0.d1WfLjGRKlcWB94l9d"
    "o4cM8REXeYJLL6SGUBO8VHZhfM8mwKYP70EMxJ67War4TQblEpaQrp11wx5p7oPFm2ETYgCicS84vXWEIYTdjooZdooCSDf2L8-i4awdoUwiEb"
)
SPEC_CLIENT = {
    "iss": "https://fhir-ehr.example.com/",
    "jwks": {"keys": [{"kty": "EC", "use": "sig", "crv": "P-384", "kid": "example-kid", "alg": "ES384",
                       "x": "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk",
                       "y": "XMcRuuoGW7CXjQdy-F5i3FeBE0x9hPLdeFdSoDd3ELmx404tLX0VRRcqzAsPhXcI"}]},
    "jwks_url": "https://fhir-ehr.example.com/jwk_uri",  # the token's jku; the key is pinned, so never fetched
    "tenants": ["2ddd6c3a-8e9a-44c6-a305-52111ad302a2"],
}
SPEC_ISSUED, SPEC_EXPIRES = 1311280970, 1422568860


@pytest.fixture
def spec_client(make_app, tmp_path):
    # The specification's example lives 3.5 years: an operator would have to raise the lifetime cap for it.
    app = make_app(clients_file=str(tokens.write_registry(tmp_path, SPEC_CLIENT)),
                   public_base_url=("https://cds.example.org",), max_token_lifetime_seconds=SPEC_EXPIRES - SPEC_ISSUED)
    return app.test_client()


def test_spec_example_token_is_refused_under_the_default_lifetime_cap(make_app, tmp_path, caplog):
    client = make_app(clients_file=str(tokens.write_registry(tmp_path, SPEC_CLIENT)),
                      public_base_url=("https://cds.example.org",)).test_client()
    with time_machine.travel(SPEC_ISSUED + 3600, tick=False):
        assert_bare_401(client.post("/cds-services/some-service", json={}, headers=bearer(SPEC_TOKEN)))
    assert "lifetime 111287890 s is over the 86400 s allowed" in caplog.text


def test_spec_example_token_passes_with_time_frozen_inside_its_lifetime(spec_client):
    # Its aud is /cds-services/some-service, which this server does not offer: past authentication comes 404.
    with spec_client, time_machine.travel(SPEC_ISSUED + 3600, tick=False):
        assert spec_client.post("/cds-services/some-service", json={}, headers=bearer(SPEC_TOKEN)).status_code == 404
        assert_bare_401(spec_client.post("/cds-services/some-service", json={}, headers=bearer(SPEC_TOKEN)))


class NoReplays:
    def seen_jti(self, iss: str, jti: str, expires_at: float) -> bool:
        return False


def test_spec_example_token_names_its_tenant(spec_client):
    verifier = auth.Authenticator(spec_client.application.config["CDS_SETTINGS"], NoReplays())
    with time_machine.travel(SPEC_ISSUED + 3600, tick=False):
        authenticated = verifier.verify(SPEC_TOKEN, "/cds-services/some-service")
    assert authenticated.tenant == "2ddd6c3a-8e9a-44c6-a305-52111ad302a2"


@pytest.mark.parametrize("now", [SPEC_ISSUED - 3600, SPEC_EXPIRES + 3600, None], ids=["before", "after", "today"])
def test_spec_example_token_is_refused_outside_its_lifetime(spec_client, now):
    with time_machine.travel(now if now is not None else time.time(), tick=False):
        assert_bare_401(spec_client.post("/cds-services/some-service", json={}, headers=bearer(SPEC_TOKEN)))


# --- The public CDS Hooks sandbox ---------------------------------------------------------------------

SANDBOX_KEY = (tokens.DATA / "sandbox-ecprivkey.pem").read_bytes()
SANDBOX_HEADERS = {"jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json"}


def sandbox_token(url: str) -> str:
    """A token as the sandbox mints it: its published key, kid and jku; no sub, no tenant."""
    return mint(key=SANDBOX_KEY, kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f", headers=SANDBOX_HEADERS,
                iss="https://sandbox.cds-hooks.org", aud=url)


def test_sandbox_tokens_are_accepted_when_its_entry_is_enabled(make_app, order_sign):
    client = make_app(clients_file=SANDBOX_CLIENTS_FILE, public_base_url=("http://localhost:8080",),
                      auth_discovery=True).test_client()
    base = "http://localhost:8080/cds-services"
    assert client.get("/cds-services", headers=bearer(sandbox_token(base))).status_code == 200
    assert call(client, sandbox_token(f"{base}/order-sign-crd"), order_sign).status_code == 200
    assert call(client, sandbox_token(f"{base}/order-sign-crd/feedback"), FEEDBACK, FEEDBACK_PATH).status_code == 200


def test_sandbox_tokens_are_refused_when_its_entry_is_not_enabled(client, order_sign):
    assert_bare_401(call(client, sandbox_token(BASE + SERVICE_PATH), order_sign))


def test_demo_mode_trusts_the_sandbox_on_its_loopback_urls_and_says_so(make_app, caplog, order_sign):
    with caplog.at_level(logging.WARNING):
        client = make_app(demo=True, clients_file="", public_base_url=()).test_client()
    assert "trusts the public CDS Hooks sandbox key" in caplog.text
    for host in ("localhost", "127.0.0.1"):
        token = sandbox_token(f"http://{host}:8080/cds-services/order-sign-crd")
        assert call(client, token, order_sign).status_code == 200
    assert_bare_401(call(client, None, order_sign))


# --- Switching authentication off, and starting without a registry ------------------------------------

def test_auth_can_be_switched_off_in_demo_mode_for_loopback_callers_only(make_app, caplog, order_sign):
    with caplog.at_level(logging.WARNING):
        client = make_app(demo=True, auth_disabled=True).test_client()
    assert "authentication is OFF" in caplog.text
    assert call(client, None, order_sign).status_code == 200
    assert recorded_caller(client.application, order_sign["hookInstance"]) == (None, None)
    remote = client.post(SERVICE_PATH, json=order_sign, headers={"Authorization": ""},
                         environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert_bare_401(remote)


def test_auth_disabled_is_ignored_outside_demo_mode(make_app, caplog, order_sign):
    with caplog.at_level(logging.WARNING):
        client = make_app(auth_disabled=True).test_client()
    assert "CDS_AUTH_DISABLED is ignored" in caplog.text
    assert_bare_401(call(client, None, order_sign))
    assert call(client, mint(), order_sign).status_code == 200


def test_without_a_clients_file_service_calls_are_refused_and_the_log_says_why(make_app, caplog, order_sign):
    with caplog.at_level(logging.INFO):
        client = make_app(clients_file="").test_client()
    assert "CDS_CLIENTS_FILE is not set" in caplog.text
    caplog.clear()
    assert_bare_401(call(client, mint(), order_sign))
    assert_bare_401(call(client, mint(FEEDBACK_PATH), FEEDBACK, FEEDBACK_PATH))
    assert "CDS_CLIENTS_FILE is not set" in caplog.text
    assert client.get("/cds-services").status_code == 200


def test_without_a_public_base_url_no_audience_can_match(make_app, caplog, order_sign):
    with caplog.at_level(logging.ERROR):
        client = make_app(public_base_url=()).test_client()
    assert "CDS_PUBLIC_BASE_URL is not set" in caplog.text
    assert_bare_401(client.post(SERVICE_PATH, json=order_sign, headers=bearer(mint(aud="http://localhost" +
                                                                                    SERVICE_PATH))))


# --- Keys published at a URL --------------------------------------------------------------------------

@pytest.fixture
def url_client(make_app, tmp_path, httpserver):
    httpserver.expect_request("/jwks.json").respond_with_json(tokens.EHR_JWKS)
    entry = {"iss": "https://url-ehr.test", "jwks_url": httpserver.url_for("/jwks.json")}
    # Demo mode: the only mode that fetches keys over http (from this loopback server).
    return make_app(clients_file=str(tokens.write_registry(tmp_path, entry)), demo=True).test_client()


def url_token(httpserver, **kwargs) -> str:
    return mint(iss="https://url-ehr.test", headers={"jku": httpserver.url_for("/jwks.json")}, **kwargs)


def jwks_fetches(httpserver) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == "/jwks.json")


def test_keys_from_a_jwks_url_are_fetched_once_and_cached(url_client, httpserver, order_sign):
    for _ in range(3):
        assert call(url_client, url_token(httpserver), order_sign).status_code == 200
    assert call(url_client, mint(iss="https://url-ehr.test"), order_sign).status_code == 200  # no jku: listed URLs
    assert jwks_fetches(httpserver) == 1


def test_an_unknown_kid_refetches_the_jwks_once(url_client, httpserver, order_sign, monkeypatch):
    monkeypatch.setattr(auth, "JWKS_MIN_REFETCH_SECONDS", 0)
    assert call(url_client, url_token(httpserver), order_sign).status_code == 200
    rotated = {"keys": [tokens.public_jwk(OTHER_EC_KEY, "ehr-ec-2", "ES384")]}
    httpserver.clear_all_handlers()
    httpserver.expect_request("/jwks.json").respond_with_json(rotated)
    assert call(url_client, url_token(httpserver, key=OTHER_EC_KEY, kid="ehr-ec-2"), order_sign).status_code == 200
    assert jwks_fetches(httpserver) == 2
    assert_bare_401(call(url_client, url_token(httpserver, kid="never-published"), order_sign))
    assert jwks_fetches(httpserver) == 3


def test_unknown_kids_cannot_make_the_service_hammer_a_jwks_url(url_client, httpserver, order_sign, caplog):
    assert call(url_client, url_token(httpserver), order_sign).status_code == 200
    with caplog.at_level(logging.WARNING, logger="cds.auth"):
        for index in range(5):
            assert_bare_401(call(url_client, url_token(httpserver, kid=f"made-up-{index}"), order_sign))
    assert jwks_fetches(httpserver) == 1  # no refetch within JWKS_MIN_REFETCH_SECONDS of the last one
    throttled = [r.getMessage() for r in caplog.records if "not fetched again" in r.getMessage()]
    assert len(throttled) == 5
    assert httpserver.url_for("/jwks.json") in throttled[0] and "next fetch is allowed in" in throttled[0]
    waits = [float(m.split("allowed in ")[1].split(" s")[0]) for m in throttled]
    assert all(0 < wait <= auth.JWKS_MIN_REFETCH_SECONDS for wait in waits)


def test_a_jku_that_is_not_listed_is_never_fetched(url_client, httpserver, order_sign):
    httpserver.expect_request("/evil-jwks.json").respond_with_json(
        {"keys": [tokens.public_jwk(OTHER_EC_KEY, "evil", "ES384")]})
    token = mint(iss="https://url-ehr.test", key=OTHER_EC_KEY, kid="evil",
                 headers={"jku": httpserver.url_for("/evil-jwks.json")})
    assert_bare_401(call(url_client, token, order_sign))
    assert all(request.path != "/evil-jwks.json" for request, _ in httpserver.log)


@pytest.mark.parametrize("broken", ["status", "json", "shape"])
def test_a_broken_jwks_url_means_401_not_500(make_app, tmp_path, httpserver, order_sign, broken):
    if broken == "status":
        httpserver.expect_request("/jwks.json").respond_with_data("down", status=503)
    else:
        httpserver.expect_request("/jwks.json").respond_with_data("{" if broken == "json" else '{"keys": 5}')
    entry = {"iss": "https://url-ehr.test", "jwks_url": httpserver.url_for("/jwks.json")}
    client = make_app(clients_file=str(tokens.write_registry(tmp_path, entry)), demo=True).test_client()
    assert_bare_401(call(client, url_token(httpserver), order_sign))


# --- The registry file --------------------------------------------------------------------------------

def test_registry_reads_yaml_with_a_jwks_file_beside_it(tmp_path):
    (tmp_path / "ehr-jwks.json").write_text(json.dumps(tokens.EHR_JWKS))
    (tmp_path / "clients.yaml").write_text(
        "clients:\n  - iss: https://ehr.test\n    jwks_file: ehr-jwks.json\n    tenants: north\n"
        "    fhir_servers: [https://fhir.ehr.test/r4/]\n")
    client = load_registry(str(tmp_path / "clients.yaml"), ["ES384", "RS384"])["https://ehr.test"]
    assert set(client.pinned) == {("ehr-ec", "ES384"), ("ehr-rsa", "RS384")}
    assert client.tenants == {"north"} and client.fhir_servers == ("https://fhir.ehr.test/r4",)


@pytest.mark.parametrize(("content", "problem"), [
    (None, "No such file"),
    ("clients: [", "while parsing"),
    ("clients:\n  - iss: https://a\n", "jwks, jwks_file or jwks_url"),
    ("clients:\n  - iss: https://a\n    jwks_url: https://a/k\n    colour: red\n", "colour"),
    ("clients:\n  - {iss: https://a, jwks_url: https://a/k}\n  - {iss: https://a, jwks_url: https://a/k}\n",
     "listed twice"),
    ("clients:\n  - iss: https://a\n    jwks: {keys: [{kty: RSA, n: AQAB, e: AQAB, kid: h}]}\n", "no key usable"),
    ("clients:\n  - iss: https://a\n    jwks: {keys: [{kty: oct, k: c2VjcmV0, kid: h}]}\n", "secret material"),
    ("clients:\n  - iss: https://a\n    jwks_file: missing.json\n", "missing.json"),
])
def test_a_bad_registry_stops_start_up_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "clients.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RegistryError, match="CDS_CLIENTS_FILE") as raised:
        load_registry(str(path), ["ES384"])
    assert problem in str(raised.value) and str(path) in str(raised.value)


def test_shipped_sandbox_entry_pins_the_published_key():
    sandbox = load_registry(SANDBOX_CLIENTS_FILE, ["ES384"])["https://sandbox.cds-hooks.org"]
    assert set(sandbox.pinned) == {("44823f3d-0b01-4a6c-a80e-b9d3e8a7226f", "ES384")}
    assert set(sandbox.remote) == {SANDBOX_HEADERS["jku"]}


# --- The HL7 CRD request generator's own tokens -------------------------------------------------------
# It signs RS256 with a new RSA key on every page load, `kid` the key's JWK thumbprint, `jku` its key server,
# which serves every key it was sent as [{"pem": <public JWK>, "id": kid, "timestamp": ...}], not a JWK Set;
# `iss` is its FHIR server, `exp` a day after `iat`, `jti` 128 characters (tests/data/crd-request-generator).

GENERATOR_ISS = "http://127.0.0.1:19082/fhir"
GENERATOR_BODY = "crd-request-generator/order-sign-devicerequest-e0221.json"
JTI_CHARACTERS = "---ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~."


def thumbprint(jwk: dict) -> str:
    """RFC 7638: the kid the generator gives its key."""
    canonical = json.dumps({name: jwk[name] for name in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


class GeneratorPageLoad:
    """One page load of the generator: a fresh RSA key, posted to its key server as the generator posts it."""

    def __init__(self, keys: list[dict]):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)  # {kty, n, e}, as jsrsasign gives it
        self.kid = thumbprint(public)
        keys.append({"pem": public, "id": self.kid, "timestamp": "2026-12-01T09:00:00.000Z"})

    def token(self, jku: str, path: str = SERVICE_PATH, **headers) -> str:
        now = int(time.time())
        jti = "".join(secrets.choice(JTI_CHARACTERS) for _ in range(128))
        claims = {"iss": GENERATOR_ISS, "aud": BASE + path, "iat": now, "exp": now + 86400, "jti": jti}
        return tokens.sign_raw(claims, {"alg": "RS256", "typ": "JWT", "kid": self.kid, "jku": jku, **headers},
                               self.key, "RS256")


@pytest.fixture
def key_server(httpserver):
    """The generator's key server on loopback: GET /public_keys answers the keys posted so far."""
    keys: list[dict] = []
    httpserver.expect_request("/public_keys").respond_with_handler(
        lambda request: Response(json.dumps(keys), content_type="application/json"))
    return keys, httpserver.url_for("/public_keys")


def generator_app(make_app, tmp_path, jku: str, **entry):
    registered = {"iss": GENERATOR_ISS, "jwks_url": jku, "jwks_format": "pem-list", "algorithms": ["RS256"],
                  **entry}
    registered = {name: value for name, value in registered.items() if value is not None}
    # Demo mode: its key server speaks plain http on loopback, which only demo mode fetches from.
    return make_app(clients_file=str(tokens.write_registry(tmp_path, registered)), demo=True,
                    fetch_budget_seconds=0.5).test_client()


def generator_call(client, token: str):
    body = load(GENERATOR_BODY)
    return client.post(SERVICE_PATH, json=body, headers=bearer(token))


def test_the_generators_own_tokens_are_accepted_when_registered_with_its_key_list(make_app, tmp_path,
                                                                                     key_server):
    keys, jku = key_server
    client = generator_app(make_app, tmp_path, jku)
    response = generator_call(client, GeneratorPageLoad(keys).token(jku))
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["cards"] and answer["systemActions"]
    assert recorded_caller(client.application, load(GENERATOR_BODY)["hookInstance"]) == (GENERATOR_ISS, None)


def test_a_new_page_loads_key_is_found_at_the_key_server(make_app, tmp_path, key_server, monkeypatch):
    monkeypatch.setattr(auth, "JWKS_MIN_REFETCH_SECONDS", 0)
    keys, jku = key_server
    client = generator_app(make_app, tmp_path, jku)
    assert generator_call(client, GeneratorPageLoad(keys).token(jku)).status_code == 200
    assert generator_call(client, GeneratorPageLoad(keys).token(jku)).status_code == 200  # reloaded: a new key


@pytest.mark.parametrize(("entry", "logged"), [
    ({"jwks_format": None}, "is registered with jwks_format: pem-list"),
    ({"algorithms": None}, f"alg 'RS256' is not allowed for iss '{GENERATOR_ISS}', which may sign with ES384, RS384"),
])
def test_without_its_options_the_generators_tokens_are_refused_and_the_log_says_why(make_app, tmp_path, key_server,
                                                                                    caplog, entry, logged):
    keys, jku = key_server
    client = generator_app(make_app, tmp_path, jku, **entry)
    token = GeneratorPageLoad(keys).token(jku)
    with caplog.at_level(logging.WARNING, logger="cds.auth"):
        assert_bare_401(generator_call(client, token))
    assert logged in caplog.text
    assert token not in caplog.text and token.rpartition(".")[2] not in caplog.text


def test_the_key_list_option_trusts_no_more_than_the_registered_key_server(make_app, tmp_path, key_server, httpserver):
    keys, jku = key_server
    client = generator_app(make_app, tmp_path, jku)
    page = GeneratorPageLoad(keys)
    other_keys: list[dict] = []
    stranger = GeneratorPageLoad(other_keys)  # a key the registered key server never had
    assert_bare_401(generator_call(client, stranger.token(jku)))
    evil = httpserver.url_for("/evil_keys")
    httpserver.expect_request("/evil_keys").respond_with_json(other_keys)
    assert_bare_401(generator_call(client, stranger.token(evil)))  # a jku not registered is never fetched
    assert all(request.path != "/evil_keys" for request, _ in httpserver.log)
    assert_bare_401(generator_call(client, page.token(jku, alg="RS384")))  # only the registered algorithm
    # The registry's other clients keep the default algorithms: RS256 is allowed for this one only.
    assert_bare_401(client.post(SERVICE_PATH, json={}, headers=bearer(mint(key=RSA_KEY, alg="RS256", kid="ehr-rsa"))))


def test_a_key_list_grown_over_many_page_loads_is_still_read(make_app, tmp_path, key_server):
    """Its key server keeps every key it was sent: far past a JWK Set's 64 KiB, the newest keys are still found."""
    keys, jku = key_server
    client = generator_app(make_app, tmp_path, jku)
    page = GeneratorPageLoad(keys)
    keys[:] = [{**keys[0], "id": f"earlier-load-{n}"} for n in range(400)] + keys  # 400 earlier page loads
    assert len(json.dumps(keys)) > 128 * 1024
    assert generator_call(client, page.token(jku)).status_code == 200


def test_a_key_list_may_carry_pem_text(key_server):
    keys, _ = key_server
    page = GeneratorPageLoad(keys)
    pem = page.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    parsed = auth.parse_key_list([{"pem": pem, "id": "k-1"}, {"pem": "not a key", "id": "k-2"}, "junk"], ["RS256"])
    assert set(parsed) == {("k-1", "RS256")}
    with pytest.raises(ValueError, match="JSON array of"):
        auth.parse_key_list({"keys": []}, ["RS256"])


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"]])
def test_a_registry_entry_cannot_allow_none_or_hmac(tmp_path, algorithms):
    (tmp_path / "clients.yaml").write_text(json.dumps({"clients": [
        {"iss": GENERATOR_ISS, "jwks_url": "https://keys.test/public_keys", "algorithms": algorithms}]}))
    with pytest.raises(RegistryError, match="forbids 'none' and symmetric algorithms"):
        load_registry(str(tmp_path / "clients.yaml"), ["ES384"])
