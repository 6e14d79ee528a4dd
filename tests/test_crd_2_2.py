"""CRD 2.2.1 behaviours, over HTTP: versions declared and requested, coverage-information on every covered order of
a primary hook, and the assertions made when no Coverage of the member can be used (resp-43/44/45), from 2.2 on."""

from __future__ import annotations

import copy

import pytest

from cds.member.prefetch import scope_reads
from tests.crd_profile import problems_2_0_1, problems_2_2
from tests.helpers import free_port, load, outcome

COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
REASONS = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
ORDER_COVERAGE = "Coverage/cov-bcbstx-1"  # what the generator's orders name in `insurance`


def body(version: str | None = "2.2", name: str = "order-sign-devicerequest-e0221.json") -> dict:
    request = copy.deepcopy(load(f"crd-request-generator/{name}"))
    if version is not None:
        request["extension"]["davinci-crd.requestedVersion"] = version
    return request


def without_coverage(request: dict) -> dict:
    request["prefetch"].pop("coverageBundle")
    return request


def call(client, request: dict):
    return client.post(f"/cds-services/{request['hook']}-crd", json=request)


def answer(client, request: dict) -> dict:
    response = call(client, request)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def assertions(answered: dict) -> list[dict]:
    return [e for action in answered.get("systemActions", []) for e in action["resource"].get("extension", [])
            if e["url"] == COVERAGE_INFORMATION]


def parts(extension: dict) -> dict:
    return {part["url"]: next(v for k, v in part.items() if k.startswith("value")) for part in extension["extension"]}


def empty_search() -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": 0}


def test_discovery_declares_the_crd_versions_implemented_per_hook(client):
    for service in client.get("/cds-services").get_json()["services"]:
        assert service["extension"]["davinci-crd.version"] == ["2.0", "2.1", "2.2"]  # two-part, as dev-1/2 ask
        assert service["version"] == "STU2"
    for version in ("2.0", "2.1", "2.2", None):
        assert call(client, body(version)).status_code == 200


TOPIC_SYSTEMS = {"2.0": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
                 "2.1": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
                 "2.2": "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"}


def test_each_declared_version_selects_its_own_behaviour(make_app):
    """Per version declared: the card type system of that version, and the no-coverage assertions (resp-43/44/45)
    only from 2.2 on, whose codes 2.0.1 and 2.1 lack."""
    client = make_app(demo=True, fetch_budget_seconds=0.5).test_client()
    [service] = [s for s in client.get("/cds-services").get_json()["services"] if s["id"] == "order-sign-crd"]
    for version in service["extension"]["davinci-crd.version"]:
        answered = answer(client, body(version))
        assert {card["source"]["topic"]["system"] for card in answered["cards"]} == {TOPIC_SYSTEMS[version]}
        assert len(assertions(answered)) == 1
        request = without_coverage(body(version))
        request["fhirServer"] = f"http://127.0.0.1:{free_port()}/fhir"  # down: no Coverage can be had
        gap = assertions(answer(client, request))
        assert [parts(e)["covered"] for e in gap] == (["indeterminate"] if version == "2.2" else [])
    unsent = answer(client, body(None))  # no requestedVersion: what every version accepts (2.0's behaviour)
    assert unsent["cards"][0]["source"]["topic"]["system"] == TOPIC_SYSTEMS["2.0"]


@pytest.mark.parametrize("version", ["3.0", "2.2.1", "2", 2.3, {"v": "2.2"}])
def test_a_requested_version_not_declared_is_422(client, version):
    response = call(client, body(None) | {"extension": {"davinci-crd.requestedVersion": version}})
    assert response.status_code == 422
    issue = outcome(response)
    assert issue["code"] == "not-supported"
    assert issue["expression"] == ["extension.davinci-crd.requestedVersion"]
    assert "implements (2.0, 2.1, 2.2)" in issue["diagnostics"]


