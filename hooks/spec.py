"""What a hook module declares: its discovery entry and which draft orders it judges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cds.policy.facts import Order
from cds.protocol import HookRequest

# What every coverage decision may need about the member; root-level context tokens only (CDS Hooks 2.0).
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "coverage": "Coverage?patient={{context.patientId}}&status=active",
    "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
}

CRD_VERSIONS = ["2.1", "2.2"]

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
    judged_orders: Callable[[HookRequest], tuple[Order, ...]]

    def discovery_entry(self) -> dict[str, Any]:
        return {
            "hook": self.name,
            "id": self.service_id,
            "title": self.title,
            "description": self.description,
            "prefetch": PREFETCH,
            "extension": {
                "davinci-crd.version": CRD_VERSIONS,
                "davinci-crd.configuration-options": CONFIGURATION_OPTIONS,
            },
        }
