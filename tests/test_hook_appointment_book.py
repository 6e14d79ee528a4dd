"""appointment-book over HTTP: its discovery entry; a booked 97026 visit judged on its service type's CRD billing
option or on the order it carries out (contained, prefetched, or read from a real FHIR server on loopback), with its
card and CRD coverage information on the Appointment; requests that cannot be had answered 412, never a 5xx."""

import copy

import pytest

from cds.config import EXAMPLE_PLAN_DIRECTORY, Settings
from cds.render.coverage import COVERAGE_INFORMATION
from cds.web.app import create_app
from tests.crd_profile import has_empty_element, problems_2_2, problems_dual
from tests.helpers import load, outcome

SERVICE = "/cds-services/appointment-book-crd"
EXAMPLE = load("appointment-book-97026-clinic.json")
APPOINTMENT = EXAMPLE["context"]["appointments"]["entry"][0]["resource"]
ORDER = EXAMPLE["prefetch"]["serviceRequests"]["entry"][0]["resource"]
MEMBER = {key: EXAMPLE["prefetch"][key] for key in ("patient", "coverage", "conditions")}
REFERENCE = "Appointment/apt-97026-1142"
TOKEN = "access-token-for-booking"
PHYSIOTHERAPY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-type", "code": "145",
                             "display": "Physiotherapy"}]}
DEVICE_ORDER = {
    "resourceType": "DeviceRequest", "id": "dr-e0221-1142", "status": "active", "intent": "order",
    "codeCodeableConcept": {"coding": [{"system": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                                        "code": "E0221"}]},
    "subject": {"reference": "Patient/pat-nm-1142"}, "authoredOn": "2026-11-26",
}


@pytest.fixture(scope="module")
def demo():
    settings = Settings(demo=True, auth_disabled=True, fetch_budget_seconds=0.5,
                        plan_directory=EXAMPLE_PLAN_DIRECTORY)
    return create_app(settings.resolved()).test_client()


def booking(service_type=None, based_on=None, contained=None, prefetch=None, fhir_server=None) -> dict:
    """The example, its Appointment changed as given; `prefetch` instead of the example's."""
    body = copy.deepcopy(EXAMPLE)
    body.pop("fhirServer")
    appointment = body["context"]["appointments"]["entry"][0]["resource"]
    if service_type is not None:
        appointment["serviceType"] = service_type
    if based_on is not None:
        appointment["basedOn"] = based_on
    if contained is not None:
        appointment["contained"] = contained
    if prefetch is not None:
        body["prefetch"] = prefetch
    if fhir_server:
        body["fhirServer"] = fhir_server
        body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "user/ServiceRequest.read", "subject": "cds-service"}
    return body


def judged(response, item: str = "Infrared therapy modality (97026)") -> dict:
    """The card for the Appointment and its coverage information, valid under CRD; the card's detail."""
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    [card] = answer["cards"]
    assert card["summary"].startswith(f"{item} not covered")
    assert card["extension"]["davinci-crd.associated-resource"] == [{"reference": REFERENCE}]
    [action] = answer["systemActions"]
    assert action["type"] == "update" and action["resource"]["resourceType"] == "Appointment"
    assert {k: v for k, v in action["resource"].items() if k != "extension"} == \
        {k: v for k, v in APPOINTMENT.items() if k != "extension"} | \
        {k: action["resource"][k] for k in ("serviceType", "basedOn", "contained") if k in action["resource"]}
    [extension] = [e for e in action["resource"]["extension"] if e["url"] == COVERAGE_INFORMATION]
    parts = {p["url"]: p for p in extension["extension"]}
    assert parts["covered"]["valueCode"] == "not-covered"
    assert parts["coverage"]["valueReference"] == {"reference": "Coverage/cov-bcbsnm-1142"}
    assert problems_dual(extension) == [] and problems_2_2(extension) == []
    assert not has_empty_element(answer)
    return card


