"""What a hook module declares: its discovery entry and which draft orders it judges."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds.errors import CdsError, quote
from cds.policy.facts import Order
from cds.protocol import ContextShape, HookRequest

# What every coverage decision may need about the member; root-level context tokens only (CDS Hooks 2.0).
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "coverage": "Coverage?patient={{context.patientId}}&status=active",
    "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
}

# The Da Vinci CRD versions each service implements and declares (davinci-crd.version, CRD 2.2 dev-1/dev-2: all of
# them, in the two-part form deviations.md gives, "i.e. 2.0, not 2.0.0 or 2.0.1"); davinci-crd.requestedVersion
# names one of them (dev-3) and selects its behaviour where they differ (cds.render.configuration). The extension's
# invariant crdver-1 (^[1-9]\d*\.[1-9]\d*$) would refuse "2.0"; the guide's own text uses it, and dev-2 asks for every
# version served, so it is declared (docs/conformance.md, dev-2).
CRD_VERSIONS = ["2.0", "2.1", "2.2"]
CDS_HOOKS_VERSION = "STU2"  # discovery `version` (CDS Hooks 3.0): 2.0 in full, plus the 3.0 parts CRD 2.2 uses

CONFIGURATION_OPTIONS = [
    {
        "code": "coverage-info",
        "type": "boolean",
        "name": "Coverage Information",
        "description": "Whether each order is covered, needs prior authorization or documentation: the "
        "coverage-information system action stored on the order, and cards explaining a coverage that depends "
        "on prior authorization or on information not in the request.",
        "default": True,
    },
    {
        "code": "off-guideline",
        "type": "boolean",
        "name": "Off guideline",
        "description": "A card when an order runs against the payer's medical policy (for example, not medically "
        "necessary), with the verdict, its basis, links to the policy and a suggestion to remove the order.",
        "default": True,
    },
    {
        "code": "max-cards",
        "type": "integer",
        "name": "Maximum cards",
        "description": "The most cards returned for one call; the most important come first.",
        "default": 10,
    },
]


@dataclass(frozen=True)
class Hook:
    name: str
    service_id: str
    title: str
    description: str
    primary: bool  # CRD primary hooks must return coverage information for every judged order
    requires_selections: bool
    # The orders judged; an order named only by reference (cds.fhir.OrderReference) is resolved before it is.
    judged_orders: Callable[[HookRequest], tuple[Order, ...]]
    context: ContextShape = field(default_factory=ContextShape)  # what the hook's context holds
    more_prefetch: Mapping[str, str] = field(default_factory=dict)  # templates beyond the member data's
    # The davinci-crd.configuration options it declares; their defaults are what a call that names none gets.
    configuration_options: tuple[dict[str, Any], ...] = tuple(CONFIGURATION_OPTIONS)

    @property
    def option_defaults(self) -> dict[str, Any]:
        return {option["code"]: option["default"] for option in self.configuration_options}

    def discovery_entry(self) -> dict[str, Any]:
        return {
            "hook": self.name,
            "id": self.service_id,
            "title": self.title,
            "description": self.description,
            "version": CDS_HOOKS_VERSION,
            "prefetch": {**PREFETCH, **self.more_prefetch},
            "extension": {
                "davinci-crd.version": CRD_VERSIONS,
                "davinci-crd.configuration-options": list(self.configuration_options),
            },
        }


def check_requested_version(version: str | None) -> None:
    """422 (CRD hook-13: valid CDS Hooks, against CRD's own rules) for a davinci-crd.requestedVersion this service
    does not implement; None (not sent) is fine, and gets the behaviour valid under every version."""
    if version is not None and version not in CRD_VERSIONS:
        raise CdsError(422, f"davinci-crd.requestedVersion {quote(version)} is not a Da Vinci CRD version this "
                       f"service implements ({', '.join(CRD_VERSIONS)}).", "not-supported",
                       "extension.davinci-crd.requestedVersion")
