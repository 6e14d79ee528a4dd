"""The policy engine: order x member facts x policies -> Decision. Pure: no Flask, no HTTP, no database.

Policies are compiled once (at start-up, by the loader) into lookups and regular expressions; deciding an order
costs a few dictionary look-ups and at most two regex searches per text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds.facts import MemberFacts
from cds.fhir import DraftOrder
from cds.policy.codes import code_in, terms_pattern
from cds.policy.decision import Decision, Match, Outcome, Unknown
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


def compile_policy(spec: Policy, link: str | None = None) -> CompiledPolicy:
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
    )


@dataclass(frozen=True)
class PolicyMatch:
    order: DraftOrder
    policy: CompiledPolicy
    match: Match


def match_order(
    order: DraftOrder, policies: Sequence[CompiledPolicy], devices: Mapping[str, dict[str, Any]] | None = None
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


def judge(found: PolicyMatch, facts: MemberFacts, on: date) -> Decision:
    """The coverage position on a matched order for this member."""
    spec = found.policy.spec
    return Decision(
        order=found.order,
        policy=found.policy,
        match=found.match,
        outcome=Outcome.NOT_COVERED,  # the policy's position; member-dependent exceptions refine it here
        indicator="warning",
        verdict=spec.decision.verdict,
        reason=spec.decision.reason,
        coverage=facts.coverage,
        decided_on=on,
        unknowns=tuple(Unknown(what) for what in facts.unavailable),
        references=tuple(spec.references),
    )


def decide(
    order: DraftOrder,
    facts: MemberFacts,
    policies: Sequence[CompiledPolicy],
    devices: Mapping[str, dict[str, Any]] | None = None,
    on: date | None = None,
) -> Decision | None:
    """The decision on one order, or None when no policy covers it (then the service says nothing about it)."""
    found = match_order(order, policies, devices)
    return judge(found, facts, on or date.today()) if found else None
