"""Shared fixtures: real service processes (started lazily, once per session) and clean settings."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests import services

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(autouse=True)
def clean_fakescan_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts from no FAKESCAN_* configuration and a private home folder."""
    for name in list(os.environ):
        if name.startswith("FAKESCAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FAKESCAN_HOME", str(tmp_path / "fakescan-home"))
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def redis_service() -> Iterator[services.Service]:
    service = services.start_redis()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[services.Service]:
    service = services.start_postgres()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def s3_service() -> Iterator[services.Service]:
    os.environ.update(AWS_TEST_ENV)
    service = services.start_s3()
    yield service
    service.stop()


@pytest.fixture
def postgres_url(postgres_service: services.Service) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return services.create_database(postgres_service.url, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def s3_bucket(s3_service: services.Service) -> str:
    """A fresh bucket on the session's S3 endpoint; returns its name."""
    import boto3

    name = f"bucket-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_service.url, **_aws()).create_bucket(Bucket=name)
    return name


def _aws() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_TEST_ENV["AWS_DEFAULT_REGION"],
    }
