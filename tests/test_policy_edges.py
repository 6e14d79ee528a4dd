"""Edges of matching and mandate dates that a weaker suite let through: each test fails if the rule it names
is changed (found by mutation testing: scripts/mutation)."""

from dataclasses import replace
from datetime import date

import pytest

from cds.policy import Outcome, load_policies, match_order
from cds.policy.codes import code_in
from cds.policy.engine import _article, compile_policy
from cds.policy.facts import ICD10CM, CoverageFacts, Diagnosis, MemberFacts
from cds.policy.orders import device_index, read_order
from tests.helpers import DATA, decide_order, device_request, service_request

HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CPT = "http://www.ama-assn.org/go/cpt"
BILLING_OPTIONS = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-billing-options"


@pytest.fixture(scope="module")
def policies():
    return load_policies()


@pytest.fixture(scope="module")
def infrared(policies):
    (dme,) = [p for p in policies if p.id == "DME101.045"]
    return dme


# ------------------------------------------------------------------------------------------------- codes

def test_a_code_system_uri_with_a_trailing_slash_is_the_same_system(policies):
    found = match_order(device_request({"coding": [{"system": HCPCS + "/", "code": "E0221"}]}), policies)
    assert found and found.match.basis == "code" and found.match.code.code == "E0221"


def test_a_code_system_uri_with_another_last_letter_is_another_system(policies):
    assert match_order(device_request({"coding": [{"system": HCPCS + "X", "code": "E0221"}]}), policies) is None


def test_without_match_code_without_system_a_bare_code_does_not_match(infrared):
    strict = compile_policy(infrared.spec.model_copy(update={"match_code_without_system": False}))
    bare = device_request({"coding": [{"code": "E0221"}]})
    assert match_order(bare, [strict]) is None
    assert match_order(bare, [infrared]).match.system_sent == ""


def test_a_bare_code_is_described_as_sent_with_no_code_system(infrared):
    described = match_order(device_request({"coding": [{"code": "E0221"}]}), [infrared]).match.describe()
    assert described == ("billing code HCPCS E0221 (Infrared heating pad system) with no code system in "
                         "DeviceRequest.codeCodeableConcept.")


def test_an_excluded_code_blocks_a_text_match_only_within_its_range(policies):
    heat_pad = {"coding": [{"system": HCPCS, "code": "E0215", "display": "Anodyne infrared therapy pad"}]}
    assert match_order(device_request(heat_pad), policies) is None  # E0200-E0249: a heat pad, whatever its text
    unrelated = {"coding": [{"system": HCPCS, "code": "E0250", "display": "Anodyne infrared therapy pad"}]}
    found = match_order(device_request(unrelated), policies)
    assert found and found.match.basis == "text"  # just outside the range: the description still counts


def test_an_excluded_code_of_another_system_does_not_block(policies):
    same_code_other_system = {"coding": [{"system": CPT, "code": "E0215", "display": "Anodyne therapy pad"}]}
    found = match_order(device_request(same_code_other_system), policies)
    assert found and found.match.basis == "text"


def test_a_text_match_reports_the_words_that_matched_and_where(policies):
    found = match_order(device_request({"text": "Home monochromatic infrared energy unit"}), policies)
    # The longest term that matches, not a shorter one inside it ("infrared energy" or "MIRE" alone).
    assert (found.match.term, found.match.where) == ("monochromatic infrared energy",
                                                     "DeviceRequest.codeCodeableConcept")
    assert found.match.text == "Home monochromatic infrared energy unit"


def test_a_policy_without_a_text_section_matches_by_code_only(infrared):
    codes_only = compile_policy(infrared.spec.model_copy(update={"text": None}))
    assert match_order(device_request({"text": "Anodyne therapy system"}), [codes_only]) is None
    assert match_order(device_request({"coding": [{"system": HCPCS, "code": "E0221"}]}), [codes_only])


