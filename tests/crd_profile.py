"""Check coverage-information against Da Vinci CRD 2.0.1 (its published StructureDefinition) and 2.2 (crd.md §1.3).

2.0.1: the slices' cardinalities, value types and required bindings read from the StructureDefinition and value
sets in tests/data/ig-crd-2.0.1 (copied from hl7.fhir.us.davinci-crd#2.0.1, CC0), and its FHIRPath invariants
(ext-1, crd-ci-q1..q5) evaluated with fhirpathpy. fhirpathpy does not apply FHIRPath's singleton evaluation of a
collection used as a boolean, so a bare `extension.where(...)` operand gets `.exists()`, which is what that rule
means for these at-most-one results; ele-1 (no empty elements) needs `hasValue()`, which fhirpathpy lacks, and
is checked instead by asserting that no element is empty.
2.2: the invariants crd.md lists, written here as FHIRPath, plus its cardinalities and value sets.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from fhirpathpy import evaluate
from fhirpathpy.models import models

IG = Path(__file__).parent / "data" / "ig-crd-2.0.1"
R4 = models["r4"]

INVARIANTS_2_2 = {
    "q1": "extension.where(url = 'questionnaire').exists() implies extension.where(url = 'doc-needed').exists()",
    "q2": "extension.where(url = 'covered' and value = 'not-covered').exists() "
          "implies extension.where(url = 'pa-needed').empty()",
    "q3": "extension.where((url = 'covered' or url = 'pa-needed' or url = 'doc-needed') and value = 'conditional')"
          ".exists() implies extension.where(url = 'info-needed').exists()",
    "q4": "extension.where(url = 'pa-needed' and (value = 'satisfied' or value = 'no-auth')).exists() "
          "implies extension.where(url = 'doc-purpose' and value = 'withpa').empty()",
    "q5": "extension.where(url = 'pa-needed' and value = 'satisfied').exists() = "
          "extension.where(url = 'satisfied-pa-id').exists()",
    "q6": "extension.where(url = 'info-needed' and value = 'OTH').exists() implies extension.where(url = 'reason')"
          ".exists()",
    "q7": "extension.where(url = 'reason').all(value.text.exists() or value.coding.where(system = "
          "'http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp').exists())",
    "q8": "extension.where(url = 'doc-purpose').exists() implies extension.where(url = 'reason').exists()",
    "q9": "extension.where((url = 'covered' or url = 'pa-needed' or url = 'doc-needed') and value = 'indeterminate')"
          ".exists() implies extension.where(url = 'reason').exists()",
}
# 2.2 slices: (min, max, value key, allowed codes or None).
SLICES_2_2: dict[str, tuple[int, float, str, set[str] | None]] = {
    "coverage": (1, 1, "valueReference", None),
    "covered": (1, 1, "valueCode", {"covered", "not-covered", "conditional", "indeterminate"}),
    "pa-needed": (0, 1, "valueCode", {"no-auth", "auth-needed", "performpa", "satisfied", "conditional",
                                      "indeterminate"}),
    "doc-needed": (0, float("inf"), "valueCode", {"clinical", "admin", "patient", "conditional", "indeterminate"}),
    "doc-purpose": (0, float("inf"), "valueCode", {"withpa", "withclaim", "withorder", "retain-doc", "OTH"}),
    "info-needed": (0, float("inf"), "valueCode", {"performer", "location", "timeframe", "contract-window",
                                                   "detail-code", "OTH"}),
    "billingCode": (0, float("inf"), "valueCoding", None),
    "reason": (0, float("inf"), "valueCodeableConcept", None),
    "dependency": (0, float("inf"), "valueReference", None),
    "questionnaire": (0, float("inf"), "valueCanonical", None),
    "date": (1, 1, "valueDate", None),
    "coverage-assertion-id": (1, 1, "valueString", None),
    "satisfied-pa-id": (0, 1, "valueString", None),
    "contact": (0, float("inf"), "valueContactDetail", None),
    "expiry-date": (0, 1, "valueDate", None),
}


def _read(name: str) -> dict[str, Any]:
    return json.loads((IG / name).read_text())


@cache
def _definition() -> dict[str, Any]:
    return _read("StructureDefinition-ext-coverage-information.json")


@cache
def slices_2_0_1() -> dict[str, tuple[int, float, str | None, frozenset[str] | None]]:
    """Each sub-extension of 2.0.1: (min, max, value key or None if complex, codes of its required binding)."""
    elements = {e["id"]: e for e in _definition()["snapshot"]["element"]}
    slices = {}
    for element_id, element in elements.items():
        name = element_id.removeprefix("Extension.extension:")
        if element_id == name or "." in name:
            continue
        value = elements[f"{element_id}.value[x]"]
        binding = value.get("binding", {})
        codes = _value_set_codes(binding["valueSet"]) if binding.get("strength") == "required" else None
        kind = None if value.get("max") == "0" else value["type"][0]["code"]  # complex: sub-extensions, no value
        maximum = float("inf") if element["max"] == "*" else int(element["max"])
        slices[name] = (element["min"], maximum, kind and "value" + kind[0].upper() + kind[1:], codes)
    return slices


def _value_set_codes(url: str) -> frozenset[str]:
    value_set = _read(f"ValueSet-{url.rsplit('/', 1)[1].split('|')[0]}.json")
    return frozenset(c["code"] for include in value_set["compose"]["include"] for c in include["concept"])


@cache
def invariants_2_0_1() -> dict[str, str]:
    root = next(e for e in _definition()["snapshot"]["element"] if e["id"] == "Extension")
    return {c["key"]: _singleton_booleans(c["expression"]) for c in root["constraint"] if c["key"] != "ele-1"}


def _singleton_booleans(expression: str) -> str:
    """Append `.exists()` to each `extension.where(...)` used directly as a boolean operand."""
    out, index = [], 0
    for found in re.finditer(r"extension\.where\(", expression):
        depth, end = 1, found.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(expression[end], 0)
            end += 1
        out.append(expression[index:end])
        index = end
        if not expression[end:].startswith("."):
            out.append(".exists()")
    out.append(expression[index:])
    return "".join(out)


def _holds(extension: dict[str, Any], expression: str) -> bool:
    return evaluate(extension, {"expression": expression, "base": "Extension"}, {}, R4) in ([True], [])


def _cardinality_and_values(extension: dict[str, Any], slices: dict) -> list[str]:
    problems = []
    parts = extension.get("extension", [])
    for part in parts:
        if part.get("url") not in slices:
            problems.append(f"unknown sub-extension {part.get('url')}")
    for name, (low, high, key, codes) in slices.items():
        found = [p for p in parts if p.get("url") == name]
        if not low <= len(found) <= high:
            problems.append(f"{name}: {len(found)} repetitions, allowed {low}..{high}")
        for part in found:
            values = [k for k in part if k.startswith("value")]
            if values != ([key] if key else []):
                problems.append(f"{name}: value must be {key}, not {values}")
            elif codes is not None and part[key] not in codes:
                problems.append(f"{name}: {part[key]!r} is not in its value set")
    return problems


def problems_2_0_1(extension: dict[str, Any]) -> list[str]:
    problems = _cardinality_and_values(extension, slices_2_0_1())
    problems += [f"{key} fails" for key, expr in invariants_2_0_1().items() if not _holds(extension, expr)]
    problems += [f"ext-1 fails on {p.get('url')}" for p in extension.get("extension", [])
                 if not _holds(p, invariants_2_0_1()["ext-1"])]
    return problems


def problems_2_2(extension: dict[str, Any]) -> list[str]:
    problems = _cardinality_and_values(extension, SLICES_2_2)
    return problems + [f"2.2 {key} fails" for key, expr in INVARIANTS_2_2.items() if not _holds(extension, expr)]


def problems_dual(extension: dict[str, Any]) -> list[str]:
    """Both versions, plus crd.md's dual-valid rules that neither validator alone enforces."""
    problems = problems_2_0_1(extension) + problems_2_2(extension)
    for part in extension.get("extension", []):
        codings = (part.get("valueCodeableConcept") or {}).get("coding", [])
        if part.get("url") == "reason" and any(c.get("code") != "gold-card" for c in codings):
            problems.append("reason codes other than gold-card are not valid in both versions")
    return problems


@cache
def required_order_elements(resource_type: str) -> tuple[str, ...]:
    """Top-level elements the CRD 2.0.1 order profile makes mandatory (Inferno validates the echoed order)."""
    definition = _read(f"StructureDefinition-profile-{resource_type.lower()}.json")
    return tuple(e["path"].split(".", 1)[1] for e in definition["snapshot"]["element"]
                 if e["path"].count(".") == 1 and e.get("min", 0) >= 1)


def has_empty_element(value: Any) -> bool:
    """ele-1 / CDS Hooks JSON rules: no null, "", [] or {} anywhere."""
    if value is None or value in ("", [], {}):
        return True
    if isinstance(value, dict):
        return any(has_empty_element(v) for v in value.values())
    if isinstance(value, list):
        return any(has_empty_element(v) for v in value)
    return False
