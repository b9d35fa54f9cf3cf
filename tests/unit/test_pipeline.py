"""process_batch on the embedded SQLite database and a local folder, with test-only detectors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

import tests.worker_families  # noqa: F401  (registers test-brightness and test-bytes)
from fakescan.catalog import DetectorRef
from fakescan.db import scans
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.models import Result, Scan, ScanItem, StoredObject
from fakescan.settings import load_settings
from fakescan.storage import LocalStore
from tests.services import free_port
from tests.worker_support import CORRUPT_KINDS, corrupt_objects, detector_folder, image_bytes, ref_entry
from worker import pipeline, stream
from worker.pipeline import BatchCrashed, process_batch
from worker.runtime import WorkerRuntime

GOOD = 6
EMPTY = next(key for key, kind in CORRUPT_KINDS.items() if kind == "empty")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    (root / "bad").mkdir(parents=True)
    for index in range(GOOD):
        (root / f"img{index}.png").write_bytes(image_bytes(index))
    for key, data in corrupt_objects().items():
        (root / key).write_bytes(data)
    return root


def make_runtime(**overrides: object) -> WorkerRuntime:
    return WorkerRuntime.build(load_settings(**overrides))


def create_scan(runtime: WorkerRuntime, root: Path, detectors: list[Path | DetectorRef], keys: list[str],
                extra_ids: tuple[str, ...] = ()) -> tuple[int, dict[str, int]]:
    """A scan whose items are ``keys`` (listing finished); ``extra_ids`` are objects outside the scan.
    ``detectors``: detector folders, or refs as the catalog resolves them (provenance)."""
    store = LocalStore(root)
    with runtime.sessions.begin() as session:
        ids = {}
        for key in [*keys, *extra_ids]:
            row = StoredObject(uri=(root / key).as_uri(), store=store.root, key=key, fingerprint=f"test:{key}")
            session.add(row)
            session.flush()
            ids[key] = row.id
        entries = [ref_entry(item) if isinstance(item, Path) else item.as_json() for item in detectors]
        scan_id = scans.create_scan(session, root.as_uri(), entries, {})
        scans.add_items(session, scan_id, 1, [ids[key] for key in keys])
        scans.finish_listing(session, scan_id)
    return scan_id, ids


def results(runtime: WorkerRuntime) -> dict[tuple[str, str], Result]:
    with runtime.sessions() as session:
        rows = session.execute(select(StoredObject.key, Result).join(Result, Result.object_id == StoredObject.id))
        return {(key, result.detector): result for key, result in rows}


def item_states(runtime: WorkerRuntime, scan_id: int) -> dict[int, str]:
    with runtime.sessions() as session:
        rows = session.execute(select(ScanItem.object_id, ScanItem.state).where(ScanItem.scan_id == scan_id))
        return {object_id: state for object_id, state in rows}


def all_keys(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def test_every_object_gets_one_row_per_detector_and_bad_input_an_error_with_its_kind(archive, tmp_path):
    runtime = make_runtime()
    pixels = detector_folder(tmp_path / "detectors", "bright", threshold=0.5)
    metadata = detector_folder(tmp_path / "detectors", "size", family="test-bytes")
    keys = all_keys(archive)
    scan_id, ids = create_scan(runtime, archive, [pixels, metadata], keys)

    report = process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)

    rows = results(runtime)
    assert len(rows) == 2 * len(keys)
    for key in keys:
        bright, size = rows[(key, "bright")], rows[(key, "size")]
        if key == EMPTY:  # decided before any detector runs: the same reason for each
            assert bright.error == size.error == "empty: the object has 0 bytes"
            assert bright.status == size.status == "error"
            continue
        assert size.status == "ok" and size.evidence == {"bytes": (archive / key).stat().st_size}
        if key in CORRUPT_KINDS:
            assert bright.status == "error" and bright.score is None and bright.verdict is None
            assert bright.error.split(":", 1)[0] == CORRUPT_KINDS[key], bright.error
        else:
            assert bright.status == "ok" and 0.0 <= bright.score <= 1.0
            assert bright.verdict == ("fake" if bright.score >= 0.5 else "real")
            assert set(bright.timings) == {"fetch_ms", "decode_ms", "inference_ms"}
            assert bright.fingerprint == f"test:{key}" and bright.scan_id == scan_id
    states = item_states(runtime, scan_id)
    assert {key for key in keys if states[ids[key]] == "error"} == set(CORRUPT_KINDS)
    assert {key for key in keys if states[ids[key]] == "done"} == set(keys) - set(CORRUPT_KINDS)
    bad_rows = len(CORRUPT_KINDS) + 1  # the empty object's row of each detector, the others' pixel rows
    assert (report.objects, report.ok, report.errors) == (len(keys), 2 * len(keys) - bad_rows, bad_rows)
    assert sum(report.error_kinds.values()) == bad_rows and report.error_kinds["empty"] == 2
    assert set(report.stage_seconds) == set(pipeline.STAGES)
    with runtime.sessions() as session:
        assert session.get(Scan, scan_id).state == "finished"


def test_a_metadata_only_detector_never_decodes(archive, tmp_path):
    runtime = make_runtime()
    metadata = detector_folder(tmp_path / "detectors", "size", family="test-bytes")
    scan_id, ids = create_scan(runtime, archive, [metadata], all_keys(archive))
    report = process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    # corrupt pixels do not matter to it; an object with no bytes at all is an error for every detector
    assert report.errors == 1 and report.error_kinds == {"empty": 1} and report.ok == len(ids) - 1
    assert report.stage_seconds["decode"] == 0.0


def test_missing_and_oversized_objects_are_rejected_before_decoding(archive, tmp_path):
    big = image_bytes(0, "BMP")
    (archive / "big.bmp").write_bytes(big)
    runtime = make_runtime(max_object_bytes=len(big) - 1)
    pixels = detector_folder(tmp_path / "detectors", "bright")
    scan_id, ids = create_scan(runtime, archive, [pixels], ["big.bmp", "img0.png", "gone.png"])
    process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    rows = results(runtime)
    assert rows[("big.bmp", "bright")].error.startswith("too-large: ")
    assert str(len(big)) in rows[("big.bmp", "bright")].error
    assert rows[("gone.png", "bright")].error.startswith("not-found: ")
    assert rows[("img0.png", "bright")].status == "ok"


def test_a_redelivered_batch_rewrites_the_same_rows(archive, tmp_path):
    runtime = make_runtime()
    pixels = detector_folder(tmp_path / "detectors", "bright")
    scan_id, ids = create_scan(runtime, archive, [pixels], all_keys(archive))
    process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    first = {key: ((row.object_id, row.detector_version), row.scanned_at) for key, row in results(runtime).items()}
    process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    second = {key: ((row.object_id, row.detector_version), row.scanned_at) for key, row in results(runtime).items()}
    assert first.keys() == second.keys()
    assert all(first[key][0] == second[key][0] and first[key][1] <= second[key][1] for key in first)
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == len(ids)


def test_ids_outside_the_scan_and_deleted_objects_are_skipped(archive, tmp_path):
    runtime = make_runtime()
    pixels = detector_folder(tmp_path / "detectors", "bright")
    scan_id, ids = create_scan(runtime, archive, [pixels], ["img0.png", "img1.png"], extra_ids=("img2.png",))
    with runtime.sessions.begin() as session:
        session.delete(session.get(StoredObject, ids["img1.png"]))
    vanished = max(ids.values()) + 100
    report = process_batch(runtime.settings, runtime.sessions, scan_id, [*ids.values(), vanished], runtime.cache)
    assert set(results(runtime)) == {("img0.png", "bright")}
    assert (report.objects, report.skipped) == (1, len(ids))
    with runtime.sessions() as session:
        assert session.get(Scan, scan_id).state == "finished"


def test_a_batch_of_a_deleted_scan_writes_nothing(archive, tmp_path):
    runtime = make_runtime()
    scan_id, ids = create_scan(runtime, archive, [detector_folder(tmp_path / "d", "bright")], ["img0.png"])
    with runtime.sessions.begin() as session:
        session.delete(session.get(Scan, scan_id))
    report = process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    assert report.objects == 0 and results(runtime) == {}


def test_a_detector_choking_on_one_input_costs_that_row_only(archive, tmp_path, caplog):
    width = Image.open(archive / "img1.png").width
    runtime = make_runtime()
    pixels = detector_folder(tmp_path / "detectors", "bright", raise_on_width=width)
    keys = [f"img{index}.png" for index in range(GOOD)]
    scan_id, ids = create_scan(runtime, archive, [pixels], keys)
    with caplog.at_level(logging.ERROR, logger="worker.pipeline"):
        process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    rows = results(runtime)
    choked = {key for key in keys if Image.open(archive / key).width == width}
    assert 0 < len(choked) < len(keys)
    assert {key for key in keys if rows[(key, "bright")].status == "error"} == choked
    assert all(rows[(key, "bright")].error.startswith("detector-failed: ValueError") for key in choked)
    assert any(record.exc_info for record in caplog.records)  # the traceback is in the log, not lost


def test_a_detector_raising_on_every_input_fails_the_batch_loudly(archive, tmp_path):
    runtime = make_runtime()
    broken = detector_folder(tmp_path / "detectors", "broken", always_raise=True)
    scan_id, ids = create_scan(runtime, archive, [broken], ["img0.png", "img1.png", "img2.png"])
    with pytest.raises(BatchCrashed, match="broken"):
        process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    assert results(runtime) == {}
    assert set(item_states(runtime, scan_id).values()) == {"queued"}


def test_a_bug_in_the_decoder_fails_loudly_instead_of_becoming_error_rows(archive, tmp_path, monkeypatch):
    def buggy_decoder(image: object) -> None:
        raise TypeError("a bug, not bad input")

    monkeypatch.setattr(stream, "finish_decode", buggy_decoder)
    runtime = make_runtime()
    scan_id, ids = create_scan(runtime, archive, [detector_folder(tmp_path / "d", "bright")], ["img0.png"])
    with pytest.raises(BatchCrashed, match="a bug, not bad input"):
        process_batch(runtime.settings, runtime.sessions, scan_id, list(ids.values()), runtime.cache)
    assert results(runtime) == {}


def test_an_unreachable_database_propagates_for_a_retry(tmp_path):
    runtime = make_runtime()
    settings = load_settings(database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    sessions = make_sessionmaker(make_engine(settings))
    with pytest.raises(OperationalError):
        process_batch(settings, sessions, 1, [1, 2], runtime.cache)
