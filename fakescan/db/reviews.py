"""Moderators' decisions on objects: appended, never overwritten; an object's latest review counts.

The API records them; ``fakescan calibrate --from-reviews`` reads them back as labelled data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from fakescan.db import scans
from fakescan.db.models import REVIEW_DECISIONS, Review, ScanItem, StoredObject, utcnow
from fakescan.errors import UsageError

REVIEW_STATES = ("unreviewed", "reviewed", *REVIEW_DECISIONS)
LABELS = {"confirmed-fake": 1, "confirmed-real": 0}  # "unsure" teaches a detector nothing
FETCH_ROWS = 1000


def add_review(session: Session, object_id: int, decision: str, reviewer: str, note: str | None) -> Review:
    if decision not in REVIEW_DECISIONS:
        raise UsageError(f"unknown review decision {decision!r}; valid: {', '.join(REVIEW_DECISIONS)}")
    if session.get(StoredObject, object_id) is None:
        raise LookupError(f"no object with id {object_id}")
    review = Review(object_id=object_id, decision=decision, reviewer=reviewer, note=note, created_at=utcnow())
    session.add(review)
    session.flush()
    return review


def latest_decision(object_id: Any) -> Any:
    """The object's latest decision as a scalar subquery (NULL: never reviewed)."""
    return (select(Review.decision).where(Review.object_id == object_id)
            .order_by(Review.id.desc()).limit(1).scalar_subquery())


def review_state_condition(object_id: Any, state: str) -> ColumnElement[bool]:
    """``unreviewed``, ``reviewed`` (any decision) or the latest decision being ``state``."""
    if state == "unreviewed":
        return ~exists().where(Review.object_id == object_id)
    if state == "reviewed":
        return exists().where(Review.object_id == object_id)
    if state in REVIEW_DECISIONS:
        return latest_decision(object_id) == state
    raise UsageError(f"unknown review state {state!r}; valid: {', '.join(REVIEW_STATES)}")


@dataclass(frozen=True)
class ReviewQuery:
    object_id: int | None = None
    scan_id: int | None = None
    decision: str | None = None
    reviewer: str | None = None
    latest_only: bool = False  # one row per object: its latest decision


def reviews_statement(session: Session, query: ReviewQuery) -> Select[*tuple[Any, ...]]:
    statement = (select(Review.id, Review.object_id, StoredObject.uri, Review.decision, Review.note, Review.reviewer,
                        Review.created_at)
                 .join(StoredObject, StoredObject.id == Review.object_id))
    if query.object_id is not None:
        statement = statement.where(Review.object_id == query.object_id)
    if query.scan_id is not None:
        scan = scans.get_scan(session, query.scan_id)
        statement = statement.join(ScanItem, and_(ScanItem.object_id == Review.object_id, ScanItem.scan_id == scan.id))
    if query.decision is not None:
        statement = statement.where(Review.decision == query.decision)
    if query.reviewer is not None:
        statement = statement.where(Review.reviewer == query.reviewer)
    if query.latest_only:
        later = aliased(Review)
        newest = select(func.max(later.id)).where(later.object_id == Review.object_id).scalar_subquery()
        statement = statement.where(Review.id == newest)
    return statement


def page_reviews(session: Session, query: ReviewQuery, before_id: int | None, limit: int) -> list[dict[str, Any]]:
    """Newest first; ``before_id`` is the keyset cursor (the last id of the previous page)."""
    statement = reviews_statement(session, query)
    if before_id is not None:
        statement = statement.where(Review.id < before_id)
    rows = session.execute(statement.order_by(Review.id.desc()).limit(limit))
    return [_record(row) for row in rows]


def iter_reviews(session: Session, query: ReviewQuery) -> Iterator[dict[str, Any]]:
    statement = reviews_statement(session, query).order_by(Review.id).execution_options(yield_per=FETCH_ROWS)
    for row in session.execute(statement):
        yield _record(row)


def _record(row: Any) -> dict[str, Any]:
    review_id, object_id, uri, decision, note, reviewer, created_at = row
    return {"id": review_id, "object_id": object_id, "uri": uri, "decision": decision, "note": note,
            "reviewer": reviewer, "created_at": scans.as_utc(created_at)}


def labelled_objects(session: Session, scan_id: int | None = None) -> list[tuple[int, str, str, str, int]]:
    """(object id, store, key, uri, label) of every object whose latest review is a confirmed label."""
    query = ReviewQuery(scan_id=scan_id, latest_only=True)
    statement = reviews_statement(session, query).where(Review.decision.in_(tuple(LABELS)))
    subquery = statement.subquery()
    rows = session.execute(
        select(subquery.c.object_id, StoredObject.store, StoredObject.key, subquery.c.uri, subquery.c.decision)
        .join(StoredObject, StoredObject.id == subquery.c.object_id).order_by(subquery.c.object_id))
    return [(object_id, store, key, uri, LABELS[decision]) for object_id, store, key, uri, decision in rows]
