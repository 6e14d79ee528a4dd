"""Service calls: real client bodies are answered, broken ones get a precise 400."""

import copy

import pytest

from tests.helpers import load, outcome

REFERENCE_REQUESTS = [
    "sandbox-order-sign-rx.json",
    "sandbox-order-sign-pama.json",
    "sandbox-order-select-pama.json",
    "crd-order-sign-servicerequests.json",
    "crd-order-sign-communicationrequest.json",
    "crd-2.1-order-sign.json",
    "inferno-order-sign.json",
    "inferno-order-select.json",
]
SERVICE = {"order-sign": "order-sign-crd", "order-select": "order-select-crd"}
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"


@pytest.mark.parametrize("name", REFERENCE_REQUESTS)
def test_reference_requests_with_no_order_a_policy_covers_get_no_card_and_no_action(client, name):
    body = load(name)
    response = client.post(f"/cds-services/{SERVICE[body['hook']]}", json=body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"cards": []}


@pytest.mark.parametrize("name", REFERENCE_REQUESTS)
def test_reference_requests_get_a_card_for_an_e0221_order_among_theirs(client, name):
    """The same real bodies, with one judged order turned into the E0221 device: one card for it, and on
    order-sign with the client's Coverage prefetched, its coverage-information."""
    body = load(name)
    entries = body["context"]["draftOrders"]["entry"]
    selected = body["context"].get("selections")
    index = next((i for i, e in enumerate(entries) if not selected
                  or f"{e['resource']['resourceType']}/{e['resource'].get('id')}" in selected), 0)
    order = entries[index]["resource"]
    entries[index]["resource"] = {**{k: order[k] for k in ("id", "subject") if k in order},
                                  "resourceType": "DeviceRequest", "status": "draft", "intent": "original-order",
                                  "codeCodeableConcept": {"coding": [{"system": HCPCS, "code": "E0221"}]}}
    if selected:
        body["context"]["selections"] = [f"DeviceRequest/{order['id']}"] if "id" in order else selected
    response = client.post(f"/cds-services/{SERVICE[body['hook']]}", json=body)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    (card,) = answer["cards"]
    assert card["indicator"] == "warning" and "E0221" in card["summary"]
    coverage = body.get("prefetch", {}).get("coverage") or {}
    covered = coverage.get("resourceType") == "Coverage" or any(
        entry.get("resource", {}).get("resourceType") == "Coverage" for entry in coverage.get("entry", []))
    expects_action = body["hook"] == "order-sign" and covered and "id" in order
    actions = answer.get("systemActions", [])
    assert len(actions) == (1 if expects_action else 0), actions
    if actions:
        assert actions[0]["resource"]["id"] == order["id"]


def test_fhir_json_content_type_with_charset_is_accepted(client, order_sign):
    import json

    response = client.post("/cds-services/order-sign-crd", data=json.dumps(order_sign),
                           content_type="application/fhir+json; charset=utf-8")
    assert response.status_code == 200


def test_sloppy_client_shapes_are_tolerated(client, order_sign):
    order = order_sign["context"]["draftOrders"]["entry"][0]["resource"]
    order.pop("intent")
    order["code"] = {"coding": [{}]}
    order["reasonCode"] = {"text": "single object where R4 has an array"}
    order["extension"] = [{"url": "http://example.org/unknown", "valueString": "x"}]
    order_sign["context"]["somethingNew"] = {"ignored": True}
    order_sign["context"]["draftOrders"]["entry"] = order_sign["context"]["draftOrders"]["entry"][0]
    order_sign["unknownTopLevel"] = 1
    assert client.post("/cds-services/order-sign-crd", json=order_sign).status_code == 200


def test_one_malformed_order_does_not_fail_the_call(client, order_sign):
    entries = order_sign["context"]["draftOrders"]["entry"]
    entries.append({"resource": {"resourceType": "ServiceRequest", "id": "bad", "status": 42}})
    entries.append({"resource": {"resourceType": "MedicationOrder", "id": "dstu2"}})
    assert client.post("/cds-services/order-sign-crd", json=order_sign).status_code == 200


