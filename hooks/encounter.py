"""What encounter-start and encounter-discharge share. Both are CRD secondary hooks: they judge the encounter's
pending orders (ServiceRequests and DeviceRequests for it, as the EHR prefetches them, else searched on its FHIR
server), answer only with what the client's configuration asks for (every option defaults to off), and never ask
for documentation (CRD hook-19)."""

from cds.fhir import OrderSearch, parse_draft_order
from cds.fhirjson import as_dict, relative_reference, resources_in
from cds.policy.facts import Order
from cds.protocol import ContextShape, HookRequest
from hooks import spec

ORDER_TYPES = ("ServiceRequest", "DeviceRequest")
PENDING = ("draft", "active")
CONTEXT = ContextShape(orders_in=None, requires_encounter=True)
PREFETCH = {f"{name[0].lower()}{name[1:]}s": f"{name}?patient={{{{context.patientId}}}}"
            f"&encounter={{{{context.encounterId}}}}&status={','.join(PENDING)}" for name in ORDER_TYPES}
# The options every hook declares (CRD dev-9: the same codes, names and descriptions), every switch off by default.
CONFIGURATION_OPTIONS = tuple({**option, "default": False} if option["type"] == "boolean" else option
                              for option in spec.CONFIGURATION_OPTIONS)


def encounter_hook(name: str, title: str, description: str) -> spec.Hook:
    """A secondary encounter hook: the encounter's pending orders judged, every configuration option off until
    the client switches it on."""
    return spec.Hook(name=name, service_id=f"{name}-crd", title=title, description=description, primary=False,
                     requires_selections=False, judged_orders=encounter_orders, context=CONTEXT,
                     more_prefetch=PREFETCH, configuration_options=CONFIGURATION_OPTIONS)


def encounter_orders(request: HookRequest) -> tuple[Order, ...]:
    """The pending ServiceRequests and DeviceRequests for this encounter among the prefetched resources (whatever
    their key), each once; for a kind the prefetch lacks, its search, run on fhirServer when the call names one."""
    found: dict[str, dict] = {}
    for resource in resources_in(request.prefetch.values()):
        if resource["resourceType"] in ORDER_TYPES and _pending_for(resource, request.encounter_id):
            found.setdefault(f"{resource['resourceType']}/{resource['id']}", resource)
    searches = [OrderSearch({}, resource_type, None, named_at=f"prefetch.{key}", query=PREFETCH[key],
                            keep=lambda r: _pending_for(r, request.encounter_id)
                            and f"{r['resourceType']}/{r['id']}" not in found)
                for key, resource_type in zip(PREFETCH, ORDER_TYPES, strict=True)
                if request.fhir_server and _not_prefetched(request.prefetch, key)]
    return (*(parse_draft_order(resource) for resource in found.values()), *searches)


def _pending_for(resource: dict, encounter_id: str | None) -> bool:
    reference = as_dict(resource.get("encounter")).get("reference")
    return resource.get("status") in PENDING and isinstance(reference, str) \
        and relative_reference(reference) == f"Encounter/{encounter_id}"


def _not_prefetched(prefetch: dict, key: str) -> bool:
    """Missing, or an OperationOutcome in its place (CDS Hooks 2.0: fetch it); `null` is "no such orders"."""
    return key not in prefetch or as_dict(prefetch[key]).get("resourceType") == "OperationOutcome"
