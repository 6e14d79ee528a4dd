"""order-select: the clinician picks orders; only the selected ones are judged."""

from cds.protocol import HookRequest
from hooks.spec import Hook


def selected_orders(request: HookRequest):
    chosen = set(request.selections)
    return tuple(order for order in request.draft_orders if order.reference in chosen)


HOOK = Hook(
    name="order-select",
    service_id="order-select-crd",
    title="Coverage requirements at order selection",
    description="Tells the clinician, while orders are being chosen, whether the selected orders are "
    "covered under the payer's medical policy and why.",
    primary=False,
    requires_selections=True,
    judged_orders=selected_orders,
)
