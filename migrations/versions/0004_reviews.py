"""reviews: moderators' decisions on objects (history kept); indexes for the API's keyset pages

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

LISTING_INDEXES = {
    "ix_verdicts_listing_score": ["policy_version", "verdict", "score", "object_id"],
    "ix_verdicts_listing_any_score": ["policy_version", "score", "object_id"],
    "ix_verdicts_listing_time": ["policy_version", "verdict", "decided_at", "object_id"],
    "ix_verdicts_listing_any_time": ["policy_version", "decided_at", "object_id"],
}


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", IdType, primary_key=True, autoincrement=True),
        sa.Column("object_id", IdType, sa.ForeignKey("objects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reviews_object", "reviews", ["object_id", "id"])
    op.create_index("ix_reviews_created", "reviews", ["created_at", "id"])
    for name, columns in LISTING_INDEXES.items():
        op.create_index(name, "verdicts", columns)


def downgrade() -> None:
    for name in LISTING_INDEXES:
        op.drop_index(name, table_name="verdicts")
    op.drop_index("ix_reviews_created", table_name="reviews")
    op.drop_index("ix_reviews_object", table_name="reviews")
    op.drop_table("reviews")
