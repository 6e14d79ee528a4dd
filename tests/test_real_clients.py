"""The Da Vinci CRD request generator's own calls, replayed over HTTP as it sent them: an empty access token,
prefetch under its own keys, one hookInstance for every call. Each gets its cards and coverage-information; what
its prefetch carries is never fetched again; a card says truthfully why member data is missing."""

from __future__ import annotations

import copy
import logging

import pytest
from sqlalchemy import func, select

from cds.record.schema import hook_call
from tests.helpers import free_port, load, outcome

GENERATOR = "crd-request-generator"
BODIES = ["order-sign-devicerequest-e0221.json", "order-select-devicerequest-e0221.json",
          "order-sign-servicerequest-97026.json"]
COVERAGE = "Coverage/cov-bcbstx-1"
COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
NOT_CHECKED = "so this states the medical policy without checking the member's benefits"


def generator_body(name: str) -> dict:
    return copy.deepcopy(load(f"{GENERATOR}/{name}"))


def call(client, body: dict):
    return client.post(f"/cds-services/{body['hook']}-crd", json=body)


def assertions(answer: dict) -> list[dict]:
    """The coverage-information extensions the answer's system actions put on orders."""
    return [extension for action in answer.get("systemActions", [])
            for extension in action["resource"].get("extension", []) if extension["url"] == COVERAGE_INFORMATION]


def coverage_of(extension: dict) -> str:
    return next(part["valueReference"]["reference"] for part in extension["extension"] if part["url"] == "coverage")


def condition_search(patient_id: str) -> dict:
    condition = {"resourceType": "Condition", "id": "c-1", "subject": {"reference": f"Patient/{patient_id}"},
                 "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                "code": "active"}]},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.50"}]}}
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": condition}]}


@pytest.mark.parametrize("name", BODIES)
def test_the_generators_untouched_calls_get_their_cards_and_coverage_information(client, name):
    # Its FHIR server (http on 127.0.0.1:19082) is not one this service may fetch from outside demo mode: nothing
    # is fetched, and what the prefetch carried under the generator's own keys decides.
    response = call(client, generator_body(name))
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["cards"], answer
    card = answer["cards"][0]
    assert card["source"]["label"] == "Blue Cross and Blue Shield of Texas"  # the Coverage was read
    assert NOT_CHECKED not in card["detail"]
    assert [coverage_of(e) for e in assertions(answer)] == [COVERAGE]


def test_an_empty_access_token_is_no_token_and_only_what_the_prefetch_lacks_is_fetched(make_app, fhir_server,
                                                                                       caplog):
    body = generator_body("order-sign-devicerequest-e0221.json")
    body["fhirServer"] = fhir_server.url_for("/fhir")
    fhir_server.expect_request("/fhir/Condition").respond_with_json(condition_search(body["context"]["patientId"]))
    with caplog.at_level(logging.INFO, logger="cds.member"):
        response = call(make_app(demo=True).test_client(), body)
    assert response.status_code == 200, response.get_json()
    assert [request.path for request, _ in fhir_server.log] == ["/fhir/Condition"]  # Patient, Coverage: prefetched
    assert "Authorization" not in fhir_server.log[0][0].headers
    assert "access_token is empty: fetching member data without Authorization" in caplog.text
    assert "prefetch 'coverageBundle' recognised by content as coverage" in caplog.text
    assert "prefetch 'deviceRequestBundle' recognised by content as patient" in caplog.text
    assert [coverage_of(e) for e in assertions(response.get_json())] == [COVERAGE]


def test_when_the_ehrs_fhir_server_is_down_the_coverage_sent_still_decides(make_app):
    body = generator_body("order-sign-devicerequest-e0221.json")
    body["fhirServer"] = f"http://127.0.0.1:{free_port()}/fhir"  # nothing listens there
    response = call(make_app(demo=True, fetch_budget_seconds=0.5).test_client(), body)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert [coverage_of(e) for e in assertions(answer)] == [COVERAGE]
    detail = answer["cards"][0]["detail"]
    assert NOT_CHECKED not in detail and "No coverage" not in detail
    assert "active conditions could not be obtained" in detail  # what was really missing, and why


def without_coverage(body: dict) -> dict:
    body["prefetch"].pop("coverageBundle")
    return body


def test_a_card_says_when_no_coverage_came_and_there_is_nowhere_to_fetch_it(client):
    body = without_coverage(generator_body("order-sign-devicerequest-e0221.json"))
    body.pop("fhirServer")
    body.pop("fhirAuthorization")
    detail = call(client, body).get_json()["cards"][0]["detail"]
    assert ("No coverage for this patient came with the request, and the request names no FHIR server to fetch it "
            f"from, {NOT_CHECKED}.") in detail


def test_a_card_says_when_coverage_was_not_fetched_because_the_server_is_not_allowed(client):
    detail = call(client, without_coverage(generator_body("order-sign-devicerequest-e0221.json"))
                  ).get_json()["cards"][0]["detail"]
    assert ("The patient's coverage did not come with the request and was not fetched, as this service may not "
            f"fetch from the request's FHIR server, {NOT_CHECKED}.") in detail
    assert "No coverage for this patient came with the request" not in detail


