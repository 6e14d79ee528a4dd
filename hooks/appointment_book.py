"""appointment-book: future visits are booked; each proposed Appointment is judged on its serviceType (with its CRD
billing options) and the requests it is based on, and coverage information is returned to store on it."""

from dataclasses import replace

from cds.fhir import DraftOrder, order_reference, parse_draft_order
from cds.fhirjson import as_dict, as_list, relative_reference
from cds.policy.facts import Order
from cds.protocol import ContextShape, HookRequest
from hooks.spec import Hook

# R4 Appointment.basedOn refers to ServiceRequests only; CRD points to a DeviceRequest or MedicationRequest through
# this extension on the reference.
ALTERNATE_REFERENCE = "http://hl7.org/fhir/StructureDefinition/alternate-reference"
NOT_BOOKED = ("cancelled", "noshow", "entered-in-error")


def booked_appointments(request: HookRequest) -> tuple[Order, ...]:
    return tuple(replace(appointment, based_on=_based_on(appointment, f"context.appointments.entry[{index}]"))
                 for index, appointment in enumerate(request.draft_orders)
                 if appointment.resource_type == "Appointment"
                 and appointment.resource.get("status") not in NOT_BOOKED)


def _based_on(appointment: DraftOrder, where: str) -> tuple[Order, ...]:
    """The requests the Appointment carries out: contained in it, else to be resolved by reference."""
    contained = {f"#{c['id']}": c for c in map(as_dict, as_list(appointment.resource.get("contained")))
                 if isinstance(c.get("id"), str) and isinstance(c.get("resourceType"), str)}
    requests: list[Order] = []
    for index, based_on in enumerate(as_list(appointment.resource.get("basedOn"))):
        target = _target(as_dict(based_on))
        if target in contained:
            requests.append(parse_draft_order(contained[target]))
        elif target and (reference := relative_reference(target)):
            requests.append(order_reference(reference, f"{where}.resource.basedOn[{index}]"))
    return tuple(requests)


def _target(based_on: dict) -> str | None:
    alternate = [as_dict(as_dict(e).get("valueReference")).get("reference") for e in as_list(based_on.get("extension"))
                 if as_dict(e).get("url") == ALTERNATE_REFERENCE]
    target = next((a for a in alternate if isinstance(a, str)), based_on.get("reference"))
    return target if isinstance(target, str) else None


def _prefetch(resource_type: str, path: str) -> str:
    requests = f"context.appointments.entry.resource.basedOn{path}.resolve().ofType({resource_type})"
    return f"{resource_type}?_id={{{{{requests}.id}}}}"


HOOK = Hook(
    name="appointment-book",
    service_id="appointment-book-crd",
    title="Coverage requirements at appointment booking",
    description="Tells whoever books a visit whether the service booked (the Appointment's service type and the "
    "orders it carries out) is covered under the payer's medical policy and why, and returns Da Vinci CRD coverage "
    "information to store on the Appointment.",
    primary=True,
    requires_selections=False,
    judged_orders=booked_appointments,
    context=ContextShape(orders_in=("appointments",)),
    more_prefetch={
        "serviceRequests": _prefetch("ServiceRequest", ""),
        "deviceRequests": _prefetch("DeviceRequest", f".extension('{ALTERNATE_REFERENCE}').value"),
        "medicationRequests": _prefetch("MedicationRequest", f".extension('{ALTERNATE_REFERENCE}').value"),
    },
)
