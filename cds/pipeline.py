"""One hook call, start to finish. `answer_hook_call` reads as the request flow (docs/architecture.md):
authenticate, parse, orders to judge, match, member facts, decide, render, record; each step is one call into the
module or package named for it. `Service` holds what the steps need, built once per process at start-up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from flask import Request
from uuid_utils.compat import uuid7
from werkzeug.exceptions import HTTPException

import hooks
from cds import member
from cds.auth import Authenticator, RegisteredClient, load_registry
from cds.config import Settings, SettingsError
from cds.errors import CdsError
from cds.hook_instances import HookInstances
from cds.jwks import JwksFetcher
from cds.member.fetch import FhirFetcher
from cds.member.plans import PlanDirectory, PlanDirectoryError, load_plan_directory
from cds.policy import CompiledPolicy, PolicyError, PolicyMatch, decide, load_policies, match_order
from cds.policy.facts import Order
from cds.policy.loader import DiagnosesFileError
from cds.policy.orders import device_index, not_being_placed
from cds.protocol import HookRequest, parse_hook_request, to_wire
from cds.record import Recorder
from cds.render import Configuration, render
from hooks.spec import check_requested_version

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: Settings
    policies: tuple[CompiledPolicy, ...]
    plans: PlanDirectory | None
    fetcher: FhirFetcher
    authenticator: Authenticator
    recorder: Recorder
    today: Callable[[], date] = date.today
    hook_instances: HookInstances = field(default_factory=HookInstances)


def answer_hook_call(service: Service, service_id: str, http: Request,
                     read_body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The JSON answer to one call of `service_id`; a CdsError for a call that cannot be answered."""
    started = time.perf_counter()
    settings = service.settings
    client, body = None, None
    try:
        client = service.authenticator.authenticate(http)
        hooks.services_with_id(service_id)  # 404 before the body is read
        body = read_body()
        hook = hooks.hook_for(service_id, body)
        request = parse_hook_request(body, hook.requires_selections, settings.max_draft_orders, hook.context)
    except (CdsError, HTTPException) as error:  # refused before it was decided: recorded too
        service.recorder.refused(service_id, error, _ms_since(started), client, body)
        raise
    service.hook_instances.note(client.iss if client else "(unauthenticated)", request.hook_instance)
    orders: Sequence[Order] = request.draft_orders
    try:
        check_requested_version(request.requested_version)
        orders = hook.judged_orders(request)
        orders = member.resolve_orders(orders, request, service.fetcher, allowed_servers(settings, client))
        matches = match_orders(orders, service.policies, request)
        today = service.today()
        facts = member_facts(service, request, client, today) if matches else None  # only when a policy applies
        decisions = [decide(m, member.order_facts(facts, m.order, today), today, new_assertion_id())
                     for m in matches if facts]
        configuration = Configuration.from_request(request, hook.option_defaults)
        rendering = render(decisions, configuration, hook.primary, settings.payer_name,
                           facts.coverage_gap if facts else None)
    except CdsError as error:  # e.g. 412 or a strict-mode 400: recorded too, then answered
        service.recorder.record(service_id, request, client, error.status, _ms_since(started), orders=orders)
        raise
    answer = to_wire(rendering.response)
    service.recorder.record(service_id, request, client, 200, _ms_since(started), rendering, (body, answer), orders)
    return answer


def match_orders(orders: Sequence[Any], policies: Sequence[CompiledPolicy], request: HookRequest) -> list[PolicyMatch]:
    """The orders being placed that a policy covers, each with its policy and how it matched."""
    placed = []
    for number, order in enumerate(orders, 1):
        if why := not_being_placed(order):
            log.info("order %d (%s) not judged: %s", number, order.resource_type, why)
        else:
            placed.append(order)
    devices = _referable_devices(request, placed)
    return [found for found in (match_order(order, policies, devices) for order in placed) if found]


def member_facts(service: Service, request: HookRequest, client: RegisteredClient | None,
                 today: date) -> member.MemberFacts:
    settings = service.settings
    strict_payers = settings.served_payers if settings.strict_crd else None
    return member.facts_for_call(request, service.fetcher, service.plans, today,
                                 allowed_servers(settings, client), strict_payers)


def allowed_servers(settings: Settings, client: RegisteredClient | None) -> tuple[str, ...] | None:
    """The FHIR servers this call may fetch from: the configured ones and the client's own (None: as configured)."""
    return (*settings.fhir_servers, *client.fhir_servers) if client else None


def new_assertion_id() -> str:
    """A decision's id. Time-ordered (UUIDv7, RFC 9562): new audit records go to the end of each index instead of a
    random page of it, which halved what writing a record costs and keeps it flat as the tables grow."""
    return str(uuid7())


def load_service(settings: Settings, authenticator: Authenticator, recorder: Recorder) -> Service:
    """The service as the settings configure it: the files they name are loaded here, once; a file that is unusable
    stops start-up with SettingsError naming its variable."""
    return Service(settings, load_configured_policies(settings), load_configured_plans(settings),
                   FhirFetcher(settings), authenticator, recorder)


def check_configured_files(settings: Settings) -> None:
    """Load every file the settings name (clients, policies, plan directory) as each worker will: one that is not
    usable raises SettingsError naming its variable, so a server checks them once before it forks its workers."""
    if settings.clients_file:
        load_registry(settings.clients_file, settings.jwt_algorithms, JwksFetcher(settings.demo))
    load_configured_policies(settings)
    load_configured_plans(settings)


def load_configured_policies(settings: Settings) -> tuple[CompiledPolicy, ...]:
    try:
        return load_policies(settings.policy_dirs, settings.policy_url_template,
                             child_age_limit=settings.mandate_child_age_limit,
                             diagnoses_file=settings.mandate_diagnoses_file)
    except DiagnosesFileError as exc:
        raise SettingsError(f"CDS_MANDATE_DIAGNOSES_FILE: {exc}") from None
    except PolicyError as exc:
        raise SettingsError(f"CDS_POLICY_DIRS: policy file not usable: {exc}") from None


def load_configured_plans(settings: Settings) -> PlanDirectory | None:
    if not settings.plan_directory:
        return None
    try:
        return load_plan_directory(settings.plan_directory)
    except PlanDirectoryError as exc:
        raise SettingsError(f"CDS_PLAN_DIRECTORY={settings.plan_directory!r}: {exc}") from None


def _referable_devices(request: HookRequest, orders: Sequence[Any]) -> dict[str, dict]:
    """Devices a DeviceRequest.codeReference may point to, looked for only when an order has one."""
    if not any("codeReference" in order.resource for order in orders):
        return {}
    sent = {id(order): order for order in (*request.draft_orders, *orders)}.values()
    return device_index([*(order.resource for order in sent), *request.prefetch.values()])


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
