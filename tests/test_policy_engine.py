"""The policy engine, one matching rule at a time: pure calls, no app, no HTTP."""

from datetime import date

import pytest

from cds.fhir import parse_draft_order
from cds.policy import Outcome, load_policies, match_order
from cds.policy.facts import CoverageFacts, MemberFacts
from cds.policy.orders import device_index
from tests.helpers import decide_order, device_request, service_request

HCPCS_URIS = [
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "urn:oid:2.16.840.1.113883.6.285",
    "https://bluebutton.cms.gov/resources/codesystem/hcpcs",
    "urn:oid:2.16.840.1.113883.6.14",
]
CPT_URIS = ["http://www.ama-assn.org/go/cpt", "urn:oid:2.16.840.1.113883.6.12"]
SNOMED = "http://snomed.info/sct"


@pytest.fixture(scope="module")
def policies():
    return load_policies()


def coded(system, code, display=None):
    coding = {"code": code} if system is None else {"system": system, "code": code}
    return {"coding": [{**coding, **({"display": display} if display else {})}]}


def text(value):
    return {"text": value}


def matched(order, policies, devices=None):
    found = match_order(order, policies, devices)
    return found.match if found else None


@pytest.mark.parametrize("uri", HCPCS_URIS)
@pytest.mark.parametrize("code", ["E0221", "A4639"])
def test_hcpcs_codes_match_under_every_hcpcs_uri(policies, uri, code):
    match = matched(device_request(coded(uri, code)), policies)
    assert match.basis == "code" and match.code.code == code and match.code.system == "HCPCS"
    assert match.system_sent == uri


@pytest.mark.parametrize("uri", CPT_URIS)
def test_cpt_97026_matches_under_cpt_uris(policies, uri):
    match = matched(service_request(coded(uri, "97026")), policies)
    assert match.basis == "code" and match.code.code == "97026" and match.where == "ServiceRequest.code"


def test_code_is_compared_trimmed_and_case_insensitively(policies):
    assert matched(device_request(coded(HCPCS_URIS[0], " e0221 ")), policies).code.code == "E0221"


@pytest.mark.parametrize("code", ["E0221", "A4639", "97026"])
def test_code_without_system_matches_because_the_codes_cannot_collide(policies, code):
    match = matched(service_request(coded(None, code)), policies)
    assert match.basis == "code" and match.system_sent == ""
    assert "with no code system" in match.describe()


def test_hcpcs_code_sent_under_the_cpt_uri_still_matches(policies):
    assert matched(device_request(coded(CPT_URIS[0], "E0221")), policies).code.code == "E0221"


@pytest.mark.parametrize("system", [SNOMED, "http://hospital.example.org/chargemaster"])
def test_target_code_under_another_system_does_not_match(policies, system):
    assert matched(device_request(coded(system, "E0221")), policies) is None


def test_code_in_billing_options_extension_matches(policies):
    concept = {"coding": [{"system": SNOMED, "code": "1234567", "display": "Physical therapy procedure"}],
               "extension": [{"url": "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-billing-options",
                              "valueCodeableConcept": coded(CPT_URIS[0], "97026")}]}
    match = matched(service_request(concept), policies)
    assert match.code.code == "97026" and match.where == "a billing option of ServiceRequest.code"


def test_code_match_is_preferred_over_a_text_match(policies):
    concept = {"coding": [{"system": HCPCS_URIS[0], "code": "A4639"}], "text": "Anodyne therapy system"}
    assert matched(device_request(concept), policies).basis == "code"


# ------------------------------------------------------------------------------------ codeReference to a Device

DEVICE = {"resourceType": "Device", "id": "anodyne", "type": coded(HCPCS_URIS[1], "E0221"),
          "deviceName": [{"name": "Anodyne Therapy System", "type": "manufacturer-name"}]}


def test_code_reference_to_a_contained_device_matches_its_type(policies):
    order = device_request(codeReference={"reference": "#anodyne"}, contained=[DEVICE])
    match = matched(order, policies)
    assert match.basis == "code" and match.code.code == "E0221"
    assert match.where == "the referenced Device anodyne (type)"


