"""The reconciler's rule on SQLite: a batch is sent again only when it was missing from the broker in
two looks at least CONFIRM_SECONDS apart and its items waited the grace period; complete scans end.

The broker's view is passed in (the Redis side is tests/integration/test_reconciler.py)."""

from __future__ import annotations

from sqlalchemy import select

from fakescan.db.models import ScanItem
from fakescan.settings import load_settings
from scheduler.reconcile import CONFIRM_SECONDS, Reconciler
from scheduler.scan import create_scan, run_scan
from tests.unit.test_scheduler_run import ListedStore, request, sessions  # noqa: F401  (fixture)


def enqueued_scan(sessions) -> int:  # noqa: F811
    scan_id = create_scan(sessions, request(batch_size=4), "broker")
    run_scan(sessions, scan_id, ListedStore(12), request(batch_size=4), lambda *batch: None)
    return scan_id  # three batches of four, all queued


def test_only_batches_missing_twice_past_the_grace_are_sent_again(sessions) -> None:  # noqa: F811
    scan_id = enqueued_scan(sessions)
    sent: list[tuple[int, int, list[int]]] = []
    held = {(scan_id, 1)}  # batch 1 waits in the broker; 2 and 3 were lost
    reconciler = Reconciler(sessions, load_settings(), lambda *batch: sent.append(batch), grace=0,
                            broker_view=lambda _settings: held)

    first = reconciler.run_pass(now=100.0)
    assert (first.missing, first.requeued, sent) == (2, [], [])  # seen missing once: not yet
    second = reconciler.run_pass(now=100.0 + CONFIRM_SECONDS)
    assert [(scan, batch, count) for scan, batch, count in second.requeued] == [(scan_id, 2, 4), (scan_id, 3, 4)]
    assert [(batch, len(ids)) for _, batch, ids in sent] == [(2, 4), (3, 4)]

    waiting = Reconciler(sessions, load_settings(), lambda *batch: sent.append(batch), grace=3600,
                         broker_view=lambda _settings: held)
    waiting.run_pass(now=200.0)
    assert waiting.run_pass(now=300.0).requeued == []  # re-enqueued just now: inside the grace period


def test_a_batch_back_in_the_broker_is_forgotten(sessions) -> None:  # noqa: F811
    scan_id = enqueued_scan(sessions)
    view = {(scan_id, 1), (scan_id, 2)}
    reconciler = Reconciler(sessions, load_settings(), lambda *batch: None, grace=0, broker_view=lambda _s: view)
    reconciler.run_pass(now=0.0)  # batch 3 missing
    view.add((scan_id, 3))  # a worker had popped it, and now holds it
    reconciler.run_pass(now=1.0)
    view.discard((scan_id, 3))
    assert reconciler.run_pass(now=1.0 + CONFIRM_SECONDS / 2).requeued == []  # the clock started again


def test_a_scan_whose_items_are_all_in_ends(sessions) -> None:  # noqa: F811
    scan_id = enqueued_scan(sessions)
    with sessions.begin() as session:
        session.execute(ScanItem.__table__.update().where(ScanItem.scan_id == scan_id).values(state="done"))
    report = Reconciler(sessions, load_settings(), lambda *batch: None, broker_view=lambda _s: set()).run_pass()
    assert report.ended == [scan_id]
    with sessions() as session:
        assert set(session.scalars(select(ScanItem.state).where(ScanItem.scan_id == scan_id))) == {"done"}
