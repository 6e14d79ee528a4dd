"""Benchmark request bodies: order-sign calls built from realistic FHIR R4 resources.

One member (Illinois, adult, commercial PPO), infrared-therapy orders under the https HCPCS URI the CRD IG
uses, diagnoses in ICD-10-CM with SNOMED CT. Every body is deterministic, so runs compare like with like.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from itertools import cycle, islice
from typing import Any

SERVICE_PATH = "/cds-services/order-sign-crd"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
PATIENT_ID = "pat-bench-1"
COVERAGE_ID = "cov-bench-1"
ENCOUNTER_ID = "enc-bench-1"
ACCESS_TOKEN = "bench-opaque-access-token"

# HCPCS codes for draft orders: the policy's two (E0221, A4639) first, then DME it must not match.
ORDER_CODES = [
    ("E0221", "Infrared heating pad system"),
    ("A4639", "Replacement pad for infrared heating pad system, each"),
    ("E0210", "Electric heat pad, standard"),
    ("E0431", "Portable gaseous oxygen system, rental"),
    ("E0250", "Hospital bed, fixed height, with any type side rails, with mattress"),
    ("E0601", "Continuous positive airway pressure (CPAP) device"),
    ("E0114", "Crutches, underarm, other than wood, adjustable or fixed, pair"),
    ("K0001", "Standard wheelchair"),
]
NOT_MATCHING = ORDER_CODES[2]

# Active problems (ICD-10-CM, SNOMED CT) a member with an infrared-therapy order plausibly has.
DIAGNOSES = [
    ("E11.42", "Type 2 diabetes mellitus with diabetic polyneuropathy", "230572002", "Diabetic neuropathy"),
    ("L97.519", "Non-pressure chronic ulcer of other part of right foot", "402863005", "Foot ulcer"),
    ("I10", "Essential (primary) hypertension", "59621000", "Essential hypertension"),
    ("E78.5", "Hyperlipidemia, unspecified", "55822004", "Hyperlipidemia"),
    ("M54.50", "Low back pain, unspecified", "279039007", "Low back pain"),
    ("G62.9", "Polyneuropathy, unspecified", "42345000", "Polyneuropathy"),
    ("N18.3", "Chronic kidney disease, stage 3", "433144002", "Chronic kidney disease stage 3"),
    ("E66.9", "Obesity, unspecified", "414916001", "Obesity"),
]


def device_request(index: int, code: str, display: str) -> dict[str, Any]:
    """A CRD DeviceRequest draft order for home-use DME, coded in HCPCS."""
    return {
        "resourceType": "DeviceRequest",
        "id": f"devreq-{index + 1}-{code.lower()}",
        "meta": {"profile": ["http://hl7.org/fhir/us/davinci-crd/StructureDefinition/profile-devicerequest"]},
        "identifier": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}]},
            "system": "urn:ietf:rfc:3986",
            "value": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'bench-order-{index}')}",
        }],
        "status": "draft",
        "intent": "original-order",
        "codeCodeableConcept": {"coding": [{"system": HCPCS, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "encounter": {"reference": f"Encounter/{ENCOUNTER_ID}"},
        "occurrencePeriod": {"start": "2025-11-03", "end": "2026-02-03"},
        "authoredOn": "2025-11-03T10:15:00-06:00",
        "requester": {"reference": "PractitionerRole/pr-bench-1", "display": "Dr. Maria Lopez"},
        "performer": {"reference": "Organization/org-dme-supplier", "display": "Prairie Home Medical Supply"},
        "reasonCode": [{"coding": [{"system": ICD10CM, "code": "E11.42", "display": DIAGNOSES[0][1]}]}],
        "insurance": [{"reference": f"Coverage/{COVERAGE_ID}"}],
        "note": [{"text": "Home use for painful diabetic neuropathy of both feet."}],
    }


def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "identifier": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "http://hospital.example.org/mrn",
            "value": "MRN-0048213",
        }],
        "active": True,
        "name": [{"use": "official", "family": "Kowalski", "given": ["Helen", "M"]}],
        "telecom": [{"system": "phone", "value": "312-555-0148", "use": "home"}],
        "gender": "female",
        "birthDate": "1958-04-17",
        "address": [
            {"use": "home", "line": ["1420 W Addison St"], "city": "Chicago", "state": "IL",
             "postalCode": "60613", "country": "US"},
            {"use": "old", "line": ["88 Lake Shore Dr"], "city": "Milwaukee", "state": "WI",
             "postalCode": "53202", "country": "US", "period": {"end": "2019-06-30"}},
        ],
    }


def coverage() -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "id": COVERAGE_ID,
        "meta": {"profile": ["http://hl7.org/fhir/us/davinci-crd/StructureDefinition/profile-coverage"]},
        "identifier": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]},
            "system": "http://bcbsil.example.org/member-id",
            "value": "XOF884400921",
        }],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PPO",
                             "display": "preferred provider organization policy"}]},
        "subscriberId": "884400921",
        "beneficiary": {"reference": f"Patient/{PATIENT_ID}"},
        "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                                     "code": "self"}]},
        "period": {"start": "2025-01-01"},
        "payor": [{"reference": "Organization/bcbsil", "display": "Blue Cross and Blue Shield of Illinois"}],
        "class": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group"}]},
             "value": "G-220045", "name": "Lakeview Manufacturing Group"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]},
             "value": "PPO-BLUE-CHOICE", "name": "Blue Choice PPO"},
        ],
    }


def condition(index: int) -> dict[str, Any]:
    icd, icd_display, snomed, snomed_display = DIAGNOSES[index % len(DIAGNOSES)]
    return {
        "resourceType": "Condition",
        "id": f"cond-{index + 1}",
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition-problems-health-concerns"]},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": ICD10CM, "code": icd, "display": icd_display},
                            {"system": SNOMED, "code": snomed, "display": snomed_display}],
                 "text": icd_display},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "onsetDateTime": f"{2010 + index % 14}-0{1 + index % 9}-15",
        "recordedDate": "2024-03-02",
    }


def searchset(resources: list[dict[str, Any]], query: str) -> dict[str, Any]:
    """A FHIR search result Bundle as a server (or an EHR's prefetch) returns it."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": [{"relation": "self", "url": f"http://ehr.example.org/fhir/{query}"}],
        "entry": [{"fullUrl": f"http://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in resources],
    }


def coverage_bundle() -> dict[str, Any]:
    return searchset([coverage()], f"Coverage?patient={PATIENT_ID}&status=active")


def conditions_bundle(count: int) -> dict[str, Any]:
    return searchset([condition(i) for i in range(count)], f"Condition?patient={PATIENT_ID}&clinical-status=active")


def order_sign(
    orders: int = 1,
    conditions: int = 3,
    prefetch: bool = True,
    codes: list[tuple[str, str]] | None = None,
    fhir_server: str | None = None,
) -> dict[str, Any]:
    """An order-sign call with `orders` DeviceRequests whose codes cycle through `codes` (ORDER_CODES)."""
    chosen = list(islice(cycle(codes or ORDER_CODES), orders))
    body: dict[str, Any] = {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{orders}/{conditions}/{prefetch}/{chosen[0]}")),
        "context": {
            "userId": "PractitionerRole/pr-bench-1",
            "patientId": PATIENT_ID,
            "encounterId": ENCOUNTER_ID,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"fullUrl": f"http://ehr.example.org/fhir/DeviceRequest/devreq-{i + 1}",
                           "resource": device_request(i, code, display)} for i, (code, display) in enumerate(chosen)],
            },
        },
    }
    if fhir_server:
        body["fhirServer"] = fhir_server
        body["fhirAuthorization"] = {
            "access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
            "scope": "user/Patient.read user/Coverage.read user/Condition.read", "subject": "cds-coverage",
            "patient": PATIENT_ID,
        }
    if prefetch:
        body["prefetch"] = {"patient": patient(), "coverage": coverage_bundle(),
                            "conditions": conditions_bundle(conditions)}
    return body


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    body: dict[str, Any]
    path: str = SERVICE_PATH
    # Served in demo mode: outside it the service fetches over https only, and the bench FHIR server is http.
    demo: bool = False


def scenarios(fhir_server: str | None = None) -> dict[str, Scenario]:
    """The benchmark's scenarios by name; `fhir_server` is the base URL the fallback fetch reads from."""
    all_ = [
        Scenario("main", "order-sign, full prefetch, one order matching the policy (E0221)",
                 order_sign(fhir_server=fhir_server)),
        Scenario("no-match", "order-sign, full prefetch, one order no policy covers (E0210)",
                 order_sign(codes=[NOT_MATCHING], fhir_server=fhir_server)),
        Scenario("orders-20", "order-sign, full prefetch, 20 draft orders (E0221, A4639 and other DME)",
                 order_sign(orders=20, fhir_server=fhir_server)),
        Scenario("conditions-200", "order-sign, one E0221 order, 200 conditions in prefetch",
                 order_sign(conditions=200, fhir_server=fhir_server)),
        Scenario("fallback-fetch", "order-sign, one E0221 order, no prefetch: member data from the FHIR server",
                 order_sign(prefetch=False, fhir_server=fhir_server), demo=True),
    ]
    return {s.name: s for s in all_}
