"""The record step: what a hook call leaves behind. Its audit records, the decisions counted in the metrics, and
where decided orders depart from FHIR R4 (logged from a sample)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException

from cds.errors import CdsError
from cds.policy.facts import Order
from cds.protocol import HookRequest
from cds.record.calls import call_records
from cds.record.departures import DepartureLog
from cds.record.refusals import record_refusal
from cds.record.store import Store

if TYPE_CHECKING:
    from cds.auth import RegisteredClient
    from cds.render import Rendering


class Recorder:
    def __init__(self, store: Store, departures: DepartureLog, capture_payloads: bool):
        self.store = store
        self.departures = departures
        self.capture_payloads = capture_payloads

    def record(self, service_id: str, request: HookRequest, client: RegisteredClient | None, status: int,
               latency_ms: float, rendering: Rendering | None = None,
               payloads: tuple[dict[str, Any], dict[str, Any]] | None = None,
               orders: Sequence[Order] | None = None) -> None:
        """Record one call: answered (`rendering`, and the request and answer JSON as `payloads`, kept only with
        payload capture on), or refused with `status`. `orders`: those the call was about (its draft orders when
        not given)."""
        self.write(service_id, request, client, status, latency_ms, rendering,
                   payloads if self.capture_payloads else None, orders)
        from cds import metrics  # imported late: gunicorn sets up multiprocess metrics before workers import it

        rendered = rendering.rendered if rendering else ()
        for item in rendered:
            metrics.decision(item.decision.policy_id, item.answered()[0])
        # R4 is checked only for orders the service speaks about: their integrators hear of it.
        self.departures.check((item.decision.order for item in rendered), client.iss if client else None)

    def refused(self, service_id: str, error: CdsError | HTTPException, latency_ms: float,
                client: RegisteredClient | None, body: dict[str, Any] | None) -> None:
        """Record a call refused before anything was decided (its status and why, never its body)."""
        record_refusal(self.store, service_id, error, latency_ms, client, body)

    def write(self, service_id: str, request: HookRequest, client: RegisteredClient | None, status: int,
              latency_ms: float, rendering: Rendering | None,
              payloads: tuple[dict[str, Any], dict[str, Any]] | None, orders: Sequence[Order] | None = None) -> None:
        """The call's audit records, to the store."""
        self.store.audit(*call_records(service_id, request, client, status, latency_ms,
                                       rendering.rendered if rendering else (),
                                       rendering.response if rendering else None, payloads, orders))
