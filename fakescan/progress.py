"""How far a scan has got: counts, rate, ETA and state, read from the results database.

Shared by ``fakescan status``, ``scan --wait``, the exporter and the HTTP API; the scheduler's
progress bar and wait loop build on it (``scheduler/progress.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import Session

from fakescan.db import scans
from fakescan.db.models import Scan

ENDED_STATES = ("finished", "failed", "cancelled")


@dataclass(frozen=True)
class ScanProgress:
    scan_id: int
    state: str  # queued (nothing completed yet), running, finished, failed, cancelled
    source: str
    detectors: list[dict[str, str]]
    listed: int
    enqueued: int
    skipped: int
    queued: int  # enqueued items not yet settled
    done: int
    errors: int  # items whose object is bad input (an error row): settled, and counted as done work
    given_up: int  # items of batches that exhausted their retries: the scan ends failed
    images_per_second: float | None
    eta_seconds: float | None
    listing_finished: bool
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("created_at", "started_at", "finished_at"):
            data[name] = data[name].isoformat() if data[name] else None
        return data

    def as_text(self) -> str:
        detectors = ", ".join(f"{d['name']}@{d['version']}" for d in self.detectors)
        rate = f"{self.images_per_second:.1f} images/s" if self.images_per_second is not None else "- images/s"
        eta = _duration(self.eta_seconds) if self.eta_seconds is not None else "-"
        lines = [
            f"scan {self.scan_id}  {self.state}  {self.source}",
            f"detectors  {detectors}",
            f"queued {self.queued}  done {self.done}  error {self.errors}  given-up {self.given_up}  "
            f"skipped {self.skipped}",
            f"listed {self.listed}  enqueued {self.enqueued}" + ("" if self.listing_finished else "  (still listing)"),
            f"rate {rate}  eta {eta}",
            "created " + _stamp(self.created_at) + "  started " + _stamp(self.started_at)
            + "  finished " + _stamp(self.finished_at),
        ]
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines)


def read_progress(session: Session, scan_id: int | None, now: datetime | None = None) -> ScanProgress:
    """Progress of one scan (the latest when ``scan_id`` is None); UsageError when it does not exist."""
    scan = scans.get_scan(session, scan_id)
    counts = scans.item_counts(session, scan.id)
    queued, done, errors = counts.get("queued", 0), counts.get("done", 0), counts.get("error", 0)
    given_up = counts.get("given-up", 0)
    state = derive_state(scan, queued, done + errors + given_up, given_up)
    rate = _rate(done + errors, scans.as_utc(scan.started_at or scan.created_at),
                 scans.as_utc(scan.finished_at) or now or datetime.now(timezone.utc))
    return ScanProgress(
        scan_id=scan.id, state=state, source=scan.source, detectors=list(scan.detectors),
        listed=scan.listed, enqueued=scan.enqueued, skipped=scan.skipped,
        queued=queued, done=done, errors=errors, given_up=given_up, images_per_second=rate,
        eta_seconds=_eta(state, queued, rate), listing_finished=scan.listing_finished_at is not None,
        created_at=scans.as_utc(scan.created_at), started_at=scans.as_utc(scan.started_at),
        finished_at=scans.as_utc(scan.finished_at), error=scan.error,
    )


def derive_state(scan: Scan, queued: int, completed: int, given_up: int = 0) -> str:
    if scan.state in ENDED_STATES:
        return scan.state
    if scan.finished_at is not None or (scan.listing_finished_at is not None and queued == 0):
        return "failed" if given_up else "finished"
    return "running" if completed else "queued"


def _rate(completed: int, start: datetime | None, end: datetime) -> float | None:
    if start is None or not completed:
        return None
    elapsed = (end - start).total_seconds()
    return completed / elapsed if elapsed > 0 else None


def _eta(state: str, queued: int, rate: float | None) -> float | None:
    if state in ENDED_STATES or not queued:
        return 0.0 if state == "finished" else None
    return queued / rate if rate else None


def _stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
