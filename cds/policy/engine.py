"""The policy engine: order x member facts x policies -> Decision. Pure: no Flask, no HTTP, no database.

Policies are compiled once (at start-up, by the loader) into lookups, regular expressions and code-stem tuples;
deciding an order costs a few dictionary look-ups, at most two regex searches per text and a prefix test per
diagnosis.

The decision is the policy's, stated on the basis that binds the member (the CMS national coverage determination
for Medicare and Medicare Advantage), unless a state mandate the policy references reaches the member: then the
order may be covered with prior authorization (every condition met), or coverage depends on what is not known
(no condition failed). A diagnosis among the national coverage determination's indications is named, never
required.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from cds.policy.codes import code_in, terms_pattern
from cds.policy.decision import Decision, Match, Outcome, Unknown
from cds.policy.diagnoses import DiagnosisGroups
from cds.policy.facts import MemberFacts, Order
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
    terms: re.Pattern[str] | None
    must_not_match: re.Pattern[str] | None
    indications: DiagnosisGroups | None = None  # the national coverage determination's non-covered indications
    mandates: tuple[CompiledMandate, ...] = ()

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
                return Match("code", coded.where, code=found, system_sent=coded.uri)
        return None

    def match_text(self, content: OrderContent) -> Match | None:
        if self.terms is None or any(self._excluded(coded.system, coded.code) for coded in content.codings):
            return None
        if self.must_not_match and any(self.must_not_match.search(d.text) for d in content.texts):
            return None
        for described in content.texts:
            found = self.terms.search(described.text)
            if found:
                return Match("text", described.where, term=found.group(0), text=described.text)
        return None

    def _excluded(self, system: str | None, code: str) -> bool:
        if system is None:
            return False
        systems = (system,) if system else tuple(self.excluded)  # no system: the codes cannot collide
        return any(code_in(code, self.excluded.get(name, ())) for name in systems)


def compile_policy(spec: Policy, link: str | None = None, mandates: Sequence[CompiledMandate] = ()) -> CompiledPolicy:
    excluded: dict[str, tuple[str, ...]] = {}
    for group in spec.excluded_codes:
        excluded[group.system] = excluded.get(group.system, ()) + tuple(group.codes)
    return CompiledPolicy(
        spec=spec,
        link=link or str(spec.link),
        codes={(code.system, code.code): code for code in spec.codes},
        codes_any_system={code.code: code for code in spec.codes} if spec.match_code_without_system else {},
        excluded=excluded,
        terms=terms_pattern(spec.text.terms) if spec.text else None,
        must_not_match=terms_pattern(spec.text.must_not_match) if spec.text else None,
        indications=DiagnosisGroups.compile(spec.national_coverage.indications) if spec.national_coverage else None,
        mandates=tuple(mandates),
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
    reasons come first."""
    spec = found.policy.spec
    day = facts.service_date or on
    verdict, reason, rationale = _basis(found.policy, facts)
    evaluations = [mandate.evaluate(facts, day) for mandate in found.policy.mandates if mandate.concerns(facts)]
    coverage_notes = {coverage.unknown_note for coverage in facts.coverages}
    decision = Decision(
        order=found.order,
        policy=found.policy,
        match=found.match,
        outcome=Outcome.NOT_COVERED,
        indicator="warning",
        verdict=verdict,
        reason=reason,
        coverage=facts.coverage,
        decided_on=on,
        assertion_id=assertion_id,
        rationale=rationale + tuple(_ruled_out(e) for e in evaluations if e.status == "failed"),
        # Unknown plan facts matter only where a mandate needs them, and then its findings say so.
        unknowns=tuple(Unknown(note) for note in facts.unavailable if note not in coverage_notes),
        references=(*spec.references, *(ref for e in evaluations for ref in e.mandate.spec.references)),
    )
    if applies := next((e for e in evaluations if e.status == "met"), None):
        mandate = applies.mandate
        return replace(
            decision, outcome=Outcome.COVERED_WITH_PA, indicator="info", verdict=mandate.spec.covered_verdict,
            reason=f"May be covered under {mandate.spec.citation}, which reaches {_whom(mandate)}, as an exception "
                   f"to medical policy {spec.id} \"{spec.title}\": prior authorization {_documentation(mandate)} is "
                   "required.",
            rationale=(*rationale, _applies(applies)),
        )
    if open_ := next((e for e in evaluations if e.status == "unknown"), None):
        mandate, unknown = open_.mandate, open_.having("unknown")
        return replace(
            decision, outcome=Outcome.CONDITIONAL, verdict=mandate.spec.conditional_verdict,
            reason=f"{spec.decision.reason} {mandate.spec.citation} may require coverage for {_whom(mandate)}; "
                   f"not known: {'; '.join(f.unknown or f.text for f in unknown)}.",
            rationale=(*rationale, _may_apply(open_)),
            unknowns=(*(Unknown(f.text, f.how_to_resolve) for f in unknown), *decision.unknowns),
        )
    return decision