def test_a_technical_failure_is_indeterminate_technical_in_2_2(make_app):
    client = make_app(demo=True, fetch_budget_seconds=0.5).test_client()
    request = without_coverage(body("2.2"))
    request["fhirServer"] = f"http://127.0.0.1:{free_port()}/fhir"  # the EHR's FHIR server is down
    answered = answer(client, request)
    [extension] = assertions(answered)
    got = parts(extension)
    assert got["coverage"] == {"reference": ORDER_COVERAGE}
    assert got["covered"] == "indeterminate"
    assert got["reason"]["coding"] == [{"system": REASONS, "code": "technical"}]
    assert "could not be fetched from the EHR's FHIR server" in got["reason"]["text"]
    assert problems_2_2(extension) == []
    assert ": coverage could not be determined, as the member's coverage could not be obtained under" in \
        answered["systemActions"][0]["description"]


@pytest.mark.parametrize("version", [None, "2.0", "2.1"])
def test_before_2_2_no_coverage_means_no_assertion_and_the_card_says_why(make_app, version):
    client = make_app(demo=True, fetch_budget_seconds=0.5).test_client()
    request = without_coverage(body(version))
    request["fhirServer"] = f"http://127.0.0.1:{free_port()}/fhir"
    answered = answer(client, request)
    assert "systemActions" not in answered  # 2.0.1 and 2.1 have no indeterminate and no such reasons
    assert "could not be fetched from the EHR's FHIR server" in answered["cards"][0]["detail"]


def test_a_patient_the_ehr_does_not_know_is_not_covered_no_member_found(make_app, fhir_server):
    request = body("2.2")
    request["prefetch"] = {}
    request["fhirServer"] = fhir_server.url_for("/fhir")
    fhir_server.expect_request(f"/fhir/Patient/{request['context']['patientId']}").respond_with_json(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}, status=404)
    fhir_server.expect_request("/fhir/Coverage").respond_with_json(empty_search())
    fhir_server.expect_request("/fhir/Condition").respond_with_json(empty_search())
    answered = answer(make_app(demo=True).test_client(), request)
    [extension] = assertions(answered)
    got = parts(extension)
    assert (got["covered"], got["reason"]["coding"][0]["code"]) == ("not-covered", "no-member-found")
    assert problems_2_2(extension) == []
    assert ": not covered, as the patient could not be found under" in answered["systemActions"][0]["description"]


def test_no_coverage_is_not_covered_coverage_not_found(make_app, fhir_server):
    request = without_coverage(body("2.2"))
    request["fhirServer"] = fhir_server.url_for("/fhir")
    fhir_server.expect_request("/fhir/Coverage").respond_with_json(empty_search())
    fhir_server.expect_request("/fhir/Condition").respond_with_json(empty_search())
    answered = answer(make_app(demo=True).test_client(), request)
    [extension] = assertions(answered)
    got = parts(extension)
    assert (got["covered"], got["reason"]["coding"][0]["code"]) == ("not-covered", "coverage-not-found")
    assert got["reason"]["text"] == "No active coverage was found for this patient."
    assert "pa-needed" not in got and problems_2_2(extension) == []
    assert ": not covered, as no coverage of the patient was found under" in \
        answered["systemActions"][0]["description"]


def test_no_active_coverage_is_not_covered_no_active_coverage(client):
    request = body("2.2")
    request["prefetch"]["coverageBundle"]["entry"][0]["resource"]["status"] = "cancelled"
    answered = answer(client, request)
    [extension] = assertions(answered)
    got = parts(extension)
    assert (got["covered"], got["reason"]["coding"][0]["code"]) == ("not-covered", "no-active-coverage")
    assert problems_2_2(extension) == []
    assert ": not covered, as the patient has no active coverage under" in answered["systemActions"][0]["description"]
    assert "Coverage/cov-bcbstx-1 is not active (status cancelled); not used." in answered["cards"][0]["detail"]


def two_orders(request: dict) -> dict:
    other = copy.deepcopy(load("crd-request-generator/order-sign-servicerequest-97026.json"))
    request["context"]["draftOrders"]["entry"] += other["context"]["draftOrders"]["entry"]
    return request


