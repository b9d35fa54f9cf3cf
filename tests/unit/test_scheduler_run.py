"""run_scan on SQLite: chunking across batches, items committed before dispatch, failures recorded."""

import threading
from datetime import datetime, timezone
from typing import Iterator

import pytest
from sqlalchemy import func, select

from fakescan.catalog import DetectorRef
from fakescan.db import migrate
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.models import Scan, ScanItem
from fakescan.errors import SourceError
from fakescan.progress import read_progress
from fakescan.settings import load_settings
from fakescan.storage import ListFilter, ObjectInfo, Store
from scheduler.scan import ScanRequest, create_scan, run_scan

NOW = datetime(2024, 5, 1, tzinfo=timezone.utc)


class ListedStore(Store):
    """A store that lists made-up objects, then optionally fails: listing is all the scheduler does."""

    root = "s3://listed"

    def __init__(self, count: int, fail_after: BaseException | None = None) -> None:
        self.count, self.fail_after = count, fail_after

    def list(self, filters: ListFilter = ListFilter()) -> Iterator[ObjectInfo]:
        for index in range(self.count):
            key = f"k{index:03d}.jpg"
            yield ObjectInfo(f"s3://listed/{key}", self.root, key, 10, NOW, etag=f"e{index}")
        if self.fail_after is not None:
            raise self.fail_after

    def read(self, key: str, max_bytes: int) -> bytes:
        raise NotImplementedError("the scheduler never reads objects")

    def check(self) -> None:
        pass


@pytest.fixture
def sessions():
    settings = load_settings()
    migrate.upgrade(settings)
    engine = make_engine(settings)
    yield make_sessionmaker(engine)
    engine.dispose()


def request(**options) -> ScanRequest:
    return ScanRequest("s3://listed", [DetectorRef("tiny", "hf-classifier", "t1", None)], **options)


def test_batches_span_chunks_and_items_exist_before_dispatch(sessions):
    seen = []

    def dispatch(scan_id: int, batch: int, object_ids: list[int]) -> None:
        with sessions() as other:  # a separate connection, as a worker would have
            committed = other.scalar(select(func.count()).select_from(ScanItem)
                                     .where(ScanItem.scan_id == scan_id, ScanItem.object_id.in_(object_ids),
                                            ScanItem.batch == batch))
        seen.append((batch, len(object_ids), committed))

    scan_request = request(batch_size=4, chunk_size=3)
    scan_id = create_scan(sessions, scan_request, "test")
    counts = run_scan(sessions, scan_id, ListedStore(9), scan_request, dispatch)
    assert seen == [(1, 4, 4), (2, 4, 4), (3, 1, 1)]
    assert (counts.listed, counts.enqueued, counts.skipped, counts.batches) == (9, 9, 0, 3)
    with sessions() as session:
        progress = read_progress(session, scan_id)
    assert (progress.state, progress.queued, progress.listing_finished) == ("queued", 9, True)


def test_nothing_to_do_finishes_at_once(sessions):
    scan_request = request()
    scan_id = create_scan(sessions, scan_request, "test")
    run_scan(sessions, scan_id, ListedStore(0), scan_request, lambda *args: None)
    with sessions() as session:
        assert session.get(Scan, scan_id).state == "finished"


@pytest.mark.parametrize(("error", "reason"), [
    (SourceError("bucket vanished"), "SourceError: bucket vanished"),
    (KeyboardInterrupt(), "interrupted"),
])
def test_listing_failure_marks_the_scan_failed(sessions, error, reason):
    scan_request = request(batch_size=2, chunk_size=2)
    scan_id = create_scan(sessions, scan_request, "test")
    with pytest.raises(type(error)):
        run_scan(sessions, scan_id, ListedStore(5, fail_after=error), scan_request, lambda *args: None)
    with sessions() as session:
        progress = read_progress(session, scan_id)
    assert (progress.state, progress.error) == ("failed", reason)
    assert progress.enqueued == 4  # the two full batches before the failure were sent


class ThreadSafeDispatcher:
    """Like the Celery dispatcher: may send from a thread of its own; records what it sent where."""

    sends_from_any_thread = True

    def __init__(self, sessions, fail_at: int | None = None) -> None:
        self.sessions, self.fail_at, self.sent = sessions, fail_at, []

    def __call__(self, scan_id: int, batch: int, object_ids: list[int]) -> None:
        if batch == self.fail_at:
            raise ConnectionError("broker went away")
        with self.sessions() as other:
            committed = other.scalar(select(func.count()).select_from(ScanItem)
                                     .where(ScanItem.scan_id == scan_id, ScanItem.batch == batch))
        self.sent.append((batch, len(object_ids), committed, threading.current_thread().name))


def test_a_thread_safe_dispatcher_sends_ahead_in_order_and_all_before_the_scan_returns(sessions):
    dispatcher = ThreadSafeDispatcher(sessions)
    scan_request = request(batch_size=3, chunk_size=4)
    scan_id = create_scan(sessions, scan_request, "test")
    counts = run_scan(sessions, scan_id, ListedStore(20), scan_request, dispatcher)
    assert [(batch, size, committed) for batch, size, committed, _ in dispatcher.sent] == [
        (number, 3, 3) for number in range(1, 7)] + [(7, 2, 2)]
    assert {thread for *_, thread in dispatcher.sent} == {"enqueue"}
    assert (counts.enqueued, counts.batches) == (20, 7)


def test_a_failed_send_in_the_background_fails_the_scan(sessions):
    dispatcher = ThreadSafeDispatcher(sessions, fail_at=2)
    scan_request = request(batch_size=2, chunk_size=2)
    scan_id = create_scan(sessions, scan_request, "test")
    with pytest.raises(ConnectionError):
        run_scan(sessions, scan_id, ListedStore(12), scan_request, dispatcher)
    with sessions() as session:
        progress = read_progress(session, scan_id)
    assert (progress.state, progress.error) == ("failed", "ConnectionError: broker went away")
    assert [batch for batch, *_ in dispatcher.sent] == [1]  # nothing sent after the failure


def test_an_s3_prefix_keeps_its_trailing_slash_in_the_canonical_source() -> None:
    from fakescan.storage import S3Store
    from scheduler.scan import canonical_source

    assert canonical_source(S3Store("media", "photos/", None)) == "s3://media/photos/"
    assert canonical_source(S3Store("media", "photos", None)) == "s3://media/photos"
    assert canonical_source(S3Store("media", "", None)) == "s3://media"
