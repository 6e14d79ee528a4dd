"""The schemas of medical policy files (cds/policies/*.yaml) and of the state mandates they reference
(cds/policies/mandates/*.yaml). Every file is validated against its schema at start-up."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from cds.policy.codes import code_in
from cds.states import state_code

CodeSystem = Literal["CPT", "HCPCS"]
LineOfBusiness = Literal["commercial", "medicare", "medicaid", "other"]
OrderType = Literal["DeviceRequest", "ServiceRequest", "MedicationRequest", "NutritionOrder", "VisionPrescription",
                    "CommunicationRequest", "Appointment"]
_CODE = re.compile(r"[A-Za-z0-9]{4,7}")
# An ICD-10-CM category (G80) or a code prefix below it (Q93.5, E11.621): it stands for itself and every code under it.
_ICD10CM_STEM = re.compile(r"[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?")
_MANDATE_ID = r"^[A-Z]{2}-[A-Za-z0-9.\-]{1,40}$"


class Strict(BaseModel):
    """Unknown keys are errors, so a misspelt field is caught at start-up rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PolicyCode(Strict):
    """A billing code the policy applies to."""

    system: CodeSystem
    code: str = Field(pattern=f"^{_CODE.pattern}$")
    descriptor: str = Field(min_length=3)  # the short descriptor (AMA owns CPT long descriptors)
    name: str = Field(min_length=3, max_length=60)  # what a clinician calls the item, used in card summaries

    @field_validator("code")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class ExcludedCodes(Strict):
    """Codes of other items (heat pads, lasers, ...): an order carrying one is never matched by its text."""

    system: CodeSystem
    codes: list[str] = Field(min_length=1)  # single codes or inclusive ranges such as "E0200-E0249"
    why: str = Field(min_length=3)
    # Short descriptors of some of these codes (the AMA owns CPT's long ones): the console offers them as
    # look-alikes to try.
    descriptors: dict[str, str] = {}

    @field_validator("codes")
    @classmethod
    def _codes_or_ranges(cls, values: list[str]) -> list[str]:
        for value in values:
            ends = value.upper().split("-")
            if len(ends) > 2 or not all(_CODE.fullmatch(end) for end in ends):
                raise ValueError(f"{value!r} is neither a code nor a range such as E0200-E0249")
            if len(ends) == 2 and (len(ends[0]) != len(ends[1]) or ends[0] > ends[1]):
                raise ValueError(f"range {value!r} must run from the lower to the higher code of the same length")
        return [value.upper() for value in values]

    @model_validator(mode="after")
    def _descriptors_of_these_codes(self) -> ExcludedCodes:
        others = [code for code in self.descriptors if not code_in(code, tuple(self.codes))]
        if others:
            raise ValueError(f"descriptors name codes not in codes: {', '.join(others)}")
        if any(len(text.strip()) < 3 for text in self.descriptors.values()):
            raise ValueError("descriptors: a short descriptor of at least 3 characters for each code")
        return self


