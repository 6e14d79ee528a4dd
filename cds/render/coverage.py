"""Decision -> the Da Vinci CRD coverage-information system action that stores the assertion on the order.

The extension is built to be valid under CRD 2.0.1 (what Inferno validates) and 2.2 at once (crd.md §1.3):
`pa-needed` only when not `not-covered`, `info-needed` exactly when something is `conditional`, a text-only
`reason`, and none of the elements whose shape differs between the versions. A client that asks for CRD 2.2 or
later (`requestedVersion`) gets `info-needed` `detail-code` where a billing code would decide the assertion.

When no Coverage of the member could be used, CRD 2.2 (resp-43/44/45) asks for an assertion all the same:
`indeterminate` with reason `technical` when fetching it failed, else `not-covered` with `no-member-found`,
`coverage-not-found` or `no-active-coverage`. Its `coverage` (1..1) points to the Coverage the order's own
`insurance` names, the one Coverage reference the client's system has; without one, no assertion can be given
(the profile: "If no coverage instance is available, the coverage-information extension cannot be returned").
Those codes exist only from 2.2 on, so such assertions are sent only when davinci-crd.requestedVersion asks for 2.2.
"""

from __future__ import annotations

from typing import Any

from cds.fhirjson import REFERENCE_PATTERN, insurance_coverages
from cds.policy.decision import Decision, Outcome
from cds.policy.facts import CoverageGap
from cds.protocol import Action

COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
REASON_SYSTEM = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
GAP_ASSERTIONS_FROM = (2, 2)  # the first CRD version with `indeterminate` and the no-coverage reasons

# Per outcome: the coded parts of the assertion, in the extension's element order.
_CODES: dict[Outcome, tuple[tuple[str, str], ...]] = {
    Outcome.NOT_COVERED: (("covered", "not-covered"),),
    Outcome.COVERED: (("covered", "covered"), ("pa-needed", "no-auth")),
    Outcome.COVERED_WITH_PA: (("covered", "covered"), ("pa-needed", "auth-needed"), ("doc-needed", "clinical"),
                              ("doc-purpose", "withpa")),
    Outcome.CONDITIONAL: (("covered", "conditional"), ("pa-needed", "conditional")),  # + info-needed (below)
}
# The CRD `covered` value of each outcome.
COVERED_CODE: dict[Outcome, str] = {outcome: dict(codes)["covered"] for outcome, codes in _CODES.items()}
# Every `covered` value an assertion of this service may make: the outcomes', and `indeterminate` (resp-43).
ASSERTED_CODES = frozenset({*COVERED_CODE.values(), "indeterminate"})
# What a secondary hook (order-select) must not ask for (CRD §hook-19): clinical or administrative documentation.
_PRIMARY_ONLY = {"doc-needed", "doc-purpose"}
_PHRASE = {
    Outcome.NOT_COVERED: "not covered",
    Outcome.COVERED: "covered",
    Outcome.COVERED_WITH_PA: "covered with prior authorization",
    Outcome.CONDITIONAL: "coverage depends on information not in the request",
}
_GAP_PHRASE = {
    "technical": "coverage could not be determined, as the member's coverage could not be obtained",
    "no-member-found": "not covered, as the patient could not be found",
    "coverage-not-found": "not covered, as no coverage of the patient was found",
    "no-active-coverage": "not covered, as the patient has no active coverage",
}


