"""The scheduler's database side of a listing chunk: upsert ``objects`` rows, read prior results.

On PostgreSQL a chunk is one statement: the objects upserted (a row is rewritten only when its
content changed, so re-listing an unchanged archive writes nothing), their ids, and the results
already stored for them by the scan's detector versions. Elsewhere (SQLite) the same as three.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from sqlalchemy import and_, bindparam, or_, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from fakescan.db.engine import upsert
from fakescan.db.models import Result, StoredObject, utcnow
from fakescan.db.results import json_rows, recordset_columns
from fakescan.storage import ObjectInfo

_CONTENT_COLUMNS = ("store", "key", "etag", "size", "content_hash", "last_modified", "fingerprint", "updated_at")
_LISTED_COLUMNS = ("uri", "store", "key", "etag", "size", "content_hash", "last_modified", "fingerprint")
# a listed object whose stored row differs in one of these is rewritten; otherwise it is left alone
_CHANGED_COLUMNS = ("fingerprint", "last_modified", "store")


@dataclass(frozen=True)
class PriorResult:
    object_id: int
    detector: str
    detector_version: str
    fingerprint: str  # the content the result was computed on
    status: str  # ok | error


def record_listed(session: Session, infos: Sequence[ObjectInfo],
                  detectors: Sequence[tuple[str, str]]) -> tuple[dict[str, int], list[PriorResult]]:
    """Upsert a chunk's objects; returns uri -> object id and the results already stored for them by
    ``detectors`` (``(name, version)`` pairs; none asked for: none read)."""
    if not infos:
        return {}, []
    if session.get_bind().dialect.name != "postgresql":
        upserted = upsert_objects(session, infos)
        return upserted, prior_results(session, list(upserted.values()), detectors)
    rows = [_listed_row(info) for info in infos]
    found = session.execute(_chunk_statement(), {
        "rows": json_rows(rows), "now": utcnow(), "names": [name for name, _ in detectors],
        "versions": [version for _, version in detectors]})
    ids: dict[str, int] = {}
    prior: list[PriorResult] = []
    for uri, object_id, detector, version, fingerprint, status in found:
        ids[uri] = object_id
        if detector is not None:
            prior.append(PriorResult(object_id, detector, version, fingerprint, status))
    missing = [info for info in infos if info.uri not in ids]
    if missing:
        # Inserted by a concurrent scan after this statement's snapshot: the upsert waited for it
        # and left the row alone, the snapshot cannot see it. A new statement can.
        more, more_prior = _select_listed(session, [info.uri for info in missing], detectors)
        ids.update(more)
        prior += more_prior
    return ids, prior


@lru_cache(maxsize=1)
def _chunk_statement() -> TextClause:
    """Every lookup is driven by the chunk's rows (LATERAL: an index probe per row, whatever the
    size of the tables). Only new or changed objects reach the upsert, so re-listing an unchanged
    archive neither writes nor locks a row."""
    record = recordset_columns(StoredObject.__table__, _LISTED_COLUMNS)
    columns = ", ".join(_LISTED_COLUMNS)
    updated = ", ".join(f"{name} = excluded.{name}" for name in _CONTENT_COLUMNS)
    changed = " OR ".join(f"objects.{name} IS DISTINCT FROM excluded.{name}" for name in _CHANGED_COLUMNS)
    differs = " OR ".join(f"stored.{name} IS DISTINCT FROM incoming.{name}" for name in _CHANGED_COLUMNS)
    return text(f"""
        WITH incoming AS (
            SELECT * FROM jsonb_to_recordset(:rows) AS incoming({record})
        ), known AS (
            SELECT incoming.uri, stored.id, stored.id IS NULL OR {differs} AS changed
            FROM incoming LEFT JOIN LATERAL (
                SELECT objects.id, {", ".join(f"objects.{name}" for name in _CHANGED_COLUMNS)}
                FROM objects WHERE objects.uri = incoming.uri LIMIT 1  -- unique; LIMIT keeps it a probe
            ) AS stored ON true
        ), upserted AS (
            INSERT INTO objects ({columns}, first_seen, updated_at)
            SELECT {", ".join(f"incoming.{name}" for name in _LISTED_COLUMNS)}, :now, :now
            FROM incoming JOIN known ON known.uri = incoming.uri AND known.changed
            ORDER BY incoming.uri
            ON CONFLICT (uri) DO UPDATE SET {updated} WHERE {changed}
            RETURNING uri, id
        ), listed AS (
            SELECT uri, id FROM upserted
            UNION ALL
            SELECT uri, id FROM known WHERE NOT known.changed
        )
        SELECT listed.uri, listed.id, prior.detector, prior.detector_version, prior.fingerprint, prior.status
        FROM listed LEFT JOIN LATERAL (
            SELECT results.detector, results.detector_version, results.fingerprint, results.status
            FROM results
            WHERE results.object_id = listed.id
              AND (results.detector, results.detector_version) IN (SELECT * FROM unnest(:names, :versions))
        ) AS prior ON true
    """).bindparams(bindparam("names", type_=postgresql.ARRAY(postgresql.TEXT)),
                    bindparam("versions", type_=postgresql.ARRAY(postgresql.TEXT)))


def _select_listed(session: Session, uris: list[str],
                   detectors: Sequence[tuple[str, str]]) -> tuple[dict[str, int], list[PriorResult]]:
    found = session.execute(select(StoredObject.uri, StoredObject.id).where(StoredObject.uri.in_(uris)))
    ids = {uri: object_id for uri, object_id in found}
    return ids, prior_results(session, list(ids.values()), detectors)


def upsert_objects(session: Session, infos: Sequence[ObjectInfo]) -> dict[str, int]:
    """Insert new objects, update changed ones (by uri); returns uri -> object id for the chunk."""
    if not infos:
        return {}
    now = utcnow()
    rows = [_object_row(info, now) for info in infos]
    upsert(session, StoredObject.__table__, rows, keys=["uri"], update=_CONTENT_COLUMNS, only_if=_changed)
    return _select_listed(session, [info.uri for info in infos], ())[0]


def _listed_row(info: ObjectInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in _LISTED_COLUMNS}


def _object_row(info: ObjectInfo, now: Any) -> dict[str, Any]:
    return {**_listed_row(info), "first_seen": now, "updated_at": now}


def _changed(excluded: Any) -> Any:
    return or_(*(getattr(StoredObject, name).is_distinct_from(getattr(excluded, name)) for name in _CHANGED_COLUMNS))


def prior_results(session: Session, object_ids: Sequence[int],
                  detectors: Sequence[tuple[str, str]]) -> list[PriorResult]:
    """Results already stored for these objects by these (detector, version) pairs."""
    if not object_ids or not detectors:
        return []
    same_detector = or_(*(and_(Result.detector == name, Result.detector_version == version)
                          for name, version in detectors))
    rows = session.execute(
        select(Result.object_id, Result.detector, Result.detector_version, Result.fingerprint, Result.status)
        .where(Result.object_id.in_(object_ids), same_detector)
    )
    return [PriorResult(*row) for row in rows]
