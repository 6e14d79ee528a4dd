"""encounter-discharge: a patient is discharged; the encounter's pending orders (for example equipment for home
use) are judged, and cards and coverage information come only when the client's configuration asks for them."""

from hooks import encounter
from hooks.spec import Hook

HOOK = Hook(
    name="encounter-discharge",
    service_id="encounter-discharge-crd",
    title="Coverage requirements at discharge",
    description="When a patient is discharged, tells whether the encounter's pending orders (service and device "
    "requests, such as equipment for home use) are covered under the payer's medical policy and why; answers only "
    "with the cards and coverage information the client's configuration switches on.",
    primary=False,
    requires_selections=False,
    judged_orders=encounter.encounter_orders,
    context=encounter.CONTEXT,
    more_prefetch=encounter.PREFETCH,
    configuration_options=encounter.CONFIGURATION_OPTIONS,
)
