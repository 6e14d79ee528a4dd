"""CDS Hooks feedback entries for the cards of an answer: accepted (with the suggestion taken) or overridden
(with one of the override reasons the card offers, and a comment)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


class FeedbackError(ValueError):
    """The feedback asked for does not fit the cards; the message says what would."""


def entries_for_answer(answer: dict[str, Any], outcome: str, reason: str | None, comment: str | None,
                       card_ids: Sequence[str] = (), suggestion_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One entry per card of `answer` (or per card named in `card_ids`), checked against what each card offers."""
    cards = [card for card in answer.get("cards") or [] if isinstance(card, dict) and card.get("uuid")]
    if card_ids:
        known = {card["uuid"] for card in cards}
        if missing := [uuid for uuid in card_ids if uuid not in known]:
            raise FeedbackError(f"the answer has no card {', '.join(missing)}; its cards: {_list(known)}")
        cards = [card for card in cards if card["uuid"] in card_ids]
    if not cards:
        raise FeedbackError("the answer holds no card with a uuid to give feedback on")
    return [_entry(card["uuid"], outcome, _accepted(card, outcome, suggestion_ids),
                   _offered_reason(card, reason), comment) for card in cards]


def entry_for_card(card_id: str, outcome: str, reason: str | None, comment: str | None,
                   suggestion_ids: Sequence[str] = ()) -> dict[str, Any]:
    """An entry for a card known only by its uuid: the reason is taken as given (SYSTEM|CODE or CODE)."""
    if outcome == "accepted" and not suggestion_ids:
        raise FeedbackError("accepted feedback names the suggestion taken: give --suggestion UUID (or give the "
                            "answer file instead of the card's uuid)")
    coding = None
    if reason:
        system, _, code = reason.rpartition("|")
        coding = {"code": code, **({"system": system} if system else {})}
    return _entry(card_id, outcome, list(suggestion_ids), coding, comment)


def _accepted(card: dict[str, Any], outcome: str, suggestion_ids: Sequence[str]) -> list[str]:
    if outcome != "accepted":
        return []
    suggestions = [s for s in card.get("suggestions") or [] if isinstance(s, dict) and s.get("uuid")]
    offered = {s["uuid"] for s in suggestions}
    if suggestion_ids:
        if missing := [uuid for uuid in suggestion_ids if uuid not in offered]:
            raise FeedbackError(f"card {card['uuid']} has no suggestion {', '.join(missing)}; "
                                f"it offers {_list(offered)}")
        return list(suggestion_ids)
    recommended = [s["uuid"] for s in suggestions if s.get("isRecommended")]
    chosen = recommended if len(recommended) == 1 else [s["uuid"] for s in suggestions]
    if len(chosen) != 1:
        raise FeedbackError(f"card {card['uuid']} offers {_list(offered)}; name the one taken with --suggestion")
    return chosen


def _offered_reason(card: dict[str, Any], reason: str | None) -> dict[str, Any] | None:
    if reason is None:
        return None
    offered = [r for r in card.get("overrideReasons") or [] if isinstance(r, dict) and r.get("code")]
    system, _, code = reason.rpartition("|")
    for coding in offered:
        if coding["code"] == code and (not system or coding.get("system") == system):
            return {key: coding[key] for key in ("system", "code", "display") if coding.get(key)}
    raise FeedbackError(f"card {card['uuid']} offers the override reasons "
                        f"{_list(coding['code'] for coding in offered)}, not {reason!r}")


def _entry(card_id: str, outcome: str, accepted: list[str], reason: dict[str, Any] | None,
           comment: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"card": card_id, "outcome": outcome,
                             "outcomeTimestamp": datetime.now(UTC).isoformat(timespec="seconds")}
    if accepted:
        entry["acceptedSuggestions"] = [{"id": uuid} for uuid in accepted]
    if outcome == "overridden" and (reason or comment):
        entry["overrideReason"] = {**({"reason": reason} if reason else {}),
                                   **({"userComment": comment} if comment else {})}
    return entry


def _list(values: Any) -> str:
    return ", ".join(sorted(values)) or "none"
