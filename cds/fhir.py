"""Draft orders as an EHR sends them: normalised, and checked against FHIR R4 (fhir.resources R4B) when asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

from cds.fhirjson import ID_PATTERN
from cds.policy.facts import Order
from cds.validation import error_path

MAX_PROBLEMS = 5
# The resource types draft orders come as (CDS Hooks order-select and order-sign, Da Vinci CRD).
ORDER_TYPES = ("ServiceRequest", "DeviceRequest", "MedicationRequest", "NutritionOrder", "VisionPrescription",
               "CommunicationRequest", "Appointment")


@dataclass(frozen=True)
class DraftOrder(Order):
    """One order from context.draftOrders: its JSON as normalised, and what is wrong with it as FHIR R4."""

    @cached_property
    def problems(self) -> tuple[str, ...]:
        """Where the order departs from R4. Checked on first use: validation costs more than the rest of the
        request, and a decision that does not need it should not pay for it."""
        model = model_class(self.resource_type)
        if model is None:
            return (f"{self.resource_type} is not a FHIR R4 resource type",)
        return validation_problems(model, self.resource)


@dataclass(frozen=True)
class OrderReference(Order):
    """An order the call names only by reference (`Type/id`), to be resolved before it is judged: from
    `candidates` (resources the call itself carries that may be it), the prefetch, else the FHIR server."""

    named_at: str = ""  # where the call names it, e.g. context.dispatchedOrders[0]
    candidates: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class OrderSearch(Order):
    """Orders the call implies by a search the EHR did not prefetch (an encounter's pending orders): read from the
    FHIR server by `query`, a prefetch template of this hook; those `keep` accepts are judged."""

    named_at: str = ""  # the prefetch key that would have carried them, e.g. prefetch.serviceRequests
    query: str = ""
    keep: Callable[[dict[str, Any]], bool] = field(default=lambda resource: True, compare=False)


def order_reference(reference: str, named_at: str, candidates: tuple[dict[str, Any], ...] = (),
                    performer: str | None = None) -> OrderReference:
    """The order `Type/id` names (the reference checked by the caller)."""
    resource_type, _, order_id = reference.partition("/")
    return OrderReference({}, resource_type, order_id, performer=performer, named_at=named_at,
                          candidates=candidates)


def parse_draft_order(resource: dict[str, Any]) -> DraftOrder:
    """Normalise what sloppy clients send; its check against the R4B model waits until `problems` is read."""
    resource_type = resource["resourceType"]
    model = model_class(resource_type)
    normalised = prune_empty(resource)
    if model is not None:
        normalised = wrap_single_objects(normalised, list_fields(model))
    raw_id = normalised.get("id")
    order_id = raw_id if isinstance(raw_id, str) and ID_PATTERN.fullmatch(raw_id) else None
    return DraftOrder(normalised, resource_type, order_id)


def load_order_models() -> None:
    """Import the R4B models of the order types at start-up, rather than during some client's request."""
    for resource_type in ORDER_TYPES:
        model = model_class(resource_type)
        if model is not None:
            list_fields(model)


@cache
def model_class(resource_type: str) -> type[BaseModel] | None:
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


@cache
def list_fields(model: type[BaseModel]) -> frozenset[str]:
    """JSON names of the model's top-level elements that are arrays (0..* in R4)."""
    names = set()
    for name, info in model.model_fields.items():
        if "List[" in str(info.annotation) or "list[" in str(info.annotation):
            names.add(info.alias or name)
    return frozenset(names)


def wrap_single_objects(resource: dict[str, Any], array_elements: frozenset[str]) -> dict[str, Any]:
    """Sandbox clients send e.g. `category` as one object where R4 has an array: wrap it."""
    return {
        key: [value] if key in array_elements and isinstance(value, dict) else value
        for key, value in resource.items()
    }


def prune_empty(value: Any) -> Any:
    """Drop `{}`, `[]`, `""` and null at every level: FHIR JSON forbids them and clients still send them."""
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:  # not JSON as it stands: walk it
        return _prune(value)
    # An empty or null member leaves one of these in the text; found at C speed, their absence spares the
    # clean majority of resources the walk (a string holding one only costs the walk).
    if b"{}" in text or b"[]" in text or b'""' in text or b"null" in text:
        return _prune(value)
    return value


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if not _empty(v)}
    if isinstance(value, list):
        pruned_items = (_prune(v) for v in value)
        return [v for v in pruned_items if not _empty(v)]
    return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, dict | list | str) and not value)


def validation_problems(model: type[BaseModel], resource: dict[str, Any]) -> tuple[str, ...]:
    """Where the resource departs from R4, by element path. Never the values: they may be patient data."""
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return tuple(
            f"{error_path(error['loc']) or resource['resourceType']}: {error['msg']}"
            for error in exc.errors()[:MAX_PROBLEMS]
        )
    except (ValueError, TypeError) as exc:  # fhir.resources raises these for some malformed primitives
        return (f"{resource['resourceType']}: {type(exc).__name__}",)
    return ()
