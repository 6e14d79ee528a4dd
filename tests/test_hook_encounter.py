"""encounter-start and encounter-discharge over HTTP: their discovery entries (every option off by default); the
encounter's pending orders judged from the prefetch; nothing answered unless the configuration asks; coverage
information that never asks for documentation (CRD hook-19) and is valid under CRD; encounterId required."""

import copy

import pytest

from cds.config import EXAMPLE_PLAN_DIRECTORY
from cds.render.coverage import COVERAGE_INFORMATION
from tests.crd_profile import problems_2_2, problems_dual
from tests.helpers import load, outcome

START = load("encounter-start-il-child-mandate.json")  # an Illinois child: prior authorization under the mandate
DISCHARGE = load("encounter-discharge-e0221-home.json")  # a Texas adult: not covered
HOOKS = {"encounter-start": START, "encounter-discharge": DISCHARGE}


@pytest.fixture
def client(make_app):
    """Signed calls to the service with the plan directory the examples are answered with."""
    return make_app(plan_directory=EXAMPLE_PLAN_DIRECTORY).test_client()


def call(client, body: dict, configuration: dict | None = ...) -> dict:
    body = copy.deepcopy(body)
    if configuration is None:
        del body["extension"]
    elif configuration is not ...:
        body["extension"]["davinci-crd.configuration"] = configuration
    response = client.post(f"/cds-services/{body['hook']}-crd", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def assertions(answer: dict) -> list[dict]:
    return [{p["url"]: p for p in e["extension"]} for a in answer.get("systemActions", [])
            for e in a["resource"]["extension"] if e["url"] == COVERAGE_INFORMATION]


@pytest.mark.parametrize("hook", HOOKS)
def test_discovery_declares_the_hook_with_every_option_off_by_default(client, hook):
    [entry] = [s for s in client.get("/cds-services").get_json()["services"] if s["hook"] == hook]
    assert entry["id"] == f"{hook}-crd" and entry["title"] and entry["description"]
    assert entry["prefetch"]["deviceRequests"] == \
        "DeviceRequest?patient={{context.patientId}}&encounter={{context.encounterId}}&status=draft,active"
    assert entry["prefetch"]["serviceRequests"].startswith("ServiceRequest?patient={{context.patientId}}&encounter=")
    options = {o["code"]: o["default"] for o in entry["extension"]["davinci-crd.configuration-options"]}
    assert options == {"coverage-info": False, "off-guideline": False, "max-cards": 10}


@pytest.mark.parametrize("hook", HOOKS)
def test_without_configuration_nothing_is_answered(client, hook):
    assert call(client, HOOKS[hook], None) == {"cards": []}
    assert call(client, HOOKS[hook], {"max-cards": 5}) == {"cards": []}


def test_coverage_information_never_asks_for_documentation(client):
    answer = call(client, START)
    [card] = answer["cards"]
    assert card["indicator"] == "info" and card["source"]["topic"]["code"] == "coverage-info"
    [parts] = assertions(answer)
    assert (parts["covered"]["valueCode"], parts["pa-needed"]["valueCode"]) == ("covered", "auth-needed")
    assert "doc-needed" not in parts and "doc-purpose" not in parts  # CRD hook-19
    extension = answer["systemActions"][0]["resource"]["extension"][-1]
    assert problems_dual(extension) == [] and problems_2_2(extension) == []


def test_each_kind_of_answer_comes_only_when_switched_on(client):
    only_actions = call(client, DISCHARGE, {"coverage-info": True})
    assert only_actions["cards"] == [] and len(assertions(only_actions)) == 1  # the denial card is off-guideline
    only_cards = call(client, DISCHARGE, {"off-guideline": True})
    assert len(only_cards["cards"]) == 1 and "systemActions" not in only_cards
    both = call(client, DISCHARGE)
    assert both["cards"][0]["summary"].startswith("Infrared heating pad system (E0221) not covered")
    assert assertions(both)[0]["covered"]["valueCode"] == "not-covered"


def test_only_the_encounters_pending_orders_are_judged(client):
    body = copy.deepcopy(DISCHARGE)
    order = body["prefetch"]["deviceRequests"]["entry"][0]["resource"]
    others = [{**order, "id": "another-encounter", "encounter": {"reference": "Encounter/enc-other"}},
              {**order, "id": "completed", "status": "completed"},
              {**order, "id": "no-encounter", "encounter": None}]
    body["prefetch"]["deviceRequests"]["entry"] = [{"resource": r} for r in others]
    assert call(client, body) == {"cards": []}
    body["prefetch"]["serviceRequests"] = {"resourceType": "Bundle", "entry": [
        {"resource": {**order, "id": "again"}}, {"resource": {**order, "id": "again"}}]}  # under any key, once
    answer = call(client, body)
    assert [a["resource"]["id"] for a in answer["systemActions"]] == ["again"]


@pytest.mark.parametrize("hook", HOOKS)
def test_encounter_id_is_required(client, hook):
    body = copy.deepcopy(HOOKS[hook])
    del body["context"]["encounterId"]
    response = client.post(f"/cds-services/{hook}-crd", json=body)
    assert response.status_code == 400 and outcome(response)["expression"] == ["context.encounterId"]


@pytest.fixture
def demo(make_app):
    """Demo mode: the encounter's orders may be searched on a FHIR server on loopback."""
    return make_app(demo=True, auth_disabled=True, fetch_budget_seconds=0.5).test_client()


def without_orders(body: dict, fhir_server: str) -> dict:
    body = copy.deepcopy(body)
    for key in ("deviceRequests", "serviceRequests"):
        del body["prefetch"][key]
    body["fhirServer"] = fhir_server
    return body


def test_orders_not_prefetched_are_searched_on_the_fhir_server(demo, fhir_server):
    order = DISCHARGE["prefetch"]["deviceRequests"]["entry"][0]["resource"]
    query = {"patient": "pat-tx-4821", "encounter": "enc-4821", "status": "draft,active"}
    done = {**order, "id": "done", "status": "completed"}  # a server may answer more than asked: not judged
    fhir_server.expect_request("/fhir/DeviceRequest", query_string=query).respond_with_json(
        {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": order}, {"resource": done}]})
    fhir_server.expect_request("/fhir/ServiceRequest", query_string=query).respond_with_json(
        {"resourceType": "Bundle", "type": "searchset"})
    answer = call(demo, without_orders(DISCHARGE, fhir_server.url_for("/fhir")))
    assert [a["resource"]["id"] for a in answer["systemActions"]] == [order["id"]]
    assert sorted(r.path for r, _ in fhir_server.log) == ["/fhir/DeviceRequest", "/fhir/ServiceRequest"]


def test_a_search_the_fhir_server_cannot_answer_is_a_412(demo, fhir_server):
    fhir_server.expect_request("/fhir/DeviceRequest").respond_with_data("", status=500)
    fhir_server.expect_request("/fhir/ServiceRequest").respond_with_json({"resourceType": "Bundle"})
    body = without_orders(DISCHARGE, fhir_server.url_for("/fhir"))
    response = demo.post("/cds-services/encounter-discharge-crd", json=body)
    assert response.status_code == 412
    issue = outcome(response)
    assert issue["expression"] == ["prefetch.deviceRequests"] and "HTTP 500" in issue["diagnostics"]


def test_without_prefetch_or_fhir_server_there_is_nothing_to_judge(client):
    body = copy.deepcopy(DISCHARGE)
    del body["fhirServer"]
    for key in ("deviceRequests", "serviceRequests"):
        del body["prefetch"][key]
    assert call(client, body) == {"cards": []}
