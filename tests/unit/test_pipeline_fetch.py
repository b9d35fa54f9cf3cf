"""Fetch failures sorted into bad input (a result row) and infrastructure faults (a retry)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from fakescan.settings import load_settings
from fakescan.storage import ObjectTooLarge, Store
from worker.fetch import InfrastructureFault, fetch_one
from worker.pipeline import BatchObject

ITEM = BatchObject(1, "s3://bucket/a.jpg", "s3://bucket", "a.jpg", "etag:x:1")


@dataclass
class FailingStore(Store):
    """Stands in for the S3 answers moto cannot be made to give on demand (5xx, archived, no endpoint)."""

    error: Exception
    root: str = "s3://bucket"

    def list(self, filters=None):  # type: ignore[override]
        return iter(())

    def read(self, key: str, max_bytes: int) -> bytes:
        raise self.error

    def check(self) -> None:
        pass


def fetch_with(error: Exception):
    class Cache:
        def store(self, root: str) -> Store:
            return FailingStore(error)

    return fetch_one(ITEM, load_settings(), Cache())  # type: ignore[arg-type]


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize("code,status,kind", [
    ("NoSuchKey", 404, "not-found"), ("404", 404, "not-found"), ("AccessDenied", 403, "access-denied"),
    ("InvalidObjectState", 403, "archived"),
])
def test_a_fact_about_the_object_becomes_an_error_row(code, status, kind):
    fetched = fetch_with(client_error(code, status))
    assert fetched.data is None and fetched.error.startswith(f"{kind}: ")


def test_an_object_over_the_limit_is_too_large():
    fetched = fetch_with(ObjectTooLarge("object is 9 bytes, over the 8-byte limit"))
    assert fetched.error == "too-large: object is 9 bytes, over the 8-byte limit"


@pytest.mark.parametrize("error", [
    client_error("InternalError", 500), client_error("SlowDown", 503),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), OSError(5, "Input/output error"),
])
def test_a_fact_about_the_infrastructure_is_retried(error):
    with pytest.raises(InfrastructureFault):
        fetch_with(error)
