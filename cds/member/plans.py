"""The plan directory: what the payer knows about its plans that a Coverage does not carry (funding, situs state,
plan year start, ...), read once at start-up from a YAML or JSON file (format: docs/policies.md, "Plan directory")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cds.policy.facts import KnownFunding, KnownLineOfBusiness, KnownProduct
from cds.states import state_code
from cds.validation import error_path


class PlanDirectoryError(ValueError):
    """The plan directory file cannot be used; the message says where and why."""


class PlanFacts(BaseModel):
    """Facts about a plan; None where the directory does not say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    line_of_business: KnownLineOfBusiness | None = None
    product: KnownProduct | None = None
    funding: KnownFunding | None = None
    situs_state: str | None = None
    plan_start: date | None = None

    @field_validator("situs_state")
    @classmethod
    def _state(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = state_code(value)
        if code is None:
            raise ValueError(f"{value!r} is not a US state or territory")
        return code

    def over(self, defaults: PlanFacts) -> PlanFacts:
        """These facts, with what they leave unsaid taken from `defaults`."""
        mine = self.model_dump(include=set(PlanFacts.model_fields), exclude_none=True)
        return PlanFacts(**{**defaults.model_dump(include=set(PlanFacts.model_fields)), **mine})


class PlanEntry(PlanFacts):
    group: str | None = Field(None, min_length=1)  # Coverage.class of type "group": its value
    plan: str | None = Field(None, min_length=1)  # Coverage.class of type "plan": its value

    @model_validator(mode="after")
    def _keyed(self) -> PlanEntry:
        if self.group is None and self.plan is None:
            raise ValueError("a plan entry needs a group or a plan identifier (or both)")
        return self


class PayerEntry(PlanFacts):
    """A payer: how Coverage.payor names it, defaults for all its plans, and its plans."""

    identifiers: list[str] = Field(min_length=1)
    plans: list[PlanEntry] = []

    @model_validator(mode="after")
    def _unique_plans(self) -> PayerEntry:
        keys = [(plan.group, plan.plan) for plan in self.plans]
        duplicates = {key for key in keys if keys.count(key) > 1}
        if duplicates:
            raise ValueError(f"plans listed twice (group, plan): {sorted(duplicates, key=str)}")
        return self


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payers: list[PayerEntry] = []


@dataclass(frozen=True)
class PlanMatch:
    """What the directory says about one Coverage's plan: the payer's defaults, overridden by the plan entry."""

    facts: PlanFacts
    payer_name: str | None
    plan_name: str | None  # None when this group/plan is not listed or the entry gives no name
    plan_listed: bool  # False: the payer is known but this group/plan is not listed


@dataclass(frozen=True)
class PlanDirectory:
    payers: tuple[PayerEntry, ...] = ()

    def lookup(self, payer_ids: frozenset[str], group: str | None, plan: str | None) -> PlanMatch | None:
        """The entry for a Coverage whose payer goes by any of `payer_ids`; None when the payer is not listed.
        The most specific plan entry wins: group and plan, then group alone, then plan alone."""
        payer = next((p for p in self.payers if payer_ids.intersection(p.identifiers)), None)
        if payer is None:
            return None
        defaults = PlanFacts(**payer.model_dump(include=set(PlanFacts.model_fields)))
        candidates = [
            entry for entry in payer.plans
            if entry.group in (None, group) and entry.plan in (None, plan)
        ]
        if not candidates:
            return PlanMatch(defaults, payer.name, None, plan_listed=False)
        best = max(candidates, key=lambda e: (e.group is not None and e.plan is not None, e.group is not None))
        return PlanMatch(best.over(defaults), payer.name, best.name, plan_listed=True)


def load_plan_directory(path: str | Path) -> PlanDirectory:
    """Read and check the directory file; every problem names where it is in the file."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanDirectoryError(f"cannot be read ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PlanDirectoryError(f"is not valid YAML or JSON ({exc})") from None
    try:
        parsed = _DirectoryFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = error_path(error["loc"]) or "the file"
        hint = " (quote identifiers so YAML reads them as text)" if error["type"] == "string_type" else ""
        raise PlanDirectoryError(f"{where}: {error['msg']}{hint}") from None
    seen: dict[str, int] = {}
    for index, payer in enumerate(parsed.payers):
        for identifier in payer.identifiers:
            if identifier in seen:
                raise PlanDirectoryError(
                    f"payers.{index}: identifier {identifier!r} also names payers.{seen[identifier]}")
            seen[identifier] = index
    return PlanDirectory(tuple(parsed.payers))