def test_only_the_billing_options_extension_is_read_as_billing_options(policies):
    def concept(url):
        return {"text": "Physical medicine visit", "extension": [
            {"url": url, "valueCodeableConcept": {"coding": [{"system": CPT, "code": "97026"}]}}]}

    assert match_order(service_request(concept(BILLING_OPTIONS)), policies).match.code.code == "97026"
    assert match_order(service_request(concept("http://example.org/other-extension")), policies) is None


def test_what_is_not_a_codeable_concept_is_passed_over_and_what_follows_is_read():
    e0221 = {"coding": [{"system": HCPCS, "code": "E0221"}]}
    sloppy = replace(service_request(None), resource={**service_request(None).resource, "code": ["E0221", e0221]})
    assert [c.code for c in read_order(sloppy, {}).codings] == ["E0221"]
    not_a_concept = service_request({"extension": [{"url": BILLING_OPTIONS, "valueCodeableConcept": "E0221"}]})
    assert read_order(not_a_concept, {}).codings == ()


def test_a_billing_option_display_is_read_as_text(policies):
    order = service_request({"extension": [{"url": BILLING_OPTIONS, "valueCodeableConcept": {"coding": [
        {"system": "http://example.org/local", "code": "X1", "display": "Anodyne therapy session"}]}}]})
    content = read_order(order, {})
    assert [d.text for d in content.texts] == ["Anodyne therapy session"]
    assert content.codings[0].where == "a billing option of ServiceRequest.code"


def test_a_code_reference_to_something_other_than_a_device_is_not_followed(policies):
    procedure = {"resourceType": "Procedure", "id": "anodyne", "code": {"coding": [{"system": HCPCS, "code": "E0221"}]}}
    order = device_request(codeReference={"reference": "Procedure/anodyne"})
    assert match_order(order, policies, {"Procedure/anodyne": procedure}) is None
    contained = device_request(codeReference={"reference": "#p"}, contained=[{**procedure, "id": "p"}])
    assert match_order(contained, policies) is None


def test_a_request_an_order_is_based_on_may_name_its_device_by_reference():
    device = {"resourceType": "Device", "id": "d1", "type": {"coding": [{"system": HCPCS, "code": "E0221"}]}}
    based = device_request(codeReference={"reference": "Device/d1", "display": "Anodyne therapy system"})
    order = replace(service_request({"text": "Home visit"}), based_on=(based,))
    content = read_order(order, {"Device/d1": device})
    prefix = f"{based.reference}, which ServiceRequest is based on: "
    assert [(c.system, c.code, c.where) for c in content.codings] == [
        ("HCPCS", "E0221", prefix + "the referenced Device d1 (type)")]
    assert [(t.text, t.where) for t in content.texts] == [
        ("Home visit", "ServiceRequest.code"),
        ("Anodyne therapy system", prefix + "DeviceRequest.codeReference.display")]


def test_only_a_device_request_names_its_device_by_code_reference():
    device = {"resourceType": "Device", "id": "d1", "type": {"coding": [{"system": HCPCS, "code": "E0221"}]}}
    order = service_request({"text": "Home visit"})
    order = replace(order, resource={**order.resource, "codeReference": {"reference": "Device/d1"}})
    assert read_order(order, {"Device/d1": device}).codings == ()


def test_the_devices_handed_to_decide_resolve_a_code_reference(policies):
    device = {"resourceType": "Device", "id": "d1", "type": {"coding": [{"system": HCPCS, "code": "E0221"}]}}
    order = device_request(codeReference={"reference": "Device/d1"})
    assert decide_order(order, MemberFacts(), policies) is None
    decided = decide_order(order, MemberFacts(), policies, devices={"Device/d1": device}, on=date(2026, 5, 1))
    assert decided.match.code.code == "E0221" and decided.decided_on == date(2026, 5, 1)


# ------------------------------------------------------------------------------------- mandate plan dates

CP = Diagnosis(ICD10CM, "G80.1", "Spastic diplegic cerebral palsy", "Condition/cp")
IL_HMO = CoverageFacts("Coverage/c1", payer="Blue Cross and Blue Shield of Illinois", line_of_business="commercial",
                       product="HMO", funding="fully-insured", situs_state="IL", plan_start=date(2025, 7, 1))
