"""What the engine decides on: the order, and the facts known about the member. Plain values, no parsing here.

What cannot be known stays None (or "unknown") and is reported in `MemberFacts.unavailable`, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"

KnownLineOfBusiness = Literal["commercial", "medicare", "medicaid", "other"]
KnownProduct = Literal["PPO", "HMO", "POS", "EPO", "other"]
KnownFunding = Literal["fully-insured", "self-funded"]
LineOfBusiness = Literal[KnownLineOfBusiness, "unknown"]
Product = Literal[KnownProduct, "unknown"]
Funding = Literal[KnownFunding, "unknown"]

_FIELD_LABELS = {"line_of_business": "line of business", "product": "product", "funding": "funding",
                 "situs_state": "plan situs state", "plan_start": "plan start"}


@dataclass(frozen=True)
class Order:
    """One order as the client sent it (normalised JSON), with its type and id. `based_on`: the requests it carries
    out (an Appointment's basedOn), whose codes and reasons count as its own; `performer`: who is asked to carry it
    out, when the call names one (order-dispatch)."""

    resource: dict[str, Any]
    resource_type: str
    id: str | None
    based_on: tuple[Order, ...] = ()
    performer: str | None = None

    @property
    def reference(self) -> str | None:
        """`Type/id`, the form selections and delete actions use; None for an order without an id."""
        return f"{self.resource_type}/{self.id}" if self.id else None


@dataclass(frozen=True)
class Diagnosis:
    system: str  # ICD10CM or SNOMED, whatever URI it arrived under
    code: str  # ICD-10-CM codes upper case with their dot (E11.42)
    display: str | None
    source: str  # where it came from, e.g. "Condition/123" or "ServiceRequest/1.reasonCode"


@dataclass(frozen=True)
class CoverageFacts:
    reference: str | None  # "Coverage/id" as the client knows it; the coverage-information points here
    payer: str | None = None  # the payer's name as the Coverage or the plan directory gives it
    line_of_business: LineOfBusiness = "unknown"
    product: Product = "unknown"
    funding: Funding = "unknown"
    situs_state: str | None = None  # state whose law governs the plan (USPS code)
    plan_start: date | None = None  # plan year start (plan directory), else the Coverage's period start
    # Every way Coverage.payor names the payer: identifier system|value and value, Organization/id, display.
    payer_identifiers: tuple[str, ...] = ()
    group: str | None = None  # Coverage.class group value
    plan: str | None = None  # Coverage.class plan value
    plan_name: str | None = None
    unknown_why: str | None = None  # why plan facts are unknown, e.g. "the plan is not in the plan directory"

    @property
    def unknown(self) -> tuple[str, ...]:
        """Names of the plan facts that could not be determined."""
        return tuple(name for name in _FIELD_LABELS if getattr(self, name) in (None, "unknown"))

    @property
    def unknown_note(self) -> str | None:
        """The note in `MemberFacts.unavailable` that lists this coverage's unknown plan facts."""
        if not self.unknown:
            return None
        unknown = ", ".join(_FIELD_LABELS[name] for name in self.unknown)
        why = f" ({self.unknown_why})" if self.unknown_why else ""
        return f"{self.reference or 'The coverage'}: {unknown} unknown{why}."


@dataclass(frozen=True)
class CoverageGap:
    """Why no Coverage of the member could be used: a CRD coverage-assertion reason (`technical`,
    `no-member-found`, `coverage-not-found`, `no-active-coverage`) and a sentence a clinician can read."""

    reason: Literal["technical", "no-member-found", "coverage-not-found", "no-active-coverage"]
    text: str


@dataclass(frozen=True)
class MemberFacts:
    """Everything known about the member for one hook call; per order (`member.order_facts`), also the order's date
    of service and, first among the diagnoses, its reasons."""

    birth_date: date | None = None
    state: str | None = None  # state of residence (USPS code), from the current home address
    diagnoses: tuple[Diagnosis, ...] = ()
    coverages: tuple[CoverageFacts, ...] = ()  # by Coverage.order; an order's facts: the one it is decided under
    unavailable: tuple[str, ...] = ()  # data that could not be had, in words a clinician can act on
    unavailable_keys: frozenset[str] = frozenset()  # prefetch keys whose data could not be obtained at all
    service_date: date | None = None  # the order's date of service, once the facts are an order's
    condition_diagnoses: Mapping[str, tuple[Diagnosis, ...]] = field(default_factory=dict, repr=False)
    coverage_gap: CoverageGap | None = None  # why `coverages` is empty

    @property
    def coverage(self) -> CoverageFacts | None:
        """The coverage a decision is made under: an order's facts hold one at most (`member.order_facts`)."""
        return self.coverages[0] if len(self.coverages) == 1 else None

    @property
    def age(self) -> int | None:
        """Age in whole years on the order's date of service."""
        return self.age_on(self.service_date) if self.service_date else None

    def age_on(self, day: date) -> int | None:
        if self.birth_date is None or day < self.birth_date:
            return None
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - before_birthday
