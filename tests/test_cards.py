"""Cards: what the clinician reads for each decision, and which cards the client gets."""

import dataclasses
from datetime import date

import pytest

from cds.fhir import parse_draft_order
from cds.policy import Outcome, Unknown, load_policies
from cds.policy.facts import CoverageFacts, MemberFacts
from cds.protocol import MAX_SUMMARY, CdsResponse, to_wire
from cds.render.cards import OVERRIDE_REASON_SYSTEM, STANDARD_REASON_SYSTEM, card_for, card_type, select_cards, summary
from cds.render.configuration import TOPIC_SYSTEM_2_2, TOPIC_SYSTEM_TEMP, Configuration
from tests.helpers import decide_order, load

PAYER = "Health Care Service Corporation"
FACTS = MemberFacts(coverages=(CoverageFacts("Coverage/c1", payer="Blue Cross and Blue Shield of Oklahoma",
                                               line_of_business="commercial"),))


@pytest.fixture(scope="module")
def policies():
    return load_policies()


def order(concept, order_id="dr-1"):
    resource = {"resourceType": "DeviceRequest", "status": "draft", "intent": "original-order",
                "codeCodeableConcept": concept, "subject": {"reference": "Patient/p"}}
    return parse_draft_order({**resource, "id": order_id} if order_id else resource)


