"""Combined verdicts in the database: computed from stored results, upserted per policy version.

The worker calls :func:`record_batch_verdicts` inside the transaction that wrote a batch's
results; ``fakescan verdicts compute`` calls :func:`recompute` to redo them from stored results
(after re-calibrating a detector or changing the policy), a chunk of objects per transaction.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterator, Mapping, Sequence

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from fakescan.db import scans
from fakescan.db.engine import upsert
from fakescan.db.models import Result, Scan, ScanItem, StoredObject, Verdict, utcnow
from fakescan.db.queries import same_detectors
from fakescan.settings import Settings
from fakescan.verdicts import StoredResult, VerdictPolicy, combine, load_policy

VERDICT_KEY = ("object_id", "policy_version")
VERDICT_UPDATED = ("verdict", "score", "explanation", "decided_at")
CHUNK = 500
FETCH_ROWS = 1000


def record_verdicts(session: Session, object_ids: Sequence[int], policy: VerdictPolicy,
                    detectors: list[dict[str, str]] | None = None,
                    known: Mapping[int, list[StoredResult]] | None = None) -> Counter[str | None]:
    """Combine and upsert the verdicts of ``object_ids``; counts by verdict (None: nothing judged).

    ``detectors`` (a scan's ``[{"name", "version"}, ...]``) limits the inputs to those detector
    versions; without it each detector's most recent result of the object is used. ``known``:
    objects whose inputs the caller holds already (:func:`results_of_rows`); the others' are read.
    """
    known = known or {}
    unknown = [object_id for object_id in object_ids if object_id not in known]
    by_object = _stored_results(session, unknown, detectors) if unknown else {}
    by_object.update((object_id, known[object_id]) for object_id in object_ids if object_id in known)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for object_id in sorted(by_object):
        decision = combine(by_object[object_id], policy)
        rows.append({"object_id": object_id, "policy_version": policy.version, "verdict": decision.verdict,
                     "score": decision.score, "explanation": decision.explanation, "decided_at": now})
    upsert(session, Verdict.__table__, rows, VERDICT_KEY, VERDICT_UPDATED)
    return Counter(row["verdict"] for row in rows)


def record_batch_verdicts(session: Session, scan_id: int, object_ids: Sequence[int], settings: Settings,
                          rows: Sequence[Mapping[str, Any]] = ()) -> Counter[str | None]:
    """The worker's hook, in the batch's write transaction: verdicts from the scan's detector versions.

    ``rows``: the result rows the batch just wrote; an object they cover for every detector of
    the scan is combined from them instead of reading its results back (the worker's batches
    always do: 13 of a batch's ~65 ms write went to that read)."""
    detectors = session.scalar(select(Scan.detectors).where(Scan.id == scan_id))
    if detectors is None or not object_ids:
        return Counter()
    return record_verdicts(session, object_ids, load_policy(settings.verdict_policy), detectors,
                           results_of_rows(rows, object_ids, detectors))


def results_of_rows(rows: Sequence[Mapping[str, Any]], object_ids: Sequence[int],
                    detectors: list[dict[str, str]]) -> dict[int, list[StoredResult]]:
    """What :func:`_stored_results` would read back for each object of ``object_ids`` whose
    ``rows`` (result rows as written) hold a result of every detector version in ``detectors``."""
    wanted = {(detector["name"], detector["version"]) for detector in detectors}
    if len({name for name, _ in wanted}) < len(wanted):  # two versions of one detector: the read picks
        return {}
    ids = set(object_ids)
    found: dict[int, dict[tuple[str, str], StoredResult]] = {}
    for row in rows:
        key = (row["detector"], row["detector_version"])
        if row["object_id"] in ids and key in wanted:
            score = row.get("score")
            found.setdefault(row["object_id"], {})[key] = StoredResult(
                *key, row["status"], None if score is None else float(score), row.get("evidence"), row.get("error"))
    return {object_id: sorted(results.values(), key=_detector_order)
            for object_id, results in found.items() if len(results) == len(wanted)}


def _detector_order(result: StoredResult) -> tuple[str, str]:
    return result.detector, result.detector_version


def recompute(session_factory: Callable[[], Session], policy: VerdictPolicy,
              scan_id: int | None = None) -> Counter[str | None]:
    """Verdicts of every object of a scan (or every object with results), one transaction per chunk."""
    totals: Counter[str | None] = Counter()
    with session_factory() as session:
        detectors = scans.get_scan(session, scan_id).detectors if scan_id is not None else None
    last_id = 0
    while True:
        with session_factory() as session:
            ids = list(session.scalars(_object_ids(scan_id, last_id)))
            if not ids:
                return totals
            totals.update(record_verdicts(session, ids, policy, detectors))
            session.commit()
        last_id = ids[-1]


def _object_ids(scan_id: int | None, after: int) -> Select[*tuple[Any, ...]]:
    if scan_id is not None:
        column = ScanItem.object_id
        statement = select(column).where(ScanItem.scan_id == scan_id)
    else:
        column = Result.object_id
        statement = select(column).distinct()
    return statement.where(column > after).order_by(column).limit(CHUNK)


def _stored_results(session: Session, object_ids: Sequence[int],
                    detectors: list[dict[str, str]] | None) -> dict[int, list[StoredResult]]:
    statement = (
        select(Result.object_id, Result.detector, Result.detector_version, Result.status, Result.score,
               Result.evidence, Result.error)
        .where(Result.object_id.in_(sorted(set(object_ids))))
        .order_by(Result.object_id, Result.scanned_at, Result.detector_version)
    )
    if detectors is not None:
        statement = statement.where(same_detectors(detectors))
    latest: dict[tuple[int, str], StoredResult] = {}
    for object_id, *fields in session.execute(statement):
        latest[(object_id, fields[0])] = StoredResult(*fields)  # later rows replace earlier versions
    by_object: dict[int, list[StoredResult]] = {}
    for (object_id, _), result in latest.items():
        by_object.setdefault(object_id, []).append(result)
    return {object_id: sorted(results, key=_detector_order) for object_id, results in by_object.items()}


def iter_verdicts(session: Session, policy_version: str, scan_id: int | None = None, verdict: str | None = None,
                  limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Stored verdicts under one policy version, with the object's URI, in object order."""
    statement = (
        select(StoredObject.uri, Verdict.verdict, Verdict.score, Verdict.explanation, Verdict.decided_at)
        .join(StoredObject, StoredObject.id == Verdict.object_id)
        .where(Verdict.policy_version == policy_version)
        .order_by(Verdict.object_id)
    )
    statement = _filtered(session, statement, scan_id, verdict)
    if limit is not None:
        statement = statement.limit(limit)
    rows = session.execute(statement.execution_options(yield_per=FETCH_ROWS))
    for uri, found, score, explanation, decided_at in rows:
        yield {"uri": uri, "verdict": found, "score": score, "explanation": explanation,
               "decided_at": scans.as_utc(decided_at)}


def verdict_counts(session: Session, policy_version: str, scan_id: int | None = None) -> dict[str | None, int]:
    """Combined verdicts by value; with ``scan_id``, of the objects that scan wrote results for (an
    enqueued object it has not processed yet still carries an earlier scan's verdict: not counted)."""
    statement = select(Verdict.verdict, func.count()).where(Verdict.policy_version == policy_version)
    if scan_id is not None:
        scans.get_scan(session, scan_id)  # UsageError when there is no such scan
        written = (select(Result.object_id)  # through the scan's items: results have no index on scan_id
                   .join(ScanItem, and_(ScanItem.object_id == Result.object_id, ScanItem.scan_id == scan_id))
                   .where(Result.scan_id == scan_id))
        statement = statement.where(Verdict.object_id.in_(written))
    return {found: count for found, count in session.execute(statement.group_by(Verdict.verdict))}


def _filtered(session: Session, statement: Select[*tuple[Any, ...]], scan_id: int | None,
              verdict: str | None) -> Select[*tuple[Any, ...]]:
    if scan_id is not None:
        scan = scans.get_scan(session, scan_id)
        statement = statement.join(ScanItem, and_(ScanItem.object_id == Verdict.object_id, ScanItem.scan_id == scan.id))
    if verdict == "none":
        statement = statement.where(Verdict.verdict.is_(None))
    elif verdict is not None:
        statement = statement.where(Verdict.verdict == verdict)
    return statement


def stored_verdict(session: Session, object_id: int, policy_version: str) -> Verdict | None:
    """The object's combined verdict under this policy version, if one was computed."""
    return session.scalar(select(Verdict).where(Verdict.object_id == object_id,
                                                Verdict.policy_version == policy_version))
