"""The writer: one transaction per batch upserts its results and closes its scan items.

Results are keyed by ``(object_id, detector, detector_version)``, so a batch delivered twice (a
worker died after writing, or a slow worker's batch was redelivered) rewrites the same rows.
Works on PostgreSQL and SQLite alike (SQLite ignores the row locks and serialises writers).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fakescan.db.engine import upsert
from fakescan.db.models import Result, Scan, ScanItem, StoredObject, utcnow
from fakescan.db.scans import finish_if_complete

RESULT_KEY = ("object_id", "detector", "detector_version")
RESULT_UPDATED = ("scan_id", "fingerprint", "status", "score", "verdict", "parts", "evidence", "error",
                  "timings", "scanned_at")


def write_batch(session: Session, scan_id: int, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Upsert ``rows`` (results of one scan) and mark their items done/error; returns the object ids written.

    Rows of objects deleted meanwhile, or whose scan is gone, are dropped without error. Call
    inside a transaction (``sessionmaker.begin()``); the caller commits.
    """
    if not _lock_scan(session, scan_id, exclusive=False):
        return []
    live = _lock_live_objects(session, {row["object_id"] for row in rows})
    kept = sorted((dict(row, scan_id=scan_id) for row in rows if row["object_id"] in live),
                  key=lambda row: (row["object_id"], row["detector"], row["detector_version"]))
    upsert(session, Result.__table__, kept, RESULT_KEY, RESULT_UPDATED)  # sorted: a stable lock order
    failed = {row["object_id"] for row in kept if row["status"] != "ok"}
    written = sorted({row["object_id"] for row in kept})
    _set_item_state(session, scan_id, [i for i in written if i not in failed], "done")
    _set_item_state(session, scan_id, sorted(failed), "error")
    # Two batches finishing at once must not each see the other's items still queued: the row
    # lock orders them, and the check after it reads the other's committed items.
    _lock_scan(session, scan_id, exclusive=True)
    finish_if_complete(session, scan_id)
    return written


def _lock_scan(session: Session, scan_id: int, *, exclusive: bool) -> bool:
    """FOR KEY SHARE (keeps the scan while its results reference it) or FOR NO KEY UPDATE."""
    statement = select(Scan.id).where(Scan.id == scan_id).with_for_update(key_share=True, read=not exclusive)
    return session.scalar(statement) is not None


def _lock_live_objects(session: Session, object_ids: Iterable[int]) -> set[int]:
    """Objects that still exist, locked FOR KEY SHARE so they cannot vanish before the commit."""
    ids = sorted(object_ids)
    if not ids:
        return set()
    statement = select(StoredObject.id).where(StoredObject.id.in_(ids)).with_for_update(read=True, key_share=True)
    return set(session.scalars(statement))


def _set_item_state(session: Session, scan_id: int, object_ids: list[int], state: str) -> None:
    if object_ids:
        session.execute(
            update(ScanItem)
            .where(ScanItem.scan_id == scan_id, ScanItem.object_id.in_(object_ids))
            .values(state=state, updated_at=utcnow())
        )