def test_discovery_lists_appointment_book_with_its_prefetch_and_options(client):
    services = client.get("/cds-services").get_json()["services"]
    [entry] = [s for s in services if s["id"] == "appointment-book-crd"]
    assert entry["hook"] == "appointment-book" and entry["title"] and entry["description"]
    assert entry["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert entry["prefetch"]["serviceRequests"] == \
        "ServiceRequest?_id={{context.appointments.entry.resource.basedOn.resolve().ofType(ServiceRequest).id}}"
    assert "alternate-reference" in entry["prefetch"]["deviceRequests"]
    codes = {option["code"] for option in entry["extension"]["davinci-crd.configuration-options"]}
    assert {"coverage-info", "max-cards"} <= codes


def test_the_service_type_billing_option_decides(client):
    card = judged(client.post(SERVICE, json=booking()))
    assert "in a billing option of Appointment.serviceType" in card["detail"]


def test_the_prefetched_request_the_appointment_is_based_on_decides(client):
    card = judged(client.post(SERVICE, json=booking(service_type=[PHYSIOTHERAPY])))
    assert "ServiceRequest/sr-97026-1142, which Appointment is based on" in card["detail"]
    assert "G62.9" in card["detail"]  # the request's reason counts as the appointment's


def test_a_contained_request_decides(client):
    body = booking(service_type=[PHYSIOTHERAPY], based_on=[{"reference": "#order"}],
                   contained=[{**ORDER, "id": "order"}], prefetch=MEMBER)
    judged(client.post(SERVICE, json=body))


def test_without_prefetch_the_request_and_member_are_read_from_the_fhir_server(demo, fhir_server):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    fhir_server.expect_request("/fhir/ServiceRequest/sr-97026-1142", headers=auth).respond_with_json(ORDER)
    fhir_server.expect_request("/fhir/Patient/pat-nm-1142", headers=auth).respond_with_json(MEMBER["patient"])
    fhir_server.expect_request("/fhir/Coverage", headers=auth).respond_with_json(MEMBER["coverage"])
    fhir_server.expect_request("/fhir/Condition", headers=auth).respond_with_json(MEMBER["conditions"])
    body = booking(service_type=[PHYSIOTHERAPY], prefetch={}, fhir_server=fhir_server.url_for("/fhir"))
    judged(demo.post(SERVICE, json=body))
    assert sorted(r.path for r, _ in fhir_server.log) == [
        "/fhir/Condition", "/fhir/Coverage", "/fhir/Patient/pat-nm-1142", "/fhir/ServiceRequest/sr-97026-1142"]


def test_a_device_request_named_by_alternate_reference_decides(demo, fhir_server):
    fhir_server.expect_request("/fhir/DeviceRequest/dr-e0221-1142").respond_with_json(DEVICE_ORDER)
    based_on = [{"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/alternate-reference",
                                "valueReference": {"reference": "DeviceRequest/dr-e0221-1142"}}]}]
    body = booking(service_type=[PHYSIOTHERAPY], based_on=based_on, prefetch=MEMBER,
                   fhir_server=fhir_server.url_for("/fhir"))
    judged(demo.post(SERVICE, json=body), "Infrared heating pad system (E0221)")


@pytest.mark.parametrize("fhir_server_answer", [None, 404])
def test_a_request_that_cannot_be_had_is_answered_412_naming_it(demo, fhir_server, fhir_server_answer):
    base = None
    if fhir_server_answer:
        fhir_server.expect_request("/fhir/ServiceRequest/sr-97026-1142").respond_with_data("", status=404)
        base = fhir_server.url_for("/fhir")
    response = demo.post(SERVICE, json=booking(prefetch=MEMBER, fhir_server=base))
    assert response.status_code == 412
    issue = outcome(response)
    assert issue["expression"] == ["context.appointments.entry[0].resource.basedOn[0]"]
    assert "ServiceRequest/sr-97026-1142" in issue["diagnostics"]


def test_appointments_are_required_and_a_bare_array_is_accepted(client):
    body = booking()
    del body["context"]["appointments"]
    response = client.post(SERVICE, json=body)
    assert response.status_code == 400 and outcome(response)["expression"] == ["context.appointments"]
    body["context"]["appointments"] = [copy.deepcopy(APPOINTMENT)]
    judged(client.post(SERVICE, json=body))


def test_a_cancelled_appointment_is_not_judged(client):
    body = booking()
    body["context"]["appointments"]["entry"][0]["resource"]["status"] = "cancelled"
    assert client.post(SERVICE, json=body).get_json() == {"cards": []}


def test_configuration_options_are_obeyed(client):
    body = booking()
    body["extension"] = {"davinci-crd.configuration": {"coverage-info": False, "off-guideline": False}}
    assert client.post(SERVICE, json=body).get_json() == {"cards": []}


def test_the_audit_record_names_the_hook_and_the_appointment(make_app, database_url):
    app = make_app(database_url=database_url)
    store = app.extensions["cds_store"]
    answer = app.test_client().post(SERVICE, json=booking(service_type=[PHYSIOTHERAPY])).get_json()
    [action] = answer["systemActions"]
    parts = {p["url"]: p for e in action["resource"]["extension"] for p in e["extension"]}
    store.flush()
    report = store.decision_report(parts["coverage-assertion-id"]["valueString"])
    assert report["hook"] == "appointment-book" and report["order_reference"] == REFERENCE
    assert "http://terminology.hl7.org/CodeSystem/service-type|145" in report["order_codes"]
    assert "http://www.ama-assn.org/go/cpt|97026" in report["order_codes"]  # from the request it is based on
