"""covering index for the feedback-loop delay quantiles

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 17:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_delay_buckets_quantiles",
        "delay_buckets",
        ["use_case", "event_type", "bucket", "served_hour", "count"],
    )


def downgrade() -> None:
    op.drop_index("ix_delay_buckets_quantiles", table_name="delay_buckets")
