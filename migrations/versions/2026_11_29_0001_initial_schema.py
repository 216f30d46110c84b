"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 15:55:39.423501
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# JSONB on PostgreSQL, JSON text on SQLite; times are timezone-aware (naive UTC text on SQLite).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_seqs",
        sa.Column("use_case", sa.String(length=256), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("use_case", name=op.f("pk_dataset_seqs")),
    )
    op.create_table(
        "delay_buckets",
        sa.Column("use_case", sa.String(length=256), nullable=False),
        sa.Column("event_type", sa.String(length=256), nullable=False),
        sa.Column("served_hour", sa.BigInteger(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("use_case", "event_type", "served_hour", "bucket", name=op.f("pk_delay_buckets")),
    )
    op.create_table(
        "delay_max",
        sa.Column("use_case", sa.String(length=256), nullable=False),
        sa.Column("event_type", sa.String(length=256), nullable=False),
        sa.Column("served_hour", sa.BigInteger(), nullable=False),
        sa.Column("max_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("use_case", "event_type", "served_hour", name=op.f("pk_delay_max")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("prediction_id", sa.String(length=256), nullable=False),
        sa.Column("type", sa.String(length=256), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", JSON, nullable=True),
        sa.Column("actor", sa.String(length=256), nullable=True),
        sa.Column("payload", JSON, nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("orphan_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_orphan_expires_at", ["orphan_expires_at"], unique=False)
        batch_op.create_index("ix_events_prediction_id", ["prediction_id"], unique=False)

    op.create_table(
        "label_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("prediction_id", sa.String(length=256), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("label", JSON, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("sources", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("feedback_delay_s", sa.Float(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_history")),
    )
    with op.batch_alter_table("label_history", schema=None) as batch_op:
        batch_op.create_index("ix_label_history_prediction_id", ["prediction_id"], unique=False)

    op.create_table(
        "predictions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("prediction_id", sa.String(length=256), nullable=False),
        sa.Column("use_case", sa.String(length=256), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=True),
        sa.Column("model_version", sa.String(length=256), nullable=True),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject_id", sa.String(length=256), nullable=True),
        sa.Column("features", JSON, nullable=True),
        sa.Column("output", JSON, nullable=True),
        sa.Column("context", JSON, nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seal_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("phase", sa.String(length=8), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("label", JSON, nullable=True),
        sa.Column("label_kind", sa.String(length=32), nullable=True),
        sa.Column("label_rule", sa.Text(), nullable=True),
        sa.Column("label_sources", JSON, nullable=True),
        sa.Column("label_status", sa.String(length=16), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("feedback_delay_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
        sa.UniqueConstraint("prediction_id", name=op.f("uq_predictions_prediction_id")),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index("ix_predictions_deadline", ["deadline"], unique=False)
        batch_op.create_index("ix_predictions_use_case_seq", ["use_case", "seq"], unique=False)

    op.create_table(
        "stat_counters",
        sa.Column("use_case", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=256), nullable=False),
        sa.Column("served_hour", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("use_case", "name", "event_type", "served_hour", name=op.f("pk_stat_counters")),
    )
    op.create_table(
        "watermarks",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("max_event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_arrival_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_watermarks")),
    )


def downgrade() -> None:
    op.drop_table("watermarks")
    op.drop_table("stat_counters")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_use_case_seq")
        batch_op.drop_index("ix_predictions_deadline")

    op.drop_table("predictions")
    with op.batch_alter_table("label_history", schema=None) as batch_op:
        batch_op.drop_index("ix_label_history_prediction_id")

    op.drop_table("label_history")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_prediction_id")
        batch_op.drop_index("ix_events_orphan_expires_at")

    op.drop_table("events")
    op.drop_table("delay_max")
    op.drop_table("delay_buckets")
    op.drop_table("dataset_seqs")
