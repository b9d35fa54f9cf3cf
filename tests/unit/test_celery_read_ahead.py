"""Which Celery workers read the next batch ahead, and which batch they find in their reserved requests.

The whole path (a real worker, Redis, PostgreSQL, S3, a kill) is tests/integration/test_worker_read_ahead.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from celery.concurrency import get_implementation
from celery.worker import state

from fakescan.queue import SCAN_BATCH_TASK
from fakescan.settings import load_settings
from worker import celery_app, runtime
from worker.celery_app import pool_name, read_ahead_refusal
from worker.delivery import visibility_needed
from worker.prefetch import reserved_batch


@dataclass(eq=False)  # hashed by identity, as Celery's requests in its WeakSets
class Request:
    name: str
    args: list[Any]
    kwargs: dict[str, Any]


def request(scan_id: int, batch: int, ids: list[int], name: str = SCAN_BATCH_TASK) -> Request:
    return Request(name, [scan_id, ids], {"batch": batch})


@pytest.fixture
def requests(monkeypatch):
    """The worker's reserved and active requests, as plain sets this test fills."""
    reserved: set[Any] = set()
    active: set[Any] = set()
    monkeypatch.setattr(state, "reserved_requests", reserved)
    monkeypatch.setattr(state, "active_requests", active)
    return reserved, active


def test_only_a_threads_worker_of_one_thread_reads_ahead():
    settings = load_settings()
    assert read_ahead_refusal(settings, "threads", 1) is None
    for pool, concurrency in (("prefork", 1), ("solo", 1), ("threads", 2)):
        assert "read-ahead needs --pool threads --concurrency 1" in str(read_ahead_refusal(settings, pool, concurrency))
    assert read_ahead_refusal(load_settings(read_ahead=False), "threads", 1) == "FAKESCAN_READ_AHEAD=false"


def test_read_ahead_is_off_when_a_held_batch_could_outwait_the_visibility_timeout():
    settings = load_settings(visibility_timeout=100, retry_backoff_max=10, batch_budget=45)
    assert visibility_needed(settings) == 55 and visibility_needed(settings, batches_held=2) == 100
    assert "not above the longest retry wait plus two batch budgets (100s)" in str(
        read_ahead_refusal(settings, "threads", 1))
    assert read_ahead_refusal(settings.model_copy(update={"visibility_timeout": 101}), "threads", 1) is None


def test_pool_names_from_celery_classes_and_names():
    assert [pool_name(get_implementation(name)) for name in ("threads", "prefork", "solo")] == [
        "threads", "prefork", "solo"]
    assert pool_name("threads") == "threads"


def test_the_worker_start_sets_the_prefetch_multiplier_only_where_it_reads_ahead(monkeypatch):
    runtime.use_settings(load_settings())
    try:
        for pool, concurrency, multiplier in (("threads", 1, 2), ("prefork", 1, 1), ("threads", 2, 1)):
            worker = SimpleNamespace(pool_cls=get_implementation(pool), concurrency=concurrency, prefetch_multiplier=1)
            celery_app._read_ahead(sender=worker)
            assert (worker.prefetch_multiplier, runtime.reads_ahead()) == (multiplier, multiplier == 2)
    finally:
        runtime.use_read_ahead("this process started no worker")


def test_the_reserved_batch_not_yet_running_is_the_one_read_ahead(requests):
    reserved, active = requests
    running, waiting, later, other = (request(7, 3, [1, 2]), request(7, 4, [3, 4]), request(7, 5, [5]),
                                      request(7, 9, [9], name="another.task"))
    reserved.update({running, waiting, later, other})
    active.add(running)
    assert reserved_batch((7, 3)) == (7, 4, [3, 4]), "the lowest (scan, batch) waiting: the order a scan sends"
    reserved.discard(waiting)
    assert reserved_batch((7, 3)) == (7, 5, [5])


def test_nothing_reserved_or_only_the_running_batch_means_nothing_to_read(requests):
    reserved, active = requests
    assert reserved_batch((1, 1)) is None
    running = request(1, 1, [1])
    reserved.add(running)
    assert reserved_batch((1, 1)) is None, "the running batch itself, before it counts as active"
    reserved.add(Request(SCAN_BATCH_TASK, ["not a scan"], {}))
    assert reserved_batch((1, 1)) is None, "a request of another shape is skipped, not raised on"

