"""scans, objects, results, scan_items

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonType = sa.JSON().with_variant(JSONB(), "postgresql")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scans",
        sa.Column("id", IdType, primary_key=True, autoincrement=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("detectors", JsonType, nullable=False),
        sa.Column("options", JsonType, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("listed", sa.BigInteger(), nullable=False),
        sa.Column("enqueued", sa.BigInteger(), nullable=False),
        sa.Column("skipped", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("started_at", Stamp),
        sa.Column("listing_finished_at", Stamp),
        sa.Column("finished_at", Stamp),
    )
    op.create_table(
        "objects",
        sa.Column("id", IdType, primary_key=True, autoincrement=True),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("store", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("etag", sa.String(128)),
        sa.Column("size", sa.BigInteger()),
        sa.Column("content_hash", sa.String(128)),
        sa.Column("last_modified", Stamp),
        sa.Column("fingerprint", sa.String(160), nullable=False),
        sa.Column("first_seen", Stamp, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.UniqueConstraint("uri", name="uq_objects_uri"),
    )
    op.create_table(
        "results",
        sa.Column("id", IdType, primary_key=True, autoincrement=True),
        sa.Column("object_id", IdType, sa.ForeignKey("objects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("detector", sa.String(128), nullable=False),
        sa.Column("detector_version", sa.String(128), nullable=False),
        sa.Column("scan_id", IdType, sa.ForeignKey("scans.id", ondelete="SET NULL")),
        sa.Column("fingerprint", sa.String(160), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("score", sa.Float()),
        sa.Column("verdict", sa.String(16)),
        sa.Column("parts", JsonType),
        sa.Column("evidence", JsonType),
        sa.Column("error", sa.Text()),
        sa.Column("timings", JsonType),
        sa.Column("scanned_at", Stamp, nullable=False),
        sa.UniqueConstraint("object_id", "detector", "detector_version", name="uq_results_identity"),
    )
    op.create_index("ix_results_scan", "results", ["scan_id"])
    op.create_index("ix_results_verdict_score", "results", ["verdict", "score"])
    op.create_table(
        "scan_items",
        sa.Column("scan_id", IdType, sa.ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("object_id", IdType, sa.ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_index("ix_scan_items_state", "scan_items", ["scan_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_scan_items_state", table_name="scan_items")
    op.drop_table("scan_items")
    op.drop_index("ix_results_verdict_score", table_name="results")
    op.drop_index("ix_results_scan", table_name="results")
    op.drop_table("results")
    op.drop_table("objects")
    op.drop_table("scans")