CHILD = MemberFacts(birth_date=date(2017, 2, 9), state="IL", diagnoses=(CP,), coverages=(IL_HMO,))


def plan_date_status(policies, plan_start, day):
    (mandate,) = policies[0].mandates
    facts = replace(CHILD, coverages=(replace(IL_HMO, plan_start=plan_start),))
    (finding,) = [f for f in mandate.evaluate(facts, day).findings if "plan" in f.text and "began" in f.text]
    return finding.status


@pytest.mark.parametrize(("plan_start", "day", "status"), [
    (date(2025, 1, 1), date(2025, 6, 1), "met"),  # exactly on plans_on_or_after
    (date(2024, 12, 31), date(2025, 6, 1), "failed"),  # the day before, not yet renewed
    (date(2024, 7, 1), date(2025, 6, 30), "failed"),  # the day before its anniversary
    (date(2024, 7, 1), date(2025, 7, 1), "unknown"),  # on the anniversary it may have renewed: unknown
    (date(2024, 2, 29), date(2025, 2, 28), "failed"),  # a plan begun on 29 February renews on 1 March
    (date(2024, 2, 29), date(2025, 3, 1), "unknown"),
])
def test_plan_dates_on_the_mandate_date_and_the_renewal_anniversary(policies, plan_start, day, status):
    assert plan_date_status(policies, plan_start, day) == status


def test_an_unknown_plan_date_makes_the_mandate_conditional_not_a_denial(policies):
    order = device_request({"coding": [{"system": HCPCS, "code": "E0221"}]}, authoredOn="2026-03-10")
    facts = replace(CHILD, coverages=(replace(IL_HMO, plan_start=None),))
    assert decide_order(order, facts, policies, on=date(2026, 3, 10)).outcome is Outcome.CONDITIONAL


def test_the_test_policy_is_loaded_from_an_extra_directory():
    ids = [p.id for p in load_policies([DATA / "policies"])]
    assert ids == ["DME101.045", "TST900.001"]


# ------------------------------------------------------------------------------------ codes, text, devices

@pytest.mark.parametrize(("code", "ranges", "within"), [
    ("E0200", ["E0200-E0249"], True), ("E0249", ["E0200-E0249"], True), ("E0250", ["E0200-E0249"], False),
    ("E019", ["E0200-E0249"], False), ("E0221", ["E0221"], True), ("E0222", ["E0221"], False),
    ("E02211", ["E0221"], False), ("A4639", ["E0200-E0249", "A4639"], True),
])
def test_a_code_is_in_a_list_of_codes_and_ranges_only_on_or_between_its_ends(code, ranges, within):
    assert code_in(code, ranges) is within


def test_a_policy_without_weak_descriptions_leaves_a_weak_phrase_unmatched(infrared):
    strong_only = compile_policy(infrared.spec.model_copy(
        update={"text": infrared.spec.text.model_copy(update={"weak": [], "weak_verdict": ""})}))
    assert match_order(device_request({"text": "Infrared light unit"}), [strong_only]) is None
    assert match_order(device_request({"text": "Anodyne therapy system"}), [strong_only]).match.strength == "strong"


def test_only_devices_are_indexed_by_id_from_resources_and_search_bundles():
    device = {"resourceType": "Device", "id": "d1"}
    bundled = {"resourceType": "Device", "id": "d2"}
    procedure = {"resourceType": "Procedure", "id": "d3"}
    device_with_entry = {"resourceType": "Device", "id": "d4", "entry": [{"resource": {"resourceType": "Device",
                                                                                       "id": "d5"}}]}
    bundle = {"resourceType": "Bundle", "entry": [{"resource": bundled}, {"resource": procedure}, "not an entry"]}
    index = device_index([device, procedure, bundle, device_with_entry, {"resourceType": "Device"}, None])
    assert index == {"Device/d1": device, "Device/d2": bundled, "Device/d4": device_with_entry}


