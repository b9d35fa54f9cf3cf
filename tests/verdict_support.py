"""Stored scans and result rows written directly, for the combined-verdict tests (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from fakescan.db.models import Result, Scan, ScanItem, StoredObject, utcnow

PROVENANCE_AI = {"finding": "c2pa-ai", "summary": "c2pa-ai: ...", "signals": [
    {"kind": "c2pa-ai", "source": "c2pa", "field": "actions[0].digitalSourceType", "value": "trainedAlgorithmicMedia",
     "validation": "valid", "score": 0.99}]}
NO_METADATA = {"finding": "none", "summary": "no provenance metadata", "signals": []}
DETECTORS = [{"name": "provenance", "version": "1.0.0", "family": "provenance", "location": ""},
             {"name": "default", "version": "d1", "family": "compact-cnn", "location": "/x"}]


def add_scan(session, objects: dict[str, list[dict[str, Any]]]) -> tuple[int, dict[str, int]]:
    """A finished scan whose objects carry the given result rows (provenance and a pixel detector)."""
    now = utcnow()
    scan = Scan(source="file:///archive", detectors=DETECTORS, options={}, state="finished", listed=len(objects),
                enqueued=len(objects), skipped=0, created_at=now)
    session.add(scan)
    session.flush()
    ids = {}
    for key, results in objects.items():
        stored = StoredObject(uri=f"file:///archive/{key}", store="file:///archive", key=key,
                              fingerprint=f"sha256:{key}", first_seen=now, updated_at=now)
        session.add(stored)
        session.flush()
        ids[key] = stored.id
        session.add(ScanItem(scan_id=scan.id, object_id=stored.id, batch=0, state="done", updated_at=now))
        for row in results:
            session.add(Result(object_id=stored.id, scan_id=scan.id, fingerprint=stored.fingerprint,
                               scanned_at=now, **row))
    session.commit()
    return scan.id, ids


def result(detector: str, version: str, score: float | None, evidence: Any = None, status: str = "ok",
           error: str | None = None) -> dict[str, Any]:
    return {"detector": detector, "detector_version": version, "score": score, "evidence": evidence,
            "status": status, "error": error, "verdict": None}


ARCHIVE = {
    "signed-ai.jpg": [result("provenance", "1.0.0", 0.99, PROVENANCE_AI), result("default", "d1", 0.1)],
    "photo.jpg": [result("provenance", "1.0.0", None, NO_METADATA), result("default", "d1", 0.05)],
    "render.png": [result("provenance", "1.0.0", None, NO_METADATA), result("default", "d1", 0.93)],
    "broken.jpg": [result("provenance", "1.0.0", None, None, "error", "bad-metadata: malformed XMP"),
                   result("default", "d1", None, None, "error", "corrupt: truncated")],
}
