"""The render step: decisions -> the CDS Hooks answer (cards a clinician reads, CRD coverage-information actions),
as the client's configuration asks for them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cds.policy import Decision
from cds.policy.facts import CoverageGap
from cds.protocol import Action, Card, CdsResponse
from cds.render.cards import card_for, select_cards
from cds.render.configuration import Configuration
from cds.render.coverage import COVERED_CODE, asserted, coverage_information, update_action

__all__ = ["Configuration", "Rendered", "Rendering", "render"]


@dataclass(frozen=True)
class Rendered:
    """One decision and what was made of it: the unit an audit record keeps."""

    decision: Decision
    card: Card
    action: Action | None
    assertion: dict[str, Any] | None = None  # the coverage-information the answer gives for it, if it gives one

    def answered(self) -> tuple[str, str | None, str]:
        """What the answer says of the order's coverage: the CRD `covered` value, the Coverage it is about and why;
        the coverage-information's when the answer gives one (under CRD 2.2 it may assert `not-covered` or
        `indeterminate` for want of a Coverage), else the card's decision."""
        if self.assertion is not None:
            return asserted(self.assertion)
        coverage = self.decision.coverage
        return COVERED_CODE[self.decision.outcome], coverage.reference if coverage else None, self.decision.reason


@dataclass(frozen=True)
class Rendering:
    response: CdsResponse  # what the client gets
    rendered: tuple[Rendered, ...]  # every decision, with its card whether or not the card was sent


def render(decisions: Sequence[Decision], configuration: Configuration, primary: bool, payer_name: str,
           gap: CoverageGap | None = None) -> Rendering:
    """The answer to a call: a card per decision, and on request the coverage-information of each (`primary`: the
    hook is a CRD primary hook, whose assertions may ask for documentation; `gap`: why no coverage of the member
    could be used, when none could)."""
    rendered = []
    for d in decisions:
        why = d.coverage_gap or gap  # the order's own (one coverage of several could not be singled out), or the call's
        assertion = coverage_information(d, primary, why, configuration.requested_version)
        # Given when asked for and the order can carry it (a new action, or the same assertion already on it).
        given = assertion if configuration.coverage_info and d.order.reference else None
        rendered.append(Rendered(d, card_for(d, configuration, payer_name, why), update_action(d, assertion, why),
                                 given))
    actions = [r.action for r in rendered if r.action] if configuration.coverage_info else []
    cards = select_cards([r.card for r in rendered], configuration)
    return Rendering(CdsResponse(cards=cards, system_actions=actions), tuple(rendered))