def test_a_contained_device_is_found_by_its_own_id(policies):
    heat_pad = {"resourceType": "Device", "id": "pad", "type": {"coding": [{"system": HCPCS, "code": "E0215"}]}}
    infrared_device = {"resourceType": "Device", "id": "ir", "type": {"coding": [{"system": HCPCS, "code": "E0221"}]}}
    other = {"resourceType": "Basic", "id": "ir", "code": {"coding": [{"system": HCPCS, "code": "E0221"}]}}
    order = device_request(codeReference={"reference": "#ir"}, contained=[heat_pad, other, infrared_device])
    found = match_order(order, policies)
    assert found.match.code.code == "E0221" and found.match.where == "the referenced Device ir (type)"
    assert match_order(device_request(codeReference={"reference": "#pad"}, contained=[heat_pad, infrared_device]),
                       policies) is None  # the heat pad's code, not the other device's


def test_a_code_reference_to_another_type_is_not_followed_even_if_handed_in_as_a_device(policies):
    definition = {"resourceType": "DeviceDefinition", "id": "ir",
                  "type": {"coding": [{"system": HCPCS, "code": "E0221"}]}}
    order = device_request(codeReference={"reference": "DeviceDefinition/ir"})
    assert match_order(order, policies, {"DeviceDefinition/ir": definition}) is None
    assert match_order(device_request(codeReference={"reference": "urn:uuid:1"}), policies, {"": definition}) is None


# --------------------------------------------------------------------------------------- decisions' texts

E0221 = {"coding": [{"system": HCPCS, "code": "E0221"}]}


def test_medicare_under_a_policy_without_an_ncd_is_left_to_the_members_program(infrared):
    no_ncd = compile_policy(infrared.spec.model_copy(update={"national_coverage": None}))
    facts = MemberFacts(coverages=(CoverageFacts("Coverage/ma", line_of_business="medicare"),))
    got = decide_order(device_request(E0221), facts, [no_ncd], on=date(2026, 3, 10))
    assert got.outcome is Outcome.CONDITIONAL and got.verdict == "not decided here: Medicare plan"
    assert "the plan is a Medicare plan, for which the coverage rules of the member's program govern" in got.reason
    assert got.unknowns[0].how_to_resolve == "verify coverage under the coverage rules of the member's program"


@pytest.mark.parametrize(("why", "said"), [
    (None, "not known (neither the Coverage nor the plan directory says)"),
    ("the plan is not in the plan directory", "not known (the plan is not in the plan directory)"),
])
def test_a_line_of_business_not_known_says_why(policies, why, said):
    facts = MemberFacts(coverages=(CoverageFacts("Coverage/c", unknown_why=why),))
    got = decide_order(device_request(E0221), facts, policies, on=date(2026, 3, 10))
    assert said in "\n".join(got.rationale)


def test_a_weak_description_keeps_a_mandate_exception_conditional_on_the_billing_code(policies):
    covered = decide_order(device_request(E0221, authoredOn="2026-03-10"), CHILD, policies, on=date(2026, 3, 10))
    assert (covered.outcome, covered.indicator) == (Outcome.COVERED_WITH_PA, "info")
    weak = decide_order(device_request({"text": "Infrared light unit"}, authoredOn="2026-03-10"), CHILD, policies,
                        on=date(2026, 3, 10))
    assert (weak.outcome, weak.indicator) == (Outcome.CONDITIONAL, "warning")
    assert weak.reason.startswith('Not known: whether the order, described as "Infrared light unit", is an item of '
                                  'medical policy DME101.045 "Infrared Therapy Devices"')
    assert weak.reason.endswith(f"(its billing code would say). If it is: {covered.reason}")


def test_a_line_of_business_takes_the_article_it_is_spoken_with():
    assert (_article("Medicare"), _article("commercial"), _article("unknown"), _article("Other")) == \
        ("a", "a", "an", "an")
