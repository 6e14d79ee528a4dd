"""What an order says it is: its codings and its text, including those of a Device it references."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cds.fhirjson import as_list as _list
from cds.fhirjson import relative_reference
from cds.policy.codes import code_system, normalise_code, split_modifiers
from cds.policy.facts import Order

BILLING_OPTIONS = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-billing-options"
# The element that names what is ordered, by resource type.
CODE_ELEMENT = {
    "ServiceRequest": "code",
    "DeviceRequest": "codeCodeableConcept",
    "MedicationRequest": "medicationCodeableConcept",
    "CommunicationRequest": "category",
    "Appointment": "serviceType",
}
MAX_TEXT = 500  # bound the text searched per element: order text is free text
# Order statuses (FHIR R4 request-status) of an order being placed; the others (on-hold, completed, revoked,
# entered-in-error, unknown) are not judged. An order without a status, or with one FHIR does not define, is judged
# (it departs from R4, and is answered as sent).
BEING_PLACED = ("draft", "active")
REQUEST_STATUSES = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown")


@dataclass(frozen=True)
class Coded:
    system: str | None  # normalised: "CPT", "HCPCS", "" (no system) or None (another system)
    uri: str  # as sent
    code: str  # without modifiers
    where: str
    modifiers: tuple[str, ...] = ()  # as appended to the code: "E0221-RR" -> ("RR",)


@dataclass(frozen=True)
class Described:
    text: str
    where: str


@dataclass(frozen=True)
class OrderContent:
    codings: tuple[Coded, ...]
    texts: tuple[Described, ...]


def not_being_placed(order: Order) -> str | None:
    """Why an order is not judged: its status, when that says it is not being placed; None for an order that is,
    or may be."""
    status = order.resource.get("status")
    if not isinstance(status, str) or status not in REQUEST_STATUSES or status in BEING_PLACED:
        return None
    return f"its status is {status}; only draft or active orders are being placed"


def device_index(resources: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Devices by `Device/id`, from draft orders and prefetch values (a resource or a search Bundle)."""
    index: dict[str, dict[str, Any]] = {}
    for resource in resources:
        if not isinstance(resource, dict):
            continue
        candidates = [resource]
        if resource.get("resourceType") == "Bundle" and isinstance(resource.get("entry"), list):
            candidates = [e.get("resource") for e in resource["entry"] if isinstance(e, dict)]  # type: ignore[misc]
        for device in candidates:
            if _is_device(device):
                index.setdefault(f"Device/{device['id']}", device)
    return index


def code_element(resource_type: str) -> str:
    """The element of an order of this type that names what is ordered."""
    return CODE_ELEMENT.get(resource_type, "code")


def _is_device(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "Device" and isinstance(value.get("id"), str)


def read_order(order: Order, devices: Mapping[str, dict[str, Any]]) -> OrderContent:
    """The order's codings and texts, then those of each request it is based on."""
    content = _read_own(order, devices)
    for request in order.based_on:
        based = _read_own(request, devices)
        prefix = f"{request.reference or request.resource_type}, which {order.resource_type} is based on: "
        content = OrderContent(
            (*content.codings, *(replace(c, where=prefix + c.where) for c in based.codings)),
            (*content.texts, *(replace(t, where=prefix + t.where) for t in based.texts)))
    return content


def _read_own(order: Order, devices: Mapping[str, dict[str, Any]]) -> OrderContent:
    resource = order.resource
    codings: list[Coded] = []
    texts: list[Described] = []
    element = code_element(order.resource_type)
    _read_concept(resource.get(element), f"{order.resource_type}.{element}", codings, texts)
    reference = resource.get("codeReference") if order.resource_type == "DeviceRequest" else None
    if isinstance(reference, dict):
        _read_text(reference.get("display"), "DeviceRequest.codeReference.display", texts)
        device = _resolve_device(reference.get("reference"), resource, devices)
        if device is not None:
            where = f"the referenced Device {device.get('id') or ''}".rstrip()
            _read_concept(device.get("type"), f"{where} (type)", codings, texts)
            for name in _list(device.get("deviceName")):
                if isinstance(name, dict):
                    _read_text(name.get("name"), f"{where} (deviceName)", texts)
    return OrderContent(tuple(codings), tuple(texts))


def _resolve_device(reference: Any, order: dict[str, Any], devices: Mapping[str, dict[str, Any]]) -> dict | None:
    if not isinstance(reference, str):
        return None
    if reference.startswith("#"):
        return next((c for c in _list(order.get("contained"))
                     if isinstance(c, dict) and c.get("resourceType") == "Device" and c.get("id") == reference[1:]),
                    None)
    target = relative_reference(reference)
    return devices.get(target) if target and target.startswith("Device/") else None


def _read_concept(concept: Any, where: str, codings: list[Coded], texts: list[Described]) -> None:
    for item in _list(concept):  # a CodeableConcept, or a list of them (e.g. CommunicationRequest.category)
        if not isinstance(item, dict):
            continue
        _read_text(item.get("text"), where, texts)
        for coding in _list(item.get("coding")):
            _read_coding(coding, where, codings, texts)
        for extension in _list(item.get("extension")):  # CRD billing options: the codes a claim may carry
            if isinstance(extension, dict) and extension.get("url") == BILLING_OPTIONS:
                option = extension.get("valueCodeableConcept")
                for coding in _list(option.get("coding") if isinstance(option, dict) else None):
                    _read_coding(coding, f"a billing option of {where}", codings, texts)


def _read_coding(coding: Any, where: str, codings: list[Coded], texts: list[Described]) -> None:
    if not isinstance(coding, dict):
        return
    code = normalise_code(coding.get("code"))
    if code:
        uri = coding.get("system")
        code, modifiers = split_modifiers(code)  # a code of a system not known here is never compared
        codings.append(Coded(code_system(uri), uri if isinstance(uri, str) else "", code, where, modifiers))
    _read_text(coding.get("display"), where, texts)


def _read_text(value: Any, where: str, texts: list[Described]) -> None:
    if isinstance(value, str) and value.strip():
        texts.append(Described(" ".join(value.split())[:MAX_TEXT], where))

