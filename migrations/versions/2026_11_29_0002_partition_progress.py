"""partition progress for Kafka-mode watermarks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 16:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("watermarks") as batch_op:
        batch_op.add_column(sa.Column("caught_up", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("watermarks") as batch_op:
        batch_op.drop_column("reported_at")
        batch_op.drop_column("caught_up")