@pytest.mark.parametrize("coverage", ["sent", "cannot be fetched"])
def test_every_covered_order_on_a_primary_hook_gets_coverage_information(make_app, coverage):
    client = make_app(demo=True, fetch_budget_seconds=0.5).test_client()
    request = two_orders(body("2.2"))
    request["fhirServer"] = f"http://127.0.0.1:{free_port()}/fhir"
    if coverage != "sent":
        without_coverage(request)
    answered = answer(client, request)
    orders = [entry["resource"] for entry in request["context"]["draftOrders"]["entry"]]
    updated = [f"{a['resource']['resourceType']}/{a['resource']['id']}" for a in answered["systemActions"]]
    assert updated == [f"{o['resourceType']}/{o['id']}" for o in orders]
    for extension in assertions(answered):
        assert parts(extension)["coverage"] == {"reference": ORDER_COVERAGE}
        assert problems_2_2(extension) == []


def test_assertions_for_different_coverages_have_distinct_ids(client):
    request = body("2.2")
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    earlier = {"url": COVERAGE_INFORMATION, "extension": [
        {"url": "coverage", "valueReference": {"reference": "Coverage/secondary-1"}},
        {"url": "covered", "valueCode": "covered"}, {"url": "pa-needed", "valueCode": "no-auth"},
        {"url": "date", "valueDate": "2026-11-01"}, {"url": "coverage-assertion-id", "valueString": "a-1"}]}
    order["extension"] = [earlier]
    found = assertions(answer(client, request))
    assert [parts(e)["coverage"]["reference"] for e in found] == ["Coverage/secondary-1", ORDER_COVERAGE]
    ids = [parts(e)["coverage-assertion-id"] for e in found]
    assert len(set(ids)) == 2
    assert all(problems_2_0_1(e) == [] for e in found)


@pytest.mark.parametrize(("scope", "reads"), [
    ("user/Coverage.read", True), ("patient/*.read", True), ("user/*.*", True), ("system/Coverage.rs", True),
    ("user/Coverage.s", True), ("patient/Coverage.rs?status=active", True), ("user/*.cruds", True),
    ("user/Coverage.write", False), ("user/Coverage.cud", False), ("user/Patient.rs user/Condition.read", False),
    ("launch openid fhirUser", False), ("patient/coverage.read", False),
])
def test_smart_v1_and_v2_scopes_are_both_read(scope, reads):
    assert scope_reads(scope, "Coverage") is reads


@pytest.mark.parametrize(("scope", "says"), [("user/Patient.rs user/Condition.rs", True),
                                             ("user/Patient.read user/Coverage.read", False),
                                             ("patient/*.rs", False)])
def test_a_refused_fetch_says_when_the_tokens_scope_grants_no_read(make_app, fhir_server, scope, says):
    request = without_coverage(body("2.2"))
    request["fhirServer"] = fhir_server.url_for("/fhir")
    request["fhirAuthorization"] |= {"access_token": "token-for-the-ehr", "scope": scope}
    fhir_server.expect_request("/fhir/Coverage").respond_with_data("", status=403)
    fhir_server.expect_request("/fhir/Condition").respond_with_json(empty_search())
    detail = answer(make_app(demo=True).test_client(), request)["cards"][0]["detail"]
    assert "the FHIR server refused the access token (HTTP 403)" in detail
    assert ("its scope (fhirAuthorization.scope) grants no read of Coverage" in detail) is says


def test_the_audit_record_says_what_the_answer_asserted_without_a_coverage(make_app, tmp_path):
    """Under 2.2 an order decided without a Coverage gets an assertion of its own (here `indeterminate`, the EHR's
    FHIR server being down); its audit record says that, for that Coverage, as `cds audit show` prints it."""
    from click.testing import CliRunner

    from cds.tools.cli import main

    url = f"sqlite:///{tmp_path}/store.sqlite3"
    app = make_app(demo=True, fetch_budget_seconds=0.5, database_url=url)
    request = without_coverage(body("2.2"))
    request["fhirServer"] = f"http://127.0.0.1:{free_port()}/fhir"
    answered = answer(app.test_client(), request)
    [extension] = assertions(answered)
    got = parts(extension)
    app.extensions["cds_store"].flush()
    shown = CliRunner().invoke(main, ["audit", "show", got["coverage-assertion-id"]], env={"CDS_DATABASE_URL": url})
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "  Outcome:   indeterminate" in lines
    assert f"  Coverage:  {ORDER_COVERAGE}" in lines
    assert f"  Reason:    {got['reason']['text']}" in lines
    listed = CliRunner().invoke(main, ["audit", "list", "--outcome", "indeterminate"], env={"CDS_DATABASE_URL": url})
    assert got["coverage-assertion-id"] in listed.output


