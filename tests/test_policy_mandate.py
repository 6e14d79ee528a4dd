"""Decisions that depend on the member, through the pure engine: the Illinois children's exception condition by
condition (met, failed, unknown), age on the order's date, and the Medicare basis with its indications named."""

import dataclasses
import re
from datetime import date
from pathlib import Path

import pytest

from cds.fhir import parse_draft_order
from cds.policy import Outcome, load_policies
from cds.policy.diagnoses import DiagnosisGroups, DiagnosisMatch
from cds.policy.engine import compile_policy
from cds.policy.facts import ICD10CM, SNOMED, CoverageFacts, Diagnosis, MemberFacts
from cds.policy.mandate import CompiledMandate
from cds.policy.model import DiagnosisGroup
from tests.helpers import decide_order

ON = date(2026, 3, 10)
ACT = "Illinois Public Act 103-0458 (215 ILCS 5/356z.61 as cited by HCSC)"
CP = Diagnosis(ICD10CM, "G80.1", "Spastic diplegic cerebral palsy", "Condition/cp")
IL_HMO = CoverageFacts("Coverage/c1", payer="Blue Cross and Blue Shield of Illinois", line_of_business="commercial",
                       product="HMO", funding="fully-insured", situs_state="IL", plan_start=date(2025, 7, 1))
CHILD = MemberFacts(birth_date=date(2017, 2, 9), state="IL", diagnoses=(CP,), coverages=(IL_HMO,))


@pytest.fixture(scope="module")
def policies():
    return load_policies()


