"""Read-side queries over the results database (``fakescan results``, scan summaries); torch-free.

Rows are streamed with ``yield_per`` (a server-side cursor on PostgreSQL), so exporting a million
results never holds them all in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select
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
    """Matching results as dicts with RESULT_FIELDS, oldest row first."""
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
        .order_by(Result.id)
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
    while ``--wait-timeout`` gives up early on a ``--rescan``) are not this scan's outcomes.
    """
    scan = scans.get_scan(session, scan_id)
    rows = session.execute(
        select(Result.detector, Result.status, Result.verdict, func.count())
        .where(Result.scan_id == scan.id, same_detectors(scan.detectors))
        .group_by(Result.detector, Result.status, Result.verdict)
    )
    return {(detector, status, verdict): count for detector, status, verdict, count in rows}

