"""Member scenarios for the order form: the patients, coverages and conditions of `fhir_examples/`.

They are read from the example requests in `fhir_examples/` of the working directory (the container image has
them in /app, its working directory) or of the source checkout (as the quick start installs the service); an
installed wheel has none, and the form then starts from an empty patient.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

CHECKOUT_EXAMPLES = Path(__file__).resolve().parents[2] / "fhir_examples"

# (key, label, example file): one per member situation of the examples' README.
CATALOGUE = (
    ("commercial-tx-ppo", "Commercial: Texas, BCBSTX PPO, type 2 diabetes with polyneuropathy",
     "e0221-home-device.json"),
    ("commercial-ok-hmo-ulcer", "Commercial: Oklahoma HMO, 61, chronic heel ulcer", "commercial-skin-ulcer.json"),
    ("commercial-nm", "Commercial: New Mexico PPO", "cpt-97026-clinic.json"),
    ("line-unknown-nm", "Line of business not known: New Mexico PPO, payer not in the plan directory",
     "line-of-business-unknown.json"),
    ("medicare-advantage-il", "Medicare Advantage: Illinois HMO, 72, diabetic polyneuropathy",
     "medicare-diabetic-polyneuropathy.json"),
    ("medicare-advantage-tx", "Medicare Advantage: Texas PPO, 68, knee osteoarthritis",
     "medicare-knee-osteoarthritis.json"),
    ("medicaid-tx", "Medicaid: Texas managed care", "medicaid-member.json"),
    ("il-child-hmo", "Illinois child, 9, cerebral palsy, fully insured BCBSIL HMO (plan year from 07/2025)",
     "il-child-cerebral-palsy-hmo.json"),
    ("il-child-unknown-plan", "Illinois child, 9, cerebral palsy, BCBSIL group not in the plan directory",
     "il-child-funding-unknown.json"),
    ("il-child-self-funded", "Illinois child, 7, Down syndrome, self-funded employer PPO",
     "il-child-self-funded.json"),
    ("il-adult", "Illinois adult, 34, cerebral palsy, fully insured BCBSIL PPO", "il-adult-cerebral-palsy.json"),
    ("tx-child", "Texas child, 7, Down syndrome, BCBSTX PPO", "tx-child-down-syndrome.json"),
    ("no-coverage", "No Coverage found (as the CDS Hooks sandbox sends it)", "sandbox-style-no-coverage.json"),
)


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    source: str  # the example file it comes from
    patient: dict[str, Any]
    coverage: dict[str, Any] | None
    conditions: dict[str, Any] | None
    request: dict[str, Any]  # the whole example request, to start a pasted request from


def examples_directory() -> Path | None:
    """`fhir_examples/` of the working directory, else of the source checkout; None when neither has one."""
    return next((d for d in (Path("fhir_examples"), CHECKOUT_EXAMPLES) if d.is_dir()), None)


@cache
def scenarios() -> tuple[Scenario, ...]:
    """The scenarios whose example file is present."""
    directory = examples_directory()
    found = []
    for key, label, name in CATALOGUE:
        path = directory / name if directory else None
        if path and path.is_file():
            request = json.loads(path.read_text(encoding="utf-8"))
            prefetch = request.get("prefetch") or {}
            found.append(Scenario(key, label, name, prefetch["patient"], prefetch.get("coverage"),
                                  prefetch.get("conditions"), request))
    return tuple(found)
