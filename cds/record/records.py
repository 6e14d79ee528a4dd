"""What the pipeline hands the store: plain records, decoupled from the engine and the wire models.

Minimum necessary data (CRD §sec-5/6): references and codes, never whole resources; the request and
response bodies only when payload capture is switched on. Codes are FHIR token strings, `system|code`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class JudgedOrder:
    reference: str | None
    codes: tuple[str, ...] = ()
    performer: str | None = None  # who it is dispatched to (order-dispatch)


@dataclass(frozen=True)
class HookCall:
    """One hook call and how it was answered. `request`/`response` are kept only with payload capture on."""

    time: datetime
    service_id: str
    hook: str | None  # None (and hook_instance too) when the call was refused before its body was read
    hook_instance: str | None
    status: int
    latency_ms: float
    orders: tuple[JudgedOrder, ...] = ()
    client_iss: str | None = None
    client_tenant: str | None = None
    patient_id: str | None = None
    request: dict[str, Any] | None = field(default=None, repr=False)
    response: dict[str, Any] | None = field(default=None, repr=False)
    refusal: str | None = None  # a refused call: its OperationOutcome's issue type


@dataclass(frozen=True)
class DecisionRecord:
    """One coverage decision; `coverage_assertion_id` is the id the response carries and the record's key."""

    coverage_assertion_id: str
    hook_instance: str
    order_reference: str | None
    order_codes: tuple[str, ...]
    policy_id: str
    policy_version: str
    outcome: str  # the CRD `covered` value answered: covered, not-covered, conditional, indeterminate
    reason: str
    decided_at: datetime
    card_uuid: str | None = None
    suggestion_uuids: tuple[str, ...] = ()
    coverage_reference: str | None = None
    performer: str | None = None  # who the order is dispatched to (order-dispatch)


@dataclass(frozen=True)
class FeedbackRecord:
    """One CDS Hooks feedback entry on a card."""

    card_uuid: str
    outcome: str  # accepted | overridden
    outcome_time: datetime
    accepted_suggestions: tuple[str, ...] = ()
    override_code: str | None = None
    override_system: str | None = None
    override_display: str | None = None
    override_comment: str | None = None


class _FeedbackItem(Protocol):  # the shape of cds.protocol.FeedbackItem, read only
    @property
    def card(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def outcome_timestamp(self) -> datetime: ...
    @property
    def accepted_suggestions(self) -> Any: ...
    @property
    def override_reason(self) -> Any: ...


def feedback_records(items: Iterable[_FeedbackItem]) -> list[FeedbackRecord]:
    """Records from validated feedback items (cds.protocol.FeedbackItem)."""
    records = []
    for item in items:
        override = item.override_reason
        reason = override.reason if override else None
        records.append(FeedbackRecord(
            card_uuid=item.card,
            outcome=item.outcome,
            outcome_time=item.outcome_timestamp,
            accepted_suggestions=tuple(s.id for s in item.accepted_suggestions),
            override_code=reason.code if reason else None,
            override_system=reason.system if reason else None,
            override_display=reason.display if reason else None,
            override_comment=override.user_comment if override else None,
        ))
    return records
