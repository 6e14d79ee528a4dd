"""Refused hook calls are recorded too: their refusal category, and no hook or hookInstance when the call was
refused before its body was read.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hook_call") as table:
        table.alter_column("hook", existing_type=sa.String(), nullable=True)
        table.alter_column("hook_instance", existing_type=sa.String(), nullable=True)
        table.add_column(sa.Column("refusal", sa.String()))


def downgrade() -> None:
    with op.batch_alter_table("hook_call") as table:
        table.drop_column("refusal")
