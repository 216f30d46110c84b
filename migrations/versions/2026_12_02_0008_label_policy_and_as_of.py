"""the policy digest of every label revision; label history by seq (datasets as of a seq)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("label_history", sa.Column("policy", sa.String(length=16), nullable=True))
    op.create_index("ix_label_history_seq", "label_history", ["seq"])


def downgrade() -> None:
    op.drop_index("ix_label_history_seq", table_name="label_history")
    op.drop_column("label_history", "policy")