def coverage_information(decision: Decision, primary: bool = True, gap: CoverageGap | None = None,
                         version: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """The coverage-information extension for the decision; None without a Coverage to point to. `gap`: why no
    Coverage of the member could be used; `version`: the CRD version the client asked for."""
    if decision.coverage is None:
        return gap_information(decision, gap, version)
    coverage = decision.coverage.reference
    if coverage is None or not REFERENCE_PATTERN.fullmatch(coverage):
        return None
    codes = [(url, code) for url, code in _CODES[decision.outcome] if primary or url not in _PRIMARY_ONLY]
    codes += [("info-needed", code) for code in info_needed(decision, version)]
    return _assertion(decision, coverage, codes, {"text": decision.reason})


def info_needed(decision: Decision, version: tuple[int, int] | None = None) -> list[str]:
    """What a conditional assertion needs: `OTH` (the reason says what), or under CRD 2.2 `detail-code` for each
    unknown a billing code would resolve."""
    if decision.outcome is not Outcome.CONDITIONAL:
        return []
    if version is None or version < (2, 2):
        return ["OTH"]
    return sorted({unknown.needs for unknown in decision.unknowns if unknown.how_to_resolve} or {"OTH"})


def gap_information(decision: Decision, gap: CoverageGap | None,
                    version: tuple[int, int] | None) -> dict[str, Any] | None:
    """CRD 2.2 resp-43/44/45: the assertion on an order decided without a Coverage of the member, pointing to the
    Coverage the order's insurance names; None before 2.2, without a gap, or without such a reference."""
    reference = order_insurance(decision.order.resource)
    if gap is None or reference is None or version is None or version < GAP_ASSERTIONS_FROM:
        return None
    covered = "indeterminate" if gap.reason == "technical" else "not-covered"
    reason = {"coding": [{"system": REASON_SYSTEM, "code": gap.reason}], "text": f"{gap.text}."}
    return _assertion(decision, reference, [("covered", covered)], reason)


def order_insurance(order: dict[str, Any]) -> str | None:
    """The first Coverage the order's `insurance` names (CRD orders carry their coverage there), or None."""
    return next(iter(insurance_coverages(order)), None)


def _assertion(decision: Decision, coverage: str, codes: list[tuple[str, str]],
               reason: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "coverage", "valueReference": {"reference": coverage}}]
    parts += [{"url": url, "valueCode": code} for url, code in codes]
    parts += [
        {"url": "reason", "valueCodeableConcept": reason},
        {"url": "date", "valueDate": decision.decided_on.isoformat()},
        {"url": "coverage-assertion-id", "valueString": decision.assertion_id},
    ]
    return {"url": COVERAGE_INFORMATION, "extension": parts}


def update_action(decision: Decision, extension: dict[str, Any] | None, gap: CoverageGap | None = None
                  ) -> Action | None:
    """The system action that stores the assertion `extension` (made with `gap`, if any) on the order: the whole
    order, with only the extension added.

    An earlier assertion for the same coverage is replaced; assertions for other coverages are kept. When the
    order already carries this very assertion (only its date and id would change), there is no action: CRD
    sends one only when something is new or changed (§resp-35).
    """
    reference = decision.order.reference
    if extension is None or reference is None:  # nothing to point to, or an order the client cannot update
        return None
    coverage = _coverage_of(extension)
    resource = decision.order.resource
    earlier = [e for e in resource.get("extension") or [] if _same_assertion(e, coverage)]
    if any(_assertion_content(e) == _assertion_content(extension) for e in earlier):
        return None
    kept = [e for e in resource.get("extension") or [] if not _same_assertion(e, coverage)]
    # A new top level with its own extension list; the rest is the order's, shared, as nothing changes it.
    resource = {**resource, "extension": [*kept, extension]}
    policy = decision.policy.spec
    said = _PHRASE[decision.outcome] if decision.coverage or gap is None else _GAP_PHRASE[gap.reason]
    return Action(
        type="update",
        description=f"Record the payer's coverage information on {reference}: {said} under "
        f"medical policy {policy.id} ({policy.title}).",
        resource=resource,
    )


def asserted(extension: dict[str, Any]) -> tuple[str, str, str]:
    """What an assertion of this service says: its `covered` value, the Coverage it points to, its reason's text."""
    parts = {part["url"]: part for part in extension["extension"]}
    return (parts["covered"]["valueCode"], parts["coverage"]["valueReference"]["reference"],
            parts["reason"]["valueCodeableConcept"]["text"])


def _coverage_of(extension: dict[str, Any]) -> str:
    return next(part["valueReference"]["reference"] for part in extension["extension"] if part["url"] == "coverage")


def _assertion_content(extension: dict[str, Any]) -> list[Any]:
    """What an assertion says, leaving out when it was said and its id (`extension`: one `_same_assertion` found)."""
    said = [p for p in extension["extension"]
            if isinstance(p, dict) and p.get("url") not in ("date", "coverage-assertion-id")]
    return sorted(said, key=repr)


def _same_assertion(extension: Any, coverage: str | None) -> bool:
    if not isinstance(extension, dict) or extension.get("url") != COVERAGE_INFORMATION:
        return False
    return any(isinstance(part, dict) and part.get("url") == "coverage"
               and (part.get("valueReference") or {}).get("reference") == coverage
               for part in extension.get("extension") or [])
