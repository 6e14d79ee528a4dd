"""Member facts from realistic US Core resources, including partial and contradictory ones."""

import copy
from datetime import date

import pytest

from cds.config import EXAMPLE_PLAN_DIRECTORY
from cds.fhir import parse_draft_order
from cds.member.facts import (
    MemberData,
    member_facts,
    order_facts,
    service_date,
    strict_coverage_problem,
)
from cds.member.plans import load_plan_directory
from cds.policy.facts import ICD10CM, SNOMED, CoverageFacts, Diagnosis
from tests.helpers import load

MEMBER = load("us-core-member-il-child.json")
PATIENT, COVERAGE, *CONDITIONS = (entry["resource"] for entry in MEMBER["entry"])
DIRECTORY = load_plan_directory(EXAMPLE_PLAN_DIRECTORY)
SOPT = "https://nahdo.org/sopt"
TODAY = date(2026, 11, 26)


def facts_of(member_data, directory=None, today=TODAY):
    return member_facts(member_data, directory, today)


def data(patient=PATIENT, coverages=(COVERAGE,), conditions=tuple(CONDITIONS), **kwargs) -> MemberData:
    return MemberData(patient=patient, coverages=tuple(coverages), conditions=tuple(conditions),
                      patient_id="il-child-1", **kwargs)


def coverage(**changes) -> dict:
    resource = copy.deepcopy(COVERAGE)
    resource.update(changes)
    return {k: v for k, v in resource.items() if v is not None}


def sopt(*codes, system=SOPT) -> dict:
    return {"coding": [{"system": system, "code": code} for code in codes]}


def order(**fields):
    resource = {"resourceType": "ServiceRequest", "id": "sr-1", "status": "draft", "intent": "order",
                "code": {"coding": [{"system": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                                     "code": "E0221"}]},
                "subject": {"reference": "Patient/il-child-1"}, **fields}
    return parse_draft_order(resource)


# --------------------------------------------------------------------------------------- a realistic member


def test_facts_from_us_core_patient_coverage_and_conditions():
    facts = facts_of(data(), DIRECTORY)
    assert facts.birth_date == date(2016, 5, 14)
    assert facts.state == "IL"  # the ended Indiana address does not count
    assert facts.diagnoses == (
        Diagnosis(SNOMED, "192965001", "Spastic cerebral palsy", "Condition/cond-cp-1"),
        Diagnosis(ICD10CM, "G80.1", "Spastic diplegic cerebral palsy", "Condition/cond-cp-1"),
        Diagnosis(ICD10CM, "M79.604", "Pain in right leg", "Condition/cond-pain-2"),  # OID system, lower case
    )  # the resolved otitis is no active diagnosis
    assert facts.coverage == CoverageFacts(
        reference="Coverage/cov-bcbsil-1",
        payer="Blue Cross and Blue Shield of Illinois",
        line_of_business="commercial",
        product="PPO",
        funding="fully-insured",
        situs_state="IL",
        plan_start=date(2025, 1, 1),  # the plan year from the directory, not the member's coverage start
        payer_identifiers=("70670", "Blue Cross and Blue Shield of Illinois", "urn:oid:2.16.840.1.113883.6.300|70670"),
        group="B41725",
        plan="PPO-GOLD-1500",
        plan_name="BlueChoice PPO Gold 1500",
    )
    assert facts.unavailable == ()
    assert facts.coverage.unknown == ()


def test_without_a_plan_directory_funding_and_situs_stay_unknown_and_are_reported():
    facts = facts_of(data())
    assert facts.coverage.line_of_business == "commercial" and facts.coverage.product == "PPO"
    assert facts.coverage.funding == "unknown"
    assert facts.coverage.situs_state is None
    assert facts.coverage.plan_start == date(2025, 3, 1)  # Coverage.period.start
    assert facts.unavailable == (
        "Coverage/cov-bcbsil-1: funding, plan situs state unknown (no plan directory is configured).",)


