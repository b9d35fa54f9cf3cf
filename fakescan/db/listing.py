"""Objects with their combined verdict, filtered and paged by keyset (never OFFSET); torch-free.

A page is ordered by ``(score, object_id)`` or ``(decided_at, object_id)`` of the object's
``verdicts`` row under one policy version, so the next page starts with a row-value comparison
``(score, object_id) < (last score, last id)`` that an index range scan answers at once however
deep the page (migration 0004 adds the indexes). Objects no detector could score have no combined
score: score-ordered pages list them after every scored object, by id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.orm import Session

from fakescan.db import reviews, scans
from fakescan.db.models import Result, ScanItem, StoredObject, Verdict
from fakescan.db.queries import prefix_condition, same_detectors

SORTS = ("-score", "score", "-time", "time")
FETCH_ROWS = 1000
OBJECT_FIELDS = ("object_id", "uri", "key", "verdict", "score", "decided_at", "review")


@dataclass(frozen=True)
class ObjectFilter:
    policy_version: str
    scan_id: int | None = None
    verdict: str | None = None  # fake | real | uncertain | none (nothing could judge it)
    detector: str | None = None  # the object has a result of this detector (in the score range, if given)
    min_score: float | None = None  # on the detector's score, else on the combined score
    max_score: float | None = None
    prefix: str | None = None
    error_kind: str | None = None  # a result failed with this kind ("corrupt", "decompression-bomb", ...)
    review: str | None = None  # unreviewed | reviewed | confirmed-fake | confirmed-real | unsure


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last row's sort value (None: among the unscored) and object id."""

    value: float | datetime | None
    object_id: int


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next: Position | None


def page_objects(session: Session, filters: ObjectFilter, sort: str, after: Position | None, limit: int) -> Page:
    column = _sort_column(sort)
    descending = sort.startswith("-")
    base = filtered_statement(session, filters)
    rows: list[Any] = []
    if after is None or after.value is not None:
        scored = base.where(column.is_not(None))
        if after is not None:
            key = tuple_(column, Verdict.object_id)
            bound = tuple_(literal(after.value, column.type), literal(after.object_id))
            scored = scored.where(key < bound if descending else key > bound)
        rows = list(session.execute(_ordered(scored, column, descending).limit(limit + 1)))
    if len(rows) <= limit:
        unscored = base.where(column.is_(None))
        if after is not None and after.value is None:
            unscored = unscored.where(Verdict.object_id < after.object_id if descending else
                                      Verdict.object_id > after.object_id)
        order = Verdict.object_id.desc() if descending else Verdict.object_id
        rows += list(session.execute(unscored.order_by(order).limit(limit + 1 - len(rows))))
    records = [_record(row) for row in rows[:limit]]
    if len(rows) <= limit:
        return Page(records, None)
    last = records[-1]
    return Page(records, Position(last["score"] if sort.endswith("score") else last["decided_at"], last["object_id"]))


def iter_objects(session: Session, filters: ObjectFilter) -> Iterator[dict[str, Any]]:
    """Every matching object in id order, streamed by a server-side cursor (the export)."""
    statement = filtered_statement(session, filters).order_by(Verdict.object_id)
    for row in session.execute(statement.execution_options(yield_per=FETCH_ROWS)):
        yield _record(row)


def filtered_statement(session: Session, filters: ObjectFilter) -> Select[Any]:
    """The object listing's SELECT with every filter applied, not yet ordered or limited."""
    statement = (
        select(Verdict.object_id, StoredObject.uri, StoredObject.key, Verdict.verdict, Verdict.score,
               Verdict.decided_at, reviews.latest_decision(Verdict.object_id).label("review"))
        .join(StoredObject, StoredObject.id == Verdict.object_id)
        .where(Verdict.policy_version == filters.policy_version)
    )
    detectors = None
    if filters.scan_id is not None:
        scan = scans.get_scan(session, filters.scan_id)
        detectors = scan.detectors
        statement = statement.join(ScanItem, and_(ScanItem.object_id == Verdict.object_id, ScanItem.scan_id == scan.id))
    for condition in _conditions(filters, detectors):
        statement = statement.where(condition)
    return statement


