"""A labelled set under an s3:// prefix reads like the same files in a folder."""

from __future__ import annotations

import boto3
import pytest

from fakescan.settings import load_settings
from tests.model.labelled_images import labelled_files, write_folder
from worker.lab.data import open_labelled

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


def test_fit_ensemble_tunes_on_the_same_s3_prefix_without_its_fit_images(s3_service, s3_bucket, monkeypatch,
                                                                          tmp_path, capsys):
    """Object keys carry the prefix, labelled keys do not: the fit sample must still be left out."""
    import io
    import json

    from PIL import Image

    from fakescan.cli import main
    from tests.model.ensemble_images import planted_anomalies, smooth_scenes

    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    client = boto3.client("s3", endpoint_url=s3_service.url)
    for folder, images in (("REAL", smooth_scenes(60, seed=7)), ("FAKE", planted_anomalies(20, seed=8))):
        for i, image in enumerate(images):
            body = io.BytesIO()
            Image.fromarray(image).save(body, "PNG")
            client.put_object(Bucket=s3_bucket, Key=f"archive/{folder}/{i}.png", Body=body.getvalue())
    source = f"s3://{s3_bucket}/archive/"
    code = main(["fit-ensemble", source, "--class-dir", "REAL", "--limit", "45", "--members",
                 "colour-mahalanobis,patch-lof", "--tune-weights", source, "--out", str(tmp_path / "detector"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "detector" / "fakescan.json").read_text())
    tuning = manifest["ensemble"]["tuning"]
    assert (manifest["training"]["n_images"], tuning["n_real"], tuning["n_fake"]) == (45, 15, 20)


def test_a_csv_of_s3_rows_reads_through_one_client(s3_service, s3_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", s3_service.url)
    files = labelled_files(per_class=6)
    client = boto3.client("s3", endpoint_url=s3_service.url)
    for key, data in files.items():
        client.put_object(Bucket=s3_bucket, Key=f"rows/{key}", Body=data)
    rows = ["path,label"] + [f"s3://{s3_bucket}/rows/{key},{key.split('/')[0].lower()}" for key in sorted(files)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    made = []
    real_client = boto3.client

    def counting_client(service, *args, **kwargs):
        made.append(service)
        return real_client(service, *args, **kwargs)

    monkeypatch.setattr(boto3, "client", counting_client)
    labelled = open_labelled(str(tmp_path / "labels.csv"), load_settings())
    read = list(labelled.read_many(labelled.items)) + [labelled.read(labelled.items[0])]
    subset = labelled.limited(4, seed=1)
    read_again = list(subset.read_many(subset.items))

    assert made == ["s3"]  # one client for the set and its subsets, not one per row
    assert read[:-1] == [files[item.key.split("/rows/", 1)[1]] for item in labelled.items]
    assert read_again == [files[item.key.split("/rows/", 1)[1]] for item in subset.items]
    assert labelled.counts() == {"real": 6, "fake": 6}
