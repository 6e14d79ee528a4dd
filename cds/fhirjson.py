"""FHIR JSON as clients send it: tolerant readers of elements, ids and references. Standard library only, so the
policy core can read orders without loading a FHIR model."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# `Type/id`, the form selections, delete actions and Coverage references use.
REFERENCE_PATTERN = re.compile(r"([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
# `Type/id` at the end of a relative or absolute reference, with an optional version.
_REFERENCE_TAIL = re.compile(r"([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """An array element as a list, tolerating the single object some clients send instead of an array."""
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else []


def relative_reference(reference: str) -> str | None:
    """`Type/id` from a relative or absolute reference; None for contained, urn or malformed references."""
    if reference.startswith(("#", "urn:")):
        return None
    match = _REFERENCE_TAIL.search(reference)
    return f"{match[1]}/{match[2]}" if match else None


def insurance_coverages(resource: dict[str, Any]) -> tuple[str, ...]:
    """The Coverages a request's `insurance` names (CRD orders carry their coverage there), as `Coverage/id`."""
    found = []
    for item in as_list(resource.get("insurance")):
        reference = as_dict(item).get("reference")
        relative = relative_reference(reference) if isinstance(reference, str) else None
        if relative and relative.startswith("Coverage/"):
            found.append(relative)
    return tuple(dict.fromkeys(found))


def fhir_date(value: Any) -> date | None:
    """The day of a FHIR date or dateTime; None for partial dates (year or year-month) and anything else."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def resources_in(values: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Resources with a type and an id among `values` (e.g. prefetch values): resources, and Bundles' entries."""
    for value in values:
        if not isinstance(value, dict):
            continue
        items = value.get("entry") if value.get("resourceType") == "Bundle" else [{"resource": value}]
        for entry in items if isinstance(items, list) else ():
            item = as_dict(entry).get("resource")
            if isinstance(item, dict) and isinstance(item.get("resourceType"), str) and isinstance(item.get("id"), str):
                yield item
