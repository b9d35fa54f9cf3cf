"""Ranged reads against a real S3 endpoint: the head of an object and its whole size, in one GET."""

from __future__ import annotations

import boto3
import pytest

from fakescan.settings import load_settings
from fakescan.storage import ObjectTooLarge, open_store

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_service, s3_bucket, monkeypatch):
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    client = boto3.client("s3", endpoint_url=s3_service.url)
    client.put_object(Bucket=s3_bucket, Key="big.jpg", Body=bytes(range(256)) * 4000)
    client.put_object(Bucket=s3_bucket, Key="small.jpg", Body=b"tiny")
    client.put_object(Bucket=s3_bucket, Key="empty.jpg", Body=b"")
    return open_store(f"s3://{s3_bucket}", load_settings())


def test_a_ranged_get_returns_the_head_and_the_whole_size(bucket):
    head, size = bucket.read_head("big.jpg", 1000, 10_000_000)
    assert head == (bytes(range(256)) * 4)[:1000] and size == 256 * 4000
    assert bucket.read_head("small.jpg", 1000, 10_000_000) == (b"tiny", 4)
    assert bucket.read_head("empty.jpg", 1000, 10_000_000) == (b"", 0)  # no satisfiable range: read whole


def test_the_size_limit_applies_to_the_whole_object_not_the_head(bucket):
    with pytest.raises(ObjectTooLarge, match="1024000 bytes"):
        bucket.read_head("big.jpg", 1000, 100_000)
