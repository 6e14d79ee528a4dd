"""Member data through the app's HTTP interface: fetched from a real FHIR server on loopback when not prefetched,
the same facts either way, strict CRD coverage rules, and no FHIR server fault ever a 500 or a hang."""

import copy
import socket
import threading
import time
from datetime import date

import pytest
from werkzeug import Response

from cds.config import EXAMPLE_PLAN_DIRECTORY, Settings
from cds.pipeline import member_facts
from cds.protocol import parse_hook_request
from cds.web.app import create_app
from tests import tokens
from tests.helpers import load, outcome, silent_https_server

SERVICE = "/cds-services/order-sign-crd"
BUDGET = 0.5
TOKEN = "access-token-for-the-ehr"
MEMBER = load("us-core-member-il-child.json")
PATIENT, COVERAGE, *CONDITIONS = (entry["resource"] for entry in MEMBER["entry"])
SERVED = "urn:oid:2.16.840.1.113883.6.300|70670"


def searchset(*resources):
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


FULL_PREFETCH = {"patient": PATIENT, "coverage": searchset(COVERAGE), "conditions": searchset(*CONDITIONS)}


def make_app(**settings):
    defaults = {"demo": True, "auth_disabled": True, "fetch_budget_seconds": BUDGET,
                "plan_directory": str(EXAMPLE_PLAN_DIRECTORY)}
    return create_app(Settings(**{**defaults, **settings}).resolved())


@pytest.fixture(scope="module")
def app():
    return make_app()


@pytest.fixture(scope="module")
def strict_app():
    return make_app(strict_crd=True, served_payers=(SERVED,))


