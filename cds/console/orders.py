"""The hook request the console sends: draft orders built from the form, the member's data as prefetch."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds.policy import CompiledPolicy
from cds.tools.order_request import CPT, HCPCS, coverage_references

ORDER_TYPES = ("DeviceRequest", "ServiceRequest")
SYSTEMS = {"CPT": CPT, "HCPCS": HCPCS}
USER_ID = "PractitionerRole/console-user"
PERFORMER = "Organization/console-dme-supplier"  # who order-dispatch sends the orders to
ENCOUNTER_ID = "console-encounter"  # the encounter that starts or ends (encounter-start, encounter-discharge)


@dataclass(frozen=True)
class CodeChoice:
    """A code the order form offers, with what it is and whether a loaded policy covers it."""

    order_type: str
    system: str
    code: str
    display: str
    covered_by: str  # the policy id, or "" for a look-alike the policy must not match


def code_choices(policies: tuple[CompiledPolicy, ...]) -> list[CodeChoice]:
    """The codes of every loaded policy (devices for HCPCS E and A codes), then the look-alikes each policy file
    names among its excluded codes (fhir_examples/no-card-*.json), all by the short descriptors of the files."""
    covered = [_choice(code.system, code.code, code.descriptor, policy.id)
               for policy in policies for code in policy.spec.codes]
    look_alikes = [_choice(group.system, code, descriptor, "")
                   for policy in policies for group in policy.spec.excluded_codes
                   for code, descriptor in group.descriptors.items()]
    return list({(choice.system, choice.code): choice for choice in [*covered, *look_alikes]}.values())


def _choice(system: str, code: str, descriptor: str, covered_by: str) -> CodeChoice:
    order_type = "DeviceRequest" if system == "HCPCS" and code[0] in "EA" else "ServiceRequest"
    return CodeChoice(order_type, SYSTEMS[system], code, descriptor, covered_by)


class FormError(ValueError):
    """The form cannot make a request; the message says which field and why."""


def build_request(form: dict[str, Any]) -> dict[str, Any]:
    """A complete CDS Hooks call from the console's form: hook, member, draft orders, CRD extensions."""
    hook = _text(form, "hook")
    patient = form.get("patient")
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient" or not patient.get("id"):
        raise FormError("patient: a Patient resource with an id is required")
    patient_id = str(patient["id"])
    prefetch = {"patient": patient, "coverage": _bundle_or_none(form, "coverage"),
                "conditions": _bundle_or_none(form, "conditions")}
    insurance = coverage_references({k: v for k, v in prefetch.items() if v})
    given = form.get("orders")
    if not isinstance(given, list) or not given:
        raise FormError("orders: add at least one draft order")
    orders = [draft_order(order, index, patient_id, insurance) for index, order in enumerate(given)]
    context: dict[str, Any] = {"userId": USER_ID, "patientId": patient_id, "draftOrders": _collection(orders)}
    if hook == "order-dispatch":  # the orders, signed, sent to a supplier: named in the context, given in prefetch
        signed = [{**order, "status": "active"} for order in orders]
        context = {"patientId": patient_id, "dispatchedOrders": [f"{o['resourceType']}/{o['id']}" for o in signed],
                   "performer": PERFORMER}
        prefetch["dispatchedOrders"] = {**_collection(signed), "type": "searchset"}
    elif hook == "appointment-book":  # a visit booked for each order's service
        del context["draftOrders"]
        context["appointments"] = _collection([_appointment(order, patient_id) for order in orders])
    elif hook in ("encounter-start", "encounter-discharge"):  # the orders pending for the encounter, prefetched
        del context["draftOrders"]
        context["encounterId"] = ENCOUNTER_ID
        pending = [{**order, "encounter": {"reference": f"Encounter/{ENCOUNTER_ID}"}} for order in orders]
        prefetch["encounterOrders"] = {**_collection(pending), "type": "searchset"}
    if hook == "order-select":
        context["selections"] = [f"{o['resourceType']}/{o['id']}" for o, g in zip(orders, given, strict=True)
                                 if g.get("selected", True)]
    request: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
                               "prefetch": prefetch}
    extension = crd_extension(form)
    if extension:
        request["extension"] = extension
    return request


def draft_order(order: Any, index: int, patient_id: str, insurance: list[str]) -> dict[str, Any]:
    """A DeviceRequest or ServiceRequest with a code (any system) or free text, as the CRD profiles want it."""
    where = f"orders[{index}]"
    if not isinstance(order, dict):
        raise FormError(f"{where}: expected an object")
    order_type = order.get("type")
    if order_type not in ORDER_TYPES:
        raise FormError(f"{where}.type: one of {', '.join(ORDER_TYPES)}")
    code, system, text = (str(order.get(key) or "").strip() for key in ("code", "system", "text"))
    if not code and not text:
        raise FormError(f"{where}: give a code or a description")
    concept: dict[str, Any] = {}
    if code:
        concept["coding"] = [{k: v for k, v in (("system", system), ("code", code),
                                                ("display", str(order.get("display") or "").strip())) if v}]
    if text:
        concept["text"] = text
    resource: dict[str, Any] = {
        "resourceType": order_type, "id": f"console-order-{index + 1}", "status": "draft",
        "intent": "original-order",
        "codeCodeableConcept" if order_type == "DeviceRequest" else "code": concept,
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": date.today().isoformat(),
        "requester": {"reference": USER_ID},
    }
    if insurance:
        resource["insurance"] = [{"reference": reference} for reference in insurance]
    return resource


def _appointment(order: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """A proposed visit for the service the order names."""
    return {"resourceType": "Appointment", "id": order["id"].replace("order", "appointment"), "status": "proposed",
            "serviceType": [order.get("code") or order["codeCodeableConcept"]],
            "participant": [{"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"},
                            {"actor": {"reference": USER_ID}, "status": "accepted"}]}


def _collection(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def crd_extension(form: dict[str, Any]) -> dict[str, Any]:
    """`davinci-crd.configuration` (the options the service declares, as the user set them) and
    `davinci-crd.requestedVersion`."""
    extension: dict[str, Any] = {}
    configuration = form.get("configuration") or {}
    if not isinstance(configuration, dict) or not all(isinstance(value, bool | int)
                                                      for value in configuration.values()):
        raise FormError("configuration: option codes with true/false or whole-number values")
    if configuration:
        extension["davinci-crd.configuration"] = configuration
    version = form.get("requestedVersion")
    if version:
        extension["davinci-crd.requestedVersion"] = str(version)
    return extension


def _text(form: dict[str, Any], name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        raise FormError(f"{name} is required")
    return value.strip()


def _bundle_or_none(form: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A searchset Bundle (a single resource is wrapped in one), or None: the EHR has no such data."""
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str) or not isinstance(
            value.get("entry", []), list):
        raise FormError(f"{name}: a FHIR Bundle or resource, or null")
    if value["resourceType"] == "Bundle":
        return value
    return {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [{"resource": value}]}