def _basis(policy: CompiledPolicy, facts: MemberFacts) -> tuple[str, str, tuple[str, ...]]:
    """Verdict, reason and rationale on the basis that binds the member: the national coverage determination for
    Medicare members, else the policy, with a diagnosis among the determination's indications named."""
    spec, ncd = policy.spec, policy.spec.national_coverage
    if ncd is None or policy.indications is None:
        return spec.decision.verdict, spec.decision.reason, ()
    found = policy.indications.first(facts.diagnoses)
    if facts.coverage is None or facts.coverage.line_of_business != "medicare":
        if found is None:
            return spec.decision.verdict, spec.decision.reason, ()
        return spec.decision.verdict, spec.decision.reason, (
            f"**Indication:** {found.describe()} falls under {found.group}, one of the indications for which "
            f"{ncd.name} finds these devices not reasonable and necessary. Medical policy {spec.id} applies to "
            "every indication.",)
    binds = f"**Medicare:** {ncd.name} binds Medicare and Medicare Advantage plans."
    if found:
        return ncd.verdict, f"{ncd.reason} The order's indication, {found.group}, is one of them.", (
            f"{binds} {found.describe()} falls under {found.group}, an indication the NCD names as not covered.",)
    other_uses = spec.decision.reason[:1].lower() + spec.decision.reason[1:]
    return spec.decision.verdict, f"{ncd.reason} Other uses: {other_uses}", (
        f"{binds} It names as not covered: {_listed(policy.indications.names)}. No diagnosis of the patient "
        f"falls in these, so for this use medical policy {spec.id} applies.",)


def _applies(evaluation: Evaluation) -> str:
    mandate = evaluation.mandate
    return "\n\n".join([
        f"**{mandate.spec.title}: the order may be covered.** {mandate.spec.citation}: {mandate.spec.requires}",
        "Every condition is met:\n" + _bullets(evaluation.having("met")),
        f"Prior authorization {_documentation(mandate)} is required.",
    ])


def _may_apply(evaluation: Evaluation) -> str:
    mandate = evaluation.mandate
    met = evaluation.having("met")
    return "\n\n".join(part for part in [
        f"**{mandate.spec.title}: may apply.** {mandate.spec.citation}: {mandate.spec.requires}",
        "Met:\n" + _bullets(met) if met else "",
        "If what is not known (below) is confirmed, the order may be covered with prior authorization "
        f"{_documentation(mandate)}; otherwise the denial stands.",
    ] if part)


def _ruled_out(evaluation: Evaluation) -> str:
    """Why a mandate that concerns the member does not reach this order: the conditions that failed, with how to
    resolve the one failure that alone rules it out, if it can be."""
    mandate, failed = evaluation.mandate, evaluation.having("failed")
    hint = failed[0].how_to_resolve if len(failed) == 1 and failed[0].how_to_resolve else None
    return (f"**{mandate.spec.title}: does not apply** ({mandate.spec.citation}):\n" + _bullets(failed)
            + (f"; {hint}" if hint else ""))


def _whom(mandate: CompiledMandate) -> str:
    who = "children" if mandate.child_age_limit is not None else "members"
    return f"{who} with {mandate.spec.diagnoses_label}" if mandate.diagnoses else who


def _documentation(mandate: CompiledMandate) -> str:
    return "with documentation of the qualifying diagnosis" if mandate.diagnoses else "with clinical documentation"


def _bullets(findings: Sequence[Finding]) -> str:
    return "\n".join(f"- {finding.text}" for finding in findings)


def _listed(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" and {words[-1]}"

