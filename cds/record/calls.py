"""What one hook call leaves in the audit store: the call and its decisions, as records.

Minimum necessary data: references and codes of the orders, the decisions and the uuids of what was said;
the request and response bodies only when payload capture is on (the store drops the access token).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cds.policy.facts import Order
from cds.policy.orders import code_element
from cds.protocol import CdsResponse, HookRequest
from cds.record.records import DecisionRecord, HookCall, JudgedOrder

if TYPE_CHECKING:
    from cds.auth import RegisteredClient
    from cds.render import Rendered


def call_records(
    service_id: str,
    request: HookRequest,
    client: RegisteredClient | None,
    status: int,
    latency_ms: float,
    rendered: Sequence[Rendered] = (),
    response: CdsResponse | None = None,
    payloads: tuple[dict[str, Any], dict[str, Any]] | None = None,
    orders: Sequence[Order] | None = None,
) -> tuple[HookCall, list[DecisionRecord]]:
    """The call and its decisions as records; `payloads` (request, response JSON) only with capture on. `orders`:
    the orders (or appointments) the call was about, by default its draft orders."""
    now = datetime.now(UTC)
    sent_cards = {card.uuid for card in response.cards} if response else set()
    orders = request.draft_orders if orders is None else orders
    codes = {id(order): order_codes(order) for order in orders}
    call = HookCall(
        time=now,
        service_id=service_id,
        hook=request.hook,
        hook_instance=request.hook_instance,
        status=status,
        latency_ms=latency_ms,
        orders=tuple(JudgedOrder(order.reference, codes[id(order)], order.performer) for order in orders),
        client_iss=client.iss if client else None,
        client_tenant=client.tenant if client else None,
        patient_id=request.patient_id,
        request=payloads[0] if payloads else None,
        response=payloads[1] if payloads else None,
    )
    decisions = []
    for item in rendered:
        decision, card = item.decision, item.card
        sent = card.uuid in sent_cards
        outcome, coverage_reference, reason = item.answered()
        decisions.append(DecisionRecord(
            coverage_assertion_id=decision.assertion_id,
            hook_instance=request.hook_instance,
            order_reference=decision.order.reference,
            order_codes=codes.get(id(decision.order)) or order_codes(decision.order),
            policy_id=decision.policy_id,
            policy_version=decision.policy_version,
            outcome=outcome,
            reason=reason,
            decided_at=now,
            card_uuid=card.uuid if sent else None,
            suggestion_uuids=tuple(s.uuid for s in card.suggestions) if sent else (),
            coverage_reference=coverage_reference,
            performer=decision.order.performer,
        ))
    return call, decisions


def order_codes(order: Order) -> tuple[str, ...]:
    """The order's codes as FHIR tokens (`system|code`), from the element that names what its type orders (one
    concept, or several as in Appointment.serviceType), then those of the requests it is based on."""
    concepts = order.resource.get(code_element(order.resource_type))
    codings = [coding for concept in (concepts if isinstance(concepts, list) else [concepts])
               if isinstance(concept, dict) and isinstance(concept.get("coding"), list) for coding in concept["coding"]]
    own = tuple(
        f"{coding['system'] if isinstance(coding.get('system'), str) else ''}|{coding['code']}"
        for coding in codings if isinstance(coding, dict) and isinstance(coding.get("code"), str)
    )
    return tuple(dict.fromkeys((*own, *(code for request in order.based_on for code in order_codes(request)))))
