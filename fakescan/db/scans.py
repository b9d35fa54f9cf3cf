"""Scan bookkeeping shared by the scheduler (creates, lists) and the worker (finishes)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence, cast, overload

from sqlalchemy import CursorResult, and_, bindparam, case, exists, func, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from fakescan.db.engine import insert_rows
from fakescan.db.models import Scan, ScanItem, StoredObject, utcnow
from fakescan.errors import UsageError

# a scan in these states still has work ahead; finished, failed and cancelled scans have ended
ACTIVE_STATES = ("queued", "running")


def finish_if_complete(session: Session, scan_id: int) -> bool:
    """End the scan once listing is over and no item is still queued; idempotent.

    It ends ``finished`` (error rows are results, the scan did its job) or, when a batch was
    given up on, ``failed`` with the reason :func:`give_up_batch` recorded.
    """
    pending = exists().where(ScanItem.scan_id == scan_id, ScanItem.state == "queued")
    given_up = exists().where(ScanItem.scan_id == scan_id, ScanItem.state == "given-up")
    return bool(_rowcount(session.execute(
        update(Scan)
        .where(Scan.id == scan_id, Scan.listing_finished_at.is_not(None), Scan.finished_at.is_(None),
               Scan.state.in_(ACTIVE_STATES), ~pending)
        .values(state=case((given_up, "failed"), else_="finished"), finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )))


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched: its result is a CursorResult; Session.execute is typed for any statement."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


def give_up_batch(session: Session, scan_id: int, batch: int, reason: str) -> int:
    """A batch out of retries (or crashed): its unfinished items become ``given-up``; the first
    reason is kept on the scan, which ends ``failed`` when its other batches are in."""
    result = session.execute(
        update(ScanItem).where(ScanItem.scan_id == scan_id, ScanItem.batch == batch, ScanItem.state == "queued")
        .values(state="given-up", updated_at=utcnow())
    )
    session.execute(update(Scan).where(Scan.id == scan_id, Scan.error.is_(None)).values(error=reason[:2000]))
    finish_if_complete(session, scan_id)
    return _rowcount(result)


def cancel_scan(session: Session, scan_id: int) -> bool:
    """Stop a scan that has not ended: workers skip its batches from now on; False if it had ended."""
    result = session.execute(
        update(Scan).where(Scan.id == scan_id, Scan.finished_at.is_(None))
        .values(state="cancelled", error="cancelled by 'fakescan scan cancel'", finished_at=utcnow())
    )
    return bool(_rowcount(result))


def reopen_scan(session: Session, scan_id: int) -> int:
    """``scan resume``: given-up items queued again and the scan running; returns how many were given up."""
    result = session.execute(
        update(ScanItem).where(ScanItem.scan_id == scan_id, ScanItem.state == "given-up")
        .values(state="queued", updated_at=utcnow())
    )
    session.execute(update(Scan).where(Scan.id == scan_id).values(state="running", error=None, finished_at=None))
    return _rowcount(result)


def latest_scan_id(session: Session) -> int | None:
    return session.scalar(select(Scan.id).order_by(Scan.id.desc()).limit(1))


def create_scan(session: Session, source: str, detectors: list[dict[str, str]], options: dict[str, Any]) -> int:
    scan = Scan(source=source, detectors=detectors, options=options, state="queued",
                listed=0, enqueued=0, skipped=0, created_at=utcnow())
    session.add(scan)
    session.flush()
    return scan.id


def get_scan(session: Session, scan_id: int | None) -> Scan:
    """The scan with this id, or the latest one when ``scan_id`` is None."""
    if scan_id is None:
        scan_id = latest_scan_id(session)
        if scan_id is None:
            raise UsageError("no scans yet: start one with 'fakescan scan SOURCE'")
    scan = session.get(Scan, scan_id)
    if scan is None:
        raise UsageError(f"no scan with id {scan_id}")
    return scan


def start_listing(session: Session, scan_id: int) -> None:
    session.execute(update(Scan).where(Scan.id == scan_id).values(state="running", started_at=utcnow()))


def record_counts(session: Session, scan_id: int, *, listed: int, enqueued: int, skipped: int) -> None:
    """Absolute totals (not increments), so a retried chunk cannot count twice."""
    session.execute(update(Scan).where(Scan.id == scan_id).values(listed=listed, enqueued=enqueued, skipped=skipped))


def finish_listing(session: Session, scan_id: int) -> None:
    session.execute(update(Scan).where(Scan.id == scan_id).values(listing_finished_at=utcnow()))


def mark_failed(session: Session, scan_id: int, error: str) -> None:
    session.execute(
        update(Scan).where(Scan.id == scan_id, Scan.finished_at.is_(None))
        .values(state="failed", error=error, finished_at=utcnow())
    )


def add_items(session: Session, scan_id: int, batch: int, object_ids: Sequence[int]) -> None:
    add_batches(session, scan_id, batch, [object_ids])


def add_batches(session: Session, scan_id: int, first_batch: int, batches: Sequence[Sequence[int]]) -> None:
    """The items of several batches (numbered from ``first_batch``) in one statement."""
    now = utcnow()
    insert_rows(session, ScanItem.__table__, [
        {"scan_id": scan_id, "object_id": object_id, "batch": number, "state": "queued", "updated_at": now}
        for number, object_ids in enumerate(batches, start=first_batch) for object_id in object_ids
    ])


def enqueue_batches(session: Session, scan_id: int, first_batch: int, batches: Sequence[Sequence[int]], *,
                    listed: int, enqueued: int, skipped: int) -> None:
    """The items of ``batches`` (numbered from ``first_batch``) and the scan's totals, one statement on
    PostgreSQL (the ids travel as two arrays)."""
    if session.get_bind().dialect.name != "postgresql":
        if batches:
            add_batches(session, scan_id, first_batch, batches)
        record_counts(session, scan_id, listed=listed, enqueued=enqueued, skipped=skipped)
        return
    object_ids = [object_id for object_ids in batches for object_id in object_ids]
    numbers = [number for number, object_ids in enumerate(batches, start=first_batch) for _ in object_ids]
    session.execute(_ENQUEUE_BATCHES, {"scan_id": scan_id, "object_ids": object_ids, "batches": numbers,
                                       "now": utcnow(), "listed": listed, "enqueued": enqueued, "skipped": skipped})


_ENQUEUE_BATCHES = text("""
    WITH counted AS (
        UPDATE scans SET listed = :listed, enqueued = :enqueued, skipped = :skipped WHERE id = :scan_id
    )
    INSERT INTO scan_items (scan_id, object_id, batch, state, updated_at)
    SELECT :scan_id, item.object_id, item.batch, 'queued', :now
    FROM unnest(:object_ids, :batches) AS item(object_id, batch)
