"""Answers no firmer than their sources: matching by description, lines of business, Medicare beyond the NCD, the
NCD's indications, orders not being placed, modifiers and short descriptors. Through the engine and over HTTP."""

import logging
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from cds.config import EXAMPLE_PLAN_DIRECTORY
from cds.fhir import parse_draft_order
from cds.policy import Outcome, load_policies
from cds.policy.facts import ICD10CM, CoverageFacts, Diagnosis, MemberFacts
from cds.render.coverage import coverage_information
from tests.helpers import decide_order, load

POLICY_TEXT = Path(__file__).parent / "data/sources/policy-DME101.045.txt"  # the policy as published
ON = date(2026, 3, 10)
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
COMMERCIAL = CoverageFacts("Coverage/c", line_of_business="commercial", situs_state="TX")


@pytest.fixture(scope="module")
def policies():
    return load_policies()


def device_request(concept, status="draft"):
    return parse_draft_order({"resourceType": "DeviceRequest", "id": "dr-1", "status": status,
                              "intent": "original-order", "codeCodeableConcept": concept,
                              "subject": {"reference": "Patient/p"}, "authoredOn": ON.isoformat()})


def decided(policies, concept, coverage=COMMERCIAL, diagnoses=()):
    facts = MemberFacts(state="TX", coverages=(coverage,) if coverage else (), diagnoses=tuple(
        Diagnosis(ICD10CM, code, None, "Condition/x") for code in diagnoses))
    return decide_order(device_request(concept), facts, policies, on=ON)


# ------------------------------------------------------------------------------------- words of the policy itself

def _normal(text: str) -> str:
    return " ".join(text.replace("**", "").split())


def test_every_quoted_passage_of_the_policy_file_is_word_for_word_in_the_policy(policies):
    source = _normal(POLICY_TEXT.read_text())
    spec = policies[0].spec
    for quoted in (spec.coverage_statement, spec.basis, spec.plan_governs, spec.text.device_definition,
                   spec.national_coverage.discretion):
        assert _normal(quoted) in source, quoted
    for mandate in policies[0].mandates:  # the Act in the words the policy's Legislative Mandates section quotes
        assert mandate.spec.quoted_from.endswith("Legislative Mandates")
        assert f"Illinois Public Act 103-0458 [Insurance Code 215 ILCS 5/356z.61] (HB3809 Impaired Children) states " \
               f"{_normal(mandate.spec.quote)}" in source


