"""Property-based, over the whole HTTP surface: no method, path, header, token or body gets a 5xx."""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import tokens
from tests.test_fuzz import FEEDBACK, JSON

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
KNOWN_PATHS = ["/cds-services", "/cds-services/order-sign-crd", "/cds-services/order-select-crd",
               "/cds-services/order-sign-crd/feedback", "/cds-services/order-select-crd/feedback", "/health"]
PATHS = (st.sampled_from(KNOWN_PATHS)
         | st.builds(lambda s: f"/cds-services/{quote(s, safe='')}", st.text(max_size=30))
         | st.builds(lambda s: f"/cds-services/{quote(s, safe='')}/feedback", st.text(max_size=30))
         | st.builds(lambda s: "/" + quote(s), st.text(max_size=40)))
CONTENT_TYPES = st.sampled_from(["application/json", "application/fhir+json", "application/json; charset=utf-8",
                                 "text/plain", "application/json; charset=latin-1", "multipart/form-data"]) | PRINTABLE
CLAIM_VALUES = JSON | st.integers(-(2**70), 2**70) | st.floats()
# A correctly signed token whose claims and header fields may hold anything at all.
SIGNED = st.builds(
    lambda path, claims, extra_header, kid: tokens.sign_raw({**tokens.claims_for(path), **claims},
                                                            {"kid": kid, **extra_header}),
    st.sampled_from(KNOWN_PATHS),
    st.dictionaries(st.sampled_from(["iss", "aud", "exp", "iat", "nbf", "jti", "tenant", "sub"]), CLAIM_VALUES,
                    max_size=3),
    st.dictionaries(st.sampled_from(["jku", "typ", "crit", "b64", "x5u", "jwk", "cty"]), JSON, max_size=2),
    st.sampled_from(["ehr-ec", "ehr-rsa", ""]) | PRINTABLE,
)
# Well-formed JWT structure with arbitrary, unsigned contents.
FORGED = st.builds(lambda header, payload, signature: f"{tokens.b64(header)}.{tokens.b64(payload)}.{signature}",
                   st.dictionaries(st.sampled_from(["alg", "kid", "typ", "jku"]), JSON, max_size=4),
                   st.dictionaries(st.text(max_size=8), CLAIM_VALUES, max_size=6), PRINTABLE)
AUTHORIZATION = (st.just("")  # none at all
                 | PRINTABLE
                 | st.builds("Bearer {}".format, PRINTABLE | FORGED | SIGNED))
BODIES = st.binary(max_size=300) | JSON.map(lambda value: json.dumps(value).encode())


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), path=PATHS,
       authorization=AUTHORIZATION, content_type=CONTENT_TYPES, origin=PRINTABLE, body=BODIES)
def test_no_request_gets_a_5xx(make_app, method, path, authorization, content_type, origin, body):
    client = make_app(auth_discovery=True).test_client()
    response = client.open(path, method=method, data=body, headers={
        "Authorization": authorization, "Content-Type": content_type, "Origin": origin})
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True))


@FUZZ
@given(token=SIGNED | FORGED, path=st.sampled_from(["/cds-services/order-sign-crd",
                                                     "/cds-services/order-sign-crd/feedback"]))
def test_any_token_is_answered_200_or_a_bare_401(client, order_sign, token, path):
    body = FEEDBACK if path.endswith("/feedback") else order_sign
    response = client.post(path, json=body, headers=tokens.bearer(token))
    assert response.status_code in (200, 401), response.get_json()
