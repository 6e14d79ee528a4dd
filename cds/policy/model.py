"""The schema of a medical policy data file (cds/policies/*.yaml). Every file is validated against it at start-up."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

CodeSystem = Literal["CPT", "HCPCS"]
OrderType = Literal["DeviceRequest", "ServiceRequest", "MedicationRequest", "NutritionOrder", "VisionPrescription",
                    "CommunicationRequest"]
_CODE = re.compile(r"[A-Za-z0-9]{4,7}")


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


class TextMatching(Strict):
    """Fallback when no code identifies the order: terms searched in code.text, coding.display and device names.

    Case-insensitive, on word boundaries; a space or hyphen in a term matches a space, a hyphen or nothing.
    """

    terms: list[str] = Field(min_length=1)
    must_not_match: list[str] = []  # any of these anywhere in the order's text: no text match at all

    @field_validator("terms", "must_not_match")
    @classmethod
    def _words(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.search(r"[A-Za-z0-9]", value):
                raise ValueError(f"term {value!r} has no letters or digits")
        return values


class Reference(Strict):
    label: str = Field(min_length=3)
    url: HttpUrl
    effective: date | None = None


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
    basis: str = Field(min_length=10)  # where the position comes from (Markdown, one paragraph)
    plan_governs: str = Field(min_length=10)  # the policy's disclaimer: the member's benefit plan governs
    decision: PolicyDecision
    codes: list[PolicyCode] = Field(min_length=1)
    match_code_without_system: bool = False  # only for codes that cannot collide across code systems
    excluded_codes: list[ExcludedCodes] = []
    text: TextMatching | None = None
    references: list[Reference] = []

    @model_validator(mode="after")
    def _codes_unique(self) -> Policy:
        seen = [code.code for code in self.codes]
        duplicates = sorted({code for code in seen if seen.count(code) > 1})
        if duplicates:
            raise ValueError(f"codes listed more than once: {', '.join(duplicates)}")
        return self
