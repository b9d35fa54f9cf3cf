"""What the routes and pages ask of the database, built on ``fakescan.db`` (the one owner of the SQL).

Filters arrive as validated query parameters (:class:`ObjectParams`), the cursor is an opaque
base64 token of the last row's position, and each object is returned with its detectors' scores
and evidence badges so the gallery draws a page from one call.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from fakescan.db import listing, queries, reviews, scans, verdicts
from fakescan.db.listing import ObjectFilter, Position
from fakescan.db.models import Scan, StoredObject
from fakescan.errors import UsageError
from fakescan.progress import read_progress
from fakescan.verdicts_cli import explain_lines

VerdictChoice = Literal["fake", "real", "uncertain", "none"]
SortChoice = Literal["-score", "score", "-time", "time"]
ReviewState = Literal["unreviewed", "reviewed", "confirmed-fake", "confirmed-real", "unsure"]
MAX_PAGE = 200


class BadCursor(UsageError):
    pass


@dataclass(frozen=True)
class ObjectParams:
    scan: int | None = None
    verdict: VerdictChoice | None = None
    detector: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    prefix: str | None = None
    error_kind: str | None = None
    review: ReviewState | None = None

    def to_filter(self, policy_version: str) -> ObjectFilter:
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise UsageError(f"min_score {self.min_score} is above max_score {self.max_score}")
        return ObjectFilter(policy_version, self.scan, self.verdict, self.detector, self.min_score, self.max_score,
                            self.prefix, self.error_kind, self.review)


def encode_cursor(sort: str, position: Position | None) -> str | None:
    if position is None:
        return None
    value = position.value.isoformat() if isinstance(position.value, datetime) else position.value
    raw = json.dumps({"s": sort, "v": value, "i": position.object_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str | None, sort: str) -> Position | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["s"] != sort:
            raise BadCursor(f"this cursor belongs to sort={data['s']}, not sort={sort}")
        value, object_id = data["v"], int(data["i"])
        if value is not None:
            value = datetime.fromisoformat(value) if sort.endswith("time") else float(value)
    except BadCursor:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadCursor("cursor is not one this API handed out") from None
    return Position(value, object_id)


def object_page(session: Session, params: ObjectParams, policy_version: str, sort: str, cursor: str | None,
                limit: int) -> dict[str, Any]:
    position = decode_cursor(cursor, sort)
    if position is not None and isinstance(position.value, datetime) and _is_sqlite(session):
        position = Position(position.value.replace(tzinfo=None), position.object_id)
    page = listing.page_objects(session, params.to_filter(policy_version), sort, position, limit)
    # the scan's detector versions (the session's identity map holds the scan only while referenced)
    detectors = scans.get_scan(session, params.scan).detectors if params.scan is not None else None
    by_object = listing.results_of(session, [row["object_id"] for row in page.rows], detectors)
    items = [{**row, "detectors": _latest_per_detector(by_object.get(row["object_id"], [])),
              "badges": badges(by_object.get(row["object_id"], []))} for row in page.rows]
    return {"items": items, "next_cursor": encode_cursor(sort, page.next), "policy_version": policy_version}


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _latest_per_detector(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest = {row["detector"]: row for row in rows}  # rows come oldest first per detector
    return [{key: row[key] for key in ("detector", "detector_version", "status", "score", "verdict", "error_kind")}
            for row in latest.values()]


def badges(rows: list[dict[str, Any]]) -> list[str]:
    """Short evidence labels: "C2PA: <signer>, trainedAlgorithmicMedia", "generator: Midjourney", "error: corrupt"."""
    found: list[str] = []
    for row in rows:
        evidence = row["evidence"] if isinstance(row["evidence"], dict) else {}
        signer = (evidence.get("c2pa") or {}).get("signer") if isinstance(evidence.get("c2pa"), dict) else None
        for signal in evidence.get("signals") or []:
            if not isinstance(signal, dict):
                continue
            if signal.get("source") == "c2pa" and str(signal.get("field", "")).endswith("digitalSourceType"):
                found.append(f"C2PA: {signer or 'unknown signer'}, {str(signal.get('value', '')).rsplit('/', 1)[-1]}")
            elif signal.get("generator"):
                found.append(f"generator: {signal['generator']}")
            elif signal.get("kind") == "camera-exif":
                found.append("camera EXIF")
        if row["error_kind"]:
            found.append(f"error: {row['error_kind']}")
    return list(dict.fromkeys(found))


def object_detail(session: Session, object_id: int, policy_version: str) -> dict[str, Any]:
    stored = session.get(StoredObject, object_id)
    if stored is None:
        raise LookupError(f"no object with id {object_id}")
    rows = listing.results_of(session, [object_id]).get(object_id, [])
    verdict = verdicts.stored_verdict(session, object_id, policy_version)
    history = reviews.page_reviews(session, reviews.ReviewQuery(object_id=object_id), None, MAX_PAGE)
    scan_ids = queries.scans_of_object(session, object_id)
    combined = None
    if verdict is not None:
        combined = {"verdict": verdict.verdict, "score": verdict.score, "policy_version": policy_version,
                    "decided_at": scans.as_utc(verdict.decided_at), "explanation": verdict.explanation,
                    "explain": explain_lines(verdict.explanation or {})}
    return {"object_id": stored.id, "uri": stored.uri, "key": stored.key, "size": stored.size,
            "fingerprint": stored.fingerprint, "last_modified": scans.as_utc(stored.last_modified), "scans": scan_ids,
            "results": rows, "badges": badges(rows), "combined": combined,
            "review": history[0]["decision"] if history else None, "reviews": history}


def scan_list(session: Session, before: int | None, limit: int) -> dict[str, Any]:
    ids = queries.scan_ids_before(session, before, limit + 1)
    items = [read_progress(session, scan_id).as_json() for scan_id in ids[:limit]]
    return {"items": items, "next_cursor": str(ids[limit - 1]) if len(ids) > limit else None}


def scan_detail(session: Session, scan_id: int, policy_version: str) -> dict[str, Any]:
    if session.get(Scan, scan_id) is None:
        raise LookupError(f"no scan with id {scan_id}")
    outcomes: dict[str, dict[str, int]] = {}
    for (detector, status, found), count in queries.scan_outcomes_by_detector(session, scan_id).items():
        key = found or ("error" if status == "error" else "none")
        outcomes.setdefault(detector, {})[key] = outcomes.get(detector, {}).get(key, 0) + count
    counts = verdicts.verdict_counts(session, policy_version, scan_id)
    return {**read_progress(session, scan_id).as_json(), "policy_version": policy_version,
            "verdicts": {(found or "none"): count for found, count in counts.items()},
            "detector_outcomes": outcomes, "error_kinds": listing.error_kinds(session, scan_id),
            "histograms": listing.score_histograms(session, scan_id)}


def detector_spec(session: Session, object_id: int, detector: str) -> tuple[str, str]:
    """The folder (or name) and version of ``detector`` as the latest scan of the object resolved it."""
    for detectors in queries.detectors_run_on(session, object_id):
        for entry in detectors:
            if entry.get("name") == detector:
                return entry.get("location") or detector, str(entry.get("version"))
    raise LookupError(f"no scan of object {object_id} ran detector {detector!r}")
