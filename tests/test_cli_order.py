"""`cds order`: reads the patient's data from a FHIR server on loopback, builds the hook call, sends it to the
real app, or to a loopback CDS service that records what it receives."""

import json
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cds.tools.order_request import HCPCS, Coding
from cds.tools.printer import COVERAGE_INFORMATION
from tests.helpers import run_cds

PATIENT = {"resourceType": "Patient", "id": "pat1", "birthDate": "2015-04-01", "address": [{"state": "IL"}]}
COVERAGE = {"resourceType": "Coverage", "id": "cov1", "status": "active", "beneficiary": {"reference": "Patient/pat1"},
            "type": {"coding": [{"system": "https://nahdo.org/sopt", "code": "611"}]},  # BC managed care HMO
            "payor": [{"display": "Blue Cross and Blue Shield of Illinois"}]}
CONDITION = {"resourceType": "Condition", "id": "cond1", "subject": {"reference": "Patient/pat1"},
             "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.42"}]}}
TOKEN = "fhir-access-token-123"


def searchset(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": resource} for resource in resources]}


@pytest.fixture
def fhir_server(httpserver_ipv4: HTTPServer) -> HTTPServer:
    """A FHIR server holding one patient, their active coverage and one active condition."""
    httpserver_ipv4.expect_request("/fhir/Patient/pat1").respond_with_json(PATIENT)
    httpserver_ipv4.expect_request("/fhir/Coverage", query_string={"patient": "pat1", "status": "active"}) \
        .respond_with_json(searchset(COVERAGE))
    httpserver_ipv4.expect_request("/fhir/Condition", query_string={"patient": "pat1", "clinical-status": "active"}) \
        .respond_with_json(searchset(CONDITION))
    return httpserver_ipv4


@pytest.fixture
def recording_service(client) -> Iterator[tuple[HTTPServer, list[Request]]]:
    """A CDS server on loopback with the real app's discovery, plus a template only CDS Hooks 3 clients can
    fill; it records each call and answers with a not-covered coverage-information action."""
    discovery = client.get("/cds-services").get_json()
    for service in discovery["services"]:
        service["prefetch"]["devices"] = "Device?_id={{context.draftOrders.DeviceRequest.id}}"
    calls: list[Request] = []

    def answer(request: Request) -> Response:
        calls.append(request)
        order = request.get_json()["context"]["draftOrders"]["entry"][0]["resource"]
        assertion = [{"url": "coverage", "valueReference": {"reference": "Coverage/cov1"}},
                     {"url": "covered", "valueCode": "not-covered"},
                     {"url": "reason", "valueCodeableConcept": {"text": "Not medically necessary (DME101.045)"}},
                     {"url": "date", "valueDate": "2025-10-01"},
                     {"url": "coverage-assertion-id", "valueString": "a1b2c3"}]
        action = {"type": "update", "description": "Coverage information",
                  "resource": {**order, "extension": [{"url": COVERAGE_INFORMATION, "extension": assertion}]}}
        return Response(json.dumps({"cards": [], "systemActions": [action]}), content_type="application/json")

    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/cds-services", method="GET").respond_with_json(discovery)
    for service in discovery["services"]:
        server.expect_request(f"/cds-services/{service['id']}", method="POST").respond_with_handler(answer)
    server.start()
    yield server, calls
    server.clear()
    server.stop()


def order_args(fhir_server: HTTPServer, *extra: str) -> list[str]:
    return ["--fhir-server", fhir_server.url_for("/fhir"), "--patient", "pat1", *extra]


def test_order_against_the_real_app_reads_the_fhir_server_with_the_token(live_service, fhir_server):
    result = run_cds("order", live_service, *order_args(fhir_server, "--code", "hcpcs|E0221", "--token", TOKEN))
    assert result.exit_code == 0, result.stderr
    assert f"order-sign → {live_service}/cds-services/order-sign-crd: DeviceRequest E0221 ({HCPCS}) " \
           "for Patient/pat1" in result.stderr
    # An Illinois child whose recorded diagnosis (E11.42) is not on the mandate's screen: conditional, not denied.
    assert "WARNING  Infrared heating pad system (E0221) not medically necessary unless an Illinois mandate " \
           "applies" in result.stdout
    assert ": coverage conditional · prior auth conditional" in result.stdout.splitlines()[-1]
    reads = [request for request, _ in fhir_server.log]
    assert sorted(request.path for request in reads) == ["/fhir/Condition", "/fhir/Coverage", "/fhir/Patient/pat1"]
    assert {request.headers.get("Authorization") for request in reads} == {f"Bearer {TOKEN}"}
    assert {request.headers.get("Accept") for request in reads} == {"application/fhir+json"}
    assert TOKEN not in result.stdout + result.stderr


def test_order_sign_sends_a_complete_hook_request(recording_service, fhir_server):
    server, calls = recording_service
    result = run_cds("order", server.url_for("/"), *order_args(fhir_server, "--code", "hcpcs|E0221",
                                                              "--token", TOKEN, "--user", "Practitioner/dr-1"))
    assert result.exit_code == 0, result.stderr
    [call] = calls
    assert call.path == "/cds-services/order-sign-crd"
    sent = call.get_json()
    assert sent["hook"] == "order-sign"
    assert uuid.UUID(sent["hookInstance"]).version == 4
    assert sent["fhirServer"] == fhir_server.url_for("/fhir")
    assert sent["fhirAuthorization"]["access_token"] == TOKEN
    assert sent["fhirAuthorization"]["token_type"] == "Bearer"
    assert sent["fhirAuthorization"]["patient"] == "pat1"
    assert sent["extension"] == {"davinci-crd.requestedVersion": "2.2"}
    context = sent["context"]
    assert (context["userId"], context["patientId"]) == ("Practitioner/dr-1", "pat1")
    assert "selections" not in context
    [entry] = context["draftOrders"]["entry"]
    order = entry["resource"]
    assert order["resourceType"] == "DeviceRequest"
    assert order["codeCodeableConcept"] == {"coding": [{"system": HCPCS, "code": "E0221"}]}
    assert (order["status"], order["intent"]) == ("draft", "original-order")
    assert order["subject"] == {"reference": "Patient/pat1"}
    assert order["requester"] == {"reference": "Practitioner/dr-1"}
    assert order["insurance"] == [{"reference": "Coverage/cov1"}]
    assert datetime.fromisoformat(order["authoredOn"]).tzinfo is not None
    # The service's prefetch, as its templates read it; the FHIRPath template is skipped as 2.0 clients do.
    assert sent["prefetch"] == {"patient": PATIENT, "coverage": searchset(COVERAGE),
                                "conditions": searchset(CONDITION)}
    # What the person sees: the coverage-information line for the order that was sent.
    assert f"DeviceRequest/{order['id']}: not covered · reason \"Not medically necessary (DME101.045)\" · " \
           "assertion a1b2c3" in result.stdout


def test_order_select_with_a_cpt_code_sends_a_selected_service_request(recording_service, fhir_server):
    server, calls = recording_service
    cpt = "http://www.ama-assn.org/go/cpt"
    result = run_cds("order", server.url_for("/cds-services"),
                     *order_args(fhir_server, "--code", f"{cpt}|97026", "--hook", "order-select", "--json"))
    assert result.exit_code == 0, result.stderr
    [call] = calls
    assert call.path == "/cds-services/order-select-crd"
    sent = call.get_json()
    order = sent["context"]["draftOrders"]["entry"][0]["resource"]
    assert order["resourceType"] == "ServiceRequest"
    assert order["code"] == {"coding": [{"system": cpt, "code": "97026"}]}
    assert sent["context"]["selections"] == [f"ServiceRequest/{order['id']}"]
    assert "fhirAuthorization" not in sent  # no token given: none sent, none used
    assert all("Authorization" not in request.headers for request, _ in fhir_server.log)
    assert json.loads(result.stdout)["systemActions"][0]["resource"]["id"] == order["id"]


def test_order_to_a_named_service_uses_that_service(recording_service, fhir_server):
    server, calls = recording_service
    result = run_cds("order", server.url_for("/cds-services/order-select-crd"),
                     *order_args(fhir_server, "--code", "cpt|97026", "--hook", "order-select"))
    assert result.exit_code == 0, result.stderr
    assert [call.path for call in calls] == ["/cds-services/order-select-crd"]
    result = run_cds("order", server.url_for("/cds-services/order-select-crd"),
                     *order_args(fhir_server, "--code", "cpt|97026"))  # order-sign is not what it answers
    assert result.exit_code == 1
    assert "offers no service 'order-select-crd' for order-sign" in result.stderr


def test_order_for_an_unknown_patient_prints_the_fhir_outcome_and_sends_nothing(recording_service, httpserver_ipv4):
    server, calls = recording_service
    httpserver_ipv4.expect_request("/fhir/Patient/nobody").respond_with_json(
        {"resourceType": "OperationOutcome",
         "issue": [{"severity": "error", "code": "not-found", "diagnostics": "Resource Patient/nobody is not known"}]},
        status=404)
    result = run_cds("order", server.url_for("/"), "--fhir-server", httpserver_ipv4.url_for("/fhir"),
                     "--patient", "nobody", "--code", "hcpcs|E0221")
    assert result.exit_code == 1
    assert f"{httpserver_ipv4.url_for('/fhir/Patient/nobody')} answered 404" in result.stderr
    assert "error not-found: Resource Patient/nobody is not known" in result.stderr
    assert calls == []


def test_order_error_status_from_the_service_prints_its_outcome(httpserver_ipv4, fhir_server):
    httpserver_ipv4.expect_request("/cds/cds-services").respond_with_json(
        {"services": [{"id": "crd", "hook": "order-sign", "description": "coverage"}]})
    httpserver_ipv4.expect_request("/cds/cds-services/crd", method="POST").respond_with_json(
        {"resourceType": "OperationOutcome",
         "issue": [{"severity": "error", "code": "processing", "diagnostics": "Coverage could not be read",
                    "expression": ["prefetch.coverage"]}]}, status=412)
    result = run_cds("order", httpserver_ipv4.url_for("/cds"), *order_args(fhir_server, "--code", "hcpcs|A4639"))
    assert result.exit_code == 1
    assert "answered 412 PRECONDITION FAILED" in result.stderr
    assert "error processing at prefetch.coverage: Coverage could not be read" in result.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["--code", "E0221"], "is not SYSTEM|CODE"),
    (["--code", "icd10|E0221"], "'icd10' is neither cpt, hcpcs, snomed, loinc nor a code system URI"),
    (["--code", "hcpcs|E0221", "--user", "dr-1"], "is not a reference such as Practitioner/123"),
    (["--code", "hcpcs|E0221", "--patient", "pat 1"], "is not a FHIR id"),
])
def test_order_refuses_malformed_options(live_service, fhir_server, args, says):
    result = run_cds("order", live_service, *order_args(fhir_server), *args)
    assert result.exit_code == 2
    assert says in result.stderr
    assert fhir_server.log == []


