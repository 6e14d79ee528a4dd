"""order-dispatch over HTTP: its discovery entry; the dispatched E0221 order judged with its card and CRD coverage
information whether it comes in the prefetch, in a fulfillment Task or from a real FHIR server on loopback; orders
that cannot be had answered 412, never a 5xx; the performer in the audit record; the configuration obeyed."""

import copy
import socket

import pytest

from cds.config import EXAMPLE_PLAN_DIRECTORY, Settings
from cds.render.coverage import COVERAGE_INFORMATION
from cds.web.app import create_app
from tests import tokens
from tests.crd_profile import has_empty_element, problems_2_2, problems_dual
from tests.helpers import load, outcome, silent_https_server

SERVICE = "/cds-services/order-dispatch-crd"
EXAMPLE = load("order-dispatch-e0221-supplier.json")
ORDER = EXAMPLE["prefetch"]["deviceRequests"]["entry"][0]["resource"]
REFERENCE = "DeviceRequest/dr-e0221-4821"
PERFORMER = "Organization/org-dme-lonestar-55"
TOKEN = "access-token-for-dispatch"
BUDGET = 0.5


def searchset(*resources):
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def request(fhir_server: str | None = None, prefetched=...) -> dict:
    """The example without its Task; `prefetched`: the deviceRequests prefetch instead of the example's (None: none)."""
    body = copy.deepcopy(EXAMPLE)
    del body["context"]["fulfillmentTasks"]
    body.pop("fhirServer")
    if prefetched is not ...:
        body["prefetch"].pop("deviceRequests")
        if prefetched is not None:
            body["prefetch"]["deviceRequests"] = prefetched
    if fhir_server:
        body["fhirServer"] = fhir_server
        body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "user/DeviceRequest.read", "subject": "cds-service"}
    return body


@pytest.fixture(scope="module")
def demo():
    """The service as a developer runs it (demo mode: FHIR servers on loopback may be fetched from)."""
    settings = Settings(demo=True, auth_disabled=True, fetch_budget_seconds=BUDGET,
                        plan_directory=EXAMPLE_PLAN_DIRECTORY)
    return create_app(settings.resolved()).test_client()


def coverage_information(answer: dict) -> dict:
    [action] = answer["systemActions"]
    assert action["type"] == "update"
    assert f"{action['resource']['resourceType']}/{action['resource']['id']}" == REFERENCE
    [extension] = [e for e in action["resource"]["extension"] if e["url"] == COVERAGE_INFORMATION]
    return extension


def judged(answer: dict) -> None:
    """The answer every variant of the E0221 dispatch gets: the denial card and valid coverage information."""
    [card] = answer["cards"]
    assert card["summary"].startswith("Infrared heating pad system (E0221) not covered")
    assert card["extension"]["davinci-crd.associated-resource"] == [{"reference": REFERENCE}]
    extension = coverage_information(answer)
    parts = {p["url"]: p for p in extension["extension"]}
    assert parts["covered"]["valueCode"] == "not-covered"
    assert parts["coverage"]["valueReference"] == {"reference": "Coverage/cov-bcbstx-4821"}
    assert problems_dual(extension) == [] and problems_2_2(extension) == []
    assert not has_empty_element(answer)


