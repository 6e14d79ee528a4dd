"""Member facts a decision may use: from Patient, Coverage and Condition resources, the plan directory, and the
order itself (its date of service and its reasons).

What cannot be known stays None (or "unknown") and is reported in `unavailable`, never guessed. Resources that
contradict the request (another patient's, a cancelled Coverage) are left out and reported too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from cds.fhirjson import as_dict as _dict
from cds.fhirjson import as_list as _list
from cds.fhirjson import fhir_date as _date
from cds.fhirjson import insurance_coverages
from cds.fhirjson import relative_reference as _relative
from cds.member.plans import PlanDirectory, PlanFacts
from cds.policy.facts import ICD10CM, SNOMED, CoverageFacts, CoverageGap, Diagnosis, MemberFacts, Order
from cds.states import state_code

SOPT = "https://nahdo.org/sopt"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

DIAGNOSIS_SYSTEMS = {ICD10CM: ICD10CM, "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
                     SNOMED: SNOMED, "urn:oid:2.16.840.1.113883.6.96": SNOMED}
SOPT_SYSTEMS = (SOPT, "urn:oid:2.16.840.1.113883.3.221.5")

# Source of Payment Typology (US Core Coverage.type). The first digit is the line of business: Medicare Advantage
# (11x) is Medicare, Blue Cross/Blue Shield (6) is commercial; 7 is managed care that cannot tell public from private.
_SOPT_LINE = {"1": "medicare", "2": "medicaid", "3": "other", "4": "other", "5": "commercial", "6": "commercial",
              "8": "other", "9": "other"}
_SOPT_NO_PAYER = {"99", "9999"}  # no typology code available; unavailable, no payer specified or blank: not known
_SOPT_PRODUCT = {"111": "HMO", "112": "PPO", "113": "POS", "211": "HMO", "212": "PPO",
                 "3811": "HMO", "3812": "PPO", "3813": "POS",
                 "511": "HMO", "512": "PPO", "513": "POS", "514": "EPO", "515": "PPO",
                 "611": "HMO", "612": "PPO", "613": "POS", "71": "HMO", "72": "PPO", "73": "POS"}
_SOPT_SELF_FUNDED = {"522", "622"}  # self-insured (ERISA) administrative services only
_ACT_PRODUCT = {"HMO": "HMO", "PPO": "PPO", "POS": "POS"}

_ACTIVE_CLINICAL = (None, "active", "recurrence", "relapse")
_NOT_A_DIAGNOSIS = ("refuted", "entered-in-error")
_ICD10_WITHOUT_DOT = re.compile(r"([A-Z][0-9][0-9A-Z])([0-9A-Z]{1,4})")


@dataclass(frozen=True)
class MemberData:
    """FHIR resources about the member, however they were obtained (prefetch or the FHIR server)."""

    patient: dict[str, Any] | None = None
    coverages: tuple[dict[str, Any], ...] = ()
    conditions: tuple[dict[str, Any], ...] = ()
    unavailable: tuple[str, ...] = field(default_factory=tuple)
    unavailable_keys: frozenset[str] = frozenset()
    patient_id: str | None = None  # context.patientId: resources about anyone else are not used
    gaps: Mapping[str, str] = field(default_factory=dict)  # per unavailable key, why (prefetch.Gap)


def member_facts(data: MemberData, directory: PlanDirectory | None, today: date) -> MemberFacts:
    """The member's facts for one call on `today` (which home address is current)."""
    notes: list[str] = []
    patient = _patient(data, notes)
    conditions = _condition_diagnoses(data, notes)
    coverages = _coverages(data, directory, notes)
    return MemberFacts(
        birth_date=_birth_date(patient, notes),
        state=_home_state(patient, today, notes),
        diagnoses=tuple(dict.fromkeys(d for diagnoses in conditions.values() for d in diagnoses)),
        coverages=coverages,
        coverage_gap=None if coverages else coverage_gap(data),
        unavailable=(*data.unavailable, *notes),
        unavailable_keys=data.unavailable_keys,
        condition_diagnoses=conditions,
    )


def order_facts(facts: MemberFacts, order: Order, today: date) -> MemberFacts:
    """The member's facts for one order: its date of service (`today` when it names none) and its reasons
    (reasonCode, reasonReference to a contained or known Condition), then those of the requests it is based on,
    first among the diagnoses."""
    reasons: list[Diagnosis] = []
    notes: list[str] = []
    for source in (order, *order.based_on):
        found, said = _order_reasons(source, facts.condition_diagnoses)
        reasons.extend(found)
        notes.extend(said)
    coverages, gap = order_coverage(facts, order, notes)
    return replace(
        facts,
        service_date=service_date(order) or next(filter(None, map(service_date, order.based_on)), None) or today,
        diagnoses=tuple(dict.fromkeys((*reasons, *facts.diagnoses))),
        unavailable=(*facts.unavailable, *notes),
        coverages=coverages,
        coverage_gap=gap,
    )