def test_cpt_codes_are_shown_with_short_descriptors_only(policies):
    descriptors = {code.code: code.descriptor for code in policies[0].spec.codes}
    assert descriptors["97026"] == "Infrared therapy"
    card_text = str(decided(policies, {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97026"}]}))
    assert "Application of a modality" not in card_text


# ---------------------------------------------------------------------------------------- matching by description

@pytest.mark.parametrize("phrase", [
    "Infrared coagulator treatment of internal hemorrhoids", "IRC of grade II hemorrhoids, infrared light",
    "Infrared imaging camera", "Infrared thermal imaging of the feet", "Infrared sauna, home",
    "Far-infrared therapy blanket", "Infrared laser therapy, 904 nm", "Infrared light therapy lamp",
    "Near-infrared fluorescence imaging", "Admire walker, folding", "Infrared ear thermometer",
    "Near-infrared spectroscopy (NIRS) monitoring", "Infrared", "infra red", "mire boots",
])
def test_other_uses_of_infrared_and_look_alikes_get_no_decision(policies, phrase):
    assert decided(policies, {"text": phrase}) is None


@pytest.mark.parametrize("phrase", ["MIRE therapy, home", "Anodyne therapy system", "Infrared heating pad",
                                    "Infra-red therapy to both feet", "monochromatic infrared energy"])
def test_a_strong_description_decides_and_says_it_names_the_device(policies, phrase):
    decision = decided(policies, {"text": phrase})
    assert decision.outcome is Outcome.NOT_COVERED and decision.match.strength == "strong"
    assert "a description the policy file lists as naming this policy's devices" in decision.match.describe()


@pytest.mark.parametrize("phrase", ["Infrared light unit", "Near-infrared light, 850 nm", "Infrared heat wrap",
                                    "Photobiomodulation pad", "Red light therapy panel"])
def test_a_weak_description_is_conditional_on_the_billing_code(policies, phrase):
    decision = decided(policies, {"text": phrase})
    assert decision.outcome is Outcome.CONDITIONAL
    assert decision.verdict == "not medically necessary if an infrared therapy device"
    assert decision.reason.startswith(f'Not known: whether the order, described as "{phrase}"')
    (unknown,) = decision.unknowns
    assert unknown.needs == "detail-code" and "CPT 97026, HCPCS E0221 or HCPCS A4639" in unknown.how_to_resolve


def test_crd_2_2_asks_for_the_billing_code_with_detail_code_and_2_0_safe_answers_oth(policies):
    decision = decided(policies, {"text": "Infrared light unit"})
    def needed(version):
        return [p["valueCode"] for p in coverage_information(decision, True, version=version)["extension"]
                if p["url"] == "info-needed"]
    assert needed(None) == ["OTH"] and needed((2, 1)) == ["OTH"]
    assert needed((2, 2)) == ["detail-code"]


def test_a_strong_description_wins_over_a_weak_one_in_another_element(policies):
    concept = {"text": "Infrared light unit", "coding": [{"system": "http://snomed.info/sct", "code": "1",
                                                          "display": "Anodyne therapy"}]}
    assert decided(policies, concept).outcome is Outcome.NOT_COVERED


# ---------------------------------------------------------------------------------------------------- codes

@pytest.mark.parametrize(("code", "modifiers"), [
    ("E0221-RR", ("RR",)), ("E0221 NU", ("NU",)), ("e0221rr", ("RR",)), ("E0221-KX-RR", ("KX", "RR")),
    ("E0221:NU", ("NU",)), ("E0221NURRKXGP", ("NU", "RR", "KX", "GP")), ("E0221", ()),
])
def test_a_code_with_modifiers_matches_and_names_them(policies, code, modifiers):
    decision = decided(policies, {"coding": [{"system": HCPCS, "code": code}]})
    assert decision.match.code.code == "E0221" and decision.match.modifiers == modifiers
    said = f" with modifier {', '.join(modifiers)}" if modifiers else ""
    assert decision.match.describe() == f"billing code HCPCS E0221 (Infrared heating pad system){said} in " \
                                        "DeviceRequest.codeCodeableConcept."


def test_an_excluded_code_with_a_modifier_still_stops_a_text_match(policies):
    concept = {"coding": [{"system": HCPCS, "code": "E0215-RR"}], "text": "Infrared heating pad"}
    assert decided(policies, concept) is None


@pytest.mark.parametrize("code", ["E022", "E02211", "E0221-R"])
def test_codes_that_are_not_a_code_and_modifiers_do_not_match(policies, code):
    assert decided(policies, {"coding": [{"system": HCPCS, "code": code}]}) is None


# ------------------------------------------------------------------------------------------- lines of business

@pytest.mark.parametrize(("line", "rules"), [
    ("medicaid", "the state Medicaid program's coverage rules"),
    ("other", "the coverage rules of the member's program (for example FEP or TRICARE)"),
])
def test_a_line_the_policy_does_not_govern_says_whose_rules_do_and_decides_nothing(policies, line, rules):
    decision = decided(policies, {"coding": [{"system": HCPCS, "code": "E0221"}]},
                       CoverageFacts("Coverage/c", line_of_business=line))
    assert decision.outcome is Outcome.CONDITIONAL and decision.verdict.startswith("not decided here")
    assert f"for which {rules} govern" in decision.reason
    assert "not medically necessary" not in decision.reason.lower()
    assert decision.unknowns[0].how_to_resolve == f"verify coverage under {rules}"


LINE_UNKNOWN = CoverageFacts("Coverage/c", situs_state="TX", unknown_why="the payer is not in the plan directory")


@pytest.mark.parametrize("diagnoses", [(), ("E11.42",), ("M17.11",)])
def test_an_unknown_line_of_business_is_conditional_on_the_plan_and_says_whose_rules_govern_the_others(
        policies, diagnoses):
    decision = decided(policies, {"coding": [{"system": HCPCS, "code": "E0221"}]}, LINE_UNKNOWN, diagnoses)
    assert (decision.outcome, decision.indicator) == (Outcome.CONDITIONAL, "warning")
    assert decision.verdict == "not covered: not medically necessary if a commercial plan"
    assert decision.reason == (
        "Not known: the plan's line of business (the payer is not in the plan directory). Medical policy DME101.045 "
        '"Infrared Therapy Devices" governs commercial plans; if the plan is one: '
        + policies[0].spec.decision.reason)
    assert [(u.what, u.how_to_resolve, u.needs) for u in decision.unknowns] == [
        ("the plan's line of business (commercial, Medicare or Medicaid) is not known (the payer is not in the plan "
         "directory)", "verify the member's plan with the payer", "OTH")]
    line = next(p for p in decision.rationale if p.startswith("**Line of business:**"))
    for whose in ("for a Medicare plan, CMS NCD 270.6 decides the indications it names",
                  "for a Medicaid plan, the state Medicaid program's coverage rules govern",
                  "for another plan, the coverage rules of the member's program (for example FEP or TRICARE) govern"):
        assert whose in line
    for version in (None, (2, 0), (2, 2)):
        parts = coverage_information(decision, True, version=version)["extension"]
        assert [(p["url"], p["valueCode"]) for p in parts if "valueCode" in p] == [
            ("covered", "conditional"), ("pa-needed", "conditional"), ("info-needed", "OTH")]


def test_an_unknown_line_under_a_policy_of_two_lines_is_conditional_on_either(policies):
    spec = policies[0].spec.model_copy(update={"lines_of_business": ["commercial", "medicaid"], "governed_elsewhere": {
        line: rules for line, rules in policies[0].spec.governed_elsewhere.items() if line != "medicaid"}})
    e0221 = {"coding": [{"system": HCPCS, "code": "E0221"}]}
    decision = decided([replace(policies[0], spec=spec)], e0221, LINE_UNKNOWN)
    assert decision.verdict == "not covered: not medically necessary if a commercial or Medicaid plan"


def test_an_unknown_line_under_a_policy_without_an_ncd_names_no_medicare_rules(policies):
    spec = policies[0].spec.model_copy(update={"national_coverage": None})
    decision = decided([replace(policies[0], spec=spec)], {"coding": [{"system": HCPCS, "code": "E0221"}]},
                       LINE_UNKNOWN)
    line = next(p for p in decision.rationale if p.startswith("**Line of business:**"))
    assert "for a Medicaid plan, the state Medicaid program's coverage rules govern" in line
    assert "Medicare plan" not in line and "NCD" not in line


def test_an_unknown_line_and_a_weak_description_ask_for_both_the_plan_and_the_billing_code(policies):
    decision = decided(policies, {"text": "Infrared light unit"}, LINE_UNKNOWN)
    assert decision.outcome is Outcome.CONDITIONAL
    assert [u.needs for u in decision.unknowns] == ["detail-code", "OTH"]
    parts = coverage_information(decision, True, version=(2, 2))["extension"]
    assert [p["valueCode"] for p in parts if p["url"] == "info-needed"] == ["OTH", "detail-code"]


def test_without_any_coverage_the_policy_is_stated_as_before(policies):
    decision = decided(policies, {"coding": [{"system": HCPCS, "code": "E0221"}]}, None)
    assert decision.outcome is Outcome.NOT_COVERED and decision.coverage is None
    assert not any(p.startswith("**Line of business:**") for p in decision.rationale)


@pytest.mark.parametrize(("coding", "why"), [
    ([{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PPO"}], None),  # only the product
    ([{"system": "https://nahdo.org/sopt", "code": "111"}], "contradictory"),  # the directory says commercial
])
def test_over_http_a_coverage_whose_line_is_not_known_gets_a_conditional_answer(make_app, coding, why):
    body = load("e0221-home-device.json")
    coverage = body["prefetch"]["coverage"]["entry"][0]["resource"]
    coverage["type"]["coding"] = coding
    if why is None:  # a payer the plan directory does not list
        coverage["payor"] = [{"reference": "Organization/org-regional", "display": "Regional Health Plan"}]
    client = make_app(plan_directory=EXAMPLE_PLAN_DIRECTORY).test_client()
    answer = client.post("/cds-services/order-sign-crd", json=body).get_json()
    (card,) = answer["cards"]
    assert card["summary"] == ("Infrared heating pad system (E0221) not covered: not medically necessary if a "
                               "commercial plan, policy DME101.045")
    assert card["source"]["topic"]["code"] == "coverage-info" and "**Line of business:** not known (" in card["detail"]
    assert why is None or why in card["detail"]
    assert "state-mandate" not in {reason["code"] for reason in card["overrideReasons"]}
    (action,) = answer["systemActions"]
    parts = {p["url"]: p for p in action["resource"]["extension"][-1]["extension"]}
    assert (parts["covered"]["valueCode"], parts["info-needed"]["valueCode"]) == ("conditional", "OTH")
    assert parts["reason"]["valueCodeableConcept"]["text"].startswith("Not known: the plan's line of business")


def test_the_policy_file_must_name_its_lines_of_business(tmp_path):
    text = (Path(__file__).parent / "data/policies/TST900.001.yaml").read_text()
    (tmp_path / "TST900.001.yaml").write_text(text.replace("lines_of_business: [commercial, medicaid]\n", ""))
    with pytest.raises(Exception, match="lines_of_business"):
        load_policies([tmp_path])


# ---------------------------------------------------------------------------------------- Medicare and the NCD

MEDICARE = CoverageFacts("Coverage/ma", line_of_business="medicare", product="PPO")


@pytest.mark.parametrize("code", ["M17.11", "M54.50", "E11.41", "E11.43", "E11.44", "E11.40", "G61.0", "G60.0",
                                  "S31.600A", "S01.511A",
                                  # into the retroperitoneum; the anus; deep or unspecified wound disruption; sepsis
                                  # and deep or organ space infections after a procedure
                                  "S31.001A", "S31.031A", "S31.831A", "T81.32XA", "T81.30XA", "T81.44XA", "T81.42XA",
                                  "T81.49XA"])
def test_uses_the_ncd_does_not_name_are_left_to_contractor_discretion(policies, code):
    decision = decided(policies, {"coding": [{"system": HCPCS, "code": "E0221"}]}, MEDICARE, [code])
    assert decision.outcome is Outcome.CONDITIONAL and decision.verdict == "use not addressed by Medicare NCD 270.6"
    assert "local Medicare contractor discretion may apply" in decision.rationale[0]
    assert "applies" not in decision.rationale[0].replace("may apply", "")


@pytest.mark.parametrize("code", ["E11.42", "E10.42", "G62.9", "G63", "L97.412", "L89.154", "S81.801A",
                                  "S31.000A", "S31.030A", "S31.811A", "T81.31XA", "T81.33XA", "T81.41XA"])
def test_the_ncd_decides_the_indications_it_names(policies, code):
    decision = decided(policies, {"coding": [{"system": HCPCS, "code": "E0221"}]}, MEDICARE, [code])
    assert decision.outcome is Outcome.NOT_COVERED and decision.verdict == "not covered under Medicare NCD 270.6"


def test_a_diagnosis_of_another_code_system_does_not_hide_a_named_indication_after_it(policies):
    facts = MemberFacts(state="TX", coverages=(MEDICARE,), diagnoses=(
        Diagnosis("http://snomed.info/sct", "421895002", None, "Condition/s"),
        Diagnosis(ICD10CM, "E11.42", None, "Condition/x")))
    decision = decide_order(device_request({"coding": [{"system": HCPCS, "code": "E0221"}]}), facts, policies, on=ON)
    assert decision.outcome is Outcome.NOT_COVERED and decision.verdict == "not covered under Medicare NCD 270.6"


def test_a_medicare_order_without_any_diagnosis_asks_for_its_indication(policies):
    decision = decided(policies, {"coding": [{"system": HCPCS, "code": "E0221"}]}, MEDICARE)
    assert decision.outcome is Outcome.CONDITIONAL
    assert decision.unknowns[0].what.startswith("the order's indication: no ICD-10-CM diagnosis")


# -------------------------------------------------------------------------------- orders that are not being placed

@pytest.mark.parametrize("status", ["completed", "revoked", "entered-in-error", "on-hold", "unknown"])
def test_orders_not_being_placed_are_not_judged_and_the_log_says_why(client, caplog, status):
    body = load("e0221-home-device.json")
    body["context"]["draftOrders"]["entry"][0]["resource"]["status"] = status
    with caplog.at_level(logging.INFO, logger="cds.pipeline"):
        answer = client.post("/cds-services/order-sign-crd", json=body).get_json()
    assert answer["cards"] == [] and not answer.get("systemActions")
    (line,) = [r.getMessage() for r in caplog.records if "not judged" in r.getMessage()]
    assert line == f"order 1 (DeviceRequest) not judged: its status is {status}; only draft or active orders are " \
                   "being placed"


@pytest.mark.parametrize("status", ["draft", "active", "no-such-status"])  # one FHIR does not define: judged
def test_draft_and_active_orders_are_judged(client, status):
    body = load("e0221-home-device.json")
    body["context"]["draftOrders"]["entry"][0]["resource"]["status"] = status
    assert len(client.post("/cds-services/order-sign-crd", json=body).get_json()["cards"]) == 1


# ----------------------------------------------------------------------------------------------- override reasons

def test_the_state_mandate_override_is_offered_only_where_a_mandate_may_apply(client):
    def reasons(name):
        card = client.post("/cds-services/order-sign-crd", json=load(name)).get_json()["cards"][0]
        return {reason["code"] for reason in card.get("overrideReasons", [])}
    assert "state-mandate" not in reasons("e0221-home-device.json")  # Texas: no mandate concerns the member
    assert "state-mandate" not in reasons("il-adult-cerebral-palsy.json")  # the card says it does not apply


# ------------------------------------------------------------------------------ unknown, whichever way it is missing

@pytest.mark.parametrize("conditions", ["absent", None, {"resourceType": "Bundle", "type": "searchset", "total": 0}])
def test_an_illinois_childs_diagnoses_missing_any_way_are_unknown_never_failed(make_app, conditions):
    body = load("il-child-cerebral-palsy-hmo.json")
    body["context"]["draftOrders"]["entry"][0]["resource"].pop("reasonCode")
    if conditions == "absent":
        del body["prefetch"]["conditions"]
    else:
        body["prefetch"]["conditions"] = conditions
    client = make_app(plan_directory=EXAMPLE_PLAN_DIRECTORY).test_client()
    answer = client.post("/cds-services/order-sign-crd", json=body).get_json()
    (card,) = answer["cards"]
    assert "does not apply" not in card["detail"] and "**Illinois mandate for children with impairments: may apply.**" \
        in card["detail"]
    parts = {p["url"]: p for p in answer["systemActions"][0]["resource"]["extension"][-1]["extension"]}
    assert (parts["covered"]["valueCode"], parts["info-needed"]["valueCode"]) == ("conditional", "OTH")