@pytest.mark.parametrize("reference", ["Device/anodyne", "https://ehr.example.org/fhir/Device/anodyne",
                                       "Device/anodyne/_history/2"])
def test_code_reference_resolves_devices_from_draft_orders_or_prefetch(policies, reference):
    order = device_request(codeReference={"reference": reference})
    assert matched(order, policies) is None  # nothing to resolve it against
    search = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": DEVICE}]}
    for source in ([DEVICE], [search], [None, {"resourceType": "Patient", "id": "x"}, DEVICE]):
        assert matched(order, policies, device_index(source)).code.code == "E0221"


def test_device_name_is_matched_as_text(policies):
    device = {"resourceType": "Device", "id": "d2", "deviceName": [{"name": "Anodyne Home Unit"}]}
    match = matched(device_request(codeReference={"reference": "Device/d2"}), policies, device_index([device]))
    assert match.basis == "text" and match.term == "Anodyne" and match.where == "the referenced Device d2 (deviceName)"


def test_code_reference_display_is_matched_as_text(policies):
    order = device_request(codeReference={"reference": "Device/unknown", "display": "MIRE therapy device"})
    assert matched(order, policies).term == "MIRE"


def test_an_acronym_matches_only_in_capitals(policies):
    assert matched(device_request({"text": "mire therapy unit"}), policies) is None
    assert matched(device_request({"text": "MIRE therapy unit"}), policies).term == "MIRE"


def test_unresolvable_or_malformed_references_do_not_fail(policies):
    for reference in ({"reference": "#missing"}, {"reference": 7}, {"identifier": {"value": "x"}}, "Device/x"):
        assert matched(device_request(codeReference=reference), policies) is None


# ------------------------------------------------------------------------------------------------- text matching

@pytest.mark.parametrize("phrase", [
    "Anodyne Therapy System", "infrared therapy to both feet", "Infra-red therapy", "INFRARED THERAPY",
    "monochromatic infrared energy (MIRE)", "MIRE", "near-infrared light therapy", "Near infrared pad",
    "infrared heating pad", "Photo energy therapy", "superluminous diode array",
])
def test_strong_descriptions_match_text(policies, phrase):
    match = matched(device_request(text(phrase)), policies)
    assert match.basis == "text" and match.text == phrase and match.strength == "strong" and not match.weak
    assert "not by a billing code" in match.describe()


@pytest.mark.parametrize("phrase", ["infra red heat therapy", "IR light treatment", "Red light therapy",
                                    "Photobiomodulation", "Near infrared light, 850 nm", "infrared energy unit"])
def test_weak_descriptions_match_as_weak(policies, phrase):
    match = matched(device_request(text(phrase)), policies)
    assert match.basis == "text" and match.weak and "may name this policy's devices or another item" in match.describe()


def any_term(policy, phrase):
    return any(pattern and pattern.search(phrase) for pattern in (policy.strong, policy.weak))


def test_text_is_searched_in_coding_display_too(policies):
    match = matched(service_request(coded(SNOMED, "1234567", "Monochromatic infrared energy therapy")), policies)
    assert match.basis == "text" and match.where == "ServiceRequest.code"


@pytest.mark.parametrize("phrase", ["admired", "mirepoix", "infrared coagulation of hemorrhoids", "Thermal pad",
                                    "Hot pack", "Admire walker", "mire", "Infrared", "infra red",
                                    "Infrared coagulator treatment of internal hemorrhoids", "Infrared imaging camera"])
def test_words_that_merely_contain_or_resemble_a_term_do_not_match(policies, phrase):
    assert matched(device_request(text(phrase)), policies) is None


@pytest.mark.parametrize("phrase", [
    "Infrared light thermometer, non-contact", "Near-infrared thermography of both feet",
    "thermographic imaging with infrared light", "Cerebral oximetry by near-infrared spectroscopy (NIRS)",
    "NIRS monitoring, near infrared", "IR spectroscopy with IR light", "Infrared vein finder (near-infrared light)",
    "Near-infrared vein viewer", "Infrared heat lamp", "Far infrared heat blanket", "Infrared sauna, infrared heat",
    "Low-level laser, near infrared 808 nm", "Cold laser, infrared light therapy", "INFRARED HEAT LAMP",
    "Infrared light therapy by laser",
    "Infrared therapy in a sauna", "infrared light therapy lamp",
])
def test_must_not_match_terms_win_over_vocabulary(policies, phrase):
    assert any_term(policies[0], phrase)  # the phrase has a vocabulary term: the must-not term is what stops it
    assert matched(device_request(text(phrase)), policies) is None


