"""The hook request an EHR sends when a clinician orders one code for a patient: a draft order, and the
prefetch the service's discovery entry asks for, read from the patient's FHIR server."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from cds.fhirjson import as_dict
from cds.tools.client import FhirClient

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
SYSTEM_ALIASES = {"cpt": CPT, "hcpcs": HCPCS, "snomed": "http://snomed.info/sct", "loinc": "http://loinc.org"}
# HCPCS arrives under several URIs (see the domain reference); all of them name the same codes.
HCPCS_SYSTEMS = frozenset({
    HCPCS,
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "urn:oid:2.16.840.1.113883.6.285",
    "urn:oid:2.16.840.1.113883.6.14",
    "https://bluebutton.cms.gov/resources/codesystem/hcpcs",
})
# HCPCS E codes are durable medical equipment and A codes supplies: devices. Everything else is a service.
DEVICE_CODE_PREFIXES = ("E", "A")
USER_TOKENS = {"Practitioner": "userPractitionerId", "PractitionerRole": "userPractitionerRoleId",
               "Patient": "userPatientId", "RelatedPerson": "userRelatedPersonId"}
TEMPLATE_TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
CRD_VERSION = re.compile(r"[1-9]\d*\.\d+")
ASSUMED_TOKEN_LIFETIME = 300  # seconds; fhirAuthorization requires expires_in and a bare token does not say
ENCOUNTER_HOOKS = ("encounter-start", "encounter-discharge")


@dataclass(frozen=True)
class Coding:
    system: str
    code: str

    @classmethod
    def parse(cls, text: str) -> Coding:
        """`SYSTEM|CODE`; cpt, hcpcs, snomed and loinc stand for their system URIs."""
        system, bar, code = (part.strip() for part in text.rpartition("|"))
        if not bar or not system or not code:
            raise ValueError(f"{text!r} is not SYSTEM|CODE, e.g. hcpcs|E0221 or {CPT}|97026")
        uri = SYSTEM_ALIASES.get(system.lower(), system)
        if ":" not in uri:  # FHIR code systems are URIs (http:, https:, urn:)
            raise ValueError(f"{system!r} is neither {', '.join(SYSTEM_ALIASES)} nor a code system URI")
        return cls(uri, code)

    @property
    def order_type(self) -> str:
        is_device = self.system in HCPCS_SYSTEMS and self.code.upper().startswith(DEVICE_CODE_PREFIXES)
        return "DeviceRequest" if is_device else "ServiceRequest"


def build_order_request(service: dict[str, Any], coding: Coding, patient_id: str, user_id: str,
                        fhir: FhirClient, token: str | None = None, performer: str | None = None,
                        with_prefetch: bool = True) -> dict[str, Any]:
    """A complete call to `service` for one new order, as a CDS Hooks 2.0 client makes it: signed or selected
    (order-sign, order-select), dispatched to `performer` (order-dispatch), or booked as an Appointment whose
    service type is the code (appointment-book), or pending for the encounter that starts or ends, with every
    switch of the service's configuration on (encounter-start, encounter-discharge). Without prefetch, the service
    reads what it needs from the FHIR server itself."""
    hook = service["hook"]
    context: dict[str, Any] = {"userId": user_id, "patientId": patient_id}
    prefetch = read_prefetch(service.get("prefetch"), context, fhir) if with_prefetch else {}
    order = draft_order(coding, patient_id, user_id, coverage_references(prefetch))
    reference = f"{order['resourceType']}/{order['id']}"
    if hook == "order-dispatch":  # the order is signed; the EHR sends it in the prefetch, naming it in the context
        context = {"patientId": patient_id, "dispatchedOrders": [reference], "performer": performer}
        prefetch[_prefetch_key(service, order["resourceType"])] = _searchset({**order, "status": "active"})
    elif hook == "appointment-book":
        context["appointments"] = _collection(booked_appointment(coding, patient_id, user_id))
    elif hook in ENCOUNTER_HOOKS:  # the new encounter's one pending order, prefetched (and no other kind)
        context["encounterId"] = f"cds-cli-{uuid.uuid4().hex[:12]}"
        order["encounter"] = {"reference": f"Encounter/{context['encounterId']}"}
        for resource_type in ("ServiceRequest", "DeviceRequest"):
            found = [order] if order["resourceType"] == resource_type else []
            prefetch[_prefetch_key(service, resource_type)] = _searchset(*found)
    else:
        context["draftOrders"] = _collection(order)
    if hook == "order-select":
        context["selections"] = [reference]
    request: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "fhirServer": fhir.base_url,
                               "context": context}
    if token:
        request["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer",
                                        "expires_in": ASSUMED_TOKEN_LIFETIME, "scope": "patient/*.read",
                                        "subject": "cds-cli", "patient": patient_id}
    if prefetch:
        request["prefetch"] = prefetch
    if version := latest_crd_version(service):
        request["extension"] = {"davinci-crd.requestedVersion": version}
    if hook in ENCOUNTER_HOOKS:  # secondary hooks answer only what the client switches on: everything here
        switches = {o["code"]: True for o in service.get("extension", {}).get("davinci-crd.configuration-options", [])
                    if isinstance(o, dict) and o.get("type") == "boolean"}
        request.setdefault("extension", {})["davinci-crd.configuration"] = switches
    return request


def draft_order(coding: Coding, patient_id: str, user_id: str, insurance: list[str]) -> dict[str, Any]:
    """A DeviceRequest or ServiceRequest with what the CRD order profiles require."""
    order_type = coding.order_type
    order: dict[str, Any] = {
        "resourceType": order_type,
        "id": str(uuid.uuid4()),
        "status": "draft",
        "intent": "original-order",
        "codeCodeableConcept" if order_type == "DeviceRequest" else "code": {
            "coding": [{"system": coding.system, "code": coding.code}]
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": datetime.now().astimezone().isoformat(timespec="seconds"),
        "requester": {"reference": user_id},
    }
    if insurance:
        order["insurance"] = [{"reference": reference} for reference in insurance]
    return order


def booked_appointment(coding: Coding, patient_id: str, user_id: str) -> dict[str, Any]:
    """A proposed Appointment for the service the code names, with the patient and the user as participants."""
    return {
        "resourceType": "Appointment", "id": str(uuid.uuid4()), "status": "proposed",
        "serviceType": [{"coding": [{"system": coding.system, "code": coding.code}]}],
        "created": datetime.now().astimezone().date().isoformat(),
        "participant": [{"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"},
                        {"actor": {"reference": user_id}, "status": "accepted"}],
    }


def _prefetch_key(service: dict[str, Any], resource_type: str) -> str:
    """The service's prefetch key for orders of this type (its template searches them), else a plain name."""
    templates = as_dict(service.get("prefetch"))
    keys = [key for key, template in templates.items() if str(template).startswith(f"{resource_type}?")]
    return keys[0] if keys else "dispatchedOrders"


