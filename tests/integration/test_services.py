"""The session's real services answer on 127.0.0.1."""

import boto3
import pytest
import redis
import sqlalchemy

pytestmark = pytest.mark.integration


def test_redis_answers(redis_service):
    assert redis.Redis.from_url(redis_service.url).ping() is True


def test_postgres_runs_queries(postgres_url):
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("select 40 + 2")).scalar() == 42
    engine.dispose()


def test_s3_endpoint_stores_objects(s3_service, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_service.url)
    client.put_object(Bucket=s3_bucket, Key="a/b.jpg", Body=b"xyz")
    assert client.get_object(Bucket=s3_bucket, Key="a/b.jpg")["Body"].read() == b"xyz"