def test_unavailable_data_passes_through():
    facts = facts_of(MemberData(unavailable=("The patient's coverage could not be obtained: x.",),
                                    unavailable_keys=frozenset({"coverage"})))
    assert facts.unavailable_keys == {"coverage"}
    assert facts.unavailable == ("The patient's coverage could not be obtained: x.",)
    assert facts.coverage is None and facts.birth_date is None


# ------------------------------------------------------------------------------------------ order facts


@pytest.mark.parametrize(("fields", "age"), [
    ({"occurrenceDateTime": "2026-05-13T09:00:00-05:00"}, 9),
    ({"occurrenceDateTime": "2026-05-14"}, 10),
    ({"occurrencePeriod": {"start": "2034-05-14"}}, 18),
    ({"occurrenceTiming": {"event": ["2035-05-14"]}, "authoredOn": "2026-01-01"}, 19),
    ({"authoredOn": "2026-05-13"}, 9),
])
def test_age_on_the_orders_date_of_service(fields, age):
    facts = order_facts(facts_of(data()), order(**fields), TODAY)
    assert facts.age == age


def test_an_order_without_a_date_is_for_today():
    today = date(2030, 1, 1)
    assert order_facts(facts_of(data()), order(), today).service_date == today
    assert service_date(order()) is None


def test_age_is_unknown_without_birth_date_or_before_birth():
    assert order_facts(facts_of(data(patient=None)), order(authoredOn="2026-01-01"), TODAY).age is None
    assert facts_of(data()).age_on(date(2010, 1, 1)) is None


def test_order_reasons_come_first_with_their_source():
    draft = order(
        contained=[{"resourceType": "Condition", "id": "r1", "subject": {"reference": "Patient/il-child-1"},
                    "code": {"coding": [{"system": ICD10CM, "code": "P94.2"}]}}],
        reasonCode=[{"coding": [{"system": ICD10CM, "code": "q9351", "display": "Angelman syndrome"},
                                {"system": "http://example.org/local", "code": "X1"}]}],
        reasonReference=[{"reference": "#r1"},
                         {"reference": "https://ehr.example.org/fhir/Condition/cond-cp-1"},
                         {"reference": "Condition/not-fetched"},
                         {"reference": "Observation/o1"}],
    )
    facts = order_facts(facts_of(data(), DIRECTORY), draft, TODAY)
    reasons = [d for d in facts.diagnoses if d.source.startswith("ServiceRequest/sr-1")]
    assert [(d.code, d.source) for d in reasons] == [
        ("Q93.51", "ServiceRequest/sr-1.reasonCode"),
        ("P94.2", "ServiceRequest/sr-1.reasonReference #r1"),
        ("192965001", "ServiceRequest/sr-1.reasonReference Condition/cond-cp-1"),
        ("G80.1", "ServiceRequest/sr-1.reasonReference Condition/cond-cp-1"),
    ]
    assert facts.diagnoses[:4] == tuple(reasons)
    assert len(facts.diagnoses) == 4 + 3  # the member's own diagnoses follow
    assert facts.unavailable == ("ServiceRequest/sr-1 gives as its reason Condition/not-fetched, which is not among "
                                 "the patient's active conditions; that reason is unknown.",)


def test_sloppy_order_shapes_do_not_break_facts():
    draft = order(reasonCode={"text": "no codes"}, reasonReference="Condition/1", occurrenceTiming="soon",
                  contained=[1])
    facts = order_facts(facts_of(data()), draft, date(2026, 1, 1))
    assert facts.service_date == date(2026, 1, 1)


def test_codings_with_members_of_the_wrong_type_do_not_break_facts():
    condition = {**CONDITIONS[0], "code": {"coding": [
        {"system": ["http://hl7.org/fhir/sid/icd-10-cm"], "code": "G80.1"}, {"system": {}, "code": "G80.1"},
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "G80.2", "display": ["not", "text"]}]}}
    (diagnosis,) = facts_of(data(conditions=[condition])).diagnoses
    assert (diagnosis.code, diagnosis.display) == ("G80.2", None)


