"""Read-side queries over the results database (``fakescan results``, scan summaries and lists,
the exporter's gauges, an object's scans); torch-free.

Rows are streamed with ``yield_per`` (a server-side cursor on PostgreSQL), so exporting a million
results never holds them all in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.orm import Session

from fakescan.db import scans
from fakescan.db.models import Result, Scan, ScanItem, StoredObject

FETCH_ROWS = 1000
RESULT_FIELDS = ("uri", "detector", "detector_version", "score", "verdict", "status", "error", "scanned_at",
                 "parts", "scan_id")


@dataclass(frozen=True)
class ResultQuery:
    scan_id: int | None = None  # results for the objects this scan enqueued, by its detectors
    verdict: str | None = None
    min_score: float | None = None
    prefix: str | None = None  # s3://bucket/pre, file:///..., /abs/path or a key prefix
    detector: str | None = None
    status: str | None = None
    limit: int | None = None


def iter_results(session: Session, query: ResultQuery) -> Iterator[dict[str, Any]]:
    """Matching results as dicts with RESULT_FIELDS, in key order: objects in the order they were
    first listed, each object's rows by detector and version."""
    statement = results_statement(session, query).execution_options(yield_per=FETCH_ROWS)
    for row in session.execute(statement):
        record = dict(zip(RESULT_FIELDS, row, strict=True))
        record["scanned_at"] = scans.as_utc(record["scanned_at"])
        yield record


def detector_labels(session: Session, scan_id: int | None = None) -> set[str]:
    """``name@version`` of every detector a result row can carry (of one scan, or of all).

    Read from the scans (one small row each), not the results: a results table can stream
    millions of rows, and its column must be wide enough before the first one is printed.
    """
    statement = select(Scan.detectors)
    if scan_id is not None:
        statement = statement.where(Scan.id == scan_id)
    return {f"{entry['name']}@{entry['version']}" for detectors in session.scalars(statement)
            for entry in detectors or ()}


def results_statement(session: Session, query: ResultQuery) -> Select[*tuple[Any, ...]]:
    statement = (
        select(StoredObject.uri, Result.detector, Result.detector_version, Result.score, Result.verdict,
               Result.status, Result.error, Result.scanned_at, Result.parts, Result.scan_id)
        .join(StoredObject, StoredObject.id == Result.object_id)
        .order_by(Result.object_id, Result.detector, Result.detector_version)  # the primary key
    )
    if query.scan_id is not None:
        statement = _of_scan(session, statement, query.scan_id)
    for condition in _conditions(query):
        statement = statement.where(condition)
    if query.limit is not None:
        statement = statement.limit(query.limit)
    return statement


def _of_scan(session: Session, statement: Select[*tuple[Any, ...]], scan_id: int) -> Select[*tuple[Any, ...]]:
    scan = scans.get_scan(session, scan_id)
    return statement.join(
        ScanItem, and_(ScanItem.object_id == Result.object_id, ScanItem.scan_id == scan.id)
    ).where(same_detectors(scan.detectors))


def same_detectors(detectors: list[dict[str, str]]) -> ColumnElement[bool]:
    if not detectors:
        return false()
    return or_(*(and_(Result.detector == d["name"], Result.detector_version == d["version"]) for d in detectors))


