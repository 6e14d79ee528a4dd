"""Member data for a hook call, from the request's prefetch."""

from __future__ import annotations

from typing import Any

from cds.facts import MemberData
from cds.protocol import HookRequest


def member_data(request: HookRequest) -> MemberData:
    prefetch = request.prefetch
    return MemberData(
        patient=_resource(prefetch.get("patient"), "Patient"),
        coverages=_search_results(prefetch.get("coverage"), "Coverage"),
        conditions=_search_results(prefetch.get("conditions"), "Condition"),
    )


def _resource(value: Any, resource_type: str) -> dict[str, Any] | None:
    return value if isinstance(value, dict) and value.get("resourceType") == resource_type else None


def _search_results(value: Any, resource_type: str) -> tuple[dict[str, Any], ...]:
    if _resource(value, resource_type):
        return (value,)
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        return ()
    entries = value.get("entry") if isinstance(value.get("entry"), list) else []
    return tuple(
        e["resource"] for e in entries
        if isinstance(e, dict) and _resource(e.get("resource"), resource_type)
    )
