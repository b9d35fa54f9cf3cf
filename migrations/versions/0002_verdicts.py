"""verdicts: one combined verdict per object and verdict-policy version

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "verdicts",
        sa.Column("id", IdType, primary_key=True, autoincrement=True),
        sa.Column("object_id", IdType, sa.ForeignKey("objects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("policy_version", sa.String(160), nullable=False),
        sa.Column("verdict", sa.String(16)),
        sa.Column("score", sa.Float()),
        sa.Column("explanation", JsonType, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("object_id", "policy_version", name="uq_verdicts_identity"),
    )
    op.create_index("ix_verdicts_policy_verdict", "verdicts", ["policy_version", "verdict"])


def downgrade() -> None:
    op.drop_index("ix_verdicts_policy_verdict", table_name="verdicts")
    op.drop_table("verdicts")