def _collection(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}


def _searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(resources)}
    if resources:  # FHIR JSON has no empty arrays
        bundle["entry"] = [{"resource": resource} for resource in resources]
    return bundle


def read_prefetch(templates: Any, context: dict[str, str], fhir: FhirClient) -> dict[str, Any]:
    """Each prefetch template the context can fill, read from the FHIR server. Like any CDS Hooks 2.0
    client, it skips templates whose tokens it cannot fill (e.g. FHIRPath from later versions)."""
    if not isinstance(templates, dict):
        return {}
    values = token_values(context)
    prefetch = {}
    for key, template in templates.items():
        tokens = TEMPLATE_TOKEN.findall(template) if isinstance(template, str) else [None]
        if all(token in values for token in tokens):
            url = TEMPLATE_TOKEN.sub(lambda match: quote(values[match.group(1)], safe="/"), template)
            prefetch[key] = fhir.read(url)
    return prefetch


def token_values(context: dict[str, str]) -> dict[str, str]:
    """Prefetch tokens: root-level context fields, and the user's id by resource type."""
    values = {f"context.{name}": value for name, value in context.items()}
    user_type, _, user_id = context["userId"].partition("/")
    if user_type in USER_TOKENS:
        values[USER_TOKENS[user_type]] = user_id
    return values


def coverage_references(prefetch: dict[str, Any]) -> list[str]:
    """`Coverage/id` for every Coverage the prefetch found, read or searched."""
    resources = []
    for value in prefetch.values():
        if value.get("resourceType") == "Bundle":
            resources += [entry.get("resource") for entry in value.get("entry") or [] if isinstance(entry, dict)]
        else:
            resources.append(value)
    return [f"Coverage/{r['id']}" for r in resources
            if isinstance(r, dict) and r.get("resourceType") == "Coverage" and isinstance(r.get("id"), str)]


def latest_crd_version(service: dict[str, Any]) -> str | None:
    """The newest Da Vinci CRD version the service declares; CRD clients name the one they use."""
    extension = service.get("extension")
    versions = extension.get("davinci-crd.version") if isinstance(extension, dict) else None
    if not isinstance(versions, list):
        return None
    valid = [v for v in versions if isinstance(v, str) and CRD_VERSION.fullmatch(v)]
    return max(valid, key=lambda v: tuple(int(n) for n in v.split(".")), default=None)
