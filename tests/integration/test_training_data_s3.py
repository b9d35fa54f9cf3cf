"""A labelled set under an s3:// prefix reads like the same files in a folder."""

from __future__ import annotations

import boto3
import pytest

from fakescan.settings import load_settings
from tests.model.labelled_images import labelled_files, write_folder
from worker.training.data import open_labelled

pytestmark = pytest.mark.integration


def test_s3_prefix_matches_folder(s3_service, s3_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    files = labelled_files(per_class=3, real_dir="Real", fake_dir="FAKE")
    client = boto3.client("s3", endpoint_url=s3_service.url)
    for key, data in files.items():
        client.put_object(Bucket=s3_bucket, Key=f"train/{key}", Body=data)
    client.put_object(Bucket=s3_bucket, Key="train/README.txt", Body=b"not an image")

    from_s3 = open_labelled(f"s3://{s3_bucket}/train/", load_settings())
    from_folder = open_labelled(str(write_folder(tmp_path, files)), load_settings())

    assert from_s3.counts() == {"real": 3, "fake": 3}
    assert from_s3.fingerprint() == from_folder.fingerprint()
    assert list(from_s3.read_many(from_s3.items)) == [files[item.key] for item in from_s3.items]
