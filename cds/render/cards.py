"""Decision -> the CDS Hooks card a clinician reads: the verdict, why, links, and what to do about it."""

from __future__ import annotations

from uuid_utils.compat import uuid7

from cds.policy import wording as w
from cds.policy.decision import Decision, Outcome
from cds.policy.facts import CoverageGap
from cds.protocol import MAX_SUMMARY, Action, Card, Coding, Link, Source, Suggestion
from cds.render.configuration import Configuration

# Why a clinician keeps an order the card advises against: the CDS Hooks 3.0 codes where one says it (its example
# value set Non-Adherence Reason Clinical Selection, http://terminology.hl7.org/ValueSet/non-adherence-reason-clinical,
# with the code system's displays), else this service's own. Feedback is accepted with either, or any other.
STANDARD_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
OVERRIDE_REASON_SYSTEM = "urn:cds-coverage:override-reason"
OVERRIDE_REASONS = (
    (OVERRIDE_REASON_SYSTEM, "patient-pays", "Patient informed of non-coverage and chooses to pay"),
    (OVERRIDE_REASON_SYSTEM, "benefit-verified", "Coverage verified with the member's health plan"),
    (STANDARD_REASON_SYSTEM, "recipient-disagrees-evidence",
     "Recipient disagrees with recommendation because of issues with the evidence"),
)
# Only where the card says a mandate may apply.
STATE_MANDATE = (OVERRIDE_REASON_SYSTEM, "state-mandate", "A state benefit mandate applies")
# Only where the order matched on its text: the card may be about another item.
NOT_THIS_ITEM = (STANDARD_REASON_SYSTEM, "cds-not-applicable", "PC CDS does not apply to patient")
TOPIC_DISPLAY = {"off-guideline": "Off Guideline", "coverage-info": "Coverage Information"}
SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def card_type(decision: Decision) -> str:
    """The card's topic, and the `davinci-crd.configuration` switch that turns such cards off.

    A denial is a notice that the order runs against the payer's medical policy, with the policy to review
    (`off-guideline`); the other outcomes tell what coverage needs (`coverage-info`).
    """
    return "off-guideline" if decision.outcome is Outcome.NOT_COVERED else "coverage-info"


def card_for(decision: Decision, configuration: Configuration, payer_name: str,
             gap: CoverageGap | None = None) -> Card:
    policy = decision.policy.spec
    reference = decision.order.reference
    topic = card_type(decision)
    # Removing the order, or overriding the card, answers a denial; an order that may be covered needs neither.
    denial = decision.outcome not in (Outcome.COVERED, Outcome.COVERED_WITH_PA)
    removable = reference if denial else None
    actions = [Action(type="delete", description=f"Remove the order for {decision.item}.", resource_id=removable)]
    suggestions = [Suggestion(label=f"Remove the order for {decision.item}", uuid=str(uuid7()), actions=actions)]
    reasons = [*OVERRIDE_REASONS, *([STATE_MANDATE] if decision.mandate_may_apply else []),
               *([NOT_THIS_ITEM] if decision.match.basis == "text" else [])] if denial else []
    return Card(
        uuid=str(uuid7()),
        summary=summary(decision),
        indicator=decision.indicator,
        detail=detail(decision, gap),
        source=Source(
            label=_payer(decision) or payer_name,
            url=decision.policy.link,
            topic=Coding(system=configuration.topic_system, code=topic, display=TOPIC_DISPLAY[topic]),
        ),
        links=[
            Link(label=f"Medical policy {policy.id}: {policy.title}", url=decision.policy.link),
            *(Link(label=ref.label, url=str(ref.url)) for ref in decision.references),
        ],
        suggestions=suggestions if removable else [],
        selection_behavior="at-most-one" if removable else None,
        override_reasons=[Coding(system=system, code=code, display=text) for system, code, text in reasons],
        extension={"davinci-crd.associated-resource": [{"reference": reference}]} if reference else None,
    )


def _payer(decision: Decision) -> str | None:
    """The plan's name as on the member's card (CRD: the source label), when the Coverage names it."""
    payer = decision.coverage.payer if decision.coverage else None
    return " ".join(payer.split())[:120] if isinstance(payer, str) and payer.strip() else None


def summary(decision: Decision) -> str:
    """"<item> <verdict>, policy <id>", shortening the item (never the verdict) to stay under 140 characters."""
    tail = w.CARD_SUMMARY(item="", verdict=decision.verdict, policy=decision.policy_id)
    room = MAX_SUMMARY - len(tail)
    item = decision.item if len(decision.item) <= room else decision.item[: room - 1].rstrip() + "…"
    return item + tail


def detail(decision: Decision, gap: CoverageGap | None = None) -> str:
    """The card's Markdown detail; `gap`: why no coverage of the member could be used, if none was."""
    policy = decision.policy.spec
    paragraphs = [
        w.POLICY_HEADING(policy=policy.id, title=policy.title, publisher=policy.publisher,
                         effective=f"{policy.effective:%m/%d/%Y}"),
        w.QUOTE(text=policy.coverage_statement),
        w.BASIS(section=policy.basis_source),
        w.QUOTE(text=policy.basis),
        w.MATCHED(how=decision.match.describe()),
        *([w.DEFINITION(section=policy.text.definition_source), w.QUOTE(text=policy.text.device_definition)]
          if decision.match.basis == "text" and policy.text else []),
        *decision.rationale,
    ]
    if decision.unknowns:
        heading = w.NOT_KNOWN if decision.outcome is Outcome.CONDITIONAL else w.NOT_EVALUATED
        paragraphs.append(heading() + "\n" + "\n".join(
            f"- {u.what}" + (f": {u.how_to_resolve}" if u.how_to_resolve else "") for u in decision.unknowns))
    if decision.coverage is None:
        paragraphs.append(w.NO_COVERAGE(why=gap.text if gap else "No coverage of this patient could be used"))
    paragraphs += [w.PLAN_GOVERNS(section=policy.plan_governs_source), w.QUOTE(text=policy.plan_governs)]
    return "\n\n".join(paragraphs)


def select_cards(cards: list[Card], configuration: Configuration) -> list[Card]:
    """The cards the client asked for: switched-on types only, most severe first, at most `max-cards`."""
    shown = [card for card in cards if card.source.topic is None or configuration.shows(card.source.topic.code)]
    shown.sort(key=lambda card: SEVERITY[card.indicator])
    return shown[: configuration.max_cards]  # None: all
