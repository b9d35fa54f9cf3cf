"""SQLAlchemy 2 models of the results database. Alembic (``migrations/``) owns the schema."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.schema import SchemaItem

# BIGINT ids on PostgreSQL; SQLite only autoincrements a plain INTEGER primary key.
IdType = BigInteger().with_variant(Integer(), "sqlite")
JsonType = JSON().with_variant(JSONB(), "postgresql")

SCAN_STATES = ("queued", "running", "finished", "failed", "cancelled")
# error: a bad-input row (the object is settled); given-up: its batch exhausted its retries (not settled)
ITEM_STATES = ("queued", "done", "error", "given-up")
RESULT_STATUSES = ("ok", "error")
VERDICTS = ("fake", "real", "uncertain")
REVIEW_DECISIONS = ("confirmed-fake", "confirmed-real", "unsure")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def only_on(dialect: str, constraint: ForeignKeyConstraint) -> ForeignKeyConstraint:
    """A constraint that exists only on ``dialect`` (as the migrations create it): ``create_all``
    skips it elsewhere, and :func:`schema_filter` tells Alembic's comparison not to expect it."""
    constraint.info["dialect"] = dialect
    return constraint.ddl_if(dialect=dialect)


def schema_filter(dialect: str) -> Callable[[SchemaItem, str | None, str, bool, Any], bool]:
    """Alembic's ``include_object`` for a database of ``dialect``: leaves out what :func:`only_on`
    declared for other dialects."""

    def include(item: SchemaItem, _name: str | None, _kind: str, reflected: bool, _compare_to: Any) -> bool:
        return reflected or item.info.get("dialect", dialect) == dialect

    return include


class Base(DeclarativeBase):
    pass


class Scan(Base):
    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    # [{"name": ..., "version": ...}, ...] exactly as resolved when the scan was created
    detectors: Mapped[list[dict[str, str]]] = mapped_column(JsonType)
    options: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    listed: Mapped[int] = mapped_column(BigInteger, default=0)
    enqueued: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # set once enumeration is complete (every object listed and enqueued)
    listing_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StoredObject(Base):
    __tablename__ = "objects"
    __table_args__ = (UniqueConstraint("uri", name="uq_objects_uri"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    uri: Mapped[str] = mapped_column(Text)  # s3://bucket/key or file:///abs/path
    store: Mapped[str] = mapped_column(Text)  # s3://bucket or file:///abs/root
    key: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(128))
    size: Mapped[int | None] = mapped_column(BigInteger)
    content_hash: Mapped[str | None] = mapped_column(String(128))  # sha256 for local files
    last_modified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # what identifies this content: "etag:<etag>:<size>" on S3, "sha256:<hex>" on local disk
    fingerprint: Mapped[str] = mapped_column(String(160))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Result(Base):
    """One detector version's result on one object, keyed by that identity (migration 0005).

    No other index: each one is paid by every row a worker writes, and with none on the columns
    a re-scan changes, PostgreSQL rewrites a row in place on its page (fillfactor leaves room).

    ``object_id`` and ``scan_id`` reference objects (ON DELETE CASCADE) and scans (ON DELETE SET
    NULL): foreign keys on SQLite; on PostgreSQL statement-level triggers that keep the same
    promises for a whole batch at once instead of a check per row (migration 0006).
    """

    __tablename__ = "results"
    __table_args__ = (
        only_on("sqlite", ForeignKeyConstraint(["object_id"], ["objects.id"], ondelete="CASCADE")),
        only_on("sqlite", ForeignKeyConstraint(["scan_id"], ["scans.id"], ondelete="SET NULL")),
        {"postgresql_with": {"fillfactor": 80}},
    )

    object_id: Mapped[int] = mapped_column(IdType, primary_key=True)
    detector: Mapped[str] = mapped_column(String(128), primary_key=True)
    detector_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    scan_id: Mapped[int | None] = mapped_column(IdType)
    fingerprint: Mapped[str] = mapped_column(String(160))  # the content this row scored
    status: Mapped[str] = mapped_column(String(8))  # ok | error
    score: Mapped[float | None] = mapped_column(Float)  # P(AI-generated) in [0, 1]
    verdict: Mapped[str | None] = mapped_column(String(16))  # fake | real | uncertain | NULL
    parts: Mapped[dict[str, float] | None] = mapped_column(JsonType)
    evidence: Mapped[Any | None] = mapped_column(JsonType)
    error: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, float] | None] = mapped_column(JsonType)
    scanned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScanItem(Base):
    """One enqueued object of one scan; the worker flips it to done/error with its results, or given-up."""

    __tablename__ = "scan_items"
    __table_args__ = (Index("ix_scan_items_state", "scan_id", "state"),)

    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True)
    batch: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(8), default="queued")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Verdict(Base):
    """One combined verdict per object and verdict-policy version (``fakescan.verdicts``)."""

    __tablename__ = "verdicts"
    __table_args__ = (
        # keyset pages of the API's object listing (migration 0004): by score or time, with or
        # without a verdict filter; object_id breaks ties so every row has one place in the order
        Index("ix_verdicts_listing_score", "policy_version", "verdict", "score", "object_id"),
        Index("ix_verdicts_listing_any_score", "policy_version", "score", "object_id"),
        Index("ix_verdicts_listing_time", "policy_version", "verdict", "decided_at", "object_id"),
        Index("ix_verdicts_listing_any_time", "policy_version", "decided_at", "object_id"),
    )

    # keyed by its identity (migration 0005): no surrogate id, one index fewer for each verdict written
    object_id: Mapped[int] = mapped_column(ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True)
    # "<policy name>-<hash of its parameters>"
    policy_version: Mapped[str] = mapped_column(String(160), primary_key=True)
    verdict: Mapped[str | None] = mapped_column(String(16))  # fake | real | uncertain | NULL: nothing judged it
    score: Mapped[float | None] = mapped_column(Float)
    explanation: Mapped[dict[str, Any]] = mapped_column(JsonType)  # the rule and evidence that decided
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Review(Base):
    """A moderator's decision on an object; every decision is kept, the latest one counts."""

    __tablename__ = "reviews"
    __table_args__ = (
        Index("ix_reviews_object", "object_id", "id"),
        Index("ix_reviews_created", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("objects.id", ondelete="CASCADE"))
    decision: Mapped[str] = mapped_column(String(16))  # confirmed-fake | confirmed-real | unsure
    note: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
