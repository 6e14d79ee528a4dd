"""The request pipeline after protocol checks: orders to judge, member facts, decisions, the answer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from cds.auth import CdsClient
from cds.config import Settings
from cds.errors import BadRequest
from cds.fhir import DraftOrder
from cds.member.facts import MemberFacts, member_facts, strict_coverage_problem
from cds.member.fetch import FhirFetcher
from cds.member.plans import load_plan_directory
from cds.member.prefetch import member_data
from cds.policy import CompiledPolicy, Decision, judge, load_policies, match_order
from cds.policy.orders import device_index
from cds.protocol import Action, Card, CdsResponse, HookRequest
from cds.record.departures import DepartureLog
from cds.render.cards import card_for, select_cards
from cds.render.coverage import Configuration, coverage_action
from hooks.spec import Hook


@dataclass(frozen=True)
class Rendered:
    """One decision and what was said about it: the unit an audit record keeps."""

    decision: Decision
    card: Card
    action: Action | None


class CoverageService:
    """Built once per process at start-up (policies loaded and compiled here); answers one hook call at a time."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.policies = configured_policies(settings)
        self.fetcher = FhirFetcher(settings)
        self.plans = load_plan_directory(settings.plan_directory) if settings.plan_directory else None
        self.departures = DepartureLog(settings.r4_check_interval_ms)

    def respond(self, hook: Hook, request: HookRequest,
                client: CdsClient | None = None) -> tuple[CdsResponse, list[Rendered]]:
        """The answer and the decisions behind it (for the audit record). `client`: the authenticated caller,
        whose registered FHIR servers member data may also come from."""
        configuration = Configuration.from_request(request)
        rendered = self.decide(hook, request, configuration, client)
        actions = [r.action for r in rendered if r.action] if configuration.coverage_info else []
        cards = select_cards([r.card for r in rendered], configuration)
        return CdsResponse(cards=cards, system_actions=actions), rendered

    def decide(self, hook: Hook, request: HookRequest, configuration: Configuration,
               client: CdsClient | None = None) -> list[Rendered]:
        orders = hook.judged_orders(request)
        devices = _referable_devices(request, orders)
        found = [m for m in (match_order(order, self.policies, devices) for order in orders) if m]
        if not found:  # member data is fetched only for orders a policy covers
            return []
        facts = self.member_facts(request, client=client)
        today = date.today()
        decisions = [judge(match, facts.for_order(match.order, today), today) for match in found]
        # R4 is checked only for orders the service speaks about: their integrators hear of it.
        self.departures.check((match.order for match in found), client.iss if client else None)
        return [
            Rendered(d, card_for(d, configuration, self.settings.payer_name), coverage_action(d, hook.primary))
            for d in decisions
        ]


    def member_facts(self, request: HookRequest, required: Iterable[str] = (),
                     client: CdsClient | None = None) -> MemberFacts:
        """The member's facts for this call. `required`: prefetch keys a decision cannot be made without (412 when
        they cannot be had). Strict CRD mode requires the coverage and answers 400 when it is not exactly one
        Coverage of a payer this service serves."""
        strict = self.settings.strict_crd
        allowed = (*self.settings.fhir_servers, *client.fhir_servers) if client else None
        data = member_data(request, self.fetcher, {*required, *(["coverage"] if strict else [])}, allowed)
        facts = member_facts(data, self.plans)
        problem = strict_coverage_problem(facts, self.settings.served_payers) if strict else None
        if problem:
            raise BadRequest(problem, "prefetch.coverage")
        return facts


def configured_policies(settings: Settings) -> tuple[CompiledPolicy, ...]:
    """The policies and their mandates as the settings configure them; PolicyError names a file that is unusable."""
    return load_policies(settings.policy_dirs, settings.policy_url_template,
                         child_age_limit=settings.mandate_child_age_limit,
                         diagnoses_file=settings.mandate_diagnoses_file)


def _referable_devices(request: HookRequest, orders: tuple[DraftOrder, ...]) -> dict[str, dict]:
    """Devices a DeviceRequest.codeReference may point to, looked for only when an order has one."""
    if not any("codeReference" in order.resource for order in orders):
        return {}
    return device_index([*(order.resource for order in request.draft_orders), *request.prefetch.values()])
