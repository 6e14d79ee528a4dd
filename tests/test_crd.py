"""Coverage-information: valid under CRD 2.0.1 and 2.2 for every outcome; the client's configuration obeyed."""

import dataclasses
from datetime import date

import pytest

from cds.fhir import parse_draft_order
from cds.policy import Outcome, load_policies
from cds.policy.decision import Unknown
from cds.policy.facts import CoverageFacts, CoverageGap, MemberFacts
from cds.protocol import HookRequest
from cds.render.configuration import TOPIC_SYSTEM_2_2, TOPIC_SYSTEM_TEMP, Configuration
from cds.render.coverage import COVERAGE_INFORMATION, coverage_information, order_insurance, update_action
from tests.crd_profile import has_empty_element, problems_2_0_1, problems_2_2, problems_dual
from tests.helpers import decide_order, load

ORDER = {
    "resourceType": "DeviceRequest", "id": "dr-1", "status": "draft", "intent": "original-order",
    "codeCodeableConcept": {"coding": [{"system": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                                        "code": "E0221"}]},
    "subject": {"reference": "Patient/p1"}, "authoredOn": "2026-11-26", "requester": {"reference": "Practitioner/d"},
    "extension": [{"url": "http://example.org/ehr-extension", "valueString": "kept"}],
}
FACTS = MemberFacts(coverages=(CoverageFacts("Coverage/cov-1", payer="Blue Cross and Blue Shield of Texas",
                                               line_of_business="commercial"),))


@pytest.fixture(scope="module")
def decision():
    return decide_order(parse_draft_order(ORDER), FACTS, load_policies(), on=date(2026, 11, 26))


def with_outcome(decision, outcome):
    return dataclasses.replace(decision, outcome=outcome, reason=f"Reason for {outcome}.")


def action_for(decision):
    """The action that stores the decision's assertion on its order, as the render step makes it."""
    return update_action(decision, coverage_information(decision))


def parts(extension):
    return {part["url"]: next(v for k, v in part.items() if k.startswith("value")) for part in extension["extension"]}


def test_not_covered_assertion(decision):
    extension = coverage_information(decision)
    assert extension["url"] == COVERAGE_INFORMATION
    assert parts(extension) == {
        "coverage": {"reference": "Coverage/cov-1"},
        "covered": "not-covered",
        "reason": {"text": decision.reason},
        "date": "2026-11-26",
        "coverage-assertion-id": decision.assertion_id,
    }


@pytest.mark.parametrize("primary", [True, False])
@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_is_valid_under_2_0_1_and_2_2(decision, outcome, primary):
    extension = coverage_information(with_outcome(decision, outcome), primary)
    assert problems_dual(extension) == []
    assert not has_empty_element(extension)


def test_covered_with_prior_authorization_asks_for_clinical_documentation_on_order_sign_only(decision):
    pa = with_outcome(decision, Outcome.COVERED_WITH_PA)
    sign, select = parts(coverage_information(pa, primary=True)), parts(coverage_information(pa, primary=False))
    assert (sign["covered"], sign["pa-needed"], sign["doc-needed"], sign["doc-purpose"]) == \
        ("covered", "auth-needed", "clinical", "withpa")
    assert select["pa-needed"] == "auth-needed" and "doc-needed" not in select and "doc-purpose" not in select


def test_conditional_names_what_is_needed(decision):
    got = parts(coverage_information(with_outcome(decision, Outcome.CONDITIONAL)))
    assert (got["covered"], got["pa-needed"], got["info-needed"]) == ("conditional", "conditional", "OTH")
    assert got["reason"] == {"text": "Reason for conditional."}


def test_under_2_2_a_conditional_with_nothing_a_reader_can_resolve_needs_oth(decision):
    """Unknowns without a way to resolve them (member data that could not be had) name no 2.2 code of their own."""
    conditional = dataclasses.replace(with_outcome(decision, Outcome.CONDITIONAL),
                                      unknowns=(Unknown("the member's conditions could not be fetched"),))
    assert parts(coverage_information(conditional, version=(2, 2)))["info-needed"] == "OTH"


