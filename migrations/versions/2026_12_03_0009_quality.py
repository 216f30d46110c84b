"""live model quality: each prediction's score, the quality sums and score histograms

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ("use_case", "bucket", "period", "model", "model_version", "status")


def _key() -> list[sa.Column[object]]:
    return [
        sa.Column("use_case", sa.String(length=256), nullable=False),
        sa.Column("bucket", sa.String(length=2), nullable=False),
        sa.Column("period", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("model_version", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
    ]


def upgrade() -> None:
    # Predictions stored before hold no score: quality counts those that arrive from now on.
    op.add_column("predictions", sa.Column("score", sa.Float(), nullable=True))
    op.create_table(
        "quality_sums",
        *_key(),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("label_sum", sa.Float(), nullable=False),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.Column("abs_error_sum", sa.Float(), nullable=False),
        sa.Column("squared_error_sum", sa.Float(), nullable=False),
        sa.Column("log_loss_sum", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, name=op.f("pk_quality_sums")),
    )
    op.create_table(
        "quality_bins",
        *_key(),
        sa.Column("bin", sa.Integer(), nullable=False),
        sa.Column("negatives", sa.BigInteger(), nullable=False),
        sa.Column("positives", sa.BigInteger(), nullable=False),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, "bin", name=op.f("pk_quality_bins")),
    )


def downgrade() -> None:
    op.drop_table("quality_bins")
    op.drop_table("quality_sums")
    op.drop_column("predictions", "score")
