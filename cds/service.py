"""The request pipeline after protocol checks: orders to judge, member facts, decisions, the answer."""

from __future__ import annotations

from collections.abc import Iterable

from cds.config import Settings
from cds.errors import BadRequest
from cds.facts import MemberFacts, member_facts, strict_coverage_problem
from cds.fhirfetch import FhirFetcher
from cds.plans import load_plan_directory
from cds.prefetch import member_data
from cds.protocol import CdsResponse, HookRequest
from hooks.spec import Hook


class CoverageService:
    """Built once per process at start-up; answers one validated hook call at a time."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.fetcher = FhirFetcher(settings)
        self.plans = load_plan_directory(settings.plan_directory) if settings.plan_directory else None

    def answer(self, hook: Hook, request: HookRequest) -> CdsResponse:
        orders = hook.judged_orders(request)
        if not orders:
            return CdsResponse()
        facts = self.member_facts(request)  # noqa: F841  (decisions come with the policy engine)
        return CdsResponse()

    def member_facts(self, request: HookRequest, required: Iterable[str] = ()) -> MemberFacts:
        """The member's facts for this call. `required`: prefetch keys a decision cannot be made without (412 when
        they cannot be had). Strict CRD mode requires the coverage and answers 400 when it is not exactly one
        Coverage of a payer this service serves."""
        strict = self.settings.strict_crd
        data = member_data(request, self.fetcher, {*required, *(["coverage"] if strict else [])})
        facts = member_facts(data, self.plans)
        problem = strict_coverage_problem(facts, self.settings.served_payers) if strict else None
        if problem:
            raise BadRequest(problem, "prefetch.coverage")
        return facts
