"""The store's tables (SQLAlchemy Core). Change them only together with a migration in cds/record/migrations/."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, on PostgreSQL (timestamptz) and SQLite (naive UTC text) alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store takes timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


hook_call = Table(
    "hook_call", metadata,
    Column("id", String(36), primary_key=True),
    Column("time", UtcDateTime, nullable=False, index=True),
    Column("service_id", String, nullable=False),
    # Both NULL for a call refused before its body was read (401, 404, 413, unreadable JSON).
    Column("hook", String),
    Column("hook_instance", String, index=True),
    Column("client_iss", String),
    Column("client_tenant", String),
    Column("patient_id", String),
    Column("status", Integer, nullable=False),
    # Why a call refused before it was decided was refused: the FHIR issue type of its OperationOutcome (login,
    # not-found, invalid, required, not-supported, too-costly, ...). NULL for a call that was decided.
    Column("refusal", String),
    Column("latency_ms", Float, nullable=False),
    Column("orders", JSON, nullable=False),  # [{"reference": ..., "codes": ["system|code", ...], "performer"?: ...}]
    # Only with CDS_AUDIT_CAPTURE_PAYLOADS, until `cds audit purge` clears them (SQL NULL, not JSON null).
    Column("request", JSON(none_as_null=True)),
    Column("response", JSON(none_as_null=True)),
)

decision = Table(
    "decision", metadata,
    Column("coverage_assertion_id", String, primary_key=True),
    Column("call_id", String(36), ForeignKey("hook_call.id"), nullable=False),
    Column("hook_instance", String, nullable=False),
    Column("order_reference", String),
    Column("order_codes", JSON, nullable=False),
    Column("policy_id", String, nullable=False),
    Column("policy_version", String, nullable=False),
    Column("outcome", String, nullable=False),
    Column("reason", Text, nullable=False),
    Column("card_uuid", String, index=True),
    Column("suggestion_uuids", JSON, nullable=False),
    Column("coverage_reference", String),
    Column("decided_at", UtcDateTime, nullable=False, index=True),
    Column("performer", String),  # who the order was dispatched to (order-dispatch), as the call names it
)

feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card_uuid", String, nullable=False),
    # The decision whose card this is; NULL when the card uuid matched none (kept as unmatched).
    Column("coverage_assertion_id", String, ForeignKey("decision.coverage_assertion_id"), index=True),
    Column("service_id", String, nullable=False),
    Column("outcome", String, nullable=False),
    Column("outcome_time", UtcDateTime, nullable=False),
    Column("accepted_suggestions", JSON, nullable=False),
    Column("override_code", String),
    Column("override_system", String),
    Column("override_display", String),
    Column("override_comment", Text),
    Column("received_at", UtcDateTime, nullable=False),
    UniqueConstraint("card_uuid", "outcome", "outcome_time"),  # a repeated entry is stored once
)

seen_jti = Table(
    "seen_jti", metadata,
    Column("iss", String, primary_key=True),
    Column("jti", String, primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)
