"""Prefetch resolution (CDS Hooks 2.0 §4): present, null, missing, OperationOutcome and paginated keys, against a
real FHIR server on loopback."""

import copy

import pytest

from cds.config import Settings
from cds.member.fetch import FhirFetcher
from cds.member.prefetch import DataUnavailable, fill_template, member_data
from cds.protocol import parse_hook_request
from tests.helpers import load

TOKEN = "eyJhbGciOi.secret-access-token"
MEMBER = load("us-core-member-il-child.json")
PATIENT, COVERAGE, *CONDITIONS = (entry["resource"] for entry in MEMBER["entry"])
PATIENT_ID = PATIENT["id"]


def searchset(*resources, next_url=None):
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
              "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r,
                         "search": {"mode": "match"}} for r in resources]}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


FULL_PREFETCH = {"patient": PATIENT, "coverage": searchset(COVERAGE), "conditions": searchset(*CONDITIONS)}


def hook_request(fhir_server=None, prefetch=None, token=TOKEN):
    body = copy.deepcopy(load("sandbox-order-sign-rx.json"))
    body["context"]["patientId"] = PATIENT_ID
    body.pop("fhirServer", None)
    body["prefetch"] = prefetch
    if fhir_server:
        body["fhirServer"] = fhir_server
        if token:
            body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                         "scope": "user/Patient.read user/Coverage.read user/Condition.read",
                                         "subject": "cds-service"}
    return parse_hook_request(body, requires_selections=False, max_orders=200)


@pytest.fixture(scope="module")
def fetcher():
    return FhirFetcher(Settings(demo=True, fetch_budget_seconds=0.5).resolved())


def serve_member(fhir_server, token=TOKEN, coverage=None, conditions=None):
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"} if token else {}
    fhir_server.expect_request(f"/fhir/Patient/{PATIENT_ID}", headers=headers).respond_with_json(PATIENT)
    fhir_server.expect_request("/fhir/Coverage", query_string={"patient": PATIENT_ID, "status": "active"},
                               headers=headers).respond_with_json(coverage or searchset(COVERAGE))
    fhir_server.expect_request("/fhir/Condition", query_string={"patient": PATIENT_ID, "clinical-status": "active"},
                               headers=headers).respond_with_json(conditions or searchset(*CONDITIONS))


def paths(fhir_server):
    return sorted(request.path for request, _ in fhir_server.log)


def test_present_keys_are_used_without_fetching(fetcher, fhir_server):
    data = member_data(hook_request(fhir_server.url_for("/fhir"), FULL_PREFETCH), fetcher)
    assert data.patient == PATIENT
    assert data.coverages == (COVERAGE,)
    assert data.conditions == tuple(CONDITIONS)
    assert data.unavailable == () and data.unavailable_keys == frozenset()
    assert fhir_server.log == []


def test_null_keys_mean_no_data_and_are_not_fetched(fetcher, fhir_server):
    prefetch = {"patient": None, "coverage": None, "conditions": None}
    data = member_data(hook_request(fhir_server.url_for("/fhir"), prefetch), fetcher, required={"coverage"})
    assert (data.patient, data.coverages, data.conditions) == (None, (), ())
    assert data.unavailable == ()
    assert fhir_server.log == []


def test_empty_search_bundle_is_no_data_not_a_412(fetcher, fhir_server):
    prefetch = {**FULL_PREFETCH, "coverage": searchset()}
    data = member_data(hook_request(fhir_server.url_for("/fhir"), prefetch), fetcher, required={"coverage"})
    assert data.coverages == ()
    assert fhir_server.log == []


def test_missing_keys_are_fetched_with_the_bearer_token(fetcher, fhir_server):
    serve_member(fhir_server)
    data = member_data(hook_request(fhir_server.url_for("/fhir"), None), fetcher)
    fhir_server.check_assertions()
    assert paths(fhir_server) == ["/fhir/Condition", "/fhir/Coverage", f"/fhir/Patient/{PATIENT_ID}"]
    assert data.patient == PATIENT
    assert data.coverages == (COVERAGE,)
    assert data.conditions == tuple(CONDITIONS)
    assert data.unavailable == ()


