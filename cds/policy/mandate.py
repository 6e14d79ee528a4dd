"""State benefit mandates: whether one reaches this member, condition by condition. Pure: facts in, findings out.

Each condition is met, failed or unknown, in words a clinician reads; an unknown one also says how to resolve it.
A mandate concerns a member who lives in its state or whose plan is sitused there; for anyone else it is silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from cds.policy import wording as w
from cds.policy.diagnoses import DiagnosisGroups
from cds.policy.facts import ICD10CM, CoverageFacts, MemberFacts
from cds.policy.model import Mandate
from cds.states import state_name

Status = Literal["met", "failed", "unknown"]
DEFAULT_CHILD_AGE_LIMIT = 19  # under 19, as Illinois' habilitative-services mandate for children (215 ILCS 5/356z.15)
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
    source_file: str = ""  # the mandate file's name, as texts attribute the plan's rules to it

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def prior_authorization(self) -> bool:
        """Whether the plan requires prior authorization of the orders the mandate may cover (its own rule)."""
        return any(requirement.prior_authorization for requirement in self.spec.plan_requirements)

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
            findings.append(self._diagnosis(facts, self.diagnoses))
        return Evaluation(self, tuple(findings))

    # ------------------------------------------------------------------------------------------- the plan

    def _situs(self, coverage: CoverageFacts | None) -> Finding:
        state = self.spec.jurisdiction
        situs = coverage.situs_state if coverage else None
        if situs is None:
            return _unknown(w.SITUS_UNKNOWN, "the plan's situs state", coverage)
        if situs == state:
            return Finding("met", w.SITUS_MET(state=state_name(state)))
        return Finding("failed", w.SITUS_FAILED(situs=state_name(situs), state=state_name(state)))

    def _line_of_business(self, coverage: CoverageFacts | None) -> Finding:
        line = coverage.line_of_business if coverage else "unknown"
        if line == "unknown":
            return _unknown(w.LINE_NOT_KNOWN, "the plan's line of business", coverage)
        if line in self.spec.lines_of_business:
            return Finding("met", w.LINE_MET(line=w.LINES[line]))
        if line == "medicare":
            return Finding("failed", w.LINE_MEDICARE())
        lines = w.listed([w.LINES[name] for name in self.spec.lines_of_business], "or")
        return Finding("failed", w.LINE_FAILED(line=w.LINES[line], lines=lines))

    def _funding(self, coverage: CoverageFacts | None) -> Finding:
        funding = coverage.funding if coverage else "unknown"
        if funding == "unknown":
            return _unknown(w.FUNDING_UNKNOWN, "plan funding (fully insured or self-funded)", coverage)
        if funding in self.spec.funding:
            return Finding("met", w.FUNDING_MET(funding=_FUNDING[funding]))
        erisa = " (self-funded employer plans fall under federal law, ERISA, not state mandates)" \
            if funding == "self-funded" else ""
        return Finding("failed", w.FUNDING_FAILED(funding=_FUNDING[funding], erisa=erisa,
                                                  fundings=w.listed([_FUNDING[f] for f in self.spec.funding], "or")))

    def _product(self, coverage: CoverageFacts | None) -> Finding:
        product = coverage.product if coverage else "unknown"
        products = w.listed(self.spec.products, "or")
        if product == "unknown":
            return _unknown(w.PRODUCT_UNKNOWN, f"the plan's product ({products})", coverage, products=products)
        if product in self.spec.products:
            return Finding("met", w.PRODUCT_MET(a_product=f"{_article(product)} {product}"))
        kind = f"{_article(product)} {product}" if product != "other" else "neither of these"
        return Finding("failed", w.PRODUCT_FAILED(a_product=kind, products=products))

    def _plan_date(self, coverage: CoverageFacts | None, day: date) -> Finding:
        since = f"{self.spec.plans_on_or_after:%m/%d/%Y}"
        start = coverage.plan_start if coverage else None
        if start is None:
            return _unknown(w.PLAN_DATE_UNKNOWN, "the plan's issue or renewal date", coverage)
        if start >= self.spec.plans_on_or_after:
            return Finding("met", w.PLAN_DATE_MET(start=f"{start:%m/%d/%Y}", since=since))
        if day < _anniversary(start):  # an annual plan that began before the date has not renewed yet
            return Finding("failed", w.PLAN_DATE_FAILED(start=f"{start:%m/%d/%Y}", since=since))
        return Finding("unknown", w.PLAN_RENEWAL_UNKNOWN(start=f"{start:%m/%d/%Y}", since=since),
                       "the plan's latest issue or renewal date", w.PLAN_RENEWAL_UNKNOWN.how())

    # ----------------------------------------------------------------------------------------- the patient

    def _age(self, facts: MemberFacts, day: date) -> Finding:
        """The law, as the policy quotes it, says "children" with no age: the plan's rule (the setting) says who counts
        as one, and from that age up to `children_verify_under` the answer is to be verified, not assumed."""
        limit, verify_under = self.child_age_limit, self.spec.children_verify_under
        age = facts.age_on(day)
        if age is None:
            return Finding("unknown", w.AGE_UNKNOWN(), "the patient's age", w.AGE_UNKNOWN.how())
        if limit is None or age < limit:
            return Finding("met", w.AGE_MET(age=age, limit=limit))
        if age < verify_under:
            return Finding("unknown", w.AGE_VERIFY(age=age, limit=limit),
                           f"whether the mandate reaches a patient aged {age}", w.AGE_VERIFY.how(age=age))
        return Finding("failed", w.AGE_FAILED(age=age, verify_under=verify_under))

    def _diagnosis(self, facts: MemberFacts, screen: DiagnosisGroups) -> Finding:
        """A screen can show that a qualifying diagnosis is present, never that none is: the law names categories,
        and the screen's codes are the plan's reading of them. So no qualifying diagnosis on it is unknown."""
        label = self.spec.diagnoses_label
        found = screen.first(facts.diagnoses)
        if found:
            return Finding("met", w.DIAGNOSIS_MET(diagnosis=found.describe(), group=found.group))
        resolve = w.DIAGNOSIS_RESOLVE(label=label)
        coded = [d for d in facts.diagnoses if d.system == ICD10CM]
        if "conditions" in facts.unavailable_keys:
            wording, values = w.DIAGNOSIS_UNOBTAINED, dict[str, str]()
        elif len(coded) < len(facts.diagnoses):
            wording, values = w.DIAGNOSIS_UNSCREENED, {}
        elif not coded:
            wording, values = w.DIAGNOSIS_NONE_RECORDED, {"label": label}
        else:
            codes = ", ".join(dict.fromkeys(d.code for d in coded))
            wording, values = w.DIAGNOSIS_NONE_FOUND, {"label": label, "codes": codes}
        return Finding("unknown", wording(**values), f"a diagnosis with {label}", wording.how(resolve=resolve))


def _unknown(wording: w.Wording, what: str, coverage: CoverageFacts | None, **values: str) -> Finding:
    why = (coverage.unknown_why if coverage else "no coverage for the patient came with the request") \
        or w.NOT_SAID
    return Finding("unknown", wording(why=why, **values), what, wording.how())


def _anniversary(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return date(day.year + 1, 3, 1)


def _article(word: str) -> str:
    return "an" if word[:1] in "AEFHILMNORSX" else "a"  # as the letters of an acronym are spoken: an HMO, a PPO