def mutate(body, path, value):
    *parents, last = path
    target = body
    for key in parents:
        target = target[key]
    if value is REMOVE:
        target.pop(last)
    else:
        target[last] = value
    return body


REMOVE = object()
ORDER = ("context", "draftOrders", "entry")


@pytest.mark.parametrize(
    ("path", "value", "expression"),
    [
        (("hook",), REMOVE, "hook"),
        (("hookInstance",), REMOVE, "hookInstance"),
        (("hookInstance",), 7, "hookInstance"),
        (("context",), REMOVE, "context"),
        (("context",), [], "context"),
        (("context", "userId"), REMOVE, "context.userId"),
        (("context", "userId"), "COREPRACTITIONER1", "context.userId"),
        (("context", "patientId"), REMOVE, "context.patientId"),
        (("context", "patientId"), "../../etc/passwd", "context.patientId"),
        (("context", "draftOrders"), REMOVE, "context.draftOrders"),
        (("context", "draftOrders", "resourceType"), "Patient", "context.draftOrders.resourceType"),
        (ORDER, "nope", "context.draftOrders.entry"),
        ((*ORDER, 0, "resource"), REMOVE, "context.draftOrders.entry[0].resource"),
        ((*ORDER, 0, "resource", "resourceType"), REMOVE, "context.draftOrders.entry[0].resource.resourceType"),
        (("fhirServer",), "not a url", "fhirServer"),
        (("prefetch",), "patient", "prefetch"),
        (("prefetch", "patient"), 5, "prefetch.patient"),
        (("extension",), [1], "extension"),
    ],
)
def test_request_breaking_cds_hooks_rules_is_400(client, order_sign, path, value, expression):
    response = client.post("/cds-services/order-sign-crd", json=mutate(order_sign, path, value))
    assert response.status_code == 400
    assert outcome(response)["expression"] == [expression]


