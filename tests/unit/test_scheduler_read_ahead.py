"""The listing is read ahead in a thread: same items, same order, its errors raised where it is consumed."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

from scheduler.scan import read_ahead


def test_items_arrive_in_order_from_another_thread():
    threads = set()

    def produce() -> Iterator[int]:
        for number in range(50):
            threads.add(threading.get_ident())
            yield number

    assert list(read_ahead(produce(), depth=2)) == list(range(50))
    assert threads and threading.get_ident() not in threads


def test_a_listing_error_is_raised_in_the_consumer_after_the_items_before_it():
    def produce() -> Iterator[int]:
        yield 1
        raise PermissionError("bucket went private")

    seen = []
    with pytest.raises(PermissionError, match="went private"):
        for item in read_ahead(produce()):
            seen.append(item)
    assert seen == [1]


def test_a_consumer_that_stops_early_stops_the_producer():
    produced = []
    finished = threading.Event()

    def produce() -> Iterator[int]:
        try:
            for number in range(10_000):
                produced.append(number)
                yield number
        finally:
            finished.set()

    for item in read_ahead(produce(), depth=1):
        if item == 3:
            break
    assert finished.wait(timeout=5) and len(produced) < 10
