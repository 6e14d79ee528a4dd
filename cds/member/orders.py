"""Orders a call names only by reference (order-dispatch's dispatchedOrders, the requests an Appointment is based
on), resolved before they are judged: from the resources the call itself carries, else the prefetch, else fetched
from the EHR's FHIR server under the same allow-list, time budget and token rules as member data; and searches for
orders the EHR did not prefetch (an encounter's pending orders), run on the FHIR server the same way. Orders that
cannot be had fail the call with 412, naming each, where the call names it and why."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from cds.errors import CdsError
from cds.fhir import OrderReference, OrderSearch, parse_draft_order
from cds.fhirjson import as_dict, relative_reference, resources_in
from cds.member.fetch import FetchError, FhirFetcher
from cds.member.prefetch import fill_template
from cds.policy.facts import Order
from cds.protocol import HookRequest

log = logging.getLogger(__name__)

# The element naming the patient an order is for, by resource type (subject for the others).
PATIENT_ELEMENT = {"NutritionOrder": "patient", "VisionPrescription": "patient"}
Wanted = OrderReference | OrderSearch


class OrdersUnavailable(CdsError):
    """412 (CDS Hooks 2.0 §3): orders the call is about came neither with the call nor from fhirServer."""

    def __init__(self, missing: list[tuple[Wanted, str]]):
        details = "; ".join(f"{_described(item)} ({item.named_at}): {why}" for item, why in missing)
        super().__init__(412, f"Orders to judge could not be obtained. {details}.", "not-found", missing[0][0].named_at)


def resolve_orders(orders: Sequence[Order], request: HookRequest, fetcher: FhirFetcher | None,
                   allowed: Iterable[str] | None = None) -> tuple[Order, ...]:
    """`orders` with every order named only by reference, at the top or among the requests one is based on,
    replaced by the resource itself, and every search for orders by the orders it finds. `allowed`: FHIR base
    URLs this call may fetch from (None: the configured allow-list)."""
    wanted = {_key(item): item for item in _wanted(orders)}
    if not wanted:
        return tuple(orders)
    found, missing = _in_call(wanted.values(), request), {}
    unfound = [item for key, item in wanted.items() if key not in found]
    if unfound and not (fetcher and request.fhir_server):
        missing = dict.fromkeys(map(_key, unfound), "it is neither in the call nor prefetched, and the request "
                                "names no fhirServer to fetch it from")
    elif unfound and fetcher:
        fetched, missing = _fetch(unfound, request, fetcher, allowed)
        found.update(fetched)
    for key, resource in list(found.items()):
        if isinstance(wanted[key], OrderReference) and not _for_patient(resource, request.patient_id):
            missing[key] = "it is for another patient than context.patientId"
            del found[key]
    if missing:
        raise OrdersUnavailable([(item, missing[key]) for key, item in wanted.items() if key in missing])
    return tuple(resolved for order in orders for resolved in _resolved(order, found, request.patient_id))


def _wanted(orders: Sequence[Order]) -> Iterator[Wanted]:
    for order in orders:
        for item in (order, *order.based_on):
            if isinstance(item, OrderReference | OrderSearch):
                yield item


def _key(item: Wanted) -> str:
    return item.reference if isinstance(item, OrderReference) and item.reference else item.named_at


def _described(item: Wanted) -> str:
    return item.reference if isinstance(item, OrderReference) and item.reference else f"The {item.resource_type}s"


def _in_call(wanted: Iterable[Wanted], request: HookRequest) -> dict[str, dict[str, Any]]:
    """The referenced resources the call carries: among each reference's candidates, else in the prefetch
    (whatever its key: a resource, or a Bundle's entries). A search is wanted only when the prefetch lacks it."""
    prefetched = {f"{r['resourceType']}/{r['id']}": r for r in resources_in(request.prefetch.values())}
    found = {}
    for ref in wanted:
        if isinstance(ref, OrderReference):
            candidates = {f"{r['resourceType']}/{r['id']}": r for r in resources_in(ref.candidates)}
            resource = candidates.get(_key(ref)) or prefetched.get(_key(ref))
            if resource is not None:
                found[_key(ref)] = resource
    return found


def _fetch(wanted: list[Wanted], request: HookRequest, fetcher: FhirFetcher,
           allowed: Iterable[str] | None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    token = request.fhir_authorization.access_token if request.fhir_authorization else None
    paths = {_key(item): _key(item) if isinstance(item, OrderReference) else fill_template(item.query, request)
             for item in wanted}
    results = fetcher.fetch_all(request.fhir_server or "", token, {key: path for key, path in paths.items() if path},
                                allowed=allowed)
    found, missing = {}, {}
    for item in wanted:
        key = _key(item)
        result = results.get(key)
        expected = (item.resource_type, item.id) if isinstance(item, OrderReference) else ("Bundle", None)
        if result is None:
            missing[key] = "its search cannot be built from this call's context"
        elif isinstance(result, FetchError):
            log.info("orders %s not fetched: %s", item.resource_type, result)
            missing[key] = f"it was not in the call, and {result}"
        elif (result.resource.get("resourceType"), expected[1] and result.resource.get("id")) != expected:
            missing[key] = "the FHIR server answered with another resource than the one asked for"
        else:
            found[key] = result.resource
    return found, missing


def _resolved(order: Order, found: dict[str, dict[str, Any]], patient_id: str) -> tuple[Order, ...]:
    """The order as judged: itself, the resource a reference names, or the orders a search found."""
    if isinstance(order, OrderReference):
        return (replace(parse_draft_order(found[_key(order)]), performer=order.performer),)
    if isinstance(order, OrderSearch):
        return tuple(parse_draft_order(resource) for resource in resources_in([found[_key(order)]])
                     if resource["resourceType"] == order.resource_type and order.keep(resource)
                     and _for_patient(resource, patient_id))
    if any(isinstance(item, OrderReference) for item in order.based_on):
        based_on = tuple(request for item in order.based_on for request in _resolved(item, found, patient_id))
        return (replace(order, based_on=based_on),)
    return (order,)


def _for_patient(resource: dict[str, Any], patient_id: str) -> bool:
    """False only when the order clearly names another Patient."""
    reference = as_dict(resource.get(PATIENT_ELEMENT.get(resource["resourceType"], "subject"))).get("reference")
    target = relative_reference(reference) if isinstance(reference, str) else None
    return not (target and target.startswith("Patient/") and target != f"Patient/{patient_id}")
