"""S3 transfer faults injected for real by tests.fault_proxy between fakescan and moto.

A body cut off mid-transfer, a stalled connection, resets and 503s are facts about the network:
the read raises (the task retries the batch) or botocore retries the request, and the object
never gets a ``corrupt:`` row for bytes it never fully sent.
"""

from __future__ import annotations

from typing import Any, Iterator

import boto3
import pytest
from botocore.exceptions import BotoCoreError

from fakescan.settings import load_settings
from fakescan.storage import open_store
from tests.fault_proxy import FaultPlan, FaultProxy
from tests.worker_support import image_bytes
from worker.fetch import InfrastructureFault, fetch_one
from worker.pipeline import BatchObject

pytestmark = pytest.mark.integration
KEY = "photos/big.png"


@pytest.fixture
def proxied(s3_service: Any, s3_bucket: str) -> Iterator[tuple[FaultProxy, Any, bytes]]:
    data = image_bytes(7, "PNG") * 50  # a few tens of KB: a body worth cutting
    boto3.client("s3", endpoint_url=s3_service.url).put_object(Bucket=s3_bucket, Key=KEY, Body=data)
    proxy = FaultProxy(s3_service.url).start()
    settings = load_settings(s3_endpoint_url=proxy.url, s3_timeout=1.0)
    try:
        yield proxy, open_store(f"s3://{s3_bucket}", settings), data
    finally:
        proxy.stop()


class OneStore:
    def __init__(self, store: Any) -> None:
        self._store = store

    def store(self, root: str) -> Any:
        return self._store


def fetch(store: Any) -> Any:
    item = BatchObject(1, f"{store.root}/{KEY}", store.root, KEY, "etag:x:1")
    return fetch_one(item, load_settings(), OneStore(store))  # type: ignore[arg-type]


def test_a_truncated_body_is_a_transfer_fault_not_short_bytes(proxied: Any) -> None:
    proxy, store, data = proxied
    proxy.set_plan(FaultPlan({"truncate": 1.0}))
    with pytest.raises(BotoCoreError, match="IncompleteRead|expected"):
        store.read(KEY, 10 * len(data))
    with pytest.raises(InfrastructureFault):  # the worker retries the batch; no row is written
        fetch(store)
    assert proxy.injected["truncate"] == 2


def test_a_stalled_connection_times_out_as_a_transfer_fault(proxied: Any) -> None:
    proxy, store, data = proxied
    proxy.set_plan(FaultPlan({"stall": 1.0}, stall_seconds=30))
    with pytest.raises(InfrastructureFault):
        fetch(store)
    assert proxy.injected["stall"] >= 1


@pytest.mark.parametrize("kind", ["503", "reset", "truncate"])
def test_a_passing_fault_leaves_the_bytes_whole(proxied: Any, kind: str) -> None:
    """A few faults then a clean answer: 503s and resets are retried by botocore, and a read after a
    truncated one returns the object exactly."""
    proxy, store, data = proxied
    proxy.set_plan(FaultPlan({kind: 1.0}, budget=2))
    for _ in range(3):
        try:
            assert store.read(KEY, 10 * len(data)) == data
            break
        except BotoCoreError:
            assert kind == "truncate"
    assert proxy.injected[kind] == 2
