"""encounter-start: a patient is admitted or arrives for a visit; the encounter's pending orders are judged, and
cards and coverage information come only when the client's configuration asks for them."""

from hooks import encounter

HOOK = encounter.encounter_hook(
    "encounter-start",
    "Coverage requirements at the start of an encounter",
    "When an encounter starts, tells whether the encounter's pending orders (service and device "
    "requests) are covered under the payer's medical policy and why; answers only with the cards and coverage "
    "information the client's configuration switches on.",
)