def test_must_not_match_anywhere_in_the_order_stops_the_text_match(policies):
    concept = {"coding": [{"system": SNOMED, "code": "1234567", "display": "Infrared thermometer"}],
               "text": "Infrared light device"}
    assert matched(device_request(concept), policies) is None


@pytest.mark.parametrize(("system", "code", "display"), [
    (HCPCS_URIS[1], "E0200", "Infrared heat element, without stand (table model)"),
    (HCPCS_URIS[1], "E0205", "With stand, infrared heat"),
    (HCPCS_URIS[0], "E0210", "Electric heat pad, standard (infrared heat)"),
    (HCPCS_URIS[0], "E0249", "Pad for water circulating heat unit, infrared heating pad style"),
    (None, "E0215", "Electric heat pad, moist, infrared heat"),
    (CPT_URIS[0], "97024", "Diathermy with infrared heat"),
    (CPT_URIS[0], "97028", "Ultraviolet and infrared light"),
    (HCPCS_URIS[3], "S8948", "Near infrared light, each 15 minutes"),
    (CPT_URIS[0], "0552T", "Infrared light therapy, dynamic photonic"),
])
def test_codes_of_other_items_never_fire_even_when_their_text_mentions_infrared(policies, system, code, display):
    assert any_term(policies[0], display) and not policies[0].must_not_match.search(display)
    assert matched(service_request(coded(system, code, display)), policies) is None


@pytest.mark.parametrize("resource_type", ["MedicationRequest", "NutritionOrder", "CommunicationRequest"])
def test_orders_the_policy_does_not_apply_to_never_fire(policies, resource_type):
    resource = {"resourceType": resource_type, "id": "x", "status": "draft", "intent": "order",
                "medicationCodeableConcept": text("Anodyne infrared therapy"), "code": coded(None, "E0221"),
                "category": [text("MIRE")]}
    assert matched(parse_draft_order(resource), policies) is None


def test_order_without_code_or_text_does_not_match(policies):
    assert matched(device_request(), policies) is None
    assert matched(service_request({"coding": [{}]}), policies) is None


# ----------------------------------------------------------------------------------------------------- decisions

def test_decision_carries_policy_match_outcome_and_references(policies):
    facts = MemberFacts(coverages=(CoverageFacts("Coverage/c1", payer="Blue Cross and Blue Shield of Texas",
                                      line_of_business="commercial"),),
                        unavailable=("Active conditions (the FHIR server did not answer)",))
    decision = decide_order(device_request(coded(HCPCS_URIS[0], "E0221")), facts, policies, on=date(2026, 3, 1))
    assert decision.policy_id == "DME101.045" and decision.policy_version == "2025-10-01"
    assert decision.outcome is Outcome.NOT_COVERED and decision.indicator == "warning"
    assert decision.verdict == "not covered: not medically necessary"
    assert "DME101.045" in decision.reason and "NCD 270.6" in decision.reason
    assert decision.coverage.reference == "Coverage/c1" and decision.decided_on == date(2026, 3, 1)
    assert [u.what for u in decision.unknowns] == ["Active conditions (the FHIR server did not answer)"]
    assert any("ncd.aspx?NCDId=315" in str(ref.url) for ref in decision.references)
    assert decision.item == "Infrared heating pad system (E0221)"


def test_each_decision_has_its_own_assertion_id(policies):
    order = device_request(coded(HCPCS_URIS[0], "E0221"))
    ids = {decide_order(order, MemberFacts(), policies).assertion_id for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 36 for i in ids)


def test_no_policy_no_decision(policies):
    assert decide_order(device_request(coded(HCPCS_URIS[1], "E0431")), MemberFacts(), policies) is None
    assert decide_order(device_request(coded(HCPCS_URIS[0], "E0221")), MemberFacts(), ()) is None