def body(fhir_server=None, prefetch=None):
    request = copy.deepcopy(load("e0221-home-device.json"))  # an order a policy covers: member data is needed
    request["context"]["patientId"] = PATIENT["id"]
    request.pop("fhirServer")
    request.pop("prefetch")
    if prefetch is not None:
        request["prefetch"] = prefetch
    if fhir_server:
        request["fhirServer"] = fhir_server
        request["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                        "scope": "user/*.read", "subject": "cds-service"}
    return request


def serve_member(fhir_server):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    fhir_server.expect_request(f"/fhir/Patient/{PATIENT['id']}", headers=auth).respond_with_json(PATIENT)
    fhir_server.expect_request("/fhir/Coverage", headers=auth).respond_with_json(searchset(COVERAGE))
    fhir_server.expect_request("/fhir/Condition", headers=auth).respond_with_json(searchset(*CONDITIONS))


def facts_for(app, request_body):
    request = parse_hook_request(request_body, requires_selections=False, max_orders=200)
    return member_facts(app.extensions["cds"], request, None, date.today())


def test_a_call_without_prefetch_fetches_member_data(app, fhir_server):
    serve_member(fhir_server)
    response = app.test_client().post(SERVICE, json=body(fhir_server.url_for("/fhir")))
    assert response.status_code == 200, response.get_json()
    fhir_server.check_assertions()
    assert sorted(r.path for r, _ in fhir_server.log) == ["/fhir/Condition", "/fhir/Coverage",
                                                          f"/fhir/Patient/{PATIENT['id']}"]


def test_fetched_member_data_gives_the_same_facts_as_full_prefetch(app, fhir_server):
    serve_member(fhir_server)
    fetched = facts_for(app, body(fhir_server.url_for("/fhir")))
    prefetched = facts_for(app, body(prefetch=FULL_PREFETCH))
    assert fetched == prefetched
    assert prefetched.coverage.situs_state == "IL" and prefetched.coverage.funding == "fully-insured"
    assert prefetched.unavailable == ()


def test_partial_prefetch_is_completed_to_the_same_facts(app, fhir_server):
    serve_member(fhir_server)
    partial = {"patient": PATIENT, "coverage": {"resourceType": "OperationOutcome", "issue": []}}
    assert facts_for(app, body(fhir_server.url_for("/fhir"), partial)) == facts_for(app, body(prefetch=FULL_PREFETCH))
    assert sorted(r.path for r, _ in fhir_server.log) == ["/fhir/Condition", "/fhir/Coverage"]


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()


def hang(release):
    def handler(request):
        release.wait(5)
        return Response(b"{}")
    return handler


FAULTS = {
    "401": lambda release: lambda r: Response(b"", status=401),
    "500": lambda release: lambda r: Response(b"<html>Internal Server Error</html>", status=500),
    "garbage": lambda release: lambda r: Response(b"\x00\xffnot json", content_type="application/fhir+json"),
    "oversized": lambda release: lambda r: Response(b'{"resourceType":"Bundle","x":"' + b"x" * (5 * 2**20) + b'"}'),
    "hang": hang,
    "redirect-off-host": lambda release: lambda r: Response(b"", status=302,
                                                              headers={"Location": "http://localhost:9/fhir"}),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_fhir_server_faults_never_give_500_or_hang(app, fhir_server, release, fault):
    fhir_server.expect_request("/fhir/Coverage").respond_with_handler(FAULTS[fault](release))
    fhir_server.expect_request("/fhir/Condition").respond_with_handler(FAULTS[fault](release))
    started = time.monotonic()
    response = app.test_client().post(SERVICE, json=body(fhir_server.url_for("/fhir"), {"patient": PATIENT}))
    assert response.status_code == 200, response.get_json()
    assert time.monotonic() - started < BUDGET + 0.5
    facts = facts_for(app, body(fhir_server.url_for("/fhir"), {"patient": PATIENT}))
    assert facts.unavailable_keys == {"coverage", "conditions"}
    assert facts.birth_date is not None


def test_a_fhir_server_off_the_allow_list_is_never_contacted(request):
    signed_app = request.getfixturevalue("make_app")  # production settings: an authenticated client
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        app = signed_app(fhir_servers=("https://ehr.example.org/fhir",), fetch_budget_seconds=BUDGET)
        base = f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"
        assert app.test_client().post(SERVICE, json=body(base)).status_code == 200
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_no_member_data_is_fetched_for_orders_no_policy_covers(app):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        request = body(f"http://127.0.0.1:{listener.getsockname()[1]}/fhir")
        order = request["context"]["draftOrders"]["entry"][0]["resource"]
        order["codeCodeableConcept"] = {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}
        answer = app.test_client().post(SERVICE, json=request).get_json()
        assert answer["cards"] == []
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_member_data_is_fetched_from_a_fhir_server_only_the_calling_client_names(request, tmp_path):
    """Outside demo mode, with no FHIR server configured, the service asks the one the client's registry entry
    names for the member data the call lacks."""
    signed_app = request.getfixturevalue("make_app")  # production settings: an authenticated client
    with silent_https_server() as (base, first_bytes):
        app = signed_app(clients_file=str(tokens.write_registry(tmp_path, fhir_servers=(base,))),
                         fetch_budget_seconds=BUDGET)
        assert app.config["CDS_SETTINGS"].fhir_servers == ()
        assert app.test_client().post(SERVICE, json=body(base)).status_code == 200
        assert first_bytes()[:1] == b"\x16"  # a TLS handshake: it connected to fetch


# ------------------------------------------------------------------------------------------ strict mode


def test_strict_mode_accepts_one_coverage_of_a_served_payer(strict_app):
    assert strict_app.test_client().post(SERVICE, json=body(prefetch=FULL_PREFETCH)).status_code == 200


@pytest.mark.parametrize(("coverage", "message"), [
    (None, "No active Coverage"),
    (searchset(), "No active Coverage"),
    (searchset(COVERAGE, {**COVERAGE, "id": "cov-2"}), "2 active Coverages"),
    (searchset({**COVERAGE, "payor": [{"display": "Another Plan"}]}), "not one this service serves"),
])
def test_strict_mode_answers_400_for_unusable_coverage(strict_app, coverage, message):
    response = strict_app.test_client().post(SERVICE, json=body(prefetch={**FULL_PREFETCH, "coverage": coverage}))
    assert response.status_code == 400
    issue = outcome(response)
    assert message in issue["diagnostics"] and issue["expression"] == ["prefetch.coverage"]


def test_strict_mode_answers_412_when_coverage_cannot_be_had(strict_app, fhir_server):
    fhir_server.expect_request("/fhir/Coverage").respond_with_data("", status=403)
    prefetch = {"patient": PATIENT, "conditions": None}
    for request in (body(prefetch=prefetch), body(fhir_server.url_for("/fhir"), prefetch)):
        response = strict_app.test_client().post(SERVICE, json=request)
        assert response.status_code == 412
        issue = outcome(response)
        assert issue["expression"] == ["prefetch.coverage"] and "coverage" in issue["diagnostics"]
        assert TOKEN not in issue["diagnostics"]


def test_lenient_mode_answers_without_coverage(app):
    assert app.test_client().post(SERVICE, json=body(prefetch={"patient": PATIENT})).status_code == 200