def test_without_fhir_authorization_no_authorization_header_is_sent(fetcher, fhir_server):
    serve_member(fhir_server, token=None)
    data = member_data(hook_request(fhir_server.url_for("/fhir"), None, token=None), fetcher)
    assert data.patient == PATIENT
    assert all("Authorization" not in request.headers for request, _ in fhir_server.log)


def test_operation_outcome_in_place_of_a_key_is_fetched(fetcher, fhir_server):
    serve_member(fhir_server)
    failed = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    prefetch = {**FULL_PREFETCH, "coverage": failed}
    data = member_data(hook_request(fhir_server.url_for("/fhir"), prefetch), fetcher)
    assert paths(fhir_server) == ["/fhir/Coverage"]
    assert data.coverages == (COVERAGE,)


def test_a_resource_of_the_wrong_type_is_fetched_instead(fetcher, fhir_server):
    serve_member(fhir_server)
    prefetch = {**FULL_PREFETCH, "patient": CONDITIONS[0]}
    data = member_data(hook_request(fhir_server.url_for("/fhir"), prefetch), fetcher)
    assert paths(fhir_server) == [f"/fhir/Patient/{PATIENT_ID}"]
    assert data.patient == PATIENT


def test_paginated_prefetch_is_completed_from_the_server(fetcher, fhir_server):
    next_url = fhir_server.url_for("/fhir/Condition?patient=il-child-1&page=2")
    fhir_server.expect_request("/fhir/Condition", query_string={"patient": PATIENT_ID, "page": "2"},
                               headers={"Authorization": f"Bearer {TOKEN}"}).respond_with_json(
        searchset(*CONDITIONS[1:]))
    prefetch = {**FULL_PREFETCH, "conditions": searchset(CONDITIONS[0], next_url=next_url)}
    data = member_data(hook_request(fhir_server.url_for("/fhir"), prefetch), fetcher)
    assert data.conditions == tuple(CONDITIONS)
    assert data.unavailable == ()


def test_paginated_fetch_reads_every_page(fetcher, fhir_server):
    next_url = fhir_server.url_for("/fhir?_getpages=f00d&_getpagesoffset=1")
    serve_member(fhir_server, conditions=searchset(CONDITIONS[0], next_url=next_url))
    fhir_server.expect_request("/fhir", query_string="_getpages=f00d&_getpagesoffset=1").respond_with_json(
        searchset(*CONDITIONS[1:]))
    data = member_data(hook_request(fhir_server.url_for("/fhir"), None), fetcher)
    assert data.conditions == tuple(CONDITIONS)


def test_paginated_prefetch_without_a_fhir_server_is_reported_incomplete(fetcher):
    prefetch = {**FULL_PREFETCH, "conditions": searchset(CONDITIONS[0], next_url="https://ehr.example.org/p2")}
    data = member_data(hook_request(None, prefetch), fetcher)
    assert data.conditions == (CONDITIONS[0],)
    assert any("active conditions may be incomplete" in note for note in data.unavailable)
    assert data.unavailable_keys == frozenset()


def test_missing_keys_without_a_fhir_server_are_reported_not_failed(fetcher):
    data = member_data(hook_request(None, {"patient": PATIENT}), fetcher)
    assert data.patient == PATIENT
    assert data.unavailable_keys == {"coverage", "conditions"}
    assert "The patient's coverage could not be obtained: it was not prefetched and the request names no " \
           "fhirServer to fetch it from." in data.unavailable


def test_a_failed_fetch_is_reported_and_the_rest_still_used(fetcher, fhir_server):
    fhir_server.expect_request("/fhir/Coverage").respond_with_data("", status=401)
    prefetch = {**FULL_PREFETCH, "coverage": {"resourceType": "OperationOutcome"}}
    data = member_data(hook_request(fhir_server.url_for("/fhir"), prefetch), fetcher)
    assert data.patient == PATIENT and data.conditions == tuple(CONDITIONS)
    assert data.unavailable_keys == {"coverage"}
    assert "refused the access token (HTTP 401)" in data.unavailable[0]
    assert TOKEN not in " ".join(data.unavailable)


