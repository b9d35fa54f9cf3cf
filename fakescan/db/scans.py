"""Scan bookkeeping shared by the scheduler (creates, lists) and the worker (finishes)."""

from __future__ import annotations

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from fakescan.db.models import Scan, ScanItem, utcnow


def finish_if_complete(session: Session, scan_id: int) -> bool:
    """Mark the scan finished once listing is over and no item is still queued; idempotent."""
    pending = exists().where(ScanItem.scan_id == scan_id, ScanItem.state == "queued")
    result = session.execute(
        update(Scan)
        .where(Scan.id == scan_id, Scan.listing_finished_at.is_not(None), Scan.finished_at.is_(None), ~pending)
        .values(state="finished", finished_at=utcnow())
    )
    return bool(result.rowcount)


def latest_scan_id(session: Session) -> int | None:
    return session.scalar(select(Scan.id).order_by(Scan.id.desc()).limit(1))