def _conditions(query: ResultQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.verdict is not None:
        conditions.append(Result.verdict == query.verdict)
    if query.min_score is not None:
        conditions.append(Result.score >= query.min_score)
    if query.detector is not None:
        conditions.append(Result.detector == query.detector)
    if query.status is not None:
        conditions.append(Result.status == query.status)
    if query.prefix:
        conditions.append(prefix_condition(query.prefix))
    return conditions


def prefix_condition(prefix: str) -> ColumnElement[bool]:
    """A full URI prefix (``s3://bucket/pre``, ``file:///...``), an absolute path, or a key prefix."""
    if "://" in prefix:
        return StoredObject.uri.startswith(prefix, autoescape=True)
    if prefix.startswith("/"):
        return StoredObject.uri.startswith(Path(prefix).as_uri(), autoescape=True)
    return StoredObject.key.startswith(prefix, autoescape=True)


def scan_outcomes_by_detector(session: Session, scan_id: int) -> dict[tuple[str, str, str | None], int]:
    """(detector, status, verdict) -> count over the result rows this scan wrote.

    Rows of earlier scans for the same objects (still there until this scan rewrites them, e.g.
    while ``--wait-timeout`` gives up early on a ``--rescan``) are not this scan's outcomes. The
    scan's items lead (results have no index on ``scan_id``: each row written would pay for it).
    """
    scan = scans.get_scan(session, scan_id)
    rows = session.execute(
        select(Result.detector, Result.status, Result.verdict, func.count())
        .join(ScanItem, and_(ScanItem.object_id == Result.object_id, ScanItem.scan_id == scan.id))
        .where(Result.scan_id == scan.id, same_detectors(scan.detectors))
        .group_by(Result.detector, Result.status, Result.verdict)
    )
    return {(detector, status, verdict): count for detector, status, verdict, count in rows}



def scans_by_state(session: Session) -> list[tuple[str, int]]:
    """How many scans are in each state."""
    return [(state, count) for state, count in session.execute(select(Scan.state, func.count()).group_by(Scan.state))]


def last_finished_by_source(session: Session) -> list[tuple[str, datetime]]:
    """When the latest finished scan of each source finished (UTC)."""
    rows = session.execute(
        select(Scan.source, func.max(Scan.finished_at)).where(Scan.state == "finished").group_by(Scan.source))
    return [(source, scans.as_utc(finished)) for source, finished in rows if finished is not None]


def unfinished_and_recent_scan_ids(session: Session, recent: int) -> list[int]:
    """Every scan that has not ended plus the ``recent`` latest that have, in id order."""
    unfinished = session.scalars(select(Scan.id).where(Scan.finished_at.is_(None)).order_by(Scan.id))
    latest = session.scalars(
        select(Scan.id).where(Scan.finished_at.is_not(None)).order_by(Scan.id.desc()).limit(recent))
    return sorted(set(unfinished) | set(latest))


def scan_ids_before(session: Session, before: int | None, limit: int) -> list[int]:
    """Up to ``limit`` scan ids, newest first, below ``before`` when given."""
    statement = select(Scan.id).order_by(Scan.id.desc()).limit(limit)
    if before is not None:
        statement = statement.where(Scan.id < before)
    return list(session.scalars(statement))


def scans_of_object(session: Session, object_id: int) -> list[int]:
    """The ids of the scans that enqueued this object, oldest first."""
    return list(session.scalars(select(ScanItem.scan_id).where(ScanItem.object_id == object_id)
                                .order_by(ScanItem.scan_id)))


def detectors_run_on(session: Session, object_id: int) -> Iterator[list[dict[str, Any]]]:
    """The detector lists of the scans that enqueued this object, latest scan first."""
    yield from session.scalars(select(Scan.detectors).join(ScanItem, ScanItem.scan_id == Scan.id)
                               .where(ScanItem.object_id == object_id).order_by(Scan.id.desc()))


def successful_scans(session: Session, source: str, limit: int) -> list[tuple[Any, ...]]:
    """The latest ``finished`` scans of ``source`` with no given-up item, newest first: rows of
    (id, started_at, created_at, detectors, options)."""
    given_up = exists().where(ScanItem.scan_id == Scan.id, ScanItem.state == "given-up")
    rows = session.execute(
        select(Scan.id, Scan.started_at, Scan.created_at, Scan.detectors, Scan.options)
        .where(Scan.source == source, Scan.state == "finished", ~given_up)
        .order_by(Scan.id.desc())
        .limit(limit)
    )
    return [tuple(row) for row in rows]


def object_sizes(session: Session, object_ids: Sequence[int]) -> dict[int, int | None]:
    """Each object's listed size in bytes (None when the listing gave none)."""
    return {object_id: size for object_id, size in session.execute(
        select(StoredObject.id, StoredObject.size).where(StoredObject.id.in_(object_ids)))}