class TextMatching(Strict):
    """Fallback when no code identifies the order: descriptions searched in code.text, coding.display and device
    names.

    Case-insensitive, on word boundaries; a space or hyphen in a term matches spaces or hyphens, never nothing
    (spell "infrared" and "infra red" each where both are meant); a word in capitals (MIRE) matches only in capitals.
    """

    # What the policy's devices are, in the policy's own words (quoted on cards for a match by description).
    device_definition: str = Field(min_length=10)
    definition_source: str = Field(min_length=3)  # where in the policy the definition stands: "Description"
    strong: list[str] = Field(min_length=1)  # descriptions that name the policy's devices: the policy decides
    # Descriptions that may name the policy's devices or another item: coverage is conditional on the billing code.
    weak: list[str] = []
    weak_verdict: str = Field("", max_length=60)  # card summary verdict for a weak match
    must_not_match: list[str] = []  # any of these anywhere in the order's text: no text match at all

    @field_validator("strong", "weak", "must_not_match")
    @classmethod
    def _words(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.search(r"[A-Za-z0-9]", value):
                raise ValueError(f"term {value!r} has no letters or digits")
        return values

    @model_validator(mode="after")
    def _weak_verdict(self) -> TextMatching:
        if self.weak and not self.weak_verdict:
            raise ValueError("weak_verdict must say, for a card summary, what a weak match means")
        return self


class Reference(Strict):
    label: str = Field(min_length=3)
    url: HttpUrl
    effective: date | None = None


class DiagnosisGroup(Strict):
    """A named group of ICD-10-CM codes, listed as stems matched by prefix on the dotted code."""

    name: str = Field(min_length=3)  # how a clinician reads it: "diabetic peripheral sensory neuropathy"
    icd10cm: list[str] = Field(min_length=1)

    @field_validator("icd10cm")
    @classmethod
    def _stems(cls, values: list[str]) -> list[str]:
        stems = [value.strip().upper() for value in values]
        for stem in stems:
            if not _ICD10CM_STEM.fullmatch(stem):
                raise ValueError(f"{stem!r} is not an ICD-10-CM category or code stem such as G80 or Q93.5")
        return stems


class NationalCoverage(Strict):
    """The CMS national coverage determination a policy rests on. It binds Medicare, Medicare Advantage included."""

    name: str = Field(min_length=3)  # as cards cite it: "CMS NCD 270.6"
    verdict: str = Field(min_length=3, max_length=60)  # summary verdict when a diagnosis is a named indication
    reason: str = Field(min_length=10)  # coverage-information reason for Medicare members
    # The nationally non-covered indications, as ICD-10-CM groups: a Medicare member's order for one of them is
    # not covered under the determination; for any other use the determination does not decide.
    indications: list[DiagnosisGroup] = Field(min_length=1)
    not_addressed_verdict: str = Field(min_length=3, max_length=60)  # summary verdict for a use it does not name
    # What the policy itself says of Medicare coverage beyond the determination, quoted, and where it says it.
    discretion: str = Field(min_length=10)
    discretion_source: str = Field(min_length=3)


class PolicyDecision(Strict):
    """What the policy decides for an order it applies to."""

    covered: Literal["not-covered"]  # the only position policies take so far; exceptions come from mandates
    verdict: str = Field(min_length=3, max_length=60)  # the short verdict for card summaries
    reason: str = Field(min_length=10)  # the coverage-information reason text


class Policy(Strict):
    id: str = Field(pattern=r"^[A-Z]{3}\d{3}\.\d{3}$")
    title: str = Field(min_length=3)
    publisher: str = Field(min_length=2)
    version: str = Field(min_length=1)
    effective: date
    link: HttpUrl  # the policy's page; a deployment may override it with CDS_POLICY_URL_TEMPLATE
    applies_to: list[OrderType] = Field(min_length=1)
    coverage_statement: str = Field(min_length=10)  # verbatim from the policy
    basis: str = Field(min_length=10)  # where the position comes from, verbatim from the policy
    basis_source: str = Field(min_length=3)  # the policy's section it is quoted from: "Rationale"
    plan_governs: str = Field(min_length=10)  # the policy's disclaimer that the benefit plan governs, verbatim
    plan_governs_source: str = Field(min_length=3)  # "Disclaimer"
    decision: PolicyDecision
    # The lines of business whose plans the policy governs (Medicare: through `national_coverage`), and for the
    # others, in words, whose rules govern instead ("the state Medicaid program's rules").
    lines_of_business: list[Literal["commercial", "medicaid", "other"]] = Field(min_length=1)
    governed_elsewhere: dict[LineOfBusiness, str] = {}
    codes: list[PolicyCode] = Field(min_length=1)
    match_code_without_system: bool = False  # only for codes that cannot collide across code systems
    excluded_codes: list[ExcludedCodes] = []
    text: TextMatching | None = None
    references: list[Reference] = []
    national_coverage: NationalCoverage | None = None
    mandates: list[str] = []  # ids of state mandates (cds/policies/mandates/) that may override the decision

    @field_validator("mandates")
    @classmethod
    def _mandate_ids(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(_MANDATE_ID, value):
                raise ValueError(f"{value!r} is not a mandate id such as IL-PA-103-0458")
        return values

    @model_validator(mode="after")
    def _lines(self) -> Policy:
        both = set(self.lines_of_business) & set(self.governed_elsewhere)
        if both:
            raise ValueError(f"governed_elsewhere names lines the policy governs: {', '.join(sorted(both))}")
        if self.national_coverage and "medicare" in self.governed_elsewhere:
            raise ValueError("governed_elsewhere names medicare, which national_coverage governs")
        return self

    @model_validator(mode="after")
    def _codes_unique(self) -> Policy:
        seen = [code.code for code in self.codes]
        duplicates = sorted({code for code in seen if seen.count(code) > 1})
        if duplicates:
            raise ValueError(f"codes listed more than once: {', '.join(duplicates)}")
        return self


class PlanRequirement(Strict):
    """What the payer requires, beyond the law, of orders a mandate may cover: the plan's own rule, shown as the
    plan's and never as the law's. A prior-authorization requirement makes the CRD assertion `auth-needed` with
    clinical documentation; without one a covered order needs no authorization."""

    text: str = Field(min_length=10)  # as a card shows it: "Prior authorization, with clinical documentation ..."
    source: str = Field(min_length=3)  # who sets it, as a card attributes it: "BCBSIL benefit verification"
    prior_authorization: bool = False


class Mandate(Strict):
    """A state benefit mandate that overrides medical policies for the members it reaches: its conditions as data.

    The conditions are checked against the member's facts: the plan's situs state (`jurisdiction`), line of
    business, funding, product and issue or renewal date; when `children` is set, the patient's age on the order's
    date; and, when groups are listed, a qualifying diagnosis. The law's words are `quote`, as `quoted_from` quotes
    them; what the payer adds is `plan_requirements`.
    """

    id: str = Field(pattern=_MANDATE_ID)
    jurisdiction: str  # USPS code of the state whose law it is
    title: str = Field(min_length=3, max_length=80)  # card heading: "Illinois mandate for children with impairments"
    citation: str = Field(min_length=3)  # how every text cites it
    quote: str = Field(min_length=10)  # what the law says, word for word as `quoted_from` quotes it
    quoted_from: str = Field(min_length=3)  # "HCSC medical policy DME101.045, Legislative Mandates"
    plans_on_or_after: date  # it reaches plans amended, delivered, issued or renewed on or after this date
    # State law never reaches Medicare, so it is not a choice here.
    lines_of_business: list[Literal["commercial", "medicaid", "other"]] = Field(min_length=1)
    funding: list[Literal["fully-insured", "self-funded"]] = Field(min_length=1)
    products: list[Literal["PPO", "HMO", "POS", "EPO", "other"]] = Field(min_length=1)
    # The law reaches children. Where it gives no age for them, a patient under CDS_MANDATE_CHILD_AGE_LIMIT counts as
    # one by the plan's rule, a patient from that age up to `children_verify_under` is to be verified, and an older
    # one is not a child by the plan's rule.
    children: bool = False
    children_verify_under: int = Field(26, ge=1, le=130)
    diagnoses_label: str = Field("", max_length=120)  # the qualifying diagnoses in words, for texts
    qualifying_diagnoses: list[DiagnosisGroup] = []  # empty: no diagnosis condition
    plan_requirements: list[PlanRequirement] = []
    covered_verdict: str = Field(min_length=3, max_length=70)  # every condition met
    conditional_verdict: str = Field(min_length=3, max_length=70)  # some condition not known, none failed
    references: list[Reference] = []

    @field_validator("jurisdiction")
    @classmethod
    def _state(cls, value: str) -> str:
        code = state_code(value)
        if code is None:
            raise ValueError(f"{value!r} is not a US state or territory")
        return code

    @model_validator(mode="after")
    def _diagnoses_named(self) -> Mandate:
        if self.qualifying_diagnoses and not self.diagnoses_label:
            raise ValueError("diagnoses_label must say in words what the qualifying diagnoses are")
        return self
