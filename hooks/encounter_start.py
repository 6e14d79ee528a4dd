"""encounter-start: a patient is admitted or arrives for a visit; the encounter's pending orders are judged, and
cards and coverage information come only when the client's configuration asks for them."""

from hooks import encounter
from hooks.spec import Hook

HOOK = Hook(
    name="encounter-start",
    service_id="encounter-start-crd",
    title="Coverage requirements at the start of an encounter",
    description="When an encounter starts, tells whether the encounter's pending orders (service and device "
    "requests) are covered under the payer's medical policy and why; answers only with the cards and coverage "
    "information the client's configuration switches on.",
    primary=False,
    requires_selections=False,
    judged_orders=encounter.encounter_orders,
    context=encounter.CONTEXT,
    more_prefetch=encounter.PREFETCH,
    configuration_options=encounter.CONFIGURATION_OPTIONS,
)
