"""Queued batches as the reconciler sees them: which are waiting, since when, and re-stamping one it re-enqueues."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from fakescan.db import scans
from fakescan.db.models import Scan, ScanItem, utcnow


def active_scan_ids(session: Session, scan_ids: list[int] | None = None) -> list[int]:
    """Scans still queued or running (of ``scan_ids`` only, when given)."""
    statement = select(Scan.id).where(Scan.state.in_(scans.ACTIVE_STATES))
    if scan_ids is not None:
        statement = statement.where(Scan.id.in_(scan_ids))
    return list(session.scalars(statement))


def queued_batches(session: Session, scan_ids: list[int]) -> dict[tuple[int, int], datetime]:
    """(scan, batch) -> when its queued items were last enqueued (UTC), for batches with queued items."""
    rows = session.execute(
        select(ScanItem.scan_id, ScanItem.batch, func.max(ScanItem.updated_at))
        .where(ScanItem.scan_id.in_(scan_ids), ScanItem.state == "queued")
        .group_by(ScanItem.scan_id, ScanItem.batch)
    )
    return {(scan_id, batch): scans.as_utc(stamp) for scan_id, batch, stamp in rows}


def restamp_queued_batch(session: Session, scan_id: int, batch: int) -> list[int]:
    """The object ids of the batch's queued items, stamped as enqueued now (none: nothing to re-enqueue)."""
    queued = (ScanItem.scan_id == scan_id, ScanItem.batch == batch, ScanItem.state == "queued")
    ids = list(session.scalars(select(ScanItem.object_id).where(*queued).order_by(ScanItem.object_id)))
    if ids:
        session.execute(update(ScanItem).where(*queued).values(updated_at=utcnow()))
    return ids
