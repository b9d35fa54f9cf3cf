"""results and verdicts: their identity is the primary key; the surrogate ids and three indexes go

Every result row written added an entry to four indexes: the surrogate ``id`` (read by nothing
but an ORDER BY), ``uq_results_identity``, ``ix_results_scan`` and ``ix_results_verdict_score``.
The identity becomes the primary key, ``id`` and the two secondary indexes are dropped (the
queries that read by scan go through ``scan_items``; ``fakescan results --verdict/--min-score``
is a streamed export that reads the table in key order). With no indexed column changing when a
row is re-written, PostgreSQL can update it in place on its page (a HOT update, no index entry):
``fillfactor`` 80 leaves room on new pages for that. Existing pages keep their layout until
rewritten (``VACUUM FULL results`` or ``CLUSTER`` rewrite the whole table, if wanted).

The worker also upserts one combined verdict per object in the same transaction, into a table
with seven indexes: its identity (object, policy version) becomes its primary key too (``id`` was
read by nothing), and ``ix_verdicts_policy_verdict`` goes (``ix_verdicts_listing_score`` starts
with the same two columns).

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
VERDICT_IDENTITY = ["object_id", "policy_version"]
VERDICT_INDEX = ("ix_verdicts_policy_verdict", ["policy_version", "verdict"])


def upgrade() -> None:
    op.drop_index(VERDICT_INDEX[0], table_name="verdicts")
    _key_by_identity("verdicts", "uq_verdicts_identity", VERDICT_IDENTITY)
    for name in SECONDARY_INDEXES:
        op.drop_index(name, table_name="results")
    _key_by_identity("results", "uq_results_identity", IDENTITY)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE results SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE results RESET (fillfactor)")
    for table, unique, identity in (("results", "uq_results_identity", IDENTITY),
                                    ("verdicts", "uq_verdicts_identity", VERDICT_IDENTITY)):
        _key_by_id(table, unique, identity)
    for name, columns in SECONDARY_INDEXES.items():
        op.create_index(name, "results", columns)
    op.create_index(VERDICT_INDEX[0], "verdicts", VERDICT_INDEX[1])


def _key_by_identity(table: str, unique: str, identity: list[str]) -> None:
    """The unique identity becomes the primary key; the surrogate ``id`` and its index go."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.drop_column(table, "id")
        op.create_primary_key(f"{table}_pkey", table, identity)
        op.drop_constraint(unique, table, type_="unique")
        return
    with op.batch_alter_table(table, recreate="always") as batch:  # SQLite: a copy of the table
        batch.drop_constraint(unique, type_="unique")
        batch.drop_column("id")
        batch.create_primary_key(f"pk_{table}", identity)


def _key_by_id(table: str, unique: str, identity: list[str]) -> None:
    """Back to a surrogate ``id`` primary key (rows numbered in the table's physical order) and the
    identity as a unique constraint."""
    if op.get_bind().dialect.name == "postgresql":
        op.create_unique_constraint(unique, table, identity)
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.execute(f"ALTER TABLE {table} ADD COLUMN id BIGSERIAL")
        op.create_primary_key(f"{table}_pkey", table, ["id"])
        return
    with op.batch_alter_table(table, recreate="always") as batch:
        batch.drop_constraint(f"pk_{table}", type_="primary")
        batch.add_column(sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True))
        batch.create_unique_constraint(unique, identity)
