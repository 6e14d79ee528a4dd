"""The member-facts step: the member's Patient, Coverage and Conditions (from prefetch, else fetched from the EHR's
FHIR server), read into the facts the policy engine decides on, with the plan directory's help."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from cds.errors import BadRequest
from cds.member.facts import member_facts, order_facts, strict_coverage_problem
from cds.member.fetch import FhirFetcher
from cds.member.orders import resolve_orders
from cds.member.plans import PlanDirectory
from cds.member.prefetch import member_data
from cds.policy.facts import MemberFacts
from cds.protocol import HookRequest

__all__ = ["facts_for_call", "order_facts", "resolve_orders"]


def facts_for_call(request: HookRequest, fetcher: FhirFetcher, plans: PlanDirectory | None, today: date,
                   allowed: Iterable[str] | None = None, strict_payers: Iterable[str] | None = None) -> MemberFacts:
    """The member's facts for this call. `allowed`: the FHIR servers member data may come from (None: the configured
    allow-list). `strict_payers`: under strict CRD rules, the payers served (empty: any); the call then needs
    exactly one Coverage of one of them (412 when it cannot be had, 400 when it is not so)."""
    strict = strict_payers is not None
    data = member_data(request, fetcher, ["coverage"] if strict else [], allowed)
    facts = member_facts(data, plans, today)
    problem = strict_coverage_problem(facts, strict_payers) if strict_payers is not None else None
    if problem:
        raise BadRequest(problem, "prefetch.coverage")
    return facts
