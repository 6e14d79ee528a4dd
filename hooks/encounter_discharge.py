"""encounter-discharge: a patient is discharged; the encounter's pending orders (for example equipment for home
use) are judged, and cards and coverage information come only when the client's configuration asks for them."""

from hooks import encounter

HOOK = encounter.encounter_hook(
    "encounter-discharge",
    "Coverage requirements at discharge",
    "When a patient is discharged, tells whether the encounter's pending orders (service and device "
    "requests, such as equipment for home use) are covered under the payer's medical policy and why; answers only "
    "with the cards and coverage information the client's configuration switches on.",
)
