"""Member data for a hook call: the prefetch as sent, completed from the EHR's FHIR server (CDS Hooks 2.0 §4).

Per key: a present, non-null resource or Bundle is used (and a paginated Bundle's further pages read); `null`
means the client has no such data. Data under a key of the client's own (`coverageBundle`: clients that never
read discovery) is recognised by its content, a resource of the type or a Bundle holding some, before anything is
fetched. What is still missing (a missing key, an OperationOutcome, a resource of the wrong type) is fetched from
fhirServer by rendering the discovery template. What cannot be had is reported with why (`Gap`), and only data
the caller says it requires turns into a 412.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import quote

from cds.errors import CdsError
from cds.errors import quote as quoted
from cds.member.facts import MemberData
from cds.member.fetch import FetchError, FhirFetcher, next_link
from cds.protocol import HookRequest
from hooks.spec import PREFETCH

log = logging.getLogger(__name__)

# Why data could not be had: not sent and nowhere to fetch it from; not fetched because the FHIR server is not
# allowed; the FHIR server has no such resource (HTTP 404/410); fetching failed (down, refusing, too slow).
Gap = Literal["not-sent", "not-allowed", "not-found", "failed"]

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
    gaps: dict[str, Gap] = {}
    notes: list[str] = []
    recognised, paged = recognised_by_content(request)
    for key, resource_type in RESOURCE_TYPES.items():
        value = request.prefetch.get(key)
        if key in request.prefetch and value is None:
            continue  # the client has no such data: a valid empty result
        if isinstance(value, dict) and value.get("resourceType") in (resource_type, "Bundle"):
            values[key] = value
            if next_link(value):
                wanted[key] = value
            continue
        if key in recognised:
            values[key] = recognised[key]
            if key in paged:
                notes.append(f"{LABELS[key]} may be incomplete: only the first page of results was prefetched.")
            continue
        path = fill_template(PREFETCH[key], request)
        if path is None:
            unavailable[key] = "it was not prefetched and its query cannot be built from this call's context"
            gaps[key] = "not-sent"
        else:
            wanted[key] = path

    if wanted and not (fetcher and request.fhir_server):
        for key in wanted:
            if key in values:
                notes.append(f"{LABELS[key]} may be incomplete: only the first page of results was prefetched.")
            else:
                unavailable[key] = "it was not prefetched and the request names no fhirServer to fetch it from"
                gaps[key] = "not-sent"
    elif wanted and fetcher and request.fhir_server:
        token = request.fhir_authorization.access_token if request.fhir_authorization else None
        if request.fhir_authorization and token is None:
            log.info("fhirAuthorization.access_token is empty: fetching member data without Authorization")
        for key, result in fetcher.fetch_all(request.fhir_server, token, wanted, allowed=allowed).items():
            if isinstance(result, FetchError):
                log.info("member data %s not fetched: %s", key, result)
                if key in values:
                    notes.append(f"{LABELS[key]} may be incomplete: further pages could not be read ({result}).")
                else:
                    unavailable[key] = f"it was not prefetched, and {result}{_scope_note(request, key, result)}"
                    gaps[key] = _gap(result)
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
        gaps=gaps,
    )


def recognised_by_content(request: HookRequest) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Member data sent under keys other than ours, by our key: every resource of the key's type found in the
    values of the other keys (a resource, or a Bundle's entries), gathered in one collection Bundle; and the keys
    whose data came in a Bundle with further pages, which are not read. A Patient other than the call's is left
    out."""
    foreign = {name: value for name, value in request.prefetch.items()
               if name not in RESOURCE_TYPES and isinstance(value, dict)}
    found: dict[str, dict[str, Any]] = {}
    paged: set[str] = set()
    for key, resource_type in RESOURCE_TYPES.items():
        resources: dict[Any, dict[str, Any]] = {}
        sources = []
        for name, value in foreign.items():
            matches = [r for r in _resources(value, resource_type)
                       if resource_type != "Patient" or r.get("id") in (None, request.patient_id)]
            if matches:
                sources.append(name)
                resources.update(((r.get("id") or id(r)), r) for r in matches)
                if next_link(value):
                    paged.add(key)
        if resources:
            log.info("prefetch %s recognised by content as %s", ", ".join(quoted(n, 64) for n in sources), key)
            found[key] = {"resourceType": "Bundle", "type": "collection",
                          "entry": [{"resource": r} for r in resources.values()]}
    return found, paged


def _scope_note(request: HookRequest, key: str, error: FetchError) -> str:
    """Why a refused fetch was refused, when the token's scope says it: it grants no read of the resource type."""
    authorization = request.fhir_authorization
    if error.reason not in ("http-401", "http-403") or not (authorization and authorization.access_token):
        return ""
    if scope_reads(authorization.scope, RESOURCE_TYPES[key]):
        return ""
    return f"; its scope (fhirAuthorization.scope) grants no read of {RESOURCE_TYPES[key]}"


def _gap(error: FetchError) -> Gap:
    if error.reason == "refused":
        return "not-allowed"
    return "not-found" if error.reason in ("http-404", "http-410") else "failed"


def fill_template(template: str, request: HookRequest) -> str | None:
    """The template with its tokens filled from this call's context; None when a token has no value here."""
    kind, _, user = (request.user_id or "").partition("/")
    values = {"context.patientId": request.patient_id, "context.userId": request.user_id,
              "context.encounterId": request.encounter_id, f"user{kind}Id": user or None}
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


_SCOPE = re.compile(r"(?:patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|c?r?u?d?s?)(?:\?\S*)?")


def scope_reads(scope: str, resource_type: str) -> bool:
    """Whether a `fhirAuthorization.scope` grants reading or searching `resource_type`, in SMART v1 or v2 syntax.
    Used to say why a FHIR server refused a fetch; the FHIR server, not this service, enforces scopes."""
    for item in scope.split():
        found = _SCOPE.fullmatch(item)
        if found and found[1] in ("*", resource_type):
            permissions = found[2]
            if permissions in ("*", "read") or (permissions != "write" and {"r", "s"} & set(permissions)):
                return True
    return False
