"""Next-batch read-ahead of the embedded dispatcher: ordering, one batch ahead at most, failures stay
with their batch (SQLite, a local folder, the test-only brightness detector)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select

import tests.worker_families  # noqa: F401  (registers test-brightness)
from fakescan.db import scans
from fakescan.db.models import Result, ScanItem, StoredObject
from fakescan.settings import load_settings
from fakescan.storage import LocalStore
from scheduler.scan import ScanRequest, create_scan, run_scan
from tests.unit.test_scheduler_run import ListedStore, request
from tests.worker_support import detector_folder, image_bytes, ref_entry
from worker import fetch, pipeline, prefetch
from worker.fetch import InfrastructureFault
from worker.inprocess import InProcessDispatcher

BATCH = 4
FETCH_ONE = fetch.fetch_one


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    root.mkdir()
    for index in range(3 * BATCH):
        (root / f"img{index:02d}.png").write_bytes(image_bytes(index))
    return root


@pytest.fixture
def dispatcher():
    dispatcher = InProcessDispatcher(load_settings(inference_chunk=2))
    yield dispatcher
    dispatcher.close()


class FetchLog:
    """Every fetch_one call (key, the batch running then), optionally a fault for some keys."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, faulty: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, int]] = []
        self.running = 0
        self.changed = threading.Condition()

        def recorded(item, settings, cache, head_bytes=None):
            with self.changed:
                self.calls.append((item.key, self.running))
                self.changed.notify_all()
            if item.key in faulty:
                raise InfrastructureFault(f"object storage answered 503 for {item.uri}")
            return FETCH_ONE(item, settings, cache, head_bytes)

        monkeypatch.setattr(fetch, "fetch_one", recorded)
        monkeypatch.setattr(prefetch, "fetch_one", recorded)

    def keys(self) -> list[str]:
        return [key for key, _ in self.calls]

    def wait_for(self, keys: set[str], timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: keys <= set(self.keys()), timeout)


def make_scan(dispatcher: InProcessDispatcher, root: Path, detector: Path) -> tuple[int, list[list[int]], dict]:
    """A scan of every file of ``root`` in batches of BATCH (items committed, as the scheduler does)."""
    store = LocalStore(root)
    with dispatcher.runtime.sessions.begin() as session:
        ids = {}
        for path in sorted(root.iterdir()):
            row = StoredObject(uri=path.as_uri(), store=store.root, key=path.name, fingerprint=f"test:{path.name}")
            session.add(row)
            session.flush()
            ids[row.id] = path.name
        scan_id = scans.create_scan(session, root.as_uri(), [ref_entry(detector)], {})
        ordered = sorted(ids)
        batches = [ordered[start:start + BATCH] for start in range(0, len(ordered), BATCH)]
        scans.add_batches(session, scan_id, 1, batches)
        scans.finish_listing(session, scan_id)
    return scan_id, batches, ids


def rows_by_key(dispatcher: InProcessDispatcher) -> dict[str, Result]:
    with dispatcher.runtime.sessions() as session:
        rows = session.execute(select(StoredObject.key, Result).join(Result, Result.object_id == StoredObject.id))
        return {key: result for key, result in rows}


def states(dispatcher: InProcessDispatcher, scan_id: int, batch: int) -> set[str]:
    with dispatcher.runtime.sessions() as session:
        return set(session.scalars(select(ScanItem.state).where(ScanItem.scan_id == scan_id, ScanItem.batch == batch)))


def test_the_next_batch_is_fetched_after_this_one_decoded_and_before_it_is_written(dispatcher, folder, tmp_path,
                                                                                   monkeypatch):
    log = FetchLog(monkeypatch)
    scan_id, batches, names = make_scan(dispatcher, folder, detector_folder(tmp_path, "bright"))
    second = {names[i] for i in batches[1]}
    real_write = pipeline.write_batch
    seen_before_write: list[bool] = []

    def write_batch(session, scan, rows):
        if not seen_before_write:  # batch 1's write waits until batch 2's bytes were asked for
            seen_before_write.append(log.wait_for(second))
        return real_write(session, scan, rows)

    monkeypatch.setattr(pipeline, "write_batch", write_batch)
    dispatcher.expect(scan_id, 2, batches[1])
    log.running = 1
    dispatcher(scan_id, 1, batches[0])
    assert seen_before_write == [True]
    first_fetches = [key for key, _ in log.calls if key not in second]
    assert log.keys()[:BATCH] == first_fetches  # the whole of batch 1 before any of batch 2

    log.running = 2
    dispatcher(scan_id, 2, batches[1])
    assert sorted(log.keys()) == sorted(names[i] for batch in batches[:2] for i in batch)  # each read once
    assert all(running == 1 for key, running in log.calls if key in second)  # all of them ahead
    rows = rows_by_key(dispatcher)
    assert sorted(rows) == sorted(names[i] for batch in batches[:2] for i in batch)
    assert all(row.status == "ok" for row in rows.values())
    assert states(dispatcher, scan_id, 1) == states(dispatcher, scan_id, 2) == {"done"}


