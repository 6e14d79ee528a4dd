"""Decision -> the Da Vinci CRD coverage-information system action that stores the assertion on the order.

The extension is built to be valid under CRD 2.0.1 (what Inferno validates) and 2.2 at once (crd.md §1.3):
`pa-needed` only when not `not-covered`, `info-needed` exactly when something is `conditional`, a text-only
`reason`, and none of the elements whose shape differs between the versions.
"""

from __future__ import annotations

from typing import Any

from cds.fhirjson import REFERENCE_PATTERN
from cds.policy.decision import Decision, Outcome
from cds.protocol import Action

COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"

# Per outcome: the coded parts of the assertion, in the extension's element order.
_CODES: dict[Outcome, tuple[tuple[str, str], ...]] = {
    Outcome.NOT_COVERED: (("covered", "not-covered"),),
    Outcome.COVERED_WITH_PA: (("covered", "covered"), ("pa-needed", "auth-needed"), ("doc-needed", "clinical"),
                              ("doc-purpose", "withpa")),
    Outcome.CONDITIONAL: (("covered", "conditional"), ("pa-needed", "conditional"), ("info-needed", "OTH")),
}
# The CRD `covered` value of each outcome.
COVERED_CODE: dict[Outcome, str] = {outcome: dict(codes)["covered"] for outcome, codes in _CODES.items()}
# What a secondary hook (order-select) must not ask for (CRD §hook-19): clinical or administrative documentation.
_PRIMARY_ONLY = {"doc-needed", "doc-purpose"}
_PHRASE = {
    Outcome.NOT_COVERED: "not covered",
    Outcome.COVERED_WITH_PA: "covered with prior authorization",
    Outcome.CONDITIONAL: "coverage depends on information not in the request",
}


def coverage_information(decision: Decision, primary: bool = True) -> dict[str, Any] | None:
    """The coverage-information extension for the decision; None without a Coverage to point to."""
    if decision.coverage is None or not REFERENCE_PATTERN.fullmatch(decision.coverage.reference or ""):
        return None
    parts: list[dict[str, Any]] = [{"url": "coverage", "valueReference": {"reference": decision.coverage.reference}}]
    parts += [{"url": url, "valueCode": code} for url, code in _CODES[decision.outcome]
              if primary or url not in _PRIMARY_ONLY]
    parts += [
        {"url": "reason", "valueCodeableConcept": {"text": decision.reason}},
        {"url": "date", "valueDate": decision.decided_on.isoformat()},
        {"url": "coverage-assertion-id", "valueString": decision.assertion_id},
    ]
    return {"url": COVERAGE_INFORMATION, "extension": parts}


def coverage_action(decision: Decision, primary: bool = True) -> Action | None:
    """The system action that stores the assertion on the order: the whole order, with only the extension added.

    An earlier assertion for the same coverage is replaced; assertions for other coverages are kept. When the
    order already carries this very assertion (only its date and id would change), there is no action: CRD
    sends one only when something is new or changed (§resp-35).
    """
    extension = coverage_information(decision, primary)
    reference = decision.order.reference
    if extension is None or reference is None or decision.coverage is None:  # nothing to point to, or an order
        return None  # the client cannot update
    coverage = decision.coverage.reference
    resource = decision.order.resource
    earlier = [e for e in resource.get("extension") or [] if _same_assertion(e, coverage)]
    if any(_assertion_content(e) == _assertion_content(extension) for e in earlier):
        return None
    kept = [e for e in resource.get("extension") or [] if not _same_assertion(e, coverage)]
    # A new top level with its own extension list; the rest is the order's, shared, as nothing changes it.
    resource = {**resource, "extension": [*kept, extension]}
    policy = decision.policy.spec
    return Action(
        type="update",
        description=f"Record the payer's coverage information on {reference}: {_PHRASE[decision.outcome]} under "
        f"medical policy {policy.id} ({policy.title}).",
        resource=resource,
    )


def _assertion_content(extension: dict[str, Any]) -> list[Any]:
    """What an assertion says, leaving out when it was said and its id."""
    parts = extension.get("extension")
    said = [p for p in (parts if isinstance(parts, list) else [])
            if isinstance(p, dict) and p.get("url") not in ("date", "coverage-assertion-id")]
    return sorted(said, key=repr)


def _same_assertion(extension: Any, coverage: str | None) -> bool:
    if not isinstance(extension, dict) or extension.get("url") != COVERAGE_INFORMATION:
        return False
    return any(isinstance(part, dict) and part.get("url") == "coverage"
               and (part.get("valueReference") or {}).get("reference") == coverage
               for part in extension.get("extension") or [])
