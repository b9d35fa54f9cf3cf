"""item states: ``error`` (a bad-input row) and ``given-up`` (a batch out of retries) replace ``failed``

Before this revision a bad-input row marked its item ``failed`` and a batch that exhausted its
retries left its items ``queued`` in a scan marked failed with "batch N gave up after ...". The
upgrade renames ``failed`` to ``error`` and marks the queued items of such a batch ``given-up``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import re
from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GAVE_UP = re.compile(r"^batch (\d+) (?:gave up|crashed)")


def upgrade() -> None:
    connection = op.get_bind()
    connection.execute(sa.text("UPDATE scan_items SET state = 'error' WHERE state = 'failed'"))
    failed = connection.execute(sa.text("SELECT id, error FROM scans WHERE state = 'failed' AND error IS NOT NULL"))
    for scan_id, error in failed.all():
        match = GAVE_UP.match(error)
        if match:
            connection.execute(
                sa.text("UPDATE scan_items SET state = 'given-up' "
                        "WHERE scan_id = :scan AND batch = :batch AND state = 'queued'"),
                {"scan": scan_id, "batch": int(match.group(1))})


def downgrade() -> None:
    connection = op.get_bind()
    connection.execute(sa.text("UPDATE scan_items SET state = 'queued' WHERE state = 'given-up'"))
    connection.execute(sa.text("UPDATE scan_items SET state = 'failed' WHERE state = 'error'"))
    connection.execute(sa.text("UPDATE scans SET state = 'failed' WHERE state = 'cancelled'"))
