"""Member data for a hook call: the prefetch as sent, completed from the EHR's FHIR server (CDS Hooks 2.0 §4).

Per key: a present, non-null resource or Bundle is used (and a paginated Bundle's further pages read); `null`
means the client has no such data; a missing key, an OperationOutcome or a resource of the wrong type is
fetched from fhirServer by rendering the discovery template. What cannot be had is reported, and only data the
caller says it requires turns into a 412.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from cds.errors import CdsError
from cds.member.facts import MemberData
from cds.member.fetch import FetchError, FhirFetcher, next_link
from cds.protocol import HookRequest
from hooks.spec import PREFETCH

log = logging.getLogger(__name__)

RESOURCE_TYPES = {"patient": "Patient", "coverage": "Coverage", "conditions": "Condition"}
LABELS = {"patient": "The patient's record", "coverage": "The patient's coverage",
          "conditions": "The patient's active conditions"}
TOKEN = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


class DataUnavailable(CdsError):
    """412 (CDS Hooks 2.0 §3): data a decision strictly requires came neither with the prefetch nor from fhirServer."""

    def __init__(self, missing: dict[str, str]):
        details = "; ".join(f"{LABELS[key]} (prefetch.{key}): {why}" for key, why in missing.items())
        super().__init__(412, f"Required data could not be obtained. {details}.", "not-found",
                         f"prefetch.{next(iter(missing))}")


def member_data(request: HookRequest, fetcher: FhirFetcher | None = None, required: Iterable[str] = (),
                allowed: Iterable[str] | None = None) -> MemberData:
    """The member's Patient, Coverages and Conditions for this call. Without a fetcher nothing is fetched.
    `required`: prefetch keys without which no decision can be made (412 when they cannot be had).
    `allowed`: FHIR base URLs this call may fetch from, instead of the configured allow-list."""
    required = set(required)
    if required - RESOURCE_TYPES.keys():
        raise ValueError(f"unknown prefetch keys {sorted(required - RESOURCE_TYPES.keys())}")
    values: dict[str, Any] = {}
    wanted: dict[str, str | dict[str, Any]] = {}  # a path to fetch, or a Bundle whose further pages to read
    unavailable: dict[str, str] = {}
    notes: list[str] = []
    for key, resource_type in RESOURCE_TYPES.items():
        value = request.prefetch.get(key)
        if key in request.prefetch and value is None:
            continue  # the client has no such data: a valid empty result
        if isinstance(value, dict) and value.get("resourceType") in (resource_type, "Bundle"):
            values[key] = value
            if next_link(value):
                wanted[key] = value
            continue
        path = fill_template(PREFETCH[key], request)
        if path is None:
            unavailable[key] = "it was not prefetched and its query cannot be built from this call's context"
        else:
            wanted[key] = path

    if wanted and not (fetcher and request.fhir_server):
        for key in wanted:
            if key in values:
                notes.append(f"{LABELS[key]} may be incomplete: only the first page of results was prefetched.")
            else:
                unavailable[key] = "it was not prefetched and the request names no fhirServer to fetch it from"
    elif wanted and fetcher and request.fhir_server:
        token = request.fhir_authorization.access_token if request.fhir_authorization else None
        for key, result in fetcher.fetch_all(request.fhir_server, token, wanted, allowed=allowed).items():
            if isinstance(result, FetchError):
                log.info("member data %s not fetched: %s", key, result)
                if key in values:
                    notes.append(f"{LABELS[key]} may be incomplete: further pages could not be read ({result}).")
                else:
                    unavailable[key] = f"it was not prefetched, and {result}"
                continue
            values[key] = result.resource
            if result.incomplete:
                notes.append(f"{LABELS[key]} may be incomplete: {result.incomplete}.")

    missing = {key: unavailable[key] for key in RESOURCE_TYPES if key in required and key in unavailable}
    if missing:
        raise DataUnavailable(missing)
    return MemberData(
        patient=next(iter(_resources(values.get("patient"), "Patient")), None),
        coverages=_resources(values.get("coverage"), "Coverage"),
        conditions=_resources(values.get("conditions"), "Condition"),
        unavailable=(*(f"{LABELS[key]} could not be obtained: {why}." for key, why in unavailable.items()), *notes),
        unavailable_keys=frozenset(unavailable),
        patient_id=request.patient_id,
    )


def fill_template(template: str, request: HookRequest) -> str | None:
    """The template with its tokens filled from this call's context; None when a token has no value here."""
    kind, _, user = request.user_id.partition("/")
    values = {"context.patientId": request.patient_id, "context.userId": request.user_id,
              "context.encounterId": request.encounter_id, f"user{kind}Id": user}
    tokens = TOKEN.findall(template)
    if any(values.get(token) is None for token in tokens):
        return None
    return TOKEN.sub(lambda m: quote(values[m[1]] or "", safe="/"), template)


def _resources(value: Any, resource_type: str) -> tuple[dict[str, Any], ...]:
    """The resources of `resource_type` in a resource or search Bundle (included resources of other types aside)."""
    if not isinstance(value, dict):
        return ()
    if value.get("resourceType") == resource_type:
        return (value,)
    entries = value.get("entry") if value.get("resourceType") == "Bundle" else None
    return tuple(
        entry["resource"] for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == resource_type
    )