E0221 = {"coding": [{"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "code": "E0221"}]}


def render(policies, concept=E0221, facts=FACTS, configuration=None, order_id="dr-1"):
    decision = decide_order(order(concept, order_id), facts, policies, on=date(2026, 11, 26))
    return decision, card_for(decision, configuration or Configuration(), PAYER)


def test_code_match_card(policies):
    _, card = render(policies)
    assert card.summary == "Infrared heating pad system (E0221) not covered: not medically necessary, policy DME101.045"
    assert card.indicator == "warning"
    assert card.source.label == "Blue Cross and Blue Shield of Oklahoma"
    assert card.source.url == "https://medicalpolicy.hcsc.com/home.html?corpEntCd=HCSC"
    assert (card.source.topic.system, card.source.topic.code) == (TOPIC_SYSTEM_TEMP, "off-guideline")
    assert card.extension == {"davinci-crd.associated-resource": [{"reference": "DeviceRequest/dr-1"}]}


def test_detail_states_policy_basis_match_and_that_the_plan_governs(policies):
    _, card = render(policies)
    assert "> The use of infrared therapy devices and any related accessories" in card.detail
    assert "is considered not medically necessary." in card.detail
    assert "**Basis** (the policy's Rationale):\n\n> This policy is based on a review of coverage" in card.detail
    assert "1862(a)(1)(A)" in card.detail
    assert "**How this order matched:** billing code HCPCS E0221 (Infrared heating pad system)" in card.detail
    assert ("**The benefit plan governs** (the policy's Disclaimer):\n\n> If there is a discrepancy between a Medical "
            "Policy and a member's benefit plan") in card.detail
    assert "No coverage for this patient" not in card.detail and "Not evaluated" not in card.detail


def test_text_only_match_says_so_and_offers_a_matching_override(policies):
    _, card = render(policies, {"text": "Anodyne Therapy System, home unit"})
    assert card.summary.startswith("Anodyne Therapy System, home unit not covered")
    assert ('by its description, not by a billing code: "Anodyne Therapy System, home unit" '
            "(DeviceRequest.codeCodeableConcept) names \"Anodyne\", a description the policy file lists as naming "
            "this policy's devices.") in card.detail
    assert ("The policy's Description defines its devices:\n\n> Infrared therapy devices are used to treat an area of "
            "the skin") in card.detail
    assert "disregard" not in card.detail
    # The standard reason (CDS Hooks 3.0 non-adherence reasons) that the card does not apply.
    assert (STANDARD_REASON_SYSTEM, "cds-not-applicable") in {(r.system, r.code) for r in card.override_reasons}
    assert "cds-not-applicable" not in {reason.code for reason in render(policies)[1].override_reasons}


def test_links_are_absolute_and_cover_the_policy_and_ncd(policies):
    _, card = render(policies)
    assert [link.label for link in card.links] == [
        "Medical policy DME101.045: Infrared Therapy Devices",
        "CMS National Coverage Determination 270.6: Infrared Therapy Devices",
        "CMS decision memo CAG-00291N: Infrared Therapy Devices",
    ]
    assert all(link.type == "absolute" and link.url.startswith("https://") for link in card.links)


def test_one_suggestion_removes_the_order(policies):
    _, card = render(policies)
    (suggestion,) = card.suggestions
    assert card.selection_behavior == "at-most-one"
    (action,) = suggestion.actions
    assert (action.type, action.resource_id, action.resource) == ("delete", "DeviceRequest/dr-1", None)
    assert action.description and suggestion.label == "Remove the order for Infrared heating pad system (E0221)"
    assert len({card.uuid, suggestion.uuid}) == 2


def test_override_reasons_have_display_text(policies):
    _, card = render(policies)
    assert [(r.system, r.code) for r in card.override_reasons] == [
        (OVERRIDE_REASON_SYSTEM, "patient-pays"), (OVERRIDE_REASON_SYSTEM, "benefit-verified"),
        (STANDARD_REASON_SYSTEM, "recipient-disagrees-evidence")]
    assert all(len(r.display) > 10 for r in card.override_reasons)


# The CDS Hooks 3.0 (ballot) code system of non-adherence reasons: the codes of its example value set
# Non-Adherence Reason Clinical Selection, with the code system's displays (HL7/cds-hooks,
# input/vocabulary/CodeSystem-non-adherence-reason-codes.json and ValueSet-non-adherence-reason-clinical.json).
CLINICAL_SELECTION = {
    "cds-not-applicable": "PC CDS does not apply to patient",
    "recipient-disagrees-evidence": "Recipient disagrees with recommendation because of issues with the evidence",
    "too-costly-uncovered": "Recommended action is too costly or not covered by insurance",
    "patient-refuses": "Patient refuses/declines (no context given)*",
}


def test_standard_override_reasons_are_codes_of_the_cds_hooks_value_set_with_its_displays(policies):
    _, denied = render(policies, {"text": "Anodyne Therapy System, home unit"})
    standard = [r for r in denied.override_reasons if r.system == STANDARD_REASON_SYSTEM]
    assert {r.code for r in standard} == {"cds-not-applicable", "recipient-disagrees-evidence"}
    assert all(r.display == CLINICAL_SELECTION[r.code] for r in standard)


def test_a_mandate_that_may_apply_is_offered_as_an_override_reason(policies):
    decision, card = render(policies)
    may_apply = card_for(dataclasses.replace(decision, mandate_may_apply=True), Configuration(), PAYER)
    assert [r.code for r in may_apply.override_reasons] == [*(r.code for r in card.override_reasons), "state-mandate"]
    assert may_apply.override_reasons[-1].display == "A state benefit mandate applies"


def test_each_card_has_fresh_uuids(policies):
    first, second = render(policies)[1], render(policies)[1]
    assert first.uuid != second.uuid and first.suggestions[0].uuid != second.suggestions[0].uuid


def test_order_without_id_gets_a_card_without_suggestion(policies):
    _, card = render(policies, order_id=None)
    wire = to_wire(CdsResponse(cards=[card]))["cards"][0]
    assert "suggestions" not in wire and "selectionBehavior" not in wire and "extension" not in wire
    assert card.extension is None


def test_source_label_falls_back_to_the_configured_payer_name(policies):
    _, card = render(policies, facts=MemberFacts(coverages=(CoverageFacts("Coverage/c1"),)))
    assert card.source.label == PAYER
    _, card = render(policies, facts=MemberFacts())
    assert card.source.label == PAYER
    assert "No coverage of this patient could be used, so this states the medical policy" in card.detail


def test_unknowns_are_listed(policies):
    decision, _ = render(policies)
    decision = dataclasses.replace(decision, unknowns=(Unknown("The plan's funding", "ask the plan"),))
    card = card_for(decision, Configuration(), PAYER)
    assert "**Not evaluated:**\n- The plan's funding: ask the plan" in card.detail
    conditional = dataclasses.replace(decision, outcome=Outcome.CONDITIONAL,
                                      unknowns=(Unknown("The plan's funding", "ask the plan"), Unknown("The age")))
    assert "**Not known, and how to resolve it:**\n- The plan's funding: ask the plan\n- The age\n\n" in \
        card_for(conditional, Configuration(), PAYER).detail


def test_detail_opens_with_the_policy_it_states_and_defines_the_devices_only_for_a_text_match(policies):
    _, card = render(policies)
    spec = policies[0].spec
    assert card.detail.startswith(f'**Medical policy {spec.id} "{spec.title}"**, {spec.publisher}, effective '
                                  f"{spec.effective:%m/%d/%Y}:\n\n> ")
    assert "defines its devices" not in card.detail
    assert "defines its devices" in render(policies, {"text": "Anodyne therapy system"})[1].detail


def test_long_text_is_shortened_in_the_summary_never_the_verdict(policies):
    decision, card = render(policies, {"text": "Anodyne " + "very long description " * 20})
    assert len(card.summary) == MAX_SUMMARY
    assert card.summary.endswith("… not covered: not medically necessary, policy DME101.045")
    assert summary(decision) == card.summary


def test_a_text_that_just_fits_is_whole_and_a_shortened_one_ends_on_a_word(policies):
    decision, card = render(policies, {"text": "Anodyne unit"})
    tail = card.summary.removeprefix(decision.item)
    room = MAX_SUMMARY - len(tail)
    fits = "Anodyne " + "a" * (room - 8)
    assert render(policies, {"text": fits})[1].summary == fits + tail
    words = "Anodyne " + "a" * (room - 10) + " " + "b" * 20  # the cut falls just after the space
    assert render(policies, {"text": words})[1].summary == "Anodyne " + "a" * (room - 10) + "…" + tail


def test_a_payer_name_is_the_source_label_in_one_line_of_at_most_120_characters(policies):
    long_name = "Blue  Cross\nand Blue Shield " + "of Somewhere " * 10
    facts = MemberFacts(coverages=(CoverageFacts("Coverage/c1", payer=long_name, line_of_business="commercial"),))
    _, card = render(policies, facts=facts)
    assert card.source.label == " ".join(long_name.split())[:120] and len(card.source.label) == 120


def test_topic_system_follows_requested_version(policies):
    _, card = render(policies, configuration=Configuration(requested_version=(2, 2)))
    assert card.source.topic.system == TOPIC_SYSTEM_2_2


def test_card_type_by_outcome(policies):
    decision, _ = render(policies)
    assert card_type(decision) == "off-guideline"
    for outcome in (Outcome.COVERED_WITH_PA, Outcome.CONDITIONAL):
        other = dataclasses.replace(decision, outcome=outcome, indicator="info")
        assert card_for(other, Configuration(), PAYER).source.topic.code == card_type(other) == "coverage-info"


def test_select_cards_orders_by_severity_and_honours_max_cards_and_switches(policies):
    decision, warning = render(policies)
    info = card_for(dataclasses.replace(decision, outcome=Outcome.COVERED_WITH_PA, indicator="info"),
                    Configuration(), PAYER)
    assert select_cards([info, warning], Configuration()) == [warning, info]
    assert select_cards([info, warning], Configuration(max_cards=1)) == [warning]
    assert select_cards([info, warning], Configuration(card_types_off=frozenset({"off-guideline"}))) == [info]


def test_rendered_card_has_no_empty_members_and_is_json_ready(client):
    answer = client.post("/cds-services/order-sign-crd", json=load("text-only-anodyne.json")).get_json()
    (card,) = answer["cards"]
    assert set(card) == {"uuid", "summary", "indicator", "detail", "source", "suggestions", "selectionBehavior",
                         "overrideReasons", "links", "extension"}
    assert set(card["source"]) == {"label", "url", "topic"}


def test_malformed_coverage_in_prefetch_still_gets_the_card(client):
    body = load("e0221-home-device.json")
    coverage = body["prefetch"]["coverage"]["entry"][0]["resource"]
    coverage["payor"] = [{"display": 5}]
    coverage["id"] = {"not": "an id"}
    answer = client.post("/cds-services/order-sign-crd", json=body).get_json()
    assert answer["cards"][0]["source"]["label"] == "Health Care Service Corporation"
    assert "systemActions" not in answer  # no usable Coverage reference to point to