def test_discovery_lists_order_dispatch_with_its_prefetch_and_options(client):
    services = client.get("/cds-services").get_json()["services"]
    [entry] = [s for s in services if s["id"] == "order-dispatch-crd"]
    assert entry["hook"] == "order-dispatch" and entry["title"] and entry["description"]
    assert entry["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert entry["prefetch"]["coverage"].startswith("Coverage?patient={{context.patientId}}")
    assert entry["prefetch"]["deviceRequests"] == \
        "DeviceRequest?_id={{context.dispatchedOrders.resolve().ofType(DeviceRequest).id}}"
    assert entry["prefetch"]["serviceRequests"].startswith("ServiceRequest?_id={{context.dispatchedOrders")
    assert entry["extension"]["davinci-crd.version"]
    codes = {option["code"] for option in entry["extension"]["davinci-crd.configuration-options"]}
    assert {"coverage-info", "max-cards"} <= codes


def test_dispatched_order_from_prefetch_gets_its_card_and_coverage_information(client):
    response = client.post(SERVICE, json=request())
    assert response.status_code == 200, response.get_json()
    judged(response.get_json())


def test_the_order_may_come_in_its_fulfillment_task(demo):
    body = request(prefetched=None)
    task = copy.deepcopy(EXAMPLE["context"]["fulfillmentTasks"][0])
    task["contained"] = [ORDER]
    body["context"]["fulfillmentTasks"] = [task]
    response = demo.post(SERVICE, json=body)
    assert response.status_code == 200, response.get_json()
    judged(response.get_json())


def test_without_prefetch_the_order_is_read_from_the_fhir_server_with_the_token(demo, fhir_server):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    fhir_server.expect_request(f"/fhir/{REFERENCE}", headers=auth).respond_with_json(ORDER)
    response = demo.post(SERVICE, json=request(fhir_server.url_for("/fhir"), prefetched=None))
    assert response.status_code == 200, response.get_json()
    judged(response.get_json())
    assert [r.path for r, _ in fhir_server.log] == [f"/fhir/{REFERENCE}"]  # member data came with the prefetch


def test_an_order_named_twice_is_read_and_judged_once(demo, fhir_server):
    fhir_server.expect_request(f"/fhir/{REFERENCE}").respond_with_json(ORDER)
    body = request(fhir_server.url_for("/fhir"), prefetched=None)
    body["context"]["dispatchedOrders"] = [REFERENCE, REFERENCE]
    response = demo.post(SERVICE, json=body)
    judged(response.get_json())
    assert len(fhir_server.log) == 1


def test_older_context_spellings_are_accepted(demo):
    body = request()
    context = body["context"]
    context["dispatched-orders"] = context.pop("dispatchedOrders")
    context["fulfillment-tasks"] = copy.deepcopy(EXAMPLE["context"]["fulfillmentTasks"])
    response = demo.post(SERVICE, json=body)
    assert response.status_code == 200, response.get_json()
    judged(response.get_json())


@pytest.mark.parametrize(("serve", "why"), [
    (lambda r: r.respond_with_data("", status=404), "answered HTTP 404"),
    (lambda r: r.respond_with_data("", status=401), "refused the access token"),
    (lambda r: r.respond_with_json({**ORDER, "id": "another-order"}), "another resource than the one asked for"),
    (lambda r: r.respond_with_json({**ORDER, "subject": {"reference": "Patient/someone-else"}}),
     "for another patient"),
    (lambda r: r.respond_with_data(b"\x00not json", content_type="application/fhir+json"), "other than JSON"),
])
def test_an_order_the_fhir_server_cannot_give_is_answered_412_naming_it(demo, fhir_server, serve, why):
    serve(fhir_server.expect_request(f"/fhir/{REFERENCE}"))
    response = demo.post(SERVICE, json=request(fhir_server.url_for("/fhir"), prefetched=None))
    assert response.status_code == 412
    issue = outcome(response)
    assert issue["code"] == "not-found" and issue["expression"] == ["context.dispatchedOrders[0]"]
    assert REFERENCE in issue["diagnostics"] and why in issue["diagnostics"]
    assert TOKEN not in issue["diagnostics"]


def test_an_order_neither_sent_nor_fetchable_is_answered_412(demo):
    response = demo.post(SERVICE, json=request(prefetched=searchset()))
    assert response.status_code == 412
    assert "names no fhirServer" in outcome(response)["diagnostics"]


def test_a_fhir_server_off_the_allow_list_is_never_asked_for_the_order(make_app):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        app = make_app(fhir_servers=("https://ehr.example.org/fhir",), fetch_budget_seconds=BUDGET)
        base = f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"
        response = app.test_client().post(SERVICE, json=request(base, prefetched=None))
        assert response.status_code == 412 and "refused" in outcome(response)["diagnostics"]
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_an_order_is_fetched_from_a_fhir_server_only_the_calling_client_names(make_app, tmp_path):
    """Outside demo mode, with no FHIR server configured, the service asks the one the client's registry entry
    names for the order the call names only by reference."""
    with silent_https_server() as (base, first_bytes):
        app = make_app(clients_file=str(tokens.write_registry(tmp_path, fhir_servers=(base,))),
                       fetch_budget_seconds=BUDGET)
        assert app.config["CDS_SETTINGS"].fhir_servers == ()
        response = app.test_client().post(SERVICE, json=request(base, prefetched=None))
        assert response.status_code == 412 and REFERENCE in outcome(response)["diagnostics"]
        assert first_bytes()[:1] == b"\x16"  # a TLS handshake: it connected to fetch


@pytest.mark.parametrize(("change", "path"), [
    (lambda c: c.pop("performer"), "context.performer"),
    (lambda c: c.update(performer="the supplier"), "context.performer"),
    (lambda c: c.pop("dispatchedOrders"), "context.dispatchedOrders"),
    (lambda c: c.update(dispatchedOrders=[]), "context.dispatchedOrders"),
    (lambda c: c.update(dispatchedOrders=["DeviceRequest/dr-1", {"reference": REFERENCE}]),
     "context.dispatchedOrders[1]"),
    (lambda c: c.update(dispatchedOrders=[f"DeviceRequest/dr-{i}" for i in range(51)]), "context.dispatchedOrders"),
])
def test_a_malformed_context_is_answered_400_naming_the_field(client, change, path):
    body = request()
    change(body["context"])
    response = client.post(SERVICE, json=body)
    assert response.status_code == 400
    assert outcome(response)["expression"] == [path]


def test_configuration_options_are_obeyed(client):
    body = request()
    body["extension"] = {"davinci-crd.configuration": {"coverage-info": False}}
    answer = client.post(SERVICE, json=body).get_json()
    assert len(answer["cards"]) == 1 and "systemActions" not in answer
    body["extension"] = {"davinci-crd.configuration": {"max-cards": 0}}
    answer = client.post(SERVICE, json=body).get_json()
    assert answer["cards"] == [] and len(answer["systemActions"]) == 1


def test_the_audit_record_names_the_hook_the_order_and_the_performer(make_app, database_url):
    app = make_app(database_url=database_url)
    store = app.extensions["cds_store"]
    answer = app.test_client().post(SERVICE, json=request()).get_json()
    parts = {p["url"]: p for p in coverage_information(answer)["extension"]}
    store.flush()
    report = store.decision_report(parts["coverage-assertion-id"]["valueString"])
    assert report["hook"] == "order-dispatch" and report["service_id"] == "order-dispatch-crd"
    assert report["order_reference"] == REFERENCE and report["performer"] == PERFORMER
    assert any(code.endswith("|E0221") for code in report["order_codes"])


@pytest.mark.parametrize("prefetched", [..., searchset()], ids=["answered", "412"])
def test_the_call_is_recorded_with_the_dispatched_order_and_its_performer(make_app, tmp_path, prefetched):
    from sqlalchemy import select

    from cds.record.schema import hook_call

    app = make_app(database_url=f"sqlite:///{tmp_path}/store.sqlite3")
    status = app.test_client().post(SERVICE, json=request(prefetched=prefetched)).status_code
    assert status == (200 if prefetched is ... else 412)
    store = app.extensions["cds_store"]
    store.flush()
    with store.engine.connect() as connection:
        [orders] = connection.execute(select(hook_call.c.orders)).scalars().all()
    assert [(o["reference"], o.get("performer")) for o in orders] == [(REFERENCE, PERFORMER)]
