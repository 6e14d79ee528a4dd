"""order-dispatch: a signed order is sent to a performer (a DME supplier, an imaging centre); each dispatched order is
judged, with coverage information, and the performer is recorded with the decision. The context names the orders
only by reference: they come from the prefetch, a fulfillment Task that carries them, else the EHR's FHIR server."""

from cds.fhir import OrderReference, order_reference
from cds.fhirjson import as_dict, as_list, relative_reference
from cds.protocol import ContextShape, HookRequest, context_reference, context_references
from hooks.spec import Hook

# The context's names for its fields: the hook's own, then those of older examples and the 2023 CRD ballot.
DISPATCHED_ORDERS = ("dispatchedOrders", "dispatched-orders", "order")
FULFILLMENT_TASKS = ("fulfillmentTasks", "fulfillment-tasks", "task")
MAX_DISPATCHED = 50
ORDER_TYPES = ("CommunicationRequest", "DeviceRequest", "MedicationRequest", "NutritionOrder", "ServiceRequest",
               "VisionPrescription")


def dispatched_orders(request: HookRequest) -> tuple[OrderReference, ...]:
    performer = context_reference(request, "performer")
    tasks = [as_dict(task) for name in FULFILLMENT_TASKS for task in as_list(request.context.get(name))]
    return tuple(order_reference(reference, named_at, _carried_by(tasks, reference), performer)
                 for reference, named_at in context_references(request, DISPATCHED_ORDERS, MAX_DISPATCHED))


def _carried_by(tasks: list[dict], reference: str) -> tuple[dict, ...]:
    """Resources contained in the fulfillment Tasks whose focus is the order."""
    return tuple(resource for task in tasks
                 if relative_reference(str(as_dict(task.get("focus")).get("reference") or "")) == reference
                 for resource in as_list(task.get("contained")))


def _prefetch(resource_type: str) -> str:
    return f"{resource_type}?_id={{{{context.dispatchedOrders.resolve().ofType({resource_type}).id}}}}"


HOOK = Hook(
    name="order-dispatch",
    service_id="order-dispatch-crd",
    title="Coverage requirements at order dispatch",
    description="Tells whoever routes a signed order to a performer (for example a DME supplier) whether each "
    "dispatched order is covered under the payer's medical policy and why, and returns Da Vinci CRD coverage "
    "information to store on the order.",
    primary=True,
    requires_selections=False,
    judged_orders=dispatched_orders,
    context=ContextShape(orders_in=None, requires_user=False),
    more_prefetch={
        **{name[0].lower() + name[1:] + "s": _prefetch(name) for name in ORDER_TYPES},
        "devices": "Device?_id={{%deviceRequests.entry.resource.code.resolve().id}}",
    },
)
