"""What the engine decides for one order: plain, immutable values that cards, CRD and the audit record read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from cds.policy import wording as w
from cds.policy.facts import CoverageFacts, CoverageGap, Order
from cds.policy.model import PolicyCode, Reference

if TYPE_CHECKING:
    from cds.policy.engine import CompiledPolicy

Indicator = Literal["info", "warning", "critical"]


class Outcome(StrEnum):
    """The coverage position for the order; each maps to one dual-valid coverage-information shape (cds/crd.py)."""

    NOT_COVERED = "not-covered"  # the policy's denial applies
    COVERED = "covered"  # covered (under a state mandate), and the plan requires no prior authorization
    COVERED_WITH_PA = "covered-with-pa"  # covered only through prior authorization with clinical documentation
    CONDITIONAL = "conditional"  # depends on facts not in the request; `unknowns` says which


@dataclass(frozen=True)
class Match:
    """How an order was found to fall under a policy: by a billing code, or by a term in its text."""

    basis: Literal["code", "text"]
    where: str  # the element it was found in, e.g. "DeviceRequest.codeCodeableConcept"
    code: PolicyCode | None = None  # the policy's code (basis "code")
    system_sent: str | None = None  # the code system URI as the client sent it ("" when it sent none)
    modifiers: tuple[str, ...] = ()  # modifiers appended to the code as sent ("E0221-RR")
    term: str | None = None  # the words of the order that matched a vocabulary term (basis "text")
    text: str | None = None  # the order's text the term was found in (basis "text")
    # A text match's strength: "strong" names the policy's devices, "weak" may name them or another item.
    strength: Literal["strong", "weak"] = "strong"

    @property
    def weak(self) -> bool:
        return self.basis == "text" and self.strength == "weak"

    def describe(self) -> str:
        """In words a clinician reads in the card."""
        if self.code:
            return w.MATCHED_CODE(
                system=self.code.system, code=self.code.code, descriptor=self.code.descriptor,
                modifiers=f" with modifier {', '.join(self.modifiers)}" if self.modifiers else "",
                no_system=" with no code system" if self.system_sent == "" else "", element=self.where)
        wording = w.MATCHED_STRONG if self.strength == "strong" else w.MATCHED_WEAK
        return wording(text=self.text, element=self.where, term=self.term)


@dataclass(frozen=True)
class Unknown:
    """Something the decision could not evaluate, and how whoever reads the card can resolve it."""

    what: str
    how_to_resolve: str | None = None
    # What would resolve it, as CRD 2.2 codes `info-needed`: "detail-code" (a billing code), else "OTH".
    needs: Literal["detail-code", "OTH"] = "OTH"


@dataclass(frozen=True)
class Decision:
    order: Order
    policy: CompiledPolicy
    match: Match
    outcome: Outcome
    indicator: Indicator
    verdict: str  # short, for the card summary: "not covered: not medically necessary"
    reason: str  # the coverage-information reason text, citing the policy (and its basis)
    coverage: CoverageFacts | None  # the coverage decided under; None: no coverage-information can be given
    decided_on: date
    # One id per decision, minted by the caller: the coverage-assertion-id on the order, and the key of its
    # audit record.
    assertion_id: str
    rationale: tuple[str, ...] = ()  # further Markdown paragraphs for the card (indication, exception, ...)
    unknowns: tuple[Unknown, ...] = ()
    references: tuple[Reference, ...] = ()
    # A state mandate may yet apply (its conditions are not all known): a clinician may override on that ground.
    mandate_may_apply: bool = False
    coverage_gap: CoverageGap | None = None  # why no coverage of the member could be decided under, when none was

    @property
    def policy_id(self) -> str:
        return self.policy.spec.id

    @property
    def policy_version(self) -> str:
        return self.policy.spec.version

    @property
    def item(self) -> str:
        """What was ordered, in a few words: the policy's name for the code, else the order's own text."""
        if self.match.code:
            return f"{self.match.code.name} ({self.match.code.code})"
        return self.match.text or self.order.resource_type
