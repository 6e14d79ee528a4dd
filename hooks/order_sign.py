"""order-sign: the clinician signs; every draft order is judged and coverage information returned."""

from cds.protocol import HookRequest
from hooks.spec import Hook


def all_draft_orders(request: HookRequest):
    return request.draft_orders


HOOK = Hook(
    name="order-sign",
    service_id="order-sign-crd",
    title="Coverage requirements at order signing",
    description="Tells the clinician, as orders are signed, whether each is covered under the payer's "
    "medical policy and why, and returns Da Vinci CRD coverage information to store on the order.",
    primary=True,
    requires_selections=False,
    judged_orders=all_draft_orders,
)
