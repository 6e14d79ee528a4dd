"""Hook-call and decision records as the pipeline fills them, for the store, API and CLI tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cds.record import DecisionRecord, HookCall, JudgedOrder

E0221 = "https://bluebutton.cms.gov/resources/codesystem/hcpcs|E0221"


def a_call(hook_instance: str | None = None, orders: int = 1, time: datetime | None = None, **fields) -> HookCall:
    return HookCall(
        time=time or datetime.now(UTC), service_id="order-sign-crd", hook="order-sign",
        hook_instance=hook_instance or str(uuid.uuid4()), status=200, latency_ms=12.5,
        orders=tuple(JudgedOrder(f"DeviceRequest/dr-{i}", (E0221,)) for i in range(orders)),
        client_iss="https://ehr.example.org", client_tenant="tenant-1", patient_id="pat-1", **fields)


def a_decision(call: HookCall, order: int = 0, policy_id: str = "DME101.045", outcome: str = "not-covered",
               decided_at: datetime | None = None) -> DecisionRecord:
    return DecisionRecord(
        coverage_assertion_id=str(uuid.uuid4()), hook_instance=call.hook_instance,
        order_reference=f"DeviceRequest/dr-{order}", order_codes=(E0221,), policy_id=policy_id,
        policy_version="2024-03-15", outcome=outcome,
        reason="Infrared therapy devices are not medically necessary (policy DME101.045, CMS NCD 270.6).",
        decided_at=decided_at or call.time, card_uuid=str(uuid.uuid4()), suggestion_uuids=(str(uuid.uuid4()),),
        coverage_reference="Coverage/cov-1")


def recorded_caller(app, hook_instance: str) -> tuple[str | None, str | None]:
    """The client (iss, tenant) recorded for the latest hook call with this id, once the writer has written it."""
    from sqlalchemy import select

    from cds.record.schema import hook_call

    store = app.extensions["cds_store"]
    store.flush()
    with store.engine.connect() as connection:
        row = connection.execute(select(hook_call.c.client_iss, hook_call.c.client_tenant)
                                 .where(hook_call.c.hook_instance == hook_instance)
                                 .order_by(hook_call.c.time.desc()).limit(1)).one()
    return row.client_iss, row.client_tenant