# ------------------------------------------------------------------------------------- line of business


@pytest.mark.parametrize(("type_", "line", "product", "funding"), [
    (sopt("112"), "medicare", "PPO", "unknown"),  # Medicare Advantage PPO
    (sopt("1", "111"), "medicare", "HMO", "unknown"),
    (sopt("121"), "medicare", "other", "unknown"),  # Medicare FFS
    (sopt("1"), "medicare", "unknown", "unknown"),
    (sopt("2"), "medicaid", "unknown", "unknown"),
    (sopt("211", system="urn:oid:2.16.840.1.113883.3.221.5"), "medicaid", "HMO", "unknown"),
    (sopt("513"), "commercial", "POS", "unknown"),
    (sopt("514"), "commercial", "EPO", "unknown"),
    (sopt("522"), "commercial", "unknown", "self-funded"),  # ASO
    (sopt("622", "612"), "commercial", "PPO", "self-funded"),
    (sopt("311"), "other", "other", "unknown"),  # TRICARE
    (sopt("72"), "unknown", "PPO", "unknown"),  # managed care, public or private unknown
    (sopt("9999"), "unknown", "unknown", "unknown"),  # unavailable, no payer specified or blank
    (sopt("99"), "unknown", "unknown", "unknown"),  # no typology code available for the payment source
    (sopt("95"), "other", "unknown", "unknown"),  # workers' compensation
    ({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HMO"}]},
     "unknown", "HMO", "unknown"),
    ({"text": "Blue PPO"}, "unknown", "unknown", "unknown"),  # text is not guessed from
    (None, "unknown", "unknown", "unknown"),
])
def test_line_of_business_product_and_funding_from_coverage_type(type_, line, product, funding):
    facts = facts_of(data(coverages=[coverage(type=type_, payor=[{"display": "Some Payer"}])]), DIRECTORY)
    assert (facts.coverage.line_of_business, facts.coverage.product, facts.coverage.funding) == (line, product, funding)


def test_coverage_type_and_plan_directory_contradicting_each_other_leave_it_unknown():
    acme = coverage(type=sopt("612"), payor=[{"reference": "Organization/acme-payer"}])  # directory: medicare
    facts = facts_of(data(coverages=[acme]), DIRECTORY)
    assert facts.coverage.line_of_business == "unknown"
    assert ("Coverage/cov-bcbsil-1: line of business is contradictory (Coverage.type 612 says commercial; the plan "
            "directory says medicare); treated as unknown.") in facts.unavailable


def test_contradicting_coverage_type_codes_leave_the_product_unknown():
    mixed = coverage(type={"coding": [{"system": SOPT, "code": "511"},
                                      {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PPO"}]})
    facts = facts_of(data(coverages=[mixed]), DIRECTORY)
    assert facts.coverage.product == "unknown"
    assert facts.coverage.line_of_business == "commercial"
    assert any("product is contradictory" in note for note in facts.unavailable)


# ------------------------------------------------------------------------------------------- directory


def with_plan(group=None, plan=None, **changes):
    classes = [{"type": {"coding": [{"code": kind}]}, "value": value}
               for kind, value in (("group", group), ("plan", plan)) if value]
    return coverage(**{"class": classes, "type": None, **changes})


def test_the_most_specific_plan_entry_wins():
    facts = facts_of(data(coverages=[with_plan("B41725", "HMO-SILVER")]), DIRECTORY).coverage
    assert (facts.product, facts.plan_start, facts.situs_state) == ("HMO", date(2025, 7, 1), "IL")
    facts = facts_of(data(coverages=[with_plan("B41725", "PPO-BRONZE")]), DIRECTORY).coverage
    assert (facts.product, facts.plan_start) == ("PPO", date(2025, 1, 1))
    assert facts.plan_name == "Northside Manufacturing PPO"


def test_plan_entry_overrides_payer_defaults():
    facts = facts_of(data(coverages=[with_plan("A10001")]), DIRECTORY).coverage
    assert (facts.funding, facts.situs_state, facts.line_of_business) == ("self-funded", "TX", "commercial")


def test_payer_found_by_absolute_reference_plan_not_listed_is_reported():
    unlisted = with_plan("Z999", payor=[{"reference": "https://payer.example/fhir/Organization/bcbsil"}])
    facts = facts_of(data(coverages=[unlisted]), DIRECTORY)
    assert facts.coverage.payer == "Blue Cross and Blue Shield of Illinois"  # from the directory
    assert facts.coverage.situs_state == "IL" and facts.coverage.funding == "unknown"
    assert facts.unavailable == ("Coverage/cov-bcbsil-1: product, funding unknown (the plan is not in the plan "
                                 "directory).",)


def test_payer_not_in_the_directory_is_reported():
    other = with_plan("B41725", payor=[{"identifier": {"system": "urn:oid:2.16.840.1.113883.6.300",
                                                       "value": "99999"}}])
    facts = facts_of(data(coverages=[other]), DIRECTORY)
    assert facts.coverage.situs_state is None
    assert "(the payer is not in the plan directory)" in facts.unavailable[0]


def test_crd_ig_example_coverage():
    body = load("crd-order-sign-servicerequests.json")
    coverages = [e["resource"] for e in body["prefetch"]["coverage"]["entry"]]
    facts = facts_of(MemberData(patient=body["prefetch"]["patient"], coverages=tuple(coverages),
                                    patient_id=body["context"]["patientId"]), DIRECTORY)
    assert facts.state == "OK" and facts.birth_date == date(1987, 2, 20)
    assert facts.coverage.reference == "Coverage/COV1"
    assert facts.coverage.payer == "Acme Health Plan"
    assert facts.coverage.product == "PPO"  # v3-ActCode PPO
    assert facts.coverage.line_of_business == "medicare"  # Acme's default in the test directory
    assert (facts.coverage.group, facts.coverage.plan, facts.coverage.plan_name) == ("xyz", "gold", "Acme Gold Plan")
    assert "Organization/acme-payer" in facts.coverage.payer_identifiers


# ------------------------------------------------------------------------------- partial and contradictory


@pytest.mark.parametrize(("birth_date", "expected", "note"), [
    ("2016", None, "only partly known"),
    ("2016-05", None, "only partly known"),
    ("2016-13-45", None, "only partly known"),
    (None, None, "not recorded"),
    ("2016-05-14T08:30:00Z", date(2016, 5, 14), None),
])
def test_partial_birth_dates_leave_age_unknown(birth_date, expected, note):
    patient = {k: v for k, v in {**PATIENT, "birthDate": birth_date}.items() if v is not None}
    facts = facts_of(data(patient=patient, coverages=()))
    assert facts.birth_date == expected
    assert any(note in n for n in facts.unavailable) if note else facts.unavailable == ()


@pytest.mark.parametrize(("addresses", "state", "note"), [
    ([{"use": "home", "state": "Illinois"}], "IL", None),
    ([{"state": " il "}], "IL", None),
    ([{"use": "work", "state": "WI"}], None, None),
    ([{"use": "home", "state": "IL"}, {"use": "home", "state": "WI"}], None, "different states"),
    ([{"use": "home", "state": "IL"}, {"use": "home", "state": "WI", "period": {"end": "2020-01-01"}}], "IL", None),
    ([{"use": "home", "state": "Ontario"}], None, "not a US state"),
    ([], None, None),
])
def test_state_of_residence(addresses, state, note):
    facts = facts_of(data(patient={**PATIENT, "address": addresses}, coverages=()))
    assert facts.state == state
    if note:
        assert any(note in n for n in facts.unavailable)
    else:
        assert facts.unavailable == ()


def test_resources_about_another_patient_are_left_out_and_reported():
    stranger = {**PATIENT, "id": "someone-else"}
    their_condition = {**CONDITIONS[0], "id": "c9", "subject": {"reference": "Patient/someone-else"}}
    their_coverage = coverage(id="cov9", beneficiary={"reference": "https://ehr.example.org/Patient/someone-else"})
    facts = facts_of(data(patient=stranger, coverages=[their_coverage], conditions=[their_condition]))
    assert (facts.birth_date, facts.state, facts.diagnoses, facts.coverages) == (None, None, (), ())
    assert facts.unavailable == (
        "The Patient resource sent is not the patient of this call (context.patientId); not used.",
        "Condition/c9 is about another patient; not used.",
        "Coverage/cov9 covers another patient; not used.",
    )


def test_refuted_and_inactive_conditions_are_no_diagnoses():
    refuted = {**CONDITIONS[0], "verificationStatus": {"coding": [{"code": "refuted"}]}}
    inactive = {**CONDITIONS[1], "clinicalStatus": {"coding": [{"code": "inactive"}]}}
    assert facts_of(data(conditions=[refuted, inactive])).diagnoses == ()


def test_several_coverages_in_coverage_order_and_not_one_taken_for_the_order():
    secondary = coverage(id="cov-2", order=2)
    cancelled = coverage(id="cov-old", status="cancelled")
    facts = facts_of(data(coverages=[secondary, cancelled, COVERAGE]), DIRECTORY)
    assert [c.reference for c in facts.coverages] == ["Coverage/cov-bcbsil-1", "Coverage/cov-2"]
    assert facts.unavailable == ("Coverage/cov-old is not active (status cancelled); not used.",)
    assert facts.coverage is None  # of several, none is the one a decision is made under until an order names it


@pytest.mark.parametrize("reference", ["Coverage/cov-2", "https://ehr.example.org/fhir/Coverage/cov-2"])
def test_of_several_coverages_an_order_is_decided_under_the_one_its_insurance_names(reference):
    facts = facts_of(data(coverages=[coverage(id="cov-2", order=2), COVERAGE]), DIRECTORY)
    ordered = order_facts(facts, order(insurance=[{"reference": reference}]), TODAY)
    assert ordered.coverage.reference == "Coverage/cov-2" and ordered.coverage_gap is None
    assert ordered.unavailable[-1] == ("2 active coverages were found (Coverage/cov-bcbsil-1, Coverage/cov-2); "
                                       "the order's insurance names Coverage/cov-2, the one it is decided under.")


@pytest.mark.parametrize(("insurance", "names"), [
    (None, "names none of them"), ([{"reference": "Coverage/elsewhere"}], "names none of them"),
    ([{"reference": "Coverage/cov-2"}, {"reference": "Coverage/cov-bcbsil-1"}], "names more than one of them"),
])
def test_of_several_coverages_none_is_taken_when_the_order_does_not_single_one_out(insurance, names):
    """CRD resp-45: a member who cannot be resolved to a single coverage is `coverage-not-found`."""
    facts = facts_of(data(coverages=[coverage(id="cov-2", order=2), COVERAGE]), DIRECTORY)
    ordered = order_facts(facts, order(**({"insurance": insurance} if insurance else {})), TODAY)
    assert ordered.coverages == () and ordered.coverage is None
    assert ordered.coverage_gap.reason == "coverage-not-found"
    assert ordered.coverage_gap.text == ("2 active coverages of this patient were found (Coverage/cov-bcbsil-1, "
                                         f"Coverage/cov-2) and the order's insurance {names}, so no single "
                                         "coverage could be used")


# ------------------------------------------------------------------------------------------ strict mode


def test_strict_coverage_rules():
    served = ["urn:oid:2.16.840.1.113883.6.300|70670"]
    assert strict_coverage_problem(facts_of(data()), served) is None
    assert strict_coverage_problem(facts_of(data()), []) is None  # no payer check configured
    assert "No active Coverage" in strict_coverage_problem(facts_of(data(coverages=())), served)
    two = facts_of(data(coverages=[COVERAGE, coverage(id="b")]))
    assert "2 active Coverages" in strict_coverage_problem(two, served)
    assert "not one this service serves" in strict_coverage_problem(facts_of(data()), ["Organization/other"])