def test_a_card_says_when_coverage_could_not_be_fetched(make_app):
    body = without_coverage(generator_body("order-sign-devicerequest-e0221.json"))
    body["fhirServer"] = f"http://127.0.0.1:{free_port()}/fhir"
    detail = call(make_app(demo=True, fetch_budget_seconds=0.5).test_client(), body).get_json()["cards"][0]["detail"]
    assert ("The patient's coverage did not come with the request and could not be fetched from the EHR's FHIR "
            f"server, {NOT_CHECKED}.") in detail
    assert "could not be reached" in detail  # the fetch's own reason, among what was not evaluated


def test_a_card_says_when_the_ehr_has_no_coverage_for_the_patient(make_app, fhir_server):
    body = without_coverage(generator_body("order-sign-devicerequest-e0221.json"))
    body["fhirServer"] = fhir_server.url_for("/fhir")
    fhir_server.expect_request("/fhir/Coverage").respond_with_json({"resourceType": "Bundle", "type": "searchset"})
    fhir_server.expect_request("/fhir/Condition").respond_with_json({"resourceType": "Bundle", "type": "searchset"})
    detail = call(make_app(demo=True).test_client(), body).get_json()["cards"][0]["detail"]
    assert f"No active coverage was found for this patient, {NOT_CHECKED}." in detail


@pytest.mark.parametrize("token", ["", "   "])
def test_a_blank_access_token_is_never_sent(make_app, fhir_server, token):
    body = without_coverage(generator_body("order-sign-devicerequest-e0221.json"))
    body["fhirServer"] = fhir_server.url_for("/fhir")
    body["fhirAuthorization"]["access_token"] = token
    fhir_server.expect_request("/fhir/Coverage").respond_with_json({"resourceType": "Bundle", "type": "searchset"})
    fhir_server.expect_request("/fhir/Condition").respond_with_json({"resourceType": "Bundle", "type": "searchset"})
    assert call(make_app(demo=True).test_client(), body).status_code == 200
    assert sorted(request.path for request, _ in fhir_server.log) == ["/fhir/Condition", "/fhir/Coverage"]
    assert all("Authorization" not in request.headers for request, _ in fhir_server.log)


@pytest.mark.parametrize(("token", "message"), [
    (None, "fhirAuthorization.access_token is required and must be a string."),
    (7, "fhirAuthorization.access_token must be a string, not a number."),
])
def test_an_access_token_that_is_not_a_string_is_a_clear_400(client, token, message):
    body = generator_body("order-sign-devicerequest-e0221.json")
    body["fhirAuthorization"]["access_token"] = token
    response = call(client, body)
    assert response.status_code == 400
    issue = outcome(response)
    assert issue["diagnostics"] == message
    assert issue["expression"] == ["fhirAuthorization.access_token"]


def test_an_empty_required_string_is_named_as_empty(client):
    body = generator_body("order-sign-devicerequest-e0221.json")
    body["fhirAuthorization"]["scope"] = ""
    issue = outcome(call(client, body))
    assert issue["diagnostics"] == ("fhirAuthorization.scope must be a non-empty string, not an empty or blank "
                                    "string.")


def test_a_reused_hook_instance_without_authentication_is_logged_for_the_unauthenticated_caller(make_app, caplog):
    client = make_app(demo=True, auth_disabled=True).test_client()
    body = generator_body(BODIES[0])
    del body["fhirServer"], body["fhirAuthorization"]  # nothing to fetch: the prefetch decides
    with caplog.at_level(logging.WARNING, logger="cds.hook_instances"):
        for _ in range(2):
            assert call(client, body).status_code == 200
    [warning] = [r.getMessage() for r in caplog.records if r.name == "cds.hook_instances"]
    assert warning.startswith(f"client '(unauthenticated)' reuses hookInstance '{body['hookInstance']}'")


def test_a_reused_hook_instance_is_logged_once_and_every_call_is_recorded(app, caplog):
    client = app.test_client()
    bodies = [generator_body(name) for name in BODIES]
    instance = bodies[0]["hookInstance"]
    assert {body["hookInstance"] for body in bodies} == {instance}  # as the generator sends them
    with caplog.at_level(logging.WARNING, logger="cds.hook_instances"):
        for body in bodies * 2:
            assert call(client, body).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "cds.hook_instances"]
    assert len(warnings) == 1
    assert f"reuses hookInstance '{instance}'" in warnings[0] and "'https://ehr.test'" in warnings[0]
    store = app.extensions["cds_store"]
    store.flush()
    with store.engine.connect() as connection:
        calls = connection.execute(select(func.count(func.distinct(hook_call.c.id)))
                                   .where(hook_call.c.hook_instance == instance)).scalar_one()
    assert calls >= 6  # each call its own record (the session's store may hold earlier runs' too)
