"""The writer: one transaction per batch upserts its results and closes its scan items.

Results are keyed by ``(object_id, detector, detector_version)``, so a batch delivered twice (a
worker died after writing, or a slow worker's batch was redelivered) rewrites the same rows.

On PostgreSQL a batch is three statements and the commit: one that locks the scan and the live
objects, upserts the results and sets the item states (data-modifying CTEs, the rows as one typed
array per column, sent in binary, and the JSON columns as one JSON array of arrays), then the
scan's row lock and the completion check. Elsewhere (SQLite, embedded) the same steps run as
separate statements; SQLite ignores the row locks and serialises writers.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from fakescan.db.engine import upsert
from fakescan.db.models import Result, Scan, ScanItem, StoredObject, utcnow
from fakescan.db.scans import finish_if_complete

RESULT_KEY = ("object_id", "detector", "detector_version")
RESULT_UPDATED = ("scan_id", "fingerprint", "status", "score", "verdict", "parts", "evidence", "error",
                  "timings", "scanned_at")
# what a worker's row carries (scan_id is the batch's); RESULT_KEY then the updated columns
RESULT_COLUMNS = RESULT_KEY + RESULT_UPDATED[1:]


def write_batch(session: Session, scan_id: int, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Upsert ``rows`` (results of one scan) and mark their items done/error; returns the object ids written.

    Rows of objects deleted meanwhile, or whose scan is gone, are dropped without error. Call
    inside a transaction (``sessionmaker.begin()``); the caller commits.
    """
    if session.get_bind().dialect.name == "postgresql":
        written = _write_in_one_statement(session, scan_id, rows)
    else:
        stepped = _write_step_by_step(session, scan_id, rows)
        if stepped is None:
            return []
        written = stepped
    # Two batches finishing at once must not each see the other's items still queued: the row
    # lock orders them, and the check after it (a new statement, a new snapshot) reads the
    # other's committed items.
    _lock_scan(session, scan_id, exclusive=True)
    finish_if_complete(session, scan_id)
    return written