@pytest.mark.parametrize(("text", "order_type"), [
    ("hcpcs|E0221", "DeviceRequest"),
    ("https://bluebutton.cms.gov/resources/codesystem/hcpcs|a4639", "DeviceRequest"),
    ("hcpcs|G0180", "ServiceRequest"),  # a HCPCS service, not equipment or supplies
    ("cpt|97026", "ServiceRequest"),
    ("http://snomed.info/sct|E0221", "ServiceRequest"),  # only HCPCS E and A codes are devices
])
def test_hcpcs_equipment_and_supplies_are_device_requests(text, order_type):
    assert Coding.parse(text).order_type == order_type


@pytest.mark.parametrize(("hook", "code", "extra", "judged"), [
    ("order-dispatch", "hcpcs|E0221", ["--performer", "Organization/dme-supplier-1"], "DeviceRequest"),
    ("appointment-book", "cpt|97026", [], "Appointment"),
    ("encounter-start", "cpt|97026", [], "ServiceRequest"),
    ("encounter-discharge", "hcpcs|E0221", [], "DeviceRequest"),
])
def test_order_dispatches_and_books_against_the_real_app(live_service, fhir_server, hook, code, extra, judged):
    result = run_cds("order", live_service, *order_args(fhir_server, "--code", code, "--hook", hook, "--json", *extra))
    assert result.exit_code == 0, result.stderr
    assert f"{hook} → {live_service}/cds-services/{hook}-crd: {judged} " in result.stderr
    answer = json.loads(result.stdout)
    [card] = answer["cards"]
    assert card["summary"].endswith("policy DME101.045")  # the member's plan facts decide the verdict
    [action] = answer["systemActions"]
    assert action["resource"]["resourceType"] == judged
    assert card["extension"]["davinci-crd.associated-resource"] == [
        {"reference": f"{judged}/{action['resource']['id']}"}]


@pytest.mark.parametrize("args", [
    ["--hook", "order-dispatch"],
    ["--hook", "order-dispatch", "--performer", "the supplier"],
    ["--performer", "Organization/dme-supplier-1"],
])
def test_order_takes_a_performer_for_order_dispatch_only(live_service, fhir_server, args):
    result = run_cds("order", live_service, *order_args(fhir_server, "--code", "hcpcs|E0221", *args))
    assert result.exit_code == 2
    assert "--performer" in result.stderr
    assert fhir_server.log == []


def test_order_offers_every_hook_the_service_answers():
    """`cds order --hook` names its choices itself (so `--help` loads no hook module): they must stay the hooks."""
    from cds.tools.cli import ORDER_HOOKS
    from hooks import HOOKS

    assert sorted(ORDER_HOOKS) == sorted(hook.name for hook in HOOKS)
