"""Hook calls, decisions, feedback and seen JWT ids.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)  # cds.record.schema.UtcDateTime stores through this type


def upgrade() -> None:
    op.create_table(
        "hook_call",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("time", UTC_TIME, nullable=False),
        sa.Column("service_id", sa.String(), nullable=False),
        sa.Column("hook", sa.String(), nullable=False),
        sa.Column("hook_instance", sa.String(), nullable=False),
        sa.Column("client_iss", sa.String()),
        sa.Column("client_tenant", sa.String()),
        sa.Column("patient_id", sa.String()),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("orders", sa.JSON(), nullable=False),
        sa.Column("request", sa.JSON()),
        sa.Column("response", sa.JSON()),
        sa.PrimaryKeyConstraint("id", name="pk_hook_call"),
    )
    op.create_index("ix_hook_call_time", "hook_call", ["time"])
    op.create_index("ix_hook_call_hook_instance", "hook_call", ["hook_instance"])

    op.create_table(
        "decision",
        sa.Column("coverage_assertion_id", sa.String(), nullable=False),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("hook_instance", sa.String(), nullable=False),
        sa.Column("order_reference", sa.String()),
        sa.Column("order_codes", sa.JSON(), nullable=False),
        sa.Column("policy_id", sa.String(), nullable=False),
        sa.Column("policy_version", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("card_uuid", sa.String()),
        sa.Column("suggestion_uuids", sa.JSON(), nullable=False),
        sa.Column("coverage_reference", sa.String()),
        sa.Column("decided_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["hook_call.id"], name="fk_decision_call_id_hook_call"),
        sa.PrimaryKeyConstraint("coverage_assertion_id", name="pk_decision"),
    )
    for column in ("card_uuid", "decided_at"):
        op.create_index(f"ix_decision_{column}", "decision", [column])

    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("card_uuid", sa.String(), nullable=False),
        sa.Column("coverage_assertion_id", sa.String()),
        sa.Column("service_id", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("outcome_time", UTC_TIME, nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("override_code", sa.String()),
        sa.Column("override_system", sa.String()),
        sa.Column("override_display", sa.String()),
        sa.Column("override_comment", sa.Text()),
        sa.Column("received_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(["coverage_assertion_id"], ["decision.coverage_assertion_id"],
                                name="fk_feedback_coverage_assertion_id_decision"),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("card_uuid", "outcome", "outcome_time", name="uq_feedback_card_uuid_outcome_outcome_time"),
    )
    op.create_index("ix_feedback_coverage_assertion_id", "feedback", ["coverage_assertion_id"])

    op.create_table(
        "seen_jti",
        sa.Column("iss", sa.String(), nullable=False),
        sa.Column("jti", sa.String(), nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("iss", "jti", name="pk_seen_jti"),
    )
    op.create_index("ix_seen_jti_expires_at", "seen_jti", ["expires_at"])


def downgrade() -> None:
    for table in ("seen_jti", "feedback", "decision", "hook_call"):
        op.drop_table(table)
