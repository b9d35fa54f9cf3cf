"""results: the identity (object, detector, version) is the primary key; two unused indexes go

Every result row written added an entry to four indexes: the surrogate ``id`` (read by nothing
but an ORDER BY), ``uq_results_identity``, ``ix_results_scan`` and ``ix_results_verdict_score``.
The identity becomes the primary key, ``id`` and the two secondary indexes are dropped (the
queries that read by scan go through ``scan_items``; ``fakescan results --verdict/--min-score``
is a streamed export that reads the table in key order). With no indexed column changing when a
row is re-written, PostgreSQL can update it in place on its page (a HOT update, no index entry):
``fillfactor`` 80 leaves room on new pages for that. Existing pages keep their layout until
rewritten (``VACUUM FULL results`` or ``CLUSTER`` rewrite the whole table, if wanted).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IDENTITY = ["object_id", "detector", "detector_version"]
SECONDARY_INDEXES = {"ix_results_scan": ["scan_id"], "ix_results_verdict_score": ["verdict", "score"]}
FILLFACTOR = 80


def upgrade() -> None:
    for name in SECONDARY_INDEXES:
        op.drop_index(name, table_name="results")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("results_pkey", "results", type_="primary")
        op.drop_column("results", "id")
        op.create_primary_key("results_pkey", "results", IDENTITY)
        op.drop_constraint("uq_results_identity", "results", type_="unique")
        op.execute(f"ALTER TABLE results SET (fillfactor = {FILLFACTOR})")
        return
    with op.batch_alter_table("results", recreate="always") as batch:  # SQLite: a copy of the table
        batch.drop_constraint("uq_results_identity", type_="unique")
        batch.drop_column("id")
        batch.create_primary_key("pk_results", IDENTITY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE results RESET (fillfactor)")
        op.create_unique_constraint("uq_results_identity", "results", IDENTITY)
        op.drop_constraint("results_pkey", "results", type_="primary")
        op.execute("ALTER TABLE results ADD COLUMN id BIGSERIAL")  # numbered in the table's physical order
        op.create_primary_key("results_pkey", "results", ["id"])
    else:
        with op.batch_alter_table("results", recreate="always") as batch:  # rows get ids in rowid order
            batch.drop_constraint("pk_results", type_="primary")
            batch.add_column(sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True))
            batch.create_unique_constraint("uq_results_identity", IDENTITY)
    for name, columns in SECONDARY_INDEXES.items():
        op.create_index(name, "results", columns)
