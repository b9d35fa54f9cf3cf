"""The scheduler's database side of a listing chunk: upsert ``objects`` rows, read prior results."""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from fakescan.db.engine import upsert
from fakescan.db.models import Result, StoredObject, utcnow
from fakescan.storage import ObjectInfo
from scheduler.skip import PriorResult

_CONTENT_COLUMNS = ("store", "key", "etag", "size", "content_hash", "last_modified", "fingerprint", "updated_at")


def upsert_objects(session: Session, infos: Sequence[ObjectInfo]) -> dict[str, int]:
    """Insert new objects, update changed ones (by uri); returns uri -> object id for the chunk."""
    if not infos:
        return {}
    now = utcnow()
    rows = [_object_row(info, now) for info in infos]
    upsert(session, StoredObject.__table__, rows, keys=["uri"], update=_CONTENT_COLUMNS, only_if=_changed)
    uris = [info.uri for info in infos]
    found = session.execute(select(StoredObject.uri, StoredObject.id).where(StoredObject.uri.in_(uris)))
    return {uri: object_id for uri, object_id in found}


def _object_row(info: ObjectInfo, now: Any) -> dict[str, Any]:
    return {
        "uri": info.uri, "store": info.store, "key": info.key, "etag": info.etag, "size": info.size,
        "content_hash": info.content_hash, "last_modified": info.last_modified,
        "fingerprint": info.fingerprint, "first_seen": now, "updated_at": now,
    }


def _changed(excluded: Any) -> Any:
    return or_(
        StoredObject.fingerprint.is_distinct_from(excluded.fingerprint),
        StoredObject.last_modified.is_distinct_from(excluded.last_modified),
        StoredObject.store.is_distinct_from(excluded.store),
    )


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
