"""State benefit mandates: whether one reaches this member, condition by condition. Pure: facts in, findings out.

Each condition is met, failed or unknown, in words a clinician reads; an unknown one also says how to resolve it.
A mandate concerns a member who lives in its state or whose plan is sitused there; for anyone else it is silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from cds.policy.diagnoses import DiagnosisGroups
from cds.policy.facts import ICD10CM, CoverageFacts, MemberFacts
from cds.policy.model import Mandate
from cds.states import state_name

Status = Literal["met", "failed", "unknown"]
DEFAULT_CHILD_AGE_LIMIT = 19  # under 19, as Illinois' habilitative-services mandate for children (215 ILCS 5/356z.15)
_VERIFY_PLAN = "verify the member's plan with the payer"
_LINES = {"commercial": "commercial", "medicare": "Medicare", "medicaid": "Medicaid", "other": "non-commercial"}
_FUNDING = {"fully-insured": "fully insured", "self-funded": "self-funded"}


@dataclass(frozen=True)
class Finding:
    """One condition of a mandate, evaluated."""

    status: Status
    text: str  # what was found: "the plan is self-funded", or for an unknown what is not known and why
    unknown: str | None = None  # for an unknown: what is missing, in a few words for the coverage reason
    how_to_resolve: str | None = None


@dataclass(frozen=True)
class Evaluation:
    mandate: CompiledMandate
    findings: tuple[Finding, ...]

    @property
    def status(self) -> Status:
        statuses = {finding.status for finding in self.findings}
        return "failed" if "failed" in statuses else "unknown" if "unknown" in statuses else "met"

    def having(self, status: Status) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.status == status)


@dataclass(frozen=True)
class CompiledMandate:
    spec: Mandate
    diagnoses: DiagnosisGroups | None  # None: the mandate has no diagnosis condition
    child_age_limit: int | None  # None: not only for children

    @property
    def id(self) -> str:
        return self.spec.id

    def concerns(self, facts: MemberFacts) -> bool:
        """Whether the member lives in the mandate's state or the plan is sitused there."""
        coverage = facts.coverage
        return self.spec.jurisdiction in (facts.state, coverage.situs_state if coverage else None)

    def evaluate(self, facts: MemberFacts, day: date) -> Evaluation:
        """Every condition for this member, on the order's date of service `day`."""
        coverage = facts.coverage
        findings = [self._situs(coverage), self._line_of_business(coverage), self._funding(coverage),
                    self._product(coverage), self._plan_date(coverage, day)]
        if self.child_age_limit is not None:
            findings.append(self._age(facts, day))
        if self.diagnoses is not None:
            findings.append(self._diagnosis(facts))
        return Evaluation(self, tuple(findings))

    # ------------------------------------------------------------------------------------------- the plan

    def _situs(self, coverage: CoverageFacts | None) -> Finding:
        state = self.spec.jurisdiction
        situs = coverage.situs_state if coverage else None
        if situs is None:
            return _unknown("the plan's situs state (whose insurance law governs the plan)", coverage,
                            "verify with the payer in which state the member's plan is sitused")
        if situs == state:
            return Finding("met", f"the plan is sitused in {state_name(state)}")
        return Finding("failed", f"the plan is sitused in {state_name(situs)}, not {state_name(state)}")

    def _line_of_business(self, coverage: CoverageFacts | None) -> Finding:
        line = coverage.line_of_business if coverage else "unknown"
        if line == "unknown":
            return _unknown("the plan's line of business (commercial, Medicare or Medicaid)", coverage, _VERIFY_PLAN)
        if line in self.spec.lines_of_business:
            return Finding("met", f"the plan is {_LINES[line]}")
        if line == "medicare":
            return Finding("failed", "the plan is a Medicare plan, which state insurance law does not reach")
        return Finding("failed", f"the plan is {_LINES[line]}, and the mandate reaches "
                                 f"{_either([_LINES[name] for name in self.spec.lines_of_business])} plans only")

    def _funding(self, coverage: CoverageFacts | None) -> Finding:
        funding = coverage.funding if coverage else "unknown"
        if funding == "unknown":
            return _unknown("plan funding (fully insured or self-funded)", coverage, _VERIFY_PLAN)
        if funding in self.spec.funding:
            return Finding("met", f"the plan is {_FUNDING[funding]}")
        reach = " (self-funded employer plans fall under federal law, ERISA, not state mandates)" \
            if funding == "self-funded" else ""
        return Finding("failed", f"the plan is {_FUNDING[funding]}, and the mandate reaches "
                                 f"{_either([_FUNDING[f] for f in self.spec.funding])} plans only{reach}")

    def _product(self, coverage: CoverageFacts | None) -> Finding:
        product = coverage.product if coverage else "unknown"
        products = _either(self.spec.products)
        if product == "unknown":
            return _unknown(f"the plan's product ({products})", coverage, _VERIFY_PLAN)
        if product in self.spec.products:
            return Finding("met", f"the plan is {_article(product)} {product}")
        kind = f"{_article(product)} {product}" if product != "other" else "neither of these"
        return Finding("failed", f"the plan is {kind}, and the mandate reaches {products} plans only")

    def _plan_date(self, coverage: CoverageFacts | None, day: date) -> Finding:
        since = self.spec.plans_on_or_after
        start = coverage.plan_start if coverage else None
        if start is None:
            return _unknown("the plan's issue or renewal date", coverage,
                            "verify the start of the member's current plan year with the payer")
        if start >= since:
            return Finding("met", f"the plan year began {start:%m/%d/%Y}, on or after {since:%m/%d/%Y}")
        if day < _anniversary(start):  # an annual plan that began before the date has not renewed yet
            return Finding("failed", f"the plan year began {start:%m/%d/%Y} and has not renewed by the order's "
                                     f"date; the mandate reaches plans issued or renewed on or after {since:%m/%d/%Y}")
        return Finding("unknown", f"the plan began {start:%m/%d/%Y}, before {since:%m/%d/%Y}, and whether it was "
                                  "renewed since is not known", "the plan's latest issue or renewal date",
                       "verify the start of the member's current plan year with the payer")

    # ----------------------------------------------------------------------------------------- the patient

    def _age(self, facts: MemberFacts, day: date) -> Finding:
        limit = self.child_age_limit
        age = facts.age_on(day)
        if age is None:
            return Finding("unknown", "the patient's age on the order's date is not known (no full birth date)",
                           "the patient's age", "record the patient's birth date in the EHR")
        if limit is None or age < limit:
            return Finding("met", f"the patient is {age} on the order's date, a child under {limit}")
        return Finding("failed", f"the patient is {age} on the order's date, and the mandate reaches children "
                                 f"under {limit} only")

    def _diagnosis(self, facts: MemberFacts) -> Finding:
        label = self.spec.diagnoses_label
        found = self.diagnoses.first(facts.diagnoses) if self.diagnoses else None
        if found:
            return Finding("met", f"{found.describe()} is a qualifying diagnosis ({found.group})")
        resolve = f"if the patient has a diagnosis with {label}, give it as the order's reason, coded in ICD-10-CM"
        if "conditions" in facts.unavailable_keys:
            return Finding("unknown", "a qualifying diagnosis is not known: the patient's active conditions could "
                                      "not be obtained", f"a diagnosis with {label}", resolve)
        coded = {d.source for d in facts.diagnoses if d.system == ICD10CM}
        if any(d.source not in coded for d in facts.diagnoses):
            return Finding("unknown", "a qualifying diagnosis is not known: some of the patient's diagnoses have no "
                                      "ICD-10-CM code to screen", f"a diagnosis with {label}", resolve)
        return Finding("failed", f"no active condition and no reason for the order is a diagnosis with {label}",
                       how_to_resolve=resolve)


def _unknown(what: str, coverage: CoverageFacts | None, how: str) -> Finding:
    why = (coverage.unknown_why if coverage else "no coverage for the patient came with the request") \
        or "neither the Coverage nor the plan directory says"
    return Finding("unknown", f"{what} is not known ({why})", what, how)


def _anniversary(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return date(day.year + 1, 3, 1)


def _either(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" or {words[-1]}"


def _article(word: str) -> str:
    return "an" if word[:1] in "AEFHILMNORSX" else "a"  # as the letters of an acronym are spoken: an HMO, a PPO