def test_read_ahead_is_one_batch_at_most_and_only_for_the_batch_that_runs_next(dispatcher, folder, tmp_path,
                                                                              monkeypatch):
    log = FetchLog(monkeypatch)
    scan_id, batches, names = make_scan(dispatcher, folder, detector_folder(tmp_path, "bright"))
    for number, batch in enumerate(batches, start=1):
        if number < len(batches):
            dispatcher.expect(scan_id, number + 1, batches[number])
        log.running = number
        dispatcher(scan_id, number, batch)
    batch_of = {names[i]: number for number, batch in enumerate(batches, start=1) for i in batch}
    assert sorted(log.keys()) == sorted(batch_of)  # nothing fetched twice
    assert {batch_of[key] - running for key, running in log.calls} == {0, 1}  # its own batch, or the next

    reader = dispatcher.read_ahead
    assert reader.start(scan_id, 2, batches[1]) and reader.start(scan_id, 3, batches[2])
    assert reader.take(scan_id, 2, batches[1]) is None  # the second start dropped the first
    assert reader.start(scan_id, 3, batches[2])
    assert reader.take(scan_id, 3, batches[2][:-1]) is None  # other ids: not that batch
    assert reader.start(scan_id, 3, batches[2])
    assert reader.take(scan_id, 3, batches[2]) is not None and reader.pending is None


def test_a_fault_in_the_prefetched_batch_fails_that_batch_not_the_running_one(dispatcher, folder, tmp_path,
                                                                             monkeypatch):
    scan_id, batches, names = make_scan(dispatcher, folder, detector_folder(tmp_path, "bright"))
    faulty = names[batches[1][0]]
    (folder / names[batches[1][1]]).unlink()  # bad input in the prefetched batch: its own error row
    log = FetchLog(monkeypatch, faulty=frozenset({faulty}))
    dispatcher.expect(scan_id, 2, batches[1])
    dispatcher(scan_id, 1, batches[0])
    assert log.wait_for({names[i] for i in batches[1]})
    assert states(dispatcher, scan_id, 1) == {"done"}

    with pytest.raises(InfrastructureFault, match="503"):
        dispatcher(scan_id, 2, batches[1])
    assert states(dispatcher, scan_id, 2) == {"queued"}  # nothing written: the task would retry it
    assert log.keys().count(faulty) == 1

    log_again = FetchLog(monkeypatch)  # the retry: the fault is gone, the missing file is still missing
    dispatcher(scan_id, 2, batches[1])
    rows = rows_by_key(dispatcher)
    assert rows[names[batches[1][1]]].error.startswith("not-found:")
    assert sorted(log_again.keys()) == sorted(names[i] for i in batches[1])  # fetched anew, not from before


def test_a_database_error_while_looking_ahead_only_means_no_read_ahead(dispatcher, folder, tmp_path, monkeypatch):
    scan_id, batches, _ = make_scan(dispatcher, folder, detector_folder(tmp_path, "bright"))

    def broken(*args):
        raise OSError("database is locked")

    monkeypatch.setattr(prefetch, "load_batch", broken)
    dispatcher.expect(scan_id, 2, batches[1])
    dispatcher(scan_id, 1, batches[0])
    assert states(dispatcher, scan_id, 1) == {"done"} and dispatcher.read_ahead.pending is None


def test_the_scheduler_announces_the_next_batch_of_a_chunk_before_dispatching(dispatcher):
    sessions = dispatcher.runtime.sessions
    calls: list[tuple[str, int, int]] = []

    class Recording:
        def expect(self, scan_id: int, batch: int, object_ids: list[int]) -> None:
            calls.append(("expect", batch, len(object_ids)))

        def __call__(self, scan_id: int, batch: int, object_ids: list[int]) -> None:
            calls.append(("run", batch, len(object_ids)))

    scan_request: ScanRequest = request(batch_size=4, chunk_size=10)
    scan_id = create_scan(sessions, scan_request, "test")
    run_scan(sessions, scan_id, ListedStore(14), scan_request, Recording())
    # the first chunk of 10 sends batches 1 and 2 together; 3 and 4 are sent alone (nothing to announce)
    assert calls[:3] == [("expect", 2, 4), ("run", 1, 4), ("run", 2, 4)]
    assert [call for call in calls if call[0] == "run"] == [("run", 1, 4), ("run", 2, 4), ("run", 3, 4),
                                                            ("run", 4, 2)]