def _conditions(filters: ObjectFilter, detectors: list[dict[str, str]] | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.verdict == "none":
        conditions.append(Verdict.verdict.is_(None))
    elif filters.verdict is not None:
        conditions.append(Verdict.verdict == filters.verdict)
    if filters.prefix:
        conditions.append(prefix_condition(filters.prefix))
    if filters.review is not None:
        conditions.append(reviews.review_state_condition(Verdict.object_id, filters.review))
    scored_by = Result.score if filters.detector else Verdict.score
    score_range = [scored_by >= filters.min_score] if filters.min_score is not None else []
    score_range += [scored_by <= filters.max_score] if filters.max_score is not None else []
    if filters.detector:
        conditions.append(_has_result(detectors, Result.detector == filters.detector, *score_range))
    else:
        conditions.extend(score_range)
    if filters.error_kind:
        kind = Result.error.startswith(f"{filters.error_kind}:", autoescape=True)
        by = [Result.detector == filters.detector] if filters.detector else []
        conditions.append(_has_result(detectors, Result.status == "error", kind, *by))
    return conditions


def _has_result(detectors: list[dict[str, str]] | None, *conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """A result row of the object (of the scan's detector versions, when a scan is given) matching ``conditions``."""
    scope = [same_detectors(detectors)] if detectors is not None else []
    return exists().where(Result.object_id == Verdict.object_id, *scope, *conditions)


def _sort_column(sort: str) -> Any:
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}; valid: {', '.join(SORTS)}")
    return Verdict.score if sort.endswith("score") else Verdict.decided_at


def _ordered(statement: Select[Any], column: Any, descending: bool) -> Select[Any]:
    if descending:
        return statement.order_by(column.desc(), Verdict.object_id.desc())
    return statement.order_by(column, Verdict.object_id)


def _record(row: Any) -> dict[str, Any]:
    record = dict(zip(OBJECT_FIELDS, row, strict=True))
    record["decided_at"] = scans.as_utc(record["decided_at"])
    return record


def results_of(session: Session, object_ids: Sequence[int],
               detectors: list[dict[str, str]] | None = None) -> dict[int, list[dict[str, Any]]]:
    """Every result row of these objects (of these detector versions, e.g. a scan's, when given), newest last."""
    if not object_ids:
        return {}
    statement = (
        select(Result.object_id, Result.detector, Result.detector_version, Result.status, Result.score,
               Result.verdict, Result.parts, Result.evidence, Result.error, Result.timings, Result.scan_id,
               Result.scanned_at)
        .where(Result.object_id.in_(sorted(set(object_ids))))
        .order_by(Result.object_id, Result.detector, Result.scanned_at, Result.detector_version)
    )
    if detectors is not None:
        statement = statement.where(same_detectors(detectors))
    by_object: dict[int, list[dict[str, Any]]] = {}
    for object_id, detector, version, status, score, verdict, parts, evidence, error, timings, scan, scanned_at \
            in session.execute(statement):
        by_object.setdefault(object_id, []).append({
            "detector": detector, "detector_version": version, "status": status, "score": score, "verdict": verdict,
            "parts": parts, "evidence": evidence, "error": error, "error_kind": error_kind(error),
            "timings": timings, "scan_id": scan, "scanned_at": scans.as_utc(scanned_at)})
    return by_object


def error_kind(error: str | None) -> str | None:
    """The kind a stored error reason starts with (``corrupt: truncated ...`` -> ``corrupt``)."""
    if not error:
        return None
    return error.split(":", 1)[0].strip() or None


def error_kinds(session: Session, scan_id: int) -> dict[str, dict[str, int]]:
    """detector -> error kind -> count over a scan's failed results."""
    scan = scans.get_scan(session, scan_id)
    separator = func.instr(Result.error, ":") if session.get_bind().dialect.name == "sqlite" \
        else func.strpos(Result.error, ":")
    kind = case((separator > 0, func.substr(Result.error, 1, separator - 1)), else_=Result.error)
    rows = session.execute(
        select(Result.detector, kind, func.count())
        .join(ScanItem, and_(ScanItem.object_id == Result.object_id, ScanItem.scan_id == scan.id))
        .where(same_detectors(scan.detectors), Result.status == "error")
        .group_by(Result.detector, kind)
    )
    found: dict[str, dict[str, int]] = {}
    for detector, name, count in rows:
        found.setdefault(detector, {})[(name or "unknown").strip()] = count
    return found


def score_histograms(session: Session, scan_id: int, bins: int = 20) -> dict[str, list[int]]:
    """detector -> counts of its scores of a scan's objects in ``bins`` equal bins over [0, 1]."""
    scan = scans.get_scan(session, scan_id)
    scaled = Result.score * bins
    # SQLite has no floor() unless built with math functions; CAST truncates, which is floor for scores >= 0
    bucket = cast(scaled, Integer) if session.get_bind().dialect.name == "sqlite" else func.floor(scaled)
    rows = session.execute(
        select(Result.detector, bucket, func.count())
        .join(ScanItem, and_(ScanItem.object_id == Result.object_id, ScanItem.scan_id == scan.id))
        .where(same_detectors(scan.detectors), Result.score.is_not(None))
        .group_by(Result.detector, bucket)
    )
    histograms: dict[str, list[int]] = {}
    for detector, index, count in rows:
        counts = histograms.setdefault(detector, [0] * bins)
        counts[min(bins - 1, max(0, int(index)))] += count
    return histograms
