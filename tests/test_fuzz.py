"""Property-based: no JSON body and no mutation of a valid request makes the service answer 5xx."""

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import load

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
VALID = [load("sandbox-order-sign-rx.json"), load("inferno-order-select.json"),
         load("crd-order-sign-servicerequests.json")]
SERVICE = {"order-sign": "order-sign-crd", "order-select": "order-select-crd"}
FEEDBACK = {"feedback": [{"card": "c", "outcome": "accepted", "acceptedSuggestions": [{"id": "s"}],
                          "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def paths(value, prefix=()):
    """Every path to a member of a JSON value, so a mutation can land anywhere."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


@st.composite
def mutated(draw, originals):
    body = copy.deepcopy(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 3))):
        candidates = [p for p in paths(body) if p]
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON)
        else:
            parent.pop(path[-1])
    return body


def post(client, path, body):
    return client.post(path, data=json.dumps(body), content_type="application/json")


@FUZZ
@given(body=JSON)
def test_random_json_never_5xx(client, body):
    for path in ("/cds-services/order-sign-crd", "/cds-services/order-select-crd",
                 "/cds-services/order-sign-crd/feedback"):
        assert post(client, path, body).status_code < 500


@FUZZ
@given(body=mutated(VALID))
def test_mutated_service_requests_never_5xx(client, body):
    hook = body.get("hook")
    path = f"/cds-services/{SERVICE.get(hook, 'order-sign-crd') if isinstance(hook, str) else 'order-sign-crd'}"
    response = post(client, path, body)
    assert response.status_code < 500, response.get_json()
    assert response.status_code in (200, 400, 422)
    if response.status_code == 422:  # valid CDS Hooks that asks for a CRD version this service does not implement
        assert "davinci-crd.requestedVersion" in response.get_data(as_text=True)


@FUZZ
@given(body=mutated([FEEDBACK]))
def test_mutated_feedback_never_5xx(client, body):
    assert post(client, "/cds-services/order-sign-crd/feedback", body).status_code in (200, 400)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_random_bytes_never_5xx(client, raw):
    response = client.post("/cds-services/order-sign-crd", data=raw, content_type="application/json")
    assert response.status_code == 400
