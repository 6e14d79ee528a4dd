"""Who a decided order was dispatched to (order-dispatch's performer).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("decision") as table:
        table.add_column(sa.Column("performer", sa.String()))


def downgrade() -> None:
    with op.batch_alter_table("decision") as table:
        table.drop_column("performer")