def _write_in_one_statement(session: Session, scan_id: int, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """PostgreSQL: the scan FOR KEY SHARE, the live objects FOR KEY SHARE (in id order), the results
    upserted in key order (a stable lock order between writers of the same rows) and the items'
    states, in one round trip; returns the object ids written, sorted."""
    found = session.connection().exec_driver_sql(_batch_statement(), _batch_parameters(scan_id, rows))
    return [object_id for (object_id,) in found]


def _batch_parameters(scan_id: int, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The rows column by column: a typed array each (sent in binary: no text to format or parse
    per value), the JSON columns together as one JSON array of arrays."""
    from psycopg.types.json import Jsonb

    parameters: dict[str, Any] = {name: [row.get(name) for row in rows] for name in _ARRAY_COLUMNS}
    # an int among the floats would make psycopg refuse the list (mixed types)
    parameters["score"] = [None if score is None else float(score) for score in parameters["score"]]
    parameters["json"] = Jsonb([[row.get(name) for name in _JSON_COLUMNS] for row in rows], dumps=_dump_json)
    parameters.update(scan_id=scan_id, object_ids=sorted(set(parameters["object_id"])), now=utcnow())
    return parameters


def json_rows(rows: Sequence[Mapping[str, Any]]) -> Any:
    """``rows`` as one JSONB parameter of psycopg, serialised as they are (timestamps as ISO strings):
    no per-row copy; ``jsonb_to_recordset`` reads the columns it names and ignores other keys."""
    from psycopg.types.json import Jsonb

    return Jsonb(rows, dumps=_dump_json)


def _dump_json(value: Any) -> str:
    return json.dumps(value, default=_iso_timestamp, separators=(",", ":"))


def _iso_timestamp(value: Any) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def recordset_columns(table: Any, names: Sequence[str]) -> str:
    """``name TYPE, ...`` of ``table``'s columns, for ``jsonb_to_recordset(...) AS alias(...)``."""
    dialect = postgresql.dialect()
    return ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in names)


_JSON_COLUMNS = tuple(name for name in RESULT_COLUMNS if name in ("parts", "evidence", "timings"))
_ARRAY_COLUMNS = tuple(name for name in RESULT_COLUMNS if name not in _JSON_COLUMNS)


@lru_cache(maxsize=1)
def _batch_statement() -> str:
    """The batch as driver SQL: psycopg's ``%(name)b`` sends a parameter in binary."""
    dialect = postgresql.dialect()
    table = Result.__table__
    arrays = ", ".join(f"unnest(%({name})b::{table.c[name].type.compile(dialect=dialect)}[])"
                       for name in _ARRAY_COLUMNS)
    values = {name: f"incoming.{name}" for name in _ARRAY_COLUMNS}
    values.update({name: f"NULLIF(incoming.json->{index}, 'null')" for index, name in enumerate(_JSON_COLUMNS)})
    columns = ", ".join(RESULT_COLUMNS)
    updated = ", ".join(f"{name} = excluded.{name}" for name in RESULT_UPDATED)
    return f"""
        WITH scan AS (
            SELECT id FROM scans WHERE id = %(scan_id)b FOR KEY SHARE
        ), live AS (
            SELECT objects.id FROM objects
            WHERE objects.id = ANY(%(object_ids)b::bigint[]) AND EXISTS (SELECT FROM scan)
            ORDER BY objects.id FOR KEY SHARE
        ), written AS (
            INSERT INTO results (scan_id, {columns})
            SELECT %(scan_id)b::bigint, {", ".join(values[name] for name in RESULT_COLUMNS)}
            FROM ROWS FROM ({arrays}, jsonb_array_elements(%(json)b))
                AS incoming({", ".join(_ARRAY_COLUMNS)}, json)
            JOIN live ON live.id = incoming.object_id
            ORDER BY incoming.object_id, incoming.detector, incoming.detector_version
            ON CONFLICT ({", ".join(RESULT_KEY)}) DO UPDATE SET {updated}
            RETURNING object_id, status
        ), states AS (
            SELECT object_id, CASE WHEN bool_and(status = 'ok') THEN 'done' ELSE 'error' END AS state
            FROM written GROUP BY object_id
        ), items AS (
            UPDATE scan_items SET state = states.state, updated_at = %(now)b
            FROM states
            WHERE scan_items.scan_id = %(scan_id)b
              AND scan_items.object_id = ANY(%(object_ids)b::bigint[])  -- a key probe each
              AND scan_items.object_id = states.object_id
        )
        SELECT object_id FROM states ORDER BY object_id
    """


def _write_step_by_step(session: Session, scan_id: int, rows: Sequence[Mapping[str, Any]]) -> list[int] | None:
    """The portable path (SQLite): the same locks and writes as separate statements; None when the
    scan is gone."""
    if not _lock_scan(session, scan_id, exclusive=False):
        return None
    live = _lock_live_objects(session, {row["object_id"] for row in rows})
    kept = sorted((dict(row, scan_id=scan_id) for row in rows if row["object_id"] in live),
                  key=lambda row: (row["object_id"], row["detector"], row["detector_version"]))
    upsert(session, Result.__table__, kept, RESULT_KEY, RESULT_UPDATED)  # sorted: a stable lock order
    failed = {row["object_id"] for row in kept if row["status"] != "ok"}
    written = sorted({row["object_id"] for row in kept})
    _set_item_state(session, scan_id, [i for i in written if i not in failed], "done")
    _set_item_state(session, scan_id, sorted(failed), "error")
    return written


def _lock_scan(session: Session, scan_id: int, *, exclusive: bool) -> bool:
    """FOR KEY SHARE (keeps the scan while its results reference it) or FOR NO KEY UPDATE."""
    statement = select(Scan.id).where(Scan.id == scan_id).with_for_update(key_share=True, read=not exclusive)
    return session.scalar(statement) is not None


def _lock_live_objects(session: Session, object_ids: Iterable[int]) -> set[int]:
    """Objects that still exist, locked FOR KEY SHARE so they cannot vanish before the commit."""
    ids = sorted(object_ids)
    if not ids:
        return set()
    statement = select(StoredObject.id).where(StoredObject.id.in_(ids)).with_for_update(read=True, key_share=True)
    return set(session.scalars(statement))


def _set_item_state(session: Session, scan_id: int, object_ids: list[int], state: str) -> None:
    if object_ids:
        session.execute(
            update(ScanItem)
            .where(ScanItem.scan_id == scan_id, ScanItem.object_id.in_(object_ids))
            .values(state=state, updated_at=utcnow())
        )