@pytest.mark.parametrize(("change", "version", "expected"), [
    ({"covered": "covered"}, "2.0.1", "crd-ci-q2 fails"),  # covered without pa-needed
    ({"pa-needed": "no-auth"}, "2.2", "2.2 q2 fails"),  # not-covered with pa-needed
    ({"info-needed": "OTH"}, "2.0.1", "crd-ci-q3 fails"),  # info-needed with nothing conditional
    ({"covered": "conditional", "pa-needed": "conditional"}, "2.2", "2.2 q3 fails"),
    ({"covered": "covered", "pa-needed": "satisfied"}, "2.0.1", "crd-ci-q5 fails"),
    ({"covered": "indeterminate"}, "2.0.1", "covered: 'indeterminate' is not in its value set"),
    ({"date": None}, "2.0.1", "date: 0 repetitions, allowed 1..1"),
    ({"response": {"valueReference": {"reference": "QuestionnaireResponse/1"}}}, "2.2", "unknown sub-extension"),
    ({"reason": {"valueCodeableConcept": {"coding": [{"system": "http://example.org", "code": "x"}]}}}, "2.2",
     "2.2 q7 fails"),
])
def test_the_checks_catch_invalid_assertions(decision, change, version, expected):
    extension = coverage_information(decision)
    for url, value in change.items():
        extension["extension"] = [p for p in extension["extension"] if p["url"] != url]
        if value is not None:
            extension["extension"].append({"url": url, **(value if isinstance(value, dict) else {"valueCode": value})})
    problems = problems_2_0_1(extension) if version == "2.0.1" else problems_2_2(extension)
    assert any(expected in problem for problem in problems), problems


def test_action_echoes_the_whole_order_with_only_the_extension_added(decision):
    action = action_for(decision)
    assert action.type == "update" and action.resource_id is None
    assert "DeviceRequest/dr-1" in action.description and "DME101.045" in action.description
    resource = dict(action.resource)
    extensions = resource.pop("extension")
    original = dict(decision.order.resource)
    assert extensions[0] == original.pop("extension")[0]  # the EHR's own extension is kept
    assert resource == original
    assert extensions[1] == coverage_information(decision)


def test_earlier_assertion_for_the_same_coverage_is_replaced_others_kept(decision):
    ours = coverage_information(dataclasses.replace(decision, reason="An earlier reason"))
    other_payer = {"url": COVERAGE_INFORMATION, "extension": [
        {"url": "coverage", "valueReference": {"reference": "Coverage/secondary"}}]}
    order = parse_draft_order({**ORDER, "extension": [ours, other_payer]})
    renewed = dataclasses.replace(decision, order=order, assertion_id="new-id")
    extensions = action_for(renewed).resource["extension"]
    assert other_payer in extensions and ours not in extensions
    assert [e for e in extensions if e.get("url") == COVERAGE_INFORMATION][-1]["extension"][-1] == \
        {"url": "coverage-assertion-id", "valueString": "new-id"}


def test_no_coverage_or_no_order_id_means_no_action(decision):
    assert action_for(dataclasses.replace(decision, coverage=None)) is None
    assert action_for(dataclasses.replace(decision, coverage=CoverageFacts(None))) is None
    anonymous = parse_draft_order({k: v for k, v in ORDER.items() if k != "id"})
    assert action_for(dataclasses.replace(decision, order=anonymous)) is None


def request(configuration=None, version=None):
    extension = {}
    if configuration is not None:
        extension["davinci-crd.configuration"] = configuration
    if version is not None:
        extension["davinci-crd.requestedVersion"] = version
    return HookRequest(hook="order-sign", hook_instance="h", user_id="Practitioner/1", patient_id="p",
                       draft_orders=(), extension=extension)


def test_configuration_from_request():
    config = Configuration.from_request(request({"coverage-info": False, "max-cards": 2, "off-guideline": False,
                                                 "guideline": True}, "2.2"))
    assert config.coverage_info is False and config.max_cards == 2
    assert not config.shows("off-guideline") and not config.shows("coverage-info") and config.shows("guideline")
    assert config.topic_system == TOPIC_SYSTEM_2_2


@pytest.mark.parametrize("configuration", [None, "yes", {"coverage-info": "no", "max-cards": "5"},
                                           {"max-cards": -1}, {"max-cards": True}, {"alt-drug": 3}])
def test_configuration_values_of_the_wrong_type_are_ignored(configuration):
    config = Configuration.from_request(request(configuration, version="two"))
    assert config == Configuration()
    assert config.topic_system == TOPIC_SYSTEM_TEMP


@pytest.mark.parametrize(("version", "system"), [("2.1", TOPIC_SYSTEM_TEMP), ("2.2", TOPIC_SYSTEM_2_2),
                                                 ("3.0", TOPIC_SYSTEM_2_2)])
