"""The policy engine: order x member facts x policies -> Decision. Pure: no Flask, no HTTP, no database.

Policies are compiled once (at start-up, by the loader) into lookups, regular expressions and code-stem tuples;
deciding an order costs a few dictionary look-ups, at most two regex searches per text and a prefix test per
diagnosis.

The decision is the policy's for the lines of business it governs; for Medicare and Medicare Advantage it is the
CMS national coverage determination's, which decides only the indications it names; for lines the policy does not
govern, whose rules govern is said and nothing is decided. A state mandate the policy references may then cover
the order (every condition met) or make its coverage depend on what is not known (no condition failed). An order
matched by a description that may name another item is conditional on its billing code. An assertion is never
firmer than what is known: what is not known makes it `conditional`, naming what would decide it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from cds.policy import wording as w
from cds.policy.codes import code_in, terms_pattern
from cds.policy.decision import Decision, Match, Outcome, Unknown
from cds.policy.diagnoses import DiagnosisGroups
from cds.policy.facts import ICD10CM, CoverageFacts, KnownLineOfBusiness, MemberFacts, Order
from cds.policy.mandate import CompiledMandate, Evaluation, Finding
from cds.policy.model import Policy, PolicyCode
from cds.policy.orders import OrderContent, read_order


@dataclass(frozen=True)
class CompiledPolicy:
    spec: Policy
    link: str  # the policy page a card links to
    codes: Mapping[tuple[str, str], PolicyCode]  # (normalised system, code)
    codes_any_system: Mapping[str, PolicyCode]  # by code alone, when the policy allows it
    excluded: Mapping[str, tuple[str, ...]]  # normalised system -> codes and ranges
    strong: re.Pattern[str] | None  # descriptions that name the policy's devices
    weak: re.Pattern[str] | None  # descriptions that may name them or another item
    must_not_match: re.Pattern[str] | None
    indications: DiagnosisGroups | None = None  # the national coverage determination's non-covered indications
    mandates: tuple[CompiledMandate, ...] = ()
    source_file: str = ""  # the policy file's name, as texts attribute the plan's rules to it

    @property
    def id(self) -> str:
        return self.spec.id

    def applies_to(self, resource_type: str) -> bool:
        return resource_type in self.spec.applies_to

    def match_code(self, content: OrderContent) -> Match | None:
        for coded in content.codings:
            found = self.codes.get((coded.system, coded.code)) if coded.system else None
            if found is None and coded.system is not None:  # CPT, HCPCS or no system at all
                found = self.codes_any_system.get(coded.code)
            if found is not None:
                return Match("code", coded.where, code=found, system_sent=coded.uri, modifiers=coded.modifiers)
        return None

    def match_text(self, content: OrderContent) -> Match | None:
        """A strong description in any of the order's texts, else a weak one; none when the order carries a code
        of another item or any text names something the policy is not about."""
        if self.strong is None or any(self._excluded(coded.system, coded.code) for coded in content.codings):
            return None
        if self.must_not_match and any(self.must_not_match.search(d.text) for d in content.texts):
            return None
        patterns = [(strength, p) for strength, p in (("strong", self.strong), ("weak", self.weak)) if p]
        for strength, pattern in patterns:
            for described in content.texts:
                if found := pattern.search(described.text):
                    return Match("text", described.where, term=found.group(0), text=described.text,
                                 strength=strength)  # type: ignore[arg-type]
        return None

    def _excluded(self, system: str | None, code: str) -> bool:
        if system is None:
            return False
        systems = (system,) if system else tuple(self.excluded)  # no system: the codes cannot collide
        return any(code_in(code, self.excluded.get(name, ())) for name in systems)


def compile_policy(spec: Policy, link: str | None = None, mandates: Sequence[CompiledMandate] = (),
                   source_file: str = "") -> CompiledPolicy:
    excluded: dict[str, tuple[str, ...]] = {}
    for group in spec.excluded_codes:
        excluded[group.system] = excluded.get(group.system, ()) + tuple(group.codes)
    text = spec.text
    return CompiledPolicy(
        spec=spec,
        link=link or str(spec.link),
        codes={(code.system, code.code): code for code in spec.codes},
        codes_any_system={code.code: code for code in spec.codes} if spec.match_code_without_system else {},
        excluded=excluded,
        strong=terms_pattern(text.strong) if text else None,
        weak=terms_pattern(text.weak) if text else None,
        must_not_match=terms_pattern(text.must_not_match, acronyms_in_capitals=False) if text else None,
        indications=DiagnosisGroups.compile(spec.national_coverage.indications) if spec.national_coverage else None,
        mandates=tuple(mandates),
        source_file=source_file,
    )


@dataclass(frozen=True)
class PolicyMatch:
    order: Order
    policy: CompiledPolicy
    match: Match


def match_order(
    order: Order, policies: Sequence[CompiledPolicy], devices: Mapping[str, dict[str, Any]] | None = None
) -> PolicyMatch | None:
    """The policy an order falls under: a code match in any policy beats a text match in any other."""
    applicable = [policy for policy in policies if policy.applies_to(order.resource_type)]
    if not applicable:
        return None
    content = read_order(order, devices or {})
    for matcher in (CompiledPolicy.match_code, CompiledPolicy.match_text):
        for policy in applicable:
            match = matcher(policy, content)
            if match:
                return PolicyMatch(order, policy, match)
    return None


def decide(found: PolicyMatch, facts: MemberFacts, on: date, assertion_id: str) -> Decision:
    """The coverage position on a matched order for this member, decided on `on`, under the id `assertion_id`.
    `facts` are the order's own (`member.order_facts`): its date of service counts for age and plan dates, its
    reasons come first.

    In steps: the basis that governs the member's line of business (the policy, the national coverage
    determination for Medicare, or rules the service does not hold); then the state mandates that concern the
    member; then, for an order matched only by a description that may name another item, what is ordered is not
    known, so neither is its coverage."""
    policy, spec = found.policy, found.policy.spec
    coverage_notes = {coverage.unknown_note for coverage in facts.coverages}
    decision = Decision(
        order=found.order,
        policy=policy,
        match=found.match,
        outcome=Outcome.NOT_COVERED,
        indicator="warning",
        verdict=spec.decision.verdict,
        reason=spec.decision.reason,
        coverage=facts.coverage,
        coverage_gap=facts.coverage_gap if facts.coverage is None else None,
        decided_on=on,
        assertion_id=assertion_id,
        # Unknown plan facts matter only where a rule needs them, and then its findings say so.
        unknowns=tuple(Unknown(note) for note in facts.unavailable if note not in coverage_notes),
        references=tuple(spec.references),
    )
    line = facts.coverage.line_of_business if facts.coverage else "unknown"
    if line in spec.governed_elsewhere or (line == "medicare" and spec.national_coverage is None):
        decision = _governed_elsewhere(decision, line)
    elif line == "medicare":
        decision = _medicare(decision, facts)
    else:
        decision = _indication_named(decision, facts)
        if facts.coverage is not None and line == "unknown":
            decision = _line_not_known(decision, facts.coverage)
    decision = _mandates(decision, facts, facts.service_date or on)
    return _item_not_known(decision) if found.match.weak else decision


def _add(decision: Decision, *paragraphs: str) -> Decision:
    return replace(decision, rationale=(*decision.rationale, *paragraphs))


def _conditional(decision: Decision, verdict: str, reason: str, rationale: str, unknowns: Sequence[Unknown],
                 ) -> Decision:
    known = {unknown.what for unknown in decision.unknowns}  # one thing not known is listed once
    unknowns = [unknown for unknown in unknowns if unknown.what not in known]
    return replace(decision, outcome=Outcome.CONDITIONAL, verdict=verdict, reason=reason,
                   rationale=(*decision.rationale, rationale), unknowns=(*unknowns, *decision.unknowns))


def _unknown(wording: w.Wording, **values: Any) -> Unknown:
    return Unknown(wording(**values), wording.how(**values))


def _governed_elsewhere(decision: Decision, line: KnownLineOfBusiness) -> Decision:
    """A plan of a line of business the policy does not govern: whose rules govern, and nothing decided."""
    spec = decision.policy.spec
    values = {"policy": spec.id, "title": spec.title, "lines": _lines(decision.policy),
              "rules": spec.governed_elsewhere.get(line, "the coverage rules of the member's program"),
              "line": w.LINES[line], "a_line": f"{_article(w.LINES[line])} {w.LINES[line]}"}
    return _conditional(decision, w.ELSEWHERE_VERDICT(**values), w.ELSEWHERE_REASON(**values), w.ELSEWHERE(**values),
                        [_unknown(w.ELSEWHERE_UNKNOWN, **values)])


def _line_not_known(decision: Decision, coverage: CoverageFacts) -> Decision:
    """A Coverage whose line of business is not known: the policy's position holds only if the plan is of a line it
    governs, so the answer is conditional on the plan, saying whose rules govern the other lines."""
    policy = decision.policy
    spec = policy.spec
    either = w.listed([w.LINES[name] for name in spec.lines_of_business], "or")
    values = {"why": _why(coverage), "policy": spec.id, "title": spec.title, "lines": _lines(policy),
              "a_lines": f"{_article(either)} {either}", "reason": decision.reason, "verdict": decision.verdict,
              "others": _others(policy)}
    return _conditional(decision, w.LINE_UNKNOWN_VERDICT(**values), w.LINE_UNKNOWN_REASON(**values),
                        w.LINE_UNKNOWN(**values), [_unknown(w.LINE_NOT_KNOWN, **values)])


def _others(policy: CompiledPolicy) -> str:
    """Whose rules govern each line of business the policy does not: "for a Medicare plan, ...; for ..."."""
    spec = policy.spec
    parts = []
    if spec.national_coverage is not None:  # Medicare is never one of the policy's own lines
        parts.append(w.LINE_OTHER(a_line="a Medicare plan", rules=w.MEDICARE_DECIDES(ncd=spec.national_coverage.name)))
    for line, rules in spec.governed_elsewhere.items():
        a_line = "another plan" if line == "other" else f"{_article(w.LINES[line])} {w.LINES[line]} plan"
        parts.append(w.LINE_OTHER(a_line=a_line, rules=f"{rules} govern"))
    return "; ".join(parts)


def _medicare(decision: Decision, facts: MemberFacts) -> Decision:
    """Medicare and Medicare Advantage: the national coverage determination decides the indications it names; for
    any other use it does not decide, and neither does this service."""
    policy = decision.policy
    spec, ncd = policy.spec, policy.spec.national_coverage
    assert ncd is not None
    assert policy.indications is not None
    binds = w.MEDICARE_BINDS(ncd=ncd.name)
    if found := policy.indications.first(facts.diagnoses):
        return replace(
            decision, verdict=ncd.verdict, reason=f"{ncd.reason} {w.NCD_NAMED_REASON(group=found.group)}",
            rationale=(*decision.rationale, f"{binds} {w.NCD_NAMED(diagnosis=found.describe(), group=found.group)}"))
    coded = any(d.system == ICD10CM for d in facts.diagnoses)
    values = {"ncd": ncd.name, "named": w.listed(policy.indications.names), "policy": spec.id,
              "discretion": ncd.discretion, "discretion_source": ncd.discretion_source,
              "which": (w.NCD_NONE_FALLS if coded else w.NCD_NONE_CODED)()}
    unknowns = [_unknown(w.NCD_OTHER_UNKNOWN, **values)]
    if not coded:
        unknowns.insert(0, _unknown(w.NCD_INDICATION_UNKNOWN, **values))
    reason = w.NCD_OTHER_REASON(**{**values, "which": "the order is not for one of them" if coded
                                   else "the order names none of them"})
    return _conditional(decision, ncd.not_addressed_verdict, reason, f"{binds} {w.NCD_OTHER(**values)}", unknowns)


def _indication_named(decision: Decision, facts: MemberFacts) -> Decision:
    """The policy decides every use; a diagnosis among the national coverage determination's indications is named
    as supporting rationale, never required."""
    policy = decision.policy
    ncd = policy.spec.national_coverage
    found = policy.indications.first(facts.diagnoses) if policy.indications else None
    if ncd is None or found is None:
        return decision
    return _add(decision, w.INDICATION(diagnosis=found.describe(), group=found.group, ncd=ncd.name,
                                       policy=policy.spec.id))


def _mandates(decision: Decision, facts: MemberFacts, day: date) -> Decision:
    """The state mandates the policy references that concern the member: one that reaches the order may cover it;
    one that may reach it makes coverage conditional; those ruled out are said to be."""
    evaluations = [mandate.evaluate(facts, day) for mandate in decision.policy.mandates if mandate.concerns(facts)]
    decision = replace(
        decision,
        rationale=(*decision.rationale, *(_ruled_out(e) for e in evaluations if e.status == "failed")),
        references=(*decision.references, *(ref for e in evaluations for ref in e.mandate.spec.references)),
    )
    if applies := next((e for e in evaluations if e.status == "met"), None):
        return _covered(decision, applies)
    if open_ := next((e for e in evaluations if e.status == "unknown"), None):
        mandate, unknown = open_.mandate, open_.having("unknown")
        decision = _conditional(
            decision, mandate.spec.conditional_verdict if decision.outcome is Outcome.NOT_COVERED else decision.verdict,
            w.MANDATE_CONDITIONAL_REASON(reason=decision.reason, whom=_whom(mandate),
                                         unknown="; ".join(f.unknown or f.text for f in unknown), **_law(mandate)),
            _may_apply(open_, decision.policy.spec.id),
            [Unknown(f.text, f.how_to_resolve) for f in unknown],
        )
        return replace(decision, mandate_may_apply=True)
    return decision


def _covered(decision: Decision, applies: Evaluation) -> Decision:
    """Every condition of a mandate met: the order may be covered under it, with what the plan requires of it."""
    mandate, spec = applies.mandate, decision.policy.spec
    requirements = _requirements(mandate)
    verdict = mandate.spec.covered_verdict
    return replace(
        decision, outcome=Outcome.COVERED_WITH_PA if mandate.prior_authorization else Outcome.COVERED,
        indicator="info",
        verdict=w.MANDATE_PA_VERDICT(verdict=verdict) if mandate.prior_authorization else verdict,
        reason=" ".join([w.MANDATE_COVERED_REASON(whom=_whom(mandate), policy=spec.id, title=spec.title,
                                                  **_law(mandate)), *requirements]),
        rationale=(*decision.rationale, "\n\n".join([
            f"{w.MANDATE_APPLIES(title=mandate.spec.title)} {_quoted(mandate)}",
            f"{w.MANDATE_ALL_MET()}\n" + _bullets(applies.having("met")), *requirements])),
    )


def _item_not_known(decision: Decision) -> Decision:
    """A description that may name the policy's devices or another item: what is ordered, and so its coverage,
    is not known until its billing code is."""
    spec, match = decision.policy.spec, decision.match
    assert spec.text is not None
    values = {"text": match.text, "term": match.term, "policy": spec.id, "title": spec.title,
              "codes": w.listed([f"{code.system} {code.code}" for code in spec.codes], "or")}
    unknown = replace(_unknown(w.WEAK_UNKNOWN, **values), needs="detail-code")
    return replace(
        decision, outcome=Outcome.CONDITIONAL, indicator="warning", verdict=spec.text.weak_verdict,
        reason=w.WEAK_REASON(reason=decision.reason, **values), unknowns=(unknown, *decision.unknowns))


def _may_apply(evaluation: Evaluation, policy_id: str) -> str:
    mandate = evaluation.mandate
    met = evaluation.having("met")
    return "\n\n".join(part for part in [
        f"{w.MANDATE_MAY_APPLY(title=mandate.spec.title)} {_quoted(mandate)}",
        f"{w.MANDATE_MET()}\n" + _bullets(met) if met else "",
        w.MANDATE_IF_CONFIRMED(policy=policy_id), *_requirements(mandate),
    ] if part)


def _ruled_out(evaluation: Evaluation) -> str:
    """Why a mandate that concerns the member does not reach this order: the conditions that failed."""
    mandate = evaluation.mandate
    return (w.MANDATE_RULED_OUT(title=mandate.spec.title, citation=mandate.spec.citation) + "\n"
            + _bullets(evaluation.having("failed")))


def _law(mandate: CompiledMandate) -> dict[str, str]:
    return {"citation": mandate.spec.citation, "quoted_from": mandate.spec.quoted_from}


def _quoted(mandate: CompiledMandate) -> str:
    return w.MANDATE_QUOTED(quote=mandate.spec.quote, **_law(mandate))


def _whom(mandate: CompiledMandate) -> str:
    who = "children" if mandate.child_age_limit is not None else "members"
    return f"{who} with {mandate.spec.diagnoses_label}" if mandate.diagnoses else who


def _why(coverage: CoverageFacts) -> str:
    return coverage.unknown_why or w.NOT_SAID


def _lines(policy: CompiledPolicy) -> str:
    return w.listed([w.LINES[name] for name in policy.spec.lines_of_business])


def _requirements(mandate: CompiledMandate) -> list[str]:
    return [w.PLAN_REQUIREMENT(source=r.source, text=r.text) for r in mandate.spec.plan_requirements]


def _bullets(findings: Sequence[Finding]) -> str:
    return "\n".join(f"- {finding.text}" for finding in findings)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"