def _coverage_info_off(request: dict) -> None:
    request["extension"]["davinci-crd.configuration"] = {"coverage-info": False}


def _order_without_id(request: dict) -> None:
    del request["context"]["draftOrders"]["entry"][0]["resource"]["id"]


@pytest.mark.parametrize("change", [_coverage_info_off, _order_without_id], ids=["coverage-info off", "no order id"])
def test_an_assertion_the_answer_does_not_give_is_not_recorded_as_answered(make_app, tmp_path, change):
    """The audit record keeps what the answer said: without the 2.2 assertion (not asked for, or an order that
    cannot carry it), the card's decision, not the `indeterminate` the assertion would have said."""
    from sqlalchemy import select

    from cds.record.schema import decision

    app = make_app(demo=True, fetch_budget_seconds=0.5, database_url=f"sqlite:///{tmp_path}/store.sqlite3")
    request = without_coverage(body("2.2"))
    request["fhirServer"] = f"http://127.0.0.1:{free_port()}/fhir"
    change(request)
    answered = answer(app.test_client(), request)
    assert not assertions(answered)
    app.extensions["cds_store"].flush()
    with app.extensions["cds_store"].engine.connect() as connection:
        [(outcome, coverage)] = connection.execute(select(decision.c.outcome, decision.c.coverage_reference)).all()
    assert (outcome, coverage) == ("not-covered", None)


def with_second_coverage(request: dict, *insurance: str) -> dict:
    """Two active Coverages of the patient sent, and the order's insurance naming `insurance`."""
    bundle = request["prefetch"]["coverageBundle"]
    second = copy.deepcopy(bundle["entry"][0])
    second["resource"]["id"] = "cov-other-1"
    bundle["entry"].append(second)
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["insurance"] = [{"reference": reference} for reference in insurance]
    return request


def test_of_several_coverages_the_one_the_order_names_is_decided_under(client):
    answered = answer(client, with_second_coverage(body("2.2"), ORDER_COVERAGE))
    [extension] = assertions(answered)
    assert parts(extension)["coverage"] == {"reference": ORDER_COVERAGE}
    assert "coding" not in parts(extension)["reason"]  # decided under it: the policy's reason, no gap code
    assert "the order's insurance names Coverage/cov-bcbstx-1, the one it is decided under" in \
        answered["cards"][0]["detail"]


@pytest.mark.parametrize("version", ["2.0", "2.2"])
def test_several_coverages_the_order_does_not_single_out_are_no_single_coverage(client, version):
    """resp-45: not resolved to a single coverage, so `not-covered` with `coverage-not-found` (from 2.2 on), not a
    decision under one of them."""
    request = with_second_coverage(body(version), ORDER_COVERAGE, "Coverage/cov-other-1")
    answered = answer(client, request)
    detail = answered["cards"][0]["detail"]
    assert ("2 active coverages of this patient were found (Coverage/cov-bcbstx-1, Coverage/cov-other-1) and the "
            "order's insurance names more than one of them, so no single coverage could be used") in detail
    found = assertions(answered)
    if version == "2.2":
        [extension] = found
        got = parts(extension)
        assert (got["covered"], got["reason"]["coding"][0]["code"]) == ("not-covered", "coverage-not-found")
        assert problems_2_2(extension) == []
    else:
        assert found == []  # 2.0.1 has no such reason: no assertion under a coverage it could not single out