def test_fhir_authorization_requires_fhir_server(client, order_sign):
    order_sign.pop("fhirServer")
    order_sign["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "scope": "user/*.read",
                                       "subject": "cds"}
    response = client.post("/cds-services/order-sign-crd", json=order_sign)
    assert response.status_code == 400
    assert outcome(response)["expression"] == ["fhirServer"]


def test_fhir_authorization_without_expires_in_is_tolerated(client, order_sign):
    order_sign["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "scope": "user/*.read",
                                       "subject": "cds"}
    assert client.post("/cds-services/order-sign-crd", json=order_sign).status_code == 200


def test_fhir_authorization_missing_token_is_400(client, order_sign):
    order_sign["fhirAuthorization"] = {"token_type": "Bearer", "scope": "s", "subject": "cds"}
    response = client.post("/cds-services/order-sign-crd", json=order_sign)
    assert response.status_code == 400
    assert outcome(response)["expression"] == ["fhirAuthorization.access_token"]


def test_context_with_only_patient_and_user_is_400(client, order_sign):
    # The sandbox sends this when an active tab is clicked again.
    order_sign["context"] = {"patientId": "smart-1288992", "userId": "Practitioner/COREPRACTITIONER1"}
    response = client.post("/cds-services/order-sign-crd", json=order_sign)
    assert response.status_code == 400
    assert outcome(response)["code"] == "required"


def test_hook_the_service_does_not_serve_is_400(client, order_sign):
    order_sign["hook"] = "patient-view"
    response = client.post("/cds-services/order-sign-crd", json=order_sign)
    assert response.status_code == 400
    assert "order-sign" in outcome(response)["diagnostics"]


def test_order_select_needs_selections_found_in_draft_orders(client, order_select):
    order_select["context"].pop("selections")
    response = client.post("/cds-services/order-select-crd", json=order_select)
    assert response.status_code == 400
    assert outcome(response)["expression"] == ["context.selections"]

    order_select["context"]["selections"] = ["NutritionOrder/not-there"]
    response = client.post("/cds-services/order-select-crd", json=order_select)
    assert response.status_code == 400
    assert outcome(response)["expression"] == ["context.selections[0]"]


def test_single_selection_as_string_is_tolerated(client, order_select):
    order_select["context"]["selections"] = "DeviceRequest/dr-e0221-6034"
    response = client.post("/cds-services/order-select-crd", json=order_select)
    assert response.status_code == 200
    (card,) = response.get_json()["cards"]
    assert card["extension"]["davinci-crd.associated-resource"] == [{"reference": "DeviceRequest/dr-e0221-6034"}]


def test_too_many_draft_orders_is_400(client, order_sign):
    entry = order_sign["context"]["draftOrders"]["entry"][0]
    order_sign["context"]["draftOrders"]["entry"] = [entry] * 201
    response = client.post("/cds-services/order-sign-crd", json=order_sign)
    assert response.status_code == 400
    assert outcome(response)["code"] == "too-costly"


def departing_order_sign() -> dict:
    body = load("e0221-home-device.json")
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["status"] = 42
    order["authoredOn"] = "last tuesday"
    return body


def departure_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "departs from FHIR R4" in r.getMessage()]


def test_a_matched_order_that_departs_from_r4_is_answered_and_its_problems_logged(client, caplog):
    response = client.post("/cds-services/order-sign-crd", json=departing_order_sign())
    assert response.status_code == 200 and len(response.get_json()["cards"]) == 1
    [warning] = departure_warnings(caplog)
    assert "DeviceRequest/dr-e0221-4821" in warning
    assert "status" in warning and "authoredOn" in warning
    assert "last tuesday" not in warning  # paths and rules, never the values a client sent


def test_r4_departures_are_checked_on_one_call_per_client_and_interval_or_on_every_call(make_app, caplog):
    sampled = make_app(r4_check_interval_ms=600_000).test_client()
    for _ in range(3):
        assert sampled.post("/cds-services/order-sign-crd", json=departing_order_sign()).status_code == 200
    assert len(departure_warnings(caplog)) == 1  # the first call's order; the others fall in its interval
    caplog.clear()
    every = make_app(r4_check_interval_ms=0).test_client()
    for _ in range(3):
        assert every.post("/cds-services/order-sign-crd", json=departing_order_sign()).status_code == 200
    assert len(departure_warnings(caplog)) == 3


def test_a_home_address_that_ended_is_passed_over_for_the_current_one(client):
    body = load("il-child-cerebral-palsy-hmo.json")
    answer = client.post("/cds-services/order-sign-crd", json=body).get_json()
    patient = body["prefetch"]["patient"]
    patient["address"].insert(0, {"use": "home", "city": "Milwaukee", "state": "WI", "period": {"end": "2019-06-30"}})
    response = client.post("/cds-services/order-sign-crd", json=body)
    assert response.status_code == 200, response.get_json()
    assert [c["summary"] for c in response.get_json()["cards"]] == [c["summary"] for c in answer["cards"]]
    assert "Illinois" in answer["cards"][0]["summary"]


DEVICE = {"resourceType": "Device", "id": "dev-1", "status": "active",
          "type": {"coding": [{"system": HCPCS, "code": "E0221", "display": "Infrared heating pad system"}]}}


@pytest.mark.parametrize("where", ["draft orders", "prefetch"])
def test_an_order_naming_a_device_by_reference_is_judged_by_the_device_sent_with_the_call(client, order_sign, where):
    order = order_sign["context"]["draftOrders"]["entry"][0]["resource"]
    order.pop("codeCodeableConcept")
    order["codeReference"] = {"reference": "Device/dev-1"}
    if where == "draft orders":
        order_sign["context"]["draftOrders"]["entry"].insert(0, {"resource": copy.deepcopy(DEVICE)})
    else:
        order_sign["prefetch"]["devices"] = {"resourceType": "Bundle", "type": "searchset",
                                             "entry": [{"resource": copy.deepcopy(DEVICE)}]}
    [card] = client.post("/cds-services/order-sign-crd", json=order_sign).get_json()["cards"]
    assert card["summary"].startswith("Infrared heating pad system (E0221) not covered")
