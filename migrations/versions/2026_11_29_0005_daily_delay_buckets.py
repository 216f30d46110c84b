"""delay histograms rolled up by served day

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delay_buckets_daily",
        sa.Column("use_case", sa.String(length=256), nullable=False),
        sa.Column("event_type", sa.String(length=256), nullable=False),
        sa.Column("served_day", sa.BigInteger(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("use_case", "event_type", "served_day", "bucket", name=op.f("pk_delay_buckets_daily")),
    )
    op.create_index(
        "ix_delay_buckets_daily_quantiles",
        "delay_buckets_daily",
        ["use_case", "event_type", "bucket", "served_day", "count"],
    )
    op.create_index(
        "ix_delay_buckets_hours",
        "delay_buckets",
        ["served_hour", "use_case", "event_type", "bucket", "count"],
    )
    # The days already counted, from their hours (integer division on both engines).
    op.execute(
        "INSERT INTO delay_buckets_daily (use_case, event_type, served_day, bucket, count)"
        " SELECT use_case, event_type, served_hour / 24, bucket, sum(count) FROM delay_buckets"
        " GROUP BY use_case, event_type, served_hour / 24, bucket"
    )


def downgrade() -> None:
    op.drop_index("ix_delay_buckets_hours", table_name="delay_buckets")
    op.drop_index("ix_delay_buckets_daily_quantiles", table_name="delay_buckets_daily")
    op.drop_table("delay_buckets_daily")
