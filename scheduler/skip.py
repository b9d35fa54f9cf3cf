"""Which listed objects still need scanning: the rule that makes re-runs and nightly scans cheap.

An object is skipped when, for every detector of the scan, a result exists for the same detector
name and version computed on the object's current content fingerprint (S3 ETag + size, or the
sha256 of a local file). New content, a new detector version or ``--rescan`` enqueues it again.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from fakescan.db.objects import PriorResult

__all__ = ["PriorResult", "objects_to_scan"]


def objects_to_scan(
    listed: Mapping[int, str],
    prior: Iterable[PriorResult],
    detectors: Iterable[tuple[str, str]],
    *,
    rescan: bool = False,
    retry_errors: bool = False,
) -> list[int]:
    """Ids of ``listed`` (object id -> current fingerprint) that need work, in listing order."""
    if rescan:
        return list(listed)
    required = set(detectors)
    covered: dict[int, set[tuple[str, str]]] = {}
    for row in prior:
        key = (row.detector, row.detector_version)
        if key not in required or listed.get(row.object_id) != row.fingerprint:
            continue
        if retry_errors and row.status != "ok":
            continue
        covered.setdefault(row.object_id, set()).add(key)
    return [object_id for object_id in listed if covered.get(object_id, set()) != required]
