"""Member facts a decision may use, taken from Patient, Coverage, Condition resources and the order.

What cannot be known stays None (or "unknown") and is reported, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"

LineOfBusiness = Literal["commercial", "medicare", "medicaid", "other", "unknown"]
Product = Literal["PPO", "HMO", "POS", "EPO", "other", "unknown"]
Funding = Literal["fully-insured", "self-funded", "unknown"]


@dataclass(frozen=True)
class Diagnosis:
    system: str
    code: str
    display: str | None
    source: str  # where it came from, e.g. "Condition/123" or "ServiceRequest/1.reasonCode"


@dataclass(frozen=True)
class CoverageFacts:
    reference: str | None  # "Coverage/id" as the client knows it; the coverage-information points here
    payer: str | None = None
    line_of_business: LineOfBusiness = "unknown"
    product: Product = "unknown"
    funding: Funding = "unknown"
    situs_state: str | None = None
    plan_start: date | None = None


@dataclass(frozen=True)
class MemberFacts:
    """Everything known about the member for one hook call. Per-order facts come from `for_order`."""

    birth_date: date | None = None
    state: str | None = None
    diagnoses: tuple[Diagnosis, ...] = ()
    coverages: tuple[CoverageFacts, ...] = ()
    unavailable: tuple[str, ...] = ()  # data that could not be had, in words a clinician can act on

    @property
    def coverage(self) -> CoverageFacts | None:
        """The coverage a decision is made under: the client sends only the primary one (CRD)."""
        return self.coverages[0] if self.coverages else None

    def age_on(self, day: date) -> int | None:
        if self.birth_date is None:
            return None
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - before_birthday


@dataclass(frozen=True)
class MemberData:
    """FHIR resources about the member, however they were obtained (prefetch or the FHIR server)."""

    patient: dict[str, Any] | None = None
    coverages: tuple[dict[str, Any], ...] = ()
    conditions: tuple[dict[str, Any], ...] = ()
    unavailable: tuple[str, ...] = field(default_factory=tuple)


def member_facts(data: MemberData) -> MemberFacts:
    patient = data.patient or {}
    return MemberFacts(
        birth_date=_date(patient.get("birthDate")),
        state=_home_state(patient),
        diagnoses=tuple(d for condition in data.conditions for d in _condition_diagnoses(condition)),
        coverages=tuple(_coverage_facts(coverage) for coverage in data.coverages),
        unavailable=data.unavailable,
    )


def _date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10]) if len(value) >= 10 else None
    except ValueError:
        return None


def _home_state(patient: dict[str, Any]) -> str | None:
    addresses = [a for a in patient.get("address") or [] if isinstance(a, dict) and a.get("state")]
    home = [a for a in addresses if a.get("use") in (None, "home") and not _ended(a.get("period"))]
    chosen = (home or addresses or [None])[0]
    return str(chosen["state"]).strip().upper() if chosen else None


def _ended(period: Any) -> bool:
    return isinstance(period, dict) and bool(period.get("end"))


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict) and c.get("code")]


def _condition_diagnoses(condition: dict[str, Any]) -> list[Diagnosis]:
    source = f"Condition/{condition.get('id')}" if condition.get("id") else "Condition"
    return [
        Diagnosis(c.get("system", ""), str(c["code"]).strip(), c.get("display"), source)
        for c in _codings(condition.get("code"))
        if c.get("system") in (ICD10CM, SNOMED)
    ]


def _coverage_facts(coverage: dict[str, Any]) -> CoverageFacts:
    payors = [p for p in coverage.get("payor") or [] if isinstance(p, dict)]
    period = coverage.get("period") if isinstance(coverage.get("period"), dict) else {}
    payer = payors[0].get("display") if payors else None
    return CoverageFacts(
        reference=f"Coverage/{coverage['id']}" if coverage.get("id") else None,
        payer=payer if isinstance(payer, str) else None,
        plan_start=_date(period.get("start")),
    )