def order_coverage(facts: MemberFacts, order: Order, notes: list[str]
                   ) -> tuple[tuple[CoverageFacts, ...], CoverageGap | None]:
    """The one Coverage the order is decided under (CRD resp-45): the member's only usable one or, of several, the
    one the order's `insurance` names. When none can be singled out, none, and why (`coverage-not-found`)."""
    if len(facts.coverages) <= 1:
        return facts.coverages, facts.coverage_gap
    named = insurance_coverages(order.resource)
    chosen = tuple(coverage for coverage in facts.coverages if coverage.reference in named)
    found = ", ".join(coverage.reference or "one without an id" for coverage in facts.coverages)
    if len(chosen) == 1:
        notes.append(f"{len(facts.coverages)} active coverages were found ({found}); the order's insurance names "
                     f"{chosen[0].reference}, the one it is decided under.")
        return chosen, None
    names = "names more than one of them" if chosen else "names none of them"
    return (), CoverageGap("coverage-not-found", f"{len(facts.coverages)} active coverages of this patient were "
                           f"found ({found}) and the order's insurance {names}, so no single coverage could be used")


def coverage_gap(data: MemberData) -> CoverageGap:
    """Why no Coverage of the member can be used, in CRD's terms (resp-43/44/45) and in words."""
    gap = data.gaps.get("coverage")
    if gap == "not-sent":
        return CoverageGap("coverage-not-found", "No coverage for this patient came with the request, and the "
                           "request names no FHIR server to fetch it from")
    if gap == "not-allowed":
        return CoverageGap("technical", "The patient's coverage did not come with the request and was not fetched, "
                           "as this service may not fetch from the request's FHIR server")
    if gap == "failed":
        return CoverageGap("technical", "The patient's coverage did not come with the request and could not be "
                           "fetched from the EHR's FHIR server")
    if data.gaps.get("patient") == "not-found":
        return CoverageGap("no-member-found", "The patient could not be found on the EHR's FHIR server, nor any "
                           "coverage for them")
    if data.coverages:
        return CoverageGap("no-active-coverage", "None of the coverages sent or found is an active one of this patient")
    return CoverageGap("coverage-not-found", "No active coverage was found for this patient")


def strict_coverage_problem(facts: MemberFacts, served_payers: Iterable[str]) -> str | None:
    """Why the member's coverage cannot be used under strict CRD rules (crd.md §6: 400), or None."""
    if not facts.coverages:
        return "No active Coverage was found for the patient; the patient's primary coverage is required."
    if len(facts.coverages) > 1:
        return f"{len(facts.coverages)} active Coverages were found for the patient; send only the primary one."
    served = set(served_payers)
    if served and not served.intersection(facts.coverages[0].payer_identifiers):
        return "The Coverage's payer (Coverage.payor) is not one this service serves."
    return None


def service_date(order: Order) -> date | None:
    """When the ordered service happens, as the order says: occurrence, else validity or writing date, else
    authoredOn (domain.md §5: age counts on the date of service)."""
    r = order.resource
    timing_events = _dict(r.get("occurrenceTiming")).get("event")
    candidates = (
        r.get("start"),  # Appointment
        _dict(next(iter(_list(r.get("requestedPeriod"))), None)).get("start"),  # Appointment not yet scheduled
        r.get("occurrenceDateTime"),
        _dict(r.get("occurrencePeriod")).get("start"),
        timing_events[0] if isinstance(timing_events, list) and timing_events else None,
        _dict(_dict(r.get("dispenseRequest")).get("validityPeriod")).get("start"),
        r.get("dateTime"),  # NutritionOrder
        r.get("dateWritten"),  # VisionPrescription
        r.get("authoredOn"),
    )
    return next((day for day in map(_date, candidates) if day), None)


# ------------------------------------------------------------------------------------------------- patient


def _patient(data: MemberData, notes: list[str]) -> dict[str, Any]:
    patient = data.patient or {}
    if patient and data.patient_id and patient.get("id") not in (None, data.patient_id):
        notes.append("The Patient resource sent is not the patient of this call (context.patientId); not used.")
        return {}
    return patient


def _birth_date(patient: dict[str, Any], notes: list[str]) -> date | None:
    raw = patient.get("birthDate")
    if raw is None:
        if patient:
            notes.append("The patient's birth date is not recorded; age is unknown.")
        return None
    day = _date(raw)
    if day is None:
        notes.append("The patient's birth date is only partly known; age is unknown.")
    return day


