"""Local listings, filters and source URLs, as the scheduler uses them."""

import hashlib
import os
from datetime import datetime, timedelta, timezone

import pytest

from fakescan.errors import SourceError, UsageError
from fakescan.settings import load_settings
from fakescan.storage import ListFilter, LocalStore, ObjectTooLarge, S3Store, open_store
from tests.scheduler_support import png_bytes


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "archive"
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "a.png").write_bytes(png_bytes(1))
    (root / "cats" / "B.JPG").write_bytes(png_bytes(2))
    (root / "dogs").mkdir()
    (root / "dogs" / "c.png").write_bytes(png_bytes(3, size=64))
    (root / "readme.txt").write_text("not an image")
    return root


def test_local_listing_keys_uris_and_fingerprints(folder):
    store = LocalStore(folder)
    listed = {info.key: info for info in store.list()}
    assert sorted(listed) == ["cats/B.JPG", "cats/a.png", "dogs/c.png"]
    info = listed["cats/a.png"]
    assert info.uri == (folder / "cats" / "a.png").as_uri()
    assert info.store == folder.as_uri()
    assert info.fingerprint == "sha256:" + hashlib.sha256(png_bytes(1)).hexdigest()


def test_filters_apply_to_local_listing(folder):
    store = LocalStore(folder)
    assert [i.key for i in store.list(ListFilter(extensions=(".png",)))] == ["cats/a.png", "dogs/c.png"]
    assert [i.key for i in store.list(ListFilter(globs=("dogs/*",)))] == ["dogs/c.png"]
    big = len(png_bytes(3, size=64))
    assert [i.key for i in store.list(ListFilter(min_size=big))] == ["dogs/c.png"]
    assert len(list(store.list(ListFilter(extensions=())))) == 4


def test_since_uses_modification_time(folder):
    old = datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()
    os.utime(folder / "cats" / "a.png", (old, old))
    recent = ListFilter(since=datetime.now(timezone.utc) - timedelta(days=1))
    assert "cats/a.png" not in [i.key for i in LocalStore(folder).list(recent)]


def test_bounded_read(folder):
    store = LocalStore(folder)
    assert store.read("cats/a.png", 10_000) == png_bytes(1)
    with pytest.raises(ObjectTooLarge):
        store.read("dogs/c.png", 10)


@pytest.mark.parametrize("source", ["s3:/x", "s3:bucket", "file:/tmp", "s3://", "S3://bucket"])
def test_malformed_urls_are_usage_errors(source):
    with pytest.raises(UsageError):
        open_store(source, load_settings())


def test_source_forms(folder):
    settings = load_settings()
    assert open_store(str(folder), settings).root == folder.as_uri()
    assert open_store(folder.as_uri(), settings).root == folder.as_uri()
    s3 = open_store("s3://bucket/some/prefix", settings)
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")


def test_missing_folder_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        open_store(str(tmp_path / "absent"), load_settings()).check()