def test_topic_system_follows_the_requested_version(version, system):
    assert Configuration.from_request(request(version=version)).topic_system == system


def post(client, body):
    service = "order-select-crd" if body["hook"] == "order-select" else "order-sign-crd"
    response = client.post(f"/cds-services/{service}", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_coverage_info_off_leaves_out_the_action_but_not_the_card(client):
    body = load("e0221-home-device.json")
    assert len(post(client, body)["systemActions"]) == 1
    body["extension"] = {"davinci-crd.configuration": {"coverage-info": False}}
    answer = post(client, body)
    assert "systemActions" not in answer and len(answer["cards"]) == 1


def test_card_type_switch_off_leaves_out_the_card_but_not_the_action(client):
    body = load("e0221-home-device.json")
    body["extension"] = {"davinci-crd.configuration": {"off-guideline": False}}
    answer = post(client, body)
    assert answer["cards"] == [] and len(answer["systemActions"]) == 1


def test_max_cards_zero_returns_no_cards(client):
    body = load("two-orders-one-matches.json")
    body["extension"] = {"davinci-crd.configuration": {"max-cards": 0}}
    answer = post(client, body)
    assert answer["cards"] == [] and len(answer["systemActions"]) == 1


def test_discovery_offers_a_switch_for_every_card_type_emitted(client):
    for service in client.get("/cds-services").get_json()["services"]:
        codes = {option["code"] for option in service["extension"]["davinci-crd.configuration-options"]}
        assert {"coverage-info", "off-guideline", "max-cards"} <= codes


def test_an_order_already_carrying_the_same_assertion_gets_no_new_action(client):
    from tests.helpers import load

    body = load("e0221-home-device.json")
    first = client.post("/cds-services/order-sign-crd", json=body).get_json()
    [action] = first["systemActions"]
    body["context"]["draftOrders"]["entry"][0]["resource"] = action["resource"]  # as the EHR stored it
    body["hookInstance"] = "b2c1f9de-6a55-4a57-9a0b-1f3c2e1d7a10"
    again = client.post("/cds-services/order-sign-crd", json=body).get_json()
    assert len(again["cards"]) == 1
    assert "systemActions" not in again  # nothing new or changed (CRD §resp-35)

    stale = action["resource"]["extension"][-1]["extension"]
    for part in stale:
        if part["url"] == "reason":
            part["valueCodeableConcept"]["text"] = "An older reason"
    changed = client.post("/cds-services/order-sign-crd", json=body).get_json()
    [replaced] = changed["systemActions"]
    assertions = [e for e in replaced["resource"]["extension"] if e["url"].endswith("ext-coverage-information")]
    assert len(assertions) == 1  # the changed assertion replaced, not added to


def test_an_assertion_made_on_another_day_under_another_id_is_the_same_assertion(decision):
    earlier = coverage_information(dataclasses.replace(decision, decided_on=date(2026, 1, 5), assertion_id="old"))
    order = parse_draft_order({**ORDER, "extension": [earlier]})
    assert action_for(dataclasses.replace(decision, order=order)) is None


def test_an_extension_of_another_url_naming_the_same_coverage_is_kept_as_the_ehrs_own(decision):
    own = {"url": "http://example.org/ehr-coverage-note", "extension": [
        {"url": "coverage", "valueReference": {"reference": "Coverage/cov-1"}}]}
    order = parse_draft_order({**ORDER, "extension": [own, "not an extension"]})
    extensions = action_for(dataclasses.replace(decision, order=order)).resource["extension"]
    assert extensions[:2] == [own, "not an extension"] and extensions[2]["url"] == COVERAGE_INFORMATION


def test_no_assertion_without_a_coverage_unless_a_gap_says_why(decision):
    insured = parse_draft_order({**ORDER, "insurance": [{"reference": "Coverage/cov-1"}]})
    uncovered = dataclasses.replace(decision, order=insured, coverage=None)
    assert coverage_information(uncovered, version=(2, 2)) is None
    gap = CoverageGap("coverage-not-found", "No coverage of the patient was found")
    assert coverage_information(uncovered, gap=gap, version=(2, 2))["extension"][0] == \
        {"url": "coverage", "valueReference": {"reference": "Coverage/cov-1"}}


def test_the_orders_insurance_is_read_past_entries_that_are_not_references():
    insurance = ["Coverage/cov-0", {"reference": "Organization/o"}, {"reference": "Coverage/cov-1"}]
    assert order_insurance({"insurance": insurance}) == "Coverage/cov-1"