def _home_state(patient: dict[str, Any], today: date, notes: list[str]) -> str | None:
    current = [
        a for a in _list(patient.get("address"))
        if isinstance(a, dict) and a.get("state") and a.get("use") in (None, "home")
        and not _ended(a.get("period"), today)
    ]
    states = {state_code(str(a["state"])) for a in current}
    if None in states:
        notes.append("The patient's home address names a state that is not a US state or territory.")
        states.discard(None)
    if len(states) > 1:
        notes.append("The patient has current home addresses in different states; state of residence is unknown.")
        return None
    return states.pop() if states else None


def _ended(period: Any, today: date) -> bool:
    end = _date(_dict(period).get("end"))
    return end is not None and end < today


# ---------------------------------------------------------------------------------------------- conditions


def _condition_diagnoses(data: MemberData, notes: list[str]) -> dict[str, tuple[Diagnosis, ...]]:
    found: dict[str, tuple[Diagnosis, ...]] = {}
    for condition in data.conditions:
        reference = f"Condition/{condition['id']}" if isinstance(condition.get("id"), str) else "Condition"
        if not _about_patient(condition.get("subject"), data.patient_id):
            notes.append(f"{reference} is about another patient; not used.")
            continue
        if _status(condition.get("clinicalStatus")) not in _ACTIVE_CLINICAL:
            continue
        if _status(condition.get("verificationStatus")) in _NOT_A_DIAGNOSIS:
            continue
        found[reference] = found.get(reference, ()) + _diagnoses(condition.get("code"), reference)
    return found


def _order_reasons(order: Order, known: Mapping[str, tuple[Diagnosis, ...]]) -> tuple[tuple[Diagnosis, ...],
                                                                                             tuple[str, ...]]:
    resource = order.resource
    name = order.reference or order.resource_type
    reasons = list(_diagnoses(resource.get("reasonCode"), f"{name}.reasonCode"))
    contained = {f"#{c['id']}": c for c in _list(resource.get("contained"))
                 if isinstance(c, dict) and isinstance(c.get("id"), str)}
    notes = []
    for reference in _list(resource.get("reasonReference")):
        target = _dict(reference).get("reference")
        if not isinstance(target, str):
            continue
        source = f"{name}.reasonReference {target}"
        if target in contained and contained[target].get("resourceType") == "Condition":
            reasons.extend(_diagnoses(contained[target].get("code"), source))
        elif (relative := _relative(target)) is not None and relative in known:
            reasons.extend(replace(d, source=f"{name}.reasonReference {relative}") for d in known[relative])
        elif relative and relative.startswith("Condition/"):
            notes.append(f"{name} gives as its reason {relative}, which is not among the patient's active "
                         "conditions; that reason is unknown.")
    return tuple(reasons), tuple(notes)


def _diagnoses(concepts: Any, source: str) -> tuple[Diagnosis, ...]:
    found = []
    for concept in _list(concepts):  # called for every condition: written as a plain loop
        for coding in _list(concept.get("coding")) if isinstance(concept, dict) else ():
            uri = coding.get("system") if isinstance(coding, dict) else None
            system = DIAGNOSIS_SYSTEMS.get(uri) if isinstance(uri, str) else None
            code = coding.get("code") if system else None
            if system and isinstance(code, str) and code.strip():
                display = coding.get("display")
                display = display if isinstance(display, str) else None
                found.append(Diagnosis(system, _normal_code(system, code), display, source))
    return tuple(found)


def _normal_code(system: str, code: str) -> str:
    code = code.strip()
    if system == ICD10CM:
        code = code.upper()
        if match := _ICD10_WITHOUT_DOT.fullmatch(code):
            code = f"{match[1]}.{match[2]}"
    return code


# ----------------------------------------------------------------------------------------------- coverages


def _coverages(data: MemberData, directory: PlanDirectory | None, notes: list[str]) -> tuple[CoverageFacts, ...]:
    usable = []
    for coverage in data.coverages:
        reference = f"Coverage/{coverage['id']}" if isinstance(coverage.get("id"), str) else "A Coverage"
        if coverage.get("status") not in (None, "active"):
            notes.append(f"{reference} is not active (status {coverage.get('status')}); not used.")
        elif not _about_patient(coverage.get("beneficiary"), data.patient_id):
            notes.append(f"{reference} covers another patient; not used.")
        else:
            usable.append(coverage)
    usable.sort(key=lambda c: c["order"] if isinstance(c.get("order"), int) else float("inf"))
    return tuple(_coverage_facts(coverage, directory, notes) for coverage in usable)