def test_required_data_that_cannot_be_had_is_a_412_naming_it(fetcher, fhir_server):
    fhir_server.expect_request("/fhir/Coverage").respond_with_data("", status=500)
    request = hook_request(fhir_server.url_for("/fhir"), {"patient": PATIENT, "conditions": None})
    with pytest.raises(DataUnavailable) as raised:
        member_data(request, fetcher, required={"coverage"})
    assert raised.value.status == 412
    assert raised.value.expression == "prefetch.coverage"
    assert "coverage" in raised.value.diagnostics and "HTTP 500" in raised.value.diagnostics


def test_optional_data_that_cannot_be_had_is_no_412(fetcher, fhir_server):
    fhir_server.expect_request("/fhir/Coverage").respond_with_data("", status=500)
    request = hook_request(fhir_server.url_for("/fhir"), {"patient": PATIENT, "conditions": None})
    assert member_data(request, fetcher, required={"patient"}).unavailable_keys == {"coverage"}


def test_unknown_required_key_is_a_programming_error():
    with pytest.raises(ValueError, match="medications"):
        member_data(hook_request(None, FULL_PREFETCH), required={"medications"})


def test_without_a_fetcher_nothing_is_fetched(fhir_server):
    data = member_data(hook_request(fhir_server.url_for("/fhir"), None))
    assert data.unavailable_keys == {"patient", "coverage", "conditions"}
    assert fhir_server.log == []


def test_templates_render_root_level_context_tokens():
    request = hook_request(None, None)
    assert fill_template("Patient/{{context.patientId}}", request) == f"Patient/{PATIENT_ID}"
    assert fill_template("PractitionerRole?practitioner={{userPractitionerId}}", request) == \
        "PractitionerRole?practitioner=COREPRACTITIONER1"
    assert fill_template("{{context.userId}}", request) == "Practitioner/COREPRACTITIONER1"
    assert fill_template("Encounter/{{context.encounterId}}", request) is None  # no encounter in this call
    assert fill_template("RelatedPerson/{{userRelatedPersonId}}", request) is None


def test_data_under_other_keys_is_recognised_by_content_before_anything_is_fetched(fetcher, fhir_server):
    other_patient = {**PATIENT, "id": "someone-else"}
    prefetch = {"orders": searchset(other_patient, PATIENT), "coverageBundle": searchset(COVERAGE),
                "conditionList": {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": c} for c in CONDITIONS]}}
    data = member_data(hook_request(fhir_server.url_for("/fhir"), prefetch), fetcher)
    assert data.patient == PATIENT  # the call's patient, not the other one the Bundle holds
    assert data.coverages == (COVERAGE,)
    assert data.conditions == tuple(CONDITIONS)
    assert data.unavailable == () and fhir_server.log == []


def test_our_own_key_wins_and_only_what_is_nowhere_in_the_prefetch_is_fetched(fetcher, fhir_server):
    serve_member(fhir_server)
    prefetch = {"coverage": None, "coverageBundle": searchset(COVERAGE), "patientBundle": PATIENT}
    data = member_data(hook_request(fhir_server.url_for("/fhir"), prefetch), fetcher)
    assert data.coverages == () and data.patient == PATIENT  # `null` under our key: the client has none
    assert paths(fhir_server) == ["/fhir/Condition"]


def test_a_recognised_bundle_with_further_pages_is_noted_as_possibly_incomplete(fetcher):
    prefetch = {"coverageBundle": searchset(COVERAGE, next_url="https://ehr.example.org/fhir?page=2")}
    data = member_data(hook_request(None, {"patient": PATIENT, "conditions": None, **prefetch}), fetcher)
    assert data.coverages == (COVERAGE,)
    assert data.unavailable == ("The patient's coverage may be incomplete: only the first page of results was "
                                "prefetched.",)