def order(authored="2026-03-10", **fields):
    return parse_draft_order({
        "resourceType": "DeviceRequest", "id": "dr-1", "status": "draft", "intent": "original-order",
        "codeCodeableConcept": {"coding": [{"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                                            "code": "E0221"}]},
        "subject": {"reference": "Patient/p"}, "authoredOn": authored, **fields})


def member(facts=CHILD, **coverage_changes):
    return dataclasses.replace(facts, coverages=(dataclasses.replace(facts.coverage, **coverage_changes),))


def decision(policies, facts=CHILD, **order_fields):
    return decide_order(order(**order_fields), facts, policies, on=ON)


def evaluation(policies, facts=CHILD, day=ON):
    (mandate,) = policies[0].mandates
    return mandate.evaluate(facts, day)


# ---------------------------------------------------------------------------------------- every condition met

def test_illinois_child_with_a_qualifying_diagnosis_on_a_fully_insured_hmo(policies):
    assert {f.status for f in evaluation(policies).findings} == {"met"}
    got = decision(policies)
    assert (got.outcome, got.indicator) == (Outcome.COVERED_WITH_PA, "info")
    assert got.verdict == "may be covered under an Illinois mandate, plan requires prior auth"
    assert got.reason.startswith(f"May be covered under {ACT}, which reaches children with low tone neuromuscular, "
                                 "neurological or cognitive impairment, as an exception to medical policy DME101.045")
    assert got.reason.endswith('as an exception to medical policy DME101.045 "Infrared Therapy Devices". Plan '
                               "requirement (the plan's utilization management, as this mandate file states it): "
                               "Prior authorization, with clinical documentation of the qualifying diagnosis.")
    (paragraph,) = got.rationale
    assert paragraph.startswith(f"**Illinois mandate for children with impairments: the order may be covered.** {ACT}")
    assert "- the patient is 9 on the order's date: a child by the plan's rule (under 19; the Act, as the policy " \
           "quotes it, gives no age for \"children\")\n" in paragraph
    assert f'{ACT}, as HCSC medical policy DME101.045, Legislative Mandates quotes it: "all group or individual ' \
        in paragraph
    assert '"\n\nEvery condition is met:\n- the plan is sitused in Illinois\n- ' in paragraph
    assert paragraph.endswith("Plan requirement (the plan's utilization management, as this mandate file states it): "
                              "Prior authorization, with clinical documentation of the qualifying diagnosis.")
    assert "- G80.1 Spastic diplegic cerebral palsy (an active condition) is a qualifying diagnosis " \
           "(neurological impairment, on the plan's diagnosis screen)" in paragraph
    assert got.unknowns == ()
    assert any("103-0458" in str(ref.url) for ref in got.references)


# ------------------------------------------------------------------------------------- each condition failing

FAILING = {
    "plan situs": (member(situs_state="TX"), "the plan is sitused in Texas, not Illinois"),
    "line of business": (member(line_of_business="medicaid"),
                         "the plan is Medicaid, and the mandate reaches commercial plans only"),
    "funding": (member(funding="self-funded"), "the plan is self-funded, and the mandate reaches fully insured "
                                               "plans only (self-funded employer plans fall under federal law"),
    "product": (member(product="EPO"), "the plan is an EPO, and the mandate reaches PPO, HMO or POS plans only"),
    # A plan year that began before the mandate's date and has not renewed by the order's date (03/10/2025).
    "plan year": (member(plan_start=date(2024, 7, 1)), "the plan year began 07/01/2024 and has not renewed by the "
                                                       "order's date; the mandate reaches plans issued or renewed on "
                                                       "or after 01/01/2025"),
    "age": (dataclasses.replace(CHILD, birth_date=date(2000, 3, 10)),
            "the patient is 26 on the order's date: by the plan's rule a patient of 26 or older is not a child"),
}


@pytest.mark.parametrize("condition", FAILING)
def test_each_condition_failing_alone_rules_the_exception_out_and_says_why(policies, condition):
    facts, text = FAILING[condition]
    day = date(2025, 3, 10) if condition == "plan year" else ON
    failed = evaluation(policies, facts, day).having("failed")
    assert len(failed) == 1 and failed[0].text.startswith(text), failed
    got = decide_order(order(authored=day.isoformat()), facts, policies, on=day)
    if condition == "line of business":  # a Medicaid plan: the policy does not govern it, nor decide
        assert got.outcome is Outcome.CONDITIONAL and got.verdict == "not decided here: Medicaid plan"
        assert text in got.rationale[-1]
        return
    assert (got.outcome, got.indicator) == (Outcome.NOT_COVERED, "warning")
    assert got.verdict == "not covered: not medically necessary"
    assert got.reason == policies[0].spec.decision.reason
    (paragraph,) = got.rationale
    assert paragraph.startswith(f"**Illinois mandate for children with impairments: does not apply** ({ACT}):\n- ")
    assert text in paragraph
    assert got.unknowns == ()


@pytest.mark.parametrize("code", ["Q87.11", "G80.1", "F84.0", "Q90.9", "G71.01", "P94.2"])
def test_each_group_of_the_screen_qualifies(policies, code):
    got = decision(policies, dataclasses.replace(CHILD, diagnoses=(Diagnosis(ICD10CM, code, None, "Condition/d"),)))
    assert got.outcome is Outcome.COVERED_WITH_PA


@pytest.mark.parametrize("diagnoses", [(), (Diagnosis(ICD10CM, "M17.11", None, "Condition/oa"),),
                                       (Diagnosis(ICD10CM, "Q87.19", None, "Condition/q"),)])  # not Prader-Willi
def test_no_qualifying_diagnosis_on_the_screen_is_unknown_never_failed(policies, diagnoses):
    got = decision(policies, dataclasses.replace(CHILD, diagnoses=diagnoses))
    assert got.outcome is Outcome.CONDITIONAL and got.mandate_may_apply
    assert "does not apply" not in "".join(got.rationale)
    (unknown,) = got.unknowns
    said = ("the plan's diagnosis screen found no qualifying diagnosis among the patient's recorded diagnoses "
            f"({diagnoses[0].code})" if diagnoses else "no diagnosis of the patient is recorded")
    assert unknown.what.startswith(said)
    assert unknown.what.endswith("what would qualify: a disease, syndrome or disorder that includes low tone "
                                 "neuromuscular, neurological or cognitive impairment")
    assert unknown.how_to_resolve == ("if the patient has a diagnosis with low tone neuromuscular, neurological or "
                                      "cognitive impairment, give it as the order's reason, coded in ICD-10-CM")


def test_two_conditions_not_known_are_both_named_in_the_reason(policies):
    facts = member(funding="unknown", product="unknown", unknown_why="the plan is not in the plan directory")
    first, second = (f.unknown for f in evaluation(policies, facts).having("unknown"))
    assert decision(policies, facts).reason.endswith(f"; not known: {first}; {second}.")


def test_a_failed_condition_outweighs_unknown_ones(policies):
    facts = member(funding="self-funded", product="unknown", plan_start=None)
    got = decision(policies, facts)
    assert got.outcome is Outcome.NOT_COVERED and got.unknowns == ()
    assert "the plan is self-funded" in got.rationale[0] and "product" not in got.rationale[0]


# ------------------------------------------------------------------------------------ each condition unknown

UNKNOWN = {
    "plan situs": (member(situs_state=None, unknown_why="the payer is not in the plan directory"),
                   "the plan's situs state (whose insurance law governs the plan) is not known (the payer is not in "
                   "the plan directory)", "verify with the payer in which state the member's plan is sitused"),
    "line of business": (member(line_of_business="unknown", unknown_why="neither the Coverage nor the plan "
                                                                        "directory says"),
                         "the plan's line of business (commercial, Medicare or Medicaid) is not known (neither the "
                         "Coverage nor the plan directory says)", "verify the member's plan with the payer"),
    "funding": (member(funding="unknown", unknown_why="the plan is not in the plan directory"),
                "plan funding (fully insured or self-funded) is not known (the plan is not in the plan directory)",
                "verify the member's plan with the payer"),
    "product": (member(product="unknown", unknown_why="no plan directory is configured"),
                "the plan's product (PPO, HMO or POS) is not known (no plan directory is configured)",
                "verify the member's plan with the payer"),
    "plan year": (member(plan_start=None), "the plan's issue or renewal date is not known (neither the Coverage nor "
                                           "the plan directory says)",
                  "verify the start of the member's current plan year with the payer"),
    "renewal": (member(plan_start=date(2024, 7, 1)),
                "the plan began 07/01/2024, before 01/01/2025, and whether it was renewed since is not known",
                "verify the start of the member's current plan year with the payer"),
    "age": (dataclasses.replace(CHILD, birth_date=None),
            "the patient's age on the order's date is not known (no full birth date)",
            "record the patient's birth date in the EHR"),
    "diagnosis, conditions not obtained": (
        dataclasses.replace(CHILD, diagnoses=(), unavailable_keys=frozenset({"conditions"})),
        "a qualifying diagnosis is not known: the patient's active conditions could not be obtained",
        "if the patient has a diagnosis with low tone neuromuscular, neurological or cognitive impairment, give it "
        "as the order's reason, coded in ICD-10-CM"),
    "diagnosis, SNOMED CT only": (
        dataclasses.replace(CHILD, diagnoses=(Diagnosis(SNOMED, "192965001", "Spastic cerebral palsy",
                                                        "Condition/s"),)),
        "a qualifying diagnosis is not known: some of the patient's diagnoses have no ICD-10-CM code to screen",
        "if the patient has a diagnosis with low tone neuromuscular, neurological or cognitive impairment, give it "
        "as the order's reason, coded in ICD-10-CM"),
}


@pytest.mark.parametrize("condition", UNKNOWN)
def test_each_condition_unknown_alone_makes_coverage_conditional_and_says_how_to_resolve_it(policies, condition):
    facts, what, how = UNKNOWN[condition]
    unknown = evaluation(policies, facts).having("unknown")
    assert [(f.text, f.how_to_resolve) for f in unknown] == [(what, how)]
    got = decision(policies, facts)
    assert (got.outcome, got.indicator) == (Outcome.CONDITIONAL, "warning")
    assert [(u.what, u.how_to_resolve) for u in got.unknowns] == [(what, how)]  # once, if the policy needs it too
    policy_reason = policies[0].spec.decision.reason
    if condition == "line of business":  # the policy's own position, too, holds only for commercial plans
        assert got.verdict == "not covered: not medically necessary if a commercial plan"
        policy_reason = (f"Not known: the plan's line of business ({facts.coverage.unknown_why}). Medical policy "
                         f'DME101.045 "Infrared Therapy Devices" governs commercial plans; if the plan is one: '
                         f"{policy_reason}")
    else:
        assert got.verdict == "not medically necessary unless an Illinois mandate applies"
    assert got.reason.startswith(policy_reason + f" {ACT} may require coverage for children")
    assert got.reason.endswith(f"; not known: {unknown[0].unknown}.")
    paragraph = got.rationale[-1]  # after, for an unknown line of business, the note that says so
    assert paragraph.startswith("**Illinois mandate for children with impairments: may apply.**")
    assert "Met:\n- " in paragraph
    assert "otherwise the coverage statement of medical policy DME101.045 stands." in paragraph


def test_an_illinois_child_without_coverage_data_gets_every_plan_fact_asked_for(policies):
    got = decision(policies, dataclasses.replace(CHILD, coverages=()))
    assert got.outcome is Outcome.CONDITIONAL and got.coverage is None
    assert len(got.unknowns) == 5
    assert all("(no coverage for the patient came with the request)" in u.what for u in got.unknowns)


def test_plan_facts_unknown_only_where_a_rule_needs_them_are_not_listed(policies):
    note = "Coverage/c1: funding, plan situs state unknown (no plan directory is configured)."
    texan = MemberFacts(birth_date=date(1958, 3, 14), state="TX", unavailable=(note, "Conditions could not be had."),
                        coverages=(CoverageFacts("Coverage/c1", line_of_business="commercial", product="PPO",
                                                 plan_start=date(2026, 1, 1),
                                                 unknown_why="no plan directory is configured"),))
    assert texan.coverage.unknown_note == note
    got = decision(policies, texan)
    assert got.outcome is Outcome.NOT_COVERED and got.rationale == ()
    assert [u.what for u in got.unknowns] == ["Conditions could not be had."]


# --------------------------------------------------------------------------------- who the mandate concerns

@pytest.mark.parametrize(("home", "situs", "concerned"), [
    ("IL", "IL", True), ("IL", "TX", True), ("WI", "IL", True), ("TX", "TX", False), ("TX", None, False),
    (None, None, False),
])
def test_the_mandate_speaks_when_the_member_lives_or_the_plan_is_sitused_in_illinois(policies, home, situs,
                                                                                      concerned):
    facts = dataclasses.replace(member(situs_state=situs), state=home)
    got = decision(policies, facts)
    assert any("Illinois" in paragraph for paragraph in got.rationale) == concerned
    if not concerned:
        assert got.outcome is Outcome.NOT_COVERED
        assert not any("103-0458" in str(ref.url) for ref in got.references)


# --------------------------------------------------------------------------------- age on the order's date

@pytest.mark.parametrize(("authored", "age", "outcome"), [
    ("2026-03-09", 18, Outcome.COVERED_WITH_PA),  # the day before the 19th birthday
    ("2026-03-10", 19, Outcome.CONDITIONAL),  # the 19th birthday: the Act as quoted gives no age, so verify
])
def test_age_counts_on_the_order_date_under_19(policies, authored, age, outcome):
    facts = dataclasses.replace(CHILD, birth_date=date(2007, 3, 10))
    got = decide_order(order(authored=authored), facts, policies, on=date(2026, 1, 5))  # decided well before either
    assert got.outcome is outcome
    assert f"the patient is {age} on the order's date" in (got.rationale[0] + "".join(u.what for u in got.unknowns))


def test_the_date_of_service_beats_the_writing_date(policies):
    facts = dataclasses.replace(CHILD, birth_date=date(2007, 3, 10))
    got = decide_order(order(authored="2026-03-01", occurrenceDateTime="2026-03-12"), facts, policies, on=ON)
    assert got.outcome is Outcome.CONDITIONAL and "the patient is 19" in got.unknowns[0].what


def test_the_child_age_limit_is_a_setting():
    under_18 = load_policies(child_age_limit=18)
    facts = dataclasses.replace(CHILD, birth_date=date(2008, 3, 9))  # 18 on the order's date
    got = decide_order(order(), facts, under_18, on=ON)
    assert got.outcome is Outcome.CONDITIONAL
    assert got.unknowns[0].what == ("the patient is 18 on the order's date: the Act, as the policy quotes it, gives no "
                                    "age for \"children\", and the plan's rule counts patients under 18 as children")
    assert got.unknowns[0].how_to_resolve == "verify with the payer whether the mandate reaches a patient aged 18"
    assert decide_order(order(), facts, load_policies(child_age_limit=26), on=ON).outcome is Outcome.COVERED_WITH_PA


# ------------------------------------------------------------------------------------- Medicare and commercial

MEDICARE = CoverageFacts("Coverage/ma", payer="Blue Cross Medicare Advantage", line_of_business="medicare",
                         product="HMO", situs_state=None)


def medicare(*codes, state="TX"):
    return MemberFacts(birth_date=date(1953, 10, 4), state=state, coverages=(MEDICARE,),
                       diagnoses=tuple(Diagnosis(ICD10CM, code, f"display of {code}", "Condition/x") for code in codes))


@pytest.mark.parametrize(("code", "indication"), [
    ("E11.42", "diabetic peripheral sensory neuropathy"),
    ("E08.42", "diabetic peripheral sensory neuropathy"),
    ("G62.9", "non-diabetic peripheral sensory neuropathy"),
    ("G60.3", "non-diabetic peripheral sensory neuropathy"),
    ("L97.412", "ulcers of skin or subcutaneous tissue"),
    ("E11.621", "ulcers of skin or subcutaneous tissue"),
    ("L89.154", "ulcers of skin or subcutaneous tissue"),
    ("I83.013", "ulcers of skin or subcutaneous tissue"),
    ("S91.301A", "wounds of skin or subcutaneous tissue"),
])
def test_medicare_names_the_ncd_indication_and_the_code(policies, code, indication):
    got = decision(policies, medicare("M17.11", code))
    assert got.outcome is Outcome.NOT_COVERED and got.verdict == "not covered under Medicare NCD 270.6"
    assert "CMS NCD 270.6" in got.reason and "section 1862(a)(1)(A) of the Social Security Act" in got.reason
    assert got.reason.endswith(f"The order's indication, {indication}, is one of them.")
    assert got.rationale == (f"**Medicare:** CMS NCD 270.6 binds Medicare and Medicare Advantage plans. {code} "
                             f"display of {code} (an active condition) falls under {indication}, an indication the "
                             "NCD names as not covered.",)


def test_medicare_without_a_named_indication_is_not_decided_by_the_ncd(policies):
    got = decision(policies, medicare("M17.11", "E11.9", "R20.2"))
    assert got.outcome is Outcome.CONDITIONAL and got.verdict == "use not addressed by Medicare NCD 270.6"
    assert "CMS NCD 270.6 does not address other uses" in got.reason and "not medically necessary" not in got.reason
    assert got.reason.endswith('Medical policy DME101.045: "Coverage may be subject to local carrier discretion."')
    (paragraph,) = got.rationale
    assert "It names as not covered: diabetic peripheral sensory neuropathy, non-diabetic peripheral sensory " \
           "neuropathy, ulcers of skin or subcutaneous tissue and wounds of skin or subcutaneous tissue." in paragraph
    assert "No diagnosis of the patient falls in these: the NCD does not address this use, and local Medicare " \
           "contractor discretion may apply." in paragraph
    assert "DME101.045 applies" not in paragraph
    assert [u.what for u in got.unknowns] == ["Medicare coverage of this use: CMS NCD 270.6 does not address it, and "
                                              "local Medicare contractor discretion may apply"]


@pytest.mark.parametrize(("diagnoses", "reason", "detail"), [
    ((Diagnosis(ICD10CM, "M17.11", None, "Condition/oa"),), "the order is not for one of them",
     "No diagnosis of the patient falls in these"),
    ((Diagnosis(SNOMED, "239873007", "Osteoarthritis of knee", "Condition/oa"),), "the order names none of them",
     "No ICD-10-CM diagnosis of the patient is known"),
    ((), "the order names none of them", "No ICD-10-CM diagnosis of the patient is known"),
])
def test_medicare_says_whether_the_order_is_for_another_use_or_names_no_coded_indication(policies, diagnoses, reason,
                                                                                          detail):
    got = decision(policies, dataclasses.replace(medicare(), diagnoses=diagnoses))
    assert f"(diabetic peripheral sensory neuropathy, non-diabetic peripheral sensory neuropathy, ulcers of skin or " \
           f"subcutaneous tissue and wounds of skin or subcutaneous tissue); {reason}, and CMS NCD 270.6 does not " \
           "address other uses." in got.reason
    assert f"{detail}: the NCD does not address this use" in got.rationale[0]


def test_the_orders_own_reason_is_named_before_the_problem_list(policies):
    facts = medicare("E11.42")
    got = decision(policies, facts, reasonCode=[{"coding": [{"system": ICD10CM, "code": "L97412",
                                                             "display": "Heel ulcer"}]}])
    assert "L97.412 Heel ulcer (the order's reason) falls under ulcers of skin" in got.rationale[0]


def test_the_illinois_exception_never_applies_to_medicare(policies):
    facts = dataclasses.replace(CHILD, coverages=(dataclasses.replace(IL_HMO, line_of_business="medicare"),))
    got = decision(policies, facts)
    assert got.outcome is Outcome.CONDITIONAL and not got.mandate_may_apply  # the NCD does not name palsy
    assert "- the plan is a Medicare plan, which state insurance law does not reach" in got.rationale[-1]


def test_commercial_names_an_ncd_indication_as_supporting_rationale_only(policies):
    facts = MemberFacts(state="OK", coverages=(CoverageFacts("Coverage/c", line_of_business="commercial"),),
                        diagnoses=(Diagnosis(ICD10CM, "L97.412", "Heel ulcer", "Condition/u"),))
    got = decision(policies, facts)
    assert (got.outcome, got.verdict, got.reason) == (Outcome.NOT_COVERED, "not covered: not medically necessary",
                                                       policies[0].spec.decision.reason)
    assert got.rationale == ("**Indication:** L97.412 Heel ulcer (an active condition) falls under ulcers of skin or "
                             "subcutaneous tissue, one of the indications for which CMS NCD 270.6 finds these "
                             "devices not reasonable and necessary. The coverage statement of medical policy "
                             "DME101.045 names no indication.",)
    without = decision(policies, dataclasses.replace(facts, diagnoses=()))
    assert without.outcome is Outcome.NOT_COVERED and without.rationale == ()


# -------------------------------------------------------------------------------------- code-stem matching

@pytest.mark.parametrize(("system", "code", "group"), [
    (ICD10CM, "G80", "palsy"), (ICD10CM, "G80.9", "palsy"), (ICD10CM, "Q93.51", "angelman"),
    (ICD10CM, "Q93.5", "angelman"),
    (ICD10CM, "G08", None), (ICD10CM, "Q93.4", None), (ICD10CM, "Q93.81", None), (SNOMED, "G80.1", None),
])
def test_stems_match_the_code_and_every_code_below_it(system, code, group):
    groups = DiagnosisGroups.compile([DiagnosisGroup(name="palsy", icd10cm=["g80"]),
                                      DiagnosisGroup(name="angelman", icd10cm=["Q93.5"])])
    found = groups.first([Diagnosis(system, code, None, "Condition/x")])
    assert (found.group if found else None) == group


def test_a_long_diagnosis_display_is_shortened_in_the_card_text(policies):
    long = Diagnosis(ICD10CM, "G80.1", "cerebral  palsy " * 100, "Condition/cp")
    got = decision(policies, dataclasses.replace(CHILD, diagnoses=(long,)))
    assert got.outcome is Outcome.COVERED_WITH_PA
    assert "G80.1 cerebral palsy cerebral palsy" in got.rationale[0] and len(got.rationale[0]) < 1500


@pytest.mark.parametrize(("born", "age", "outcome"), [
    (date(2007, 3, 11), 18, Outcome.COVERED_WITH_PA), (date(2007, 3, 10), 19, Outcome.CONDITIONAL),
    (date(2001, 3, 11), 24, Outcome.CONDITIONAL), (date(2000, 3, 11), 25, Outcome.CONDITIONAL),
    (date(2000, 3, 10), 26, Outcome.NOT_COVERED), (date(1992, 1, 1), 34, Outcome.NOT_COVERED),
])
def test_the_act_does_not_define_children_so_ages_from_the_setting_to_26_are_verified(policies, born, age, outcome):
    got = decision(policies, dataclasses.replace(CHILD, birth_date=born))
    assert got.outcome is outcome
    said = "".join(got.rationale) + "".join(u.what for u in got.unknowns)
    assert f"the patient is {age} on the order's date" in said
    assert "reaches children under" not in said  # the setting is the plan's rule, never the Act's
    assert ("verify with the payer whether the mandate reaches a patient aged" in
            "".join(u.how_to_resolve or "" for u in got.unknowns)) == (outcome is Outcome.CONDITIONAL)


def test_the_mandate_file_sets_the_age_up_to_which_a_patient_is_verified(tmp_path):
    source = Path(__file__).parent.parent / "cds/policies/mandates/IL-PA-103-0458.yaml"
    (tmp_path / "mandates").mkdir()
    (tmp_path / "mandates" / "IL-PA-103-0458.yaml").write_text(
        source.read_text().replace("children_verify_under: 26", "children_verify_under: 21"))
    from cds.policy.loader import load_mandates
    (mandate,) = load_mandates([tmp_path]).values()
    facts = dataclasses.replace(CHILD, birth_date=date(2004, 3, 10))  # 22
    assert mandate.evaluate(facts, ON).status == "failed"
    assert mandate.evaluate(dataclasses.replace(CHILD, birth_date=date(2006, 3, 10)), ON).status == "unknown"


def test_prior_authorization_follows_the_plan_requirements_data(policies, tmp_path):
    source = Path(__file__).parent.parent / "cds/policies/mandates/IL-PA-103-0458.yaml"
    (tmp_path / "mandates").mkdir()
    (tmp_path / "mandates" / "IL-PA-103-0458.yaml").write_text(
        source.read_text().replace("    prior_authorization: true\n", ""))
    from cds.policy.loader import load_mandates
    (mandate,) = load_mandates([tmp_path]).values()
    no_pa = dataclasses.replace(policies[0], mandates=(mandate,))
    got = decide_order(order(), CHILD, (no_pa,), on=ON)
    assert got.outcome is Outcome.COVERED and got.verdict == "may be covered under an Illinois mandate"
    assert "prior auth" not in got.verdict
    assert decision(policies).verdict == "may be covered under an Illinois mandate, plan requires prior auth"


def test_the_mandate_texts_quote_only_the_act_and_attribute_the_rest_to_the_plan(policies):
    got = decision(policies)
    text = " ".join([got.reason, *got.rationale])
    assert "Coverage stays subject to" not in text
    assert "Prior authorization with documentation of the qualifying diagnosis is required" not in text
    quoted = re.findall(r'quotes it: "([^"]+)"', text)
    source = " ".join((Path(__file__).parent / "data/sources/policy-DME101.045.txt").read_text().split())
    assert quoted and all(" ".join(q.split()) in source for q in quoted)


# ------------------------------------------------------------------------------ the conditions, word for word

def compiled_mandate(policies, child_age_limit=19, diagnoses=True, **changes):
    """The Illinois mandate with its file changed as `changes` say."""
    (mandate,) = policies[0].mandates
    return CompiledMandate(mandate.spec.model_copy(update=changes), mandate.diagnoses if diagnoses else None,
                           child_age_limit)


def test_every_condition_met_says_what_was_found(policies):
    texts = [f.text for f in evaluation(policies).findings]
    assert texts.pop(5).startswith("the patient is 9 on the order's date: a child by the plan's rule (under 19; ")
    assert texts == [
        "the plan is sitused in Illinois", "the plan is commercial", "the plan is fully insured", "the plan is an HMO",
        "the plan year began 07/01/2025, on or after 01/01/2025",
        "G80.1 Spastic diplegic cerebral palsy (an active condition) is a qualifying diagnosis (neurological "
        "impairment, on the plan's diagnosis screen)"]
    assert [f.text for f in compiled_mandate(policies).evaluate(member(product="PPO"), ON).having("met")][3] == \
        "the plan is a PPO"


@pytest.mark.parametrize(("condition", "label"), [
    ("plan situs", "the plan's situs state"), ("line of business", "the plan's line of business"),
    ("funding", "plan funding (fully insured or self-funded)"), ("product", "the plan's product (PPO, HMO or POS)"),
    ("plan year", "the plan's issue or renewal date"), ("renewal", "the plan's latest issue or renewal date"),
    ("age", "the patient's age"),
    ("diagnosis, SNOMED CT only", "a diagnosis with low tone neuromuscular, neurological or cognitive impairment"),
])
def test_each_unknown_condition_is_named_in_a_few_words_for_the_coverage_reason(policies, condition, label):
    facts, _, _ = UNKNOWN[condition]
    assert [f.unknown for f in evaluation(policies, facts).having("unknown")] == [label]


@pytest.mark.parametrize(("changes", "facts", "text"), [
    ({"funding": ["self-funded"]}, CHILD, "the plan is fully insured, and the mandate reaches self-funded plans only"),
    ({}, member(funding="self-funded"), "the plan is self-funded, and the mandate reaches fully insured plans only "
                                        "(self-funded employer plans fall under federal law, ERISA, not state "
                                        "mandates)"),
    ({}, member(product="other"), "the plan is neither of these, and the mandate reaches PPO, HMO or POS plans only"),
    ({"lines_of_business": ["commercial", "other"]}, member(line_of_business="medicaid"),
     "the plan is Medicaid, and the mandate reaches commercial or non-commercial plans only"),
])
def test_a_failed_condition_says_what_the_plan_is_and_what_the_mandate_reaches(policies, changes, facts, text):
    assert [f.text for f in compiled_mandate(policies, **changes).evaluate(facts, ON).having("failed")] == [text]


def test_the_mandate_reason_names_whom_the_mandate_reaches(policies):
    def reaches(mandate):
        policy = compile_policy(policies[0].spec, mandates=[mandate])
        return decide_order(order(), CHILD, [policy], on=ON).reason.split(", which reaches ")[1].split(", as an ")[0]

    assert reaches(compiled_mandate(policies)) == \
        "children with low tone neuromuscular, neurological or cognitive impairment"
    assert reaches(compiled_mandate(policies, diagnoses=False)) == "children"
    assert reaches(compiled_mandate(policies, child_age_limit=None, children=False, diagnoses=False)) == "members"


def test_a_mandate_with_nothing_met_says_it_may_apply_without_a_list_of_what_is_met(policies):
    facts = MemberFacts(state="IL", coverages=(CoverageFacts("Coverage/c1"),))
    got = decision(policies, facts)
    assert got.mandate_may_apply
    paragraph = got.rationale[-1]
    assert paragraph.startswith("**Illinois mandate for children with impairments: may apply.** ")
    assert "Met:" not in paragraph
    assert 'quotes it: "all group or individual' in paragraph
    assert '"\n\nIf what is not known (below) is confirmed, the order may be covered under the mandate; otherwise ' \
           "the coverage statement of medical policy DME101.045 stands.\n\nPlan requirement (" in paragraph


def test_age_on_the_day_of_birth_is_zero_and_before_it_unknown():
    born = MemberFacts(birth_date=date(2020, 5, 1))
    assert [born.age_on(day) for day in (date(2020, 5, 1), date(2020, 4, 30), date(2021, 5, 1))] == [0, None, 1]


def test_the_screen_lists_each_recorded_code_once_and_a_diagnosis_without_display_by_its_code(policies):
    facts = dataclasses.replace(CHILD, diagnoses=(Diagnosis(ICD10CM, "M17.11", None, "Condition/a"),
                                                  Diagnosis(ICD10CM, "E11.9", None, "Condition/b"),
                                                  Diagnosis(ICD10CM, "M17.11", None, "ServiceRequest/1.reasonCode")))
    (unknown,) = evaluation(policies, facts).having("unknown")
    assert "among the patient's recorded diagnoses (M17.11, E11.9)" in unknown.text
    assert DiagnosisMatch("a group", facts.diagnoses[0]).describe() == "M17.11 (an active condition)"
