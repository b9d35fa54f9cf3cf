"""Test helpers for the scheduler: a named detector folder, generated images, a stand-in worker.

``RecordingWorker`` is the dispatcher the scheduler tests hand to ``run_scan``: it records each
batch and, like the real worker's writer, upserts one result per object and detector (on the
object's current fingerprint) and marks the batch's scan items done, in one transaction.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from fakescan.db import scans
from fakescan.db.engine import upsert
from fakescan.db.models import Result, Scan, ScanItem, StoredObject, utcnow


@pytest.fixture(autouse=True)
def only_named_detectors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Autouse where imported: scans run just the stand-in detector, so row counts stay one per object.

    Scans add the provenance detector first by default; tests/unit/test_provenance_scan.py covers that.
    """
    monkeypatch.setenv("FAKESCAN_SCAN_PROVENANCE", "false")


def make_detector_folder(home: Path, name: str = "tiny", version: str = "t1") -> Path:
    """A named detector the catalog resolves (the scheduler needs its ref, never its model)."""
    folder = home / "detectors" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fakescan.json").write_text(json.dumps({"name": name, "family": "hf-classifier", "version": version}))
    return folder


def png_bytes(seed: int, size: int = 8) -> bytes:
    """A small distinct PNG: the seed picks the colour, so each seed has its own content."""
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def score_for(uri: str) -> float:
    return int(hashlib.sha256(uri.encode()).hexdigest()[:6], 16) / 0xFFFFFF


@dataclass
class RecordingWorker:
    sessions: sessionmaker[Session] | None = None  # None: record only, write nothing
    batches: list[tuple[int, int, list[int]]] = field(default_factory=list)
    error_uris: set[str] = field(default_factory=set)

    def __call__(self, scan_id: int, batch: int, object_ids: list[int]) -> None:
        self.batches.append((scan_id, batch, list(object_ids)))
        if self.sessions is not None:
            with self.sessions() as session:
                self._complete(session, scan_id, object_ids)
                session.commit()

    def close(self) -> None:
        pass

    @property
    def object_ids(self) -> list[int]:
        return [object_id for _, _, ids in self.batches for object_id in ids]

    def _complete(self, session: Session, scan_id: int, object_ids: list[int]) -> None:
        detectors = session.scalar(select(Scan.detectors).where(Scan.id == scan_id))
        objects = session.execute(select(StoredObject.id, StoredObject.uri, StoredObject.fingerprint)
                                  .where(StoredObject.id.in_(object_ids))).all()
        rows = [self._result(scan_id, detector, object_id, uri, fingerprint)
                for object_id, uri, fingerprint in objects for detector in detectors]
        upsert(session, Result.__table__, rows, keys=["object_id", "detector", "detector_version"],
               update=["scan_id", "fingerprint", "status", "score", "verdict", "error", "scanned_at"])
        session.execute(update(ScanItem).where(ScanItem.scan_id == scan_id, ScanItem.object_id.in_(object_ids))
                        .values(state="done", updated_at=utcnow()))
        scans.finish_if_complete(session, scan_id)

    def _result(self, scan_id: int, detector: dict, object_id: int, uri: str, fingerprint: str) -> dict:
        failed = uri in self.error_uris
        score = None if failed else score_for(uri)
        verdict = None if score is None else "fake" if score >= 0.6 else "real" if score < 0.4 else "uncertain"
        return {"object_id": object_id, "detector": detector["name"], "detector_version": detector["version"],
                "scan_id": scan_id, "fingerprint": fingerprint, "status": "error" if failed else "ok",
                "score": score, "verdict": verdict, "error": "cannot decode: truncated" if failed else None,
                "scanned_at": utcnow()}