def _coverage_facts(coverage: dict[str, Any], directory: PlanDirectory | None, notes: list[str]) -> CoverageFacts:
    reference = f"Coverage/{coverage['id']}" if isinstance(coverage.get("id"), str) else None
    name = reference or "The coverage"
    payer_ids = _payer_identifiers(coverage)
    group, plan = _class_value(coverage, "group"), _class_value(coverage, "plan")
    match = directory.lookup(payer_ids, group, plan) if directory else None
    listed = match.facts if match else PlanFacts()
    codings = [c for concept in _list(coverage.get("type")) for c in _list(_dict(concept).get("coding"))
               if isinstance(c, dict) and isinstance(c.get("code"), str)]

    def agreed(label: str, from_type: list[tuple[str, str | None]], from_directory: Any) -> Any:
        said = [(f"Coverage.type {code}", value) for code, value in from_type if value]
        if from_directory is not None:
            said.append(("the plan directory", from_directory))
        if len({value for _, value in said}) > 1:
            sources = "; ".join(f"{source} says {value}" for source, value in said)
            notes.append(f"{name}: {label} is contradictory ({sources}); treated as unknown.")
            return None
        return said[0][1] if said else None

    sopt = [c["code"].strip() for c in codings if c.get("system") in SOPT_SYSTEMS]
    act = [c["code"] for c in codings if c.get("system") == ACT_CODE]
    line = agreed("line of business", [(code, _SOPT_LINE.get(code[:1])) for code in sopt if code not in _SOPT_NO_PAYER],
                  listed.line_of_business)
    product = agreed("product", [(code, _sopt_product(code)) for code in sopt]
                     + [(code, _ACT_PRODUCT.get(code)) for code in act], listed.product)
    funding = agreed("funding", [(code, "self-funded" if code in _SOPT_SELF_FUNDED else None) for code in sopt],
                     listed.funding)
    period_start = _date(_dict(coverage.get("period")).get("start"))
    facts = CoverageFacts(
        reference=reference,
        payer=_payer_name(coverage) or (match.payer_name if match else None),
        line_of_business=line or "unknown",
        product=product or "unknown",
        funding=funding or "unknown",
        situs_state=listed.situs_state,
        plan_start=listed.plan_start or period_start,
        payer_identifiers=tuple(sorted(payer_ids)),
        group=group,
        plan=plan,
        plan_name=_class_name(coverage, "plan") or (match.plan_name if match else None),
    )
    if facts.unknown:
        facts = replace(facts, unknown_why=(
            "no plan directory is configured" if directory is None else
            "the payer is not in the plan directory" if match is None else
            "the plan is not in the plan directory" if not match.plan_listed else
            "neither the Coverage nor the plan directory says"))
        notes.append(facts.unknown_note or "")
    return facts


def _sopt_product(code: str) -> str | None:
    if code in _SOPT_PRODUCT:
        return _SOPT_PRODUCT[code]
    # A specific (3+ digit) code that names no network type, such as Medicare FFS or indemnity, is "other";
    # ASO says how the plan is funded, not its product.
    return "other" if len(code) >= 3 and code not in _SOPT_SELF_FUNDED | _SOPT_NO_PAYER else None


def _payer_identifiers(coverage: dict[str, Any]) -> frozenset[str]:
    tokens = set()
    for payor in _list(coverage.get("payor")):
        payor = _dict(payor)
        identifier = _dict(payor.get("identifier"))
        value, system = identifier.get("value"), identifier.get("system")
        if isinstance(value, str):
            tokens.add(value)
            if isinstance(system, str):
                tokens.add(f"{system}|{value}")
        if isinstance(reference := payor.get("reference"), str):
            tokens.update(filter(None, (reference, _relative(reference))))
        if isinstance(display := payor.get("display"), str):
            tokens.add(display)
    return frozenset(tokens)


def _payer_name(coverage: dict[str, Any]) -> str | None:
    names = [_dict(p).get("display") for p in _list(coverage.get("payor"))]
    return next((n for n in names if isinstance(n, str)), None)


def _coverage_classes(coverage: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in map(_dict, _list(coverage.get("class")))
            if any(_dict(t).get("code") == kind for t in _list(_dict(c.get("type")).get("coding")))]


def _class_value(coverage: dict[str, Any], kind: str) -> str | None:
    values = [c.get("value") for c in _coverage_classes(coverage, kind)]
    return next((v for v in values if isinstance(v, str)), None)


def _class_name(coverage: dict[str, Any], kind: str) -> str | None:
    names = [c.get("name") for c in _coverage_classes(coverage, kind)]
    return next((n for n in names if isinstance(n, str)), None)


# ----------------------------------------------------------------------------------------------- helpers


def _status(concept: Any) -> str | None:
    """The first code of a status concept (read twice for every condition)."""
    for coding in _list(concept.get("coding")) if isinstance(concept, dict) else ():
        code = coding.get("code") if isinstance(coding, dict) else None
        if isinstance(code, str):
            return code
    return None


def _about_patient(subject: Any, patient_id: str | None) -> bool:
    """False only when the reference clearly names another Patient."""
    target = _relative(str(_dict(subject).get("reference") or ""))
    return not (patient_id and target and target.startswith("Patient/") and target != f"Patient/{patient_id}")