""").bindparams(bindparam("object_ids", type_=postgresql.ARRAY(postgresql.BIGINT)),
                bindparam("batches", type_=postgresql.ARRAY(postgresql.INTEGER)))


def batch_of_scan(session: Session, scan_id: int,
                  object_ids: Sequence[int]) -> tuple[list[dict[str, str]], list[tuple[int, str, str, str, str]]]:
    """A worker's view of a batch: the scan's detectors and (id, uri, store, key, fingerprint) of those
    of ``object_ids`` still items of the scan, by id; nothing when the scan is gone or cancelled."""
    scan = session.get(Scan, scan_id)
    if scan is None or not object_ids or scan.state == "cancelled":  # cancelled: its batches are skipped
        return [], []
    rows = session.execute(
        select(StoredObject.id, StoredObject.uri, StoredObject.store, StoredObject.key, StoredObject.fingerprint)
        .join(ScanItem, and_(ScanItem.object_id == StoredObject.id, ScanItem.scan_id == scan_id))
        .where(StoredObject.id.in_(sorted(set(object_ids))))
        .order_by(StoredObject.id)
    )
    return scan.detectors, [(row[0], row[1], row[2], row[3], row[4]) for row in rows]


def item_counts(session: Session, scan_id: int) -> dict[str, int]:
    """Enqueued items of a scan by state (queued, done, error, given-up)."""
    rows = session.execute(
        select(ScanItem.state, func.count()).where(ScanItem.scan_id == scan_id).group_by(ScanItem.state)
    )
    return {state: count for state, count in rows}


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
@overload
def as_utc(moment: datetime | None) -> datetime | None: ...


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stamp fakescan writes is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)
