"""The review page's overlay: Grad-CAM of a real (tiny, trained on the spot) compact CNN, computed by
``fakescan explain`` in a child process when the API is asked, then served from the cache."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fakescan.api.app import create_app
from fakescan.cli import main
from fakescan.settings import load_settings
from tests.model.labelled_images import labelled_files, write_folder
from worker.lab.config import TrainConfig
from worker.lab.train import train

pytestmark = pytest.mark.model


def test_overlay_is_computed_in_a_child_process_and_cached(tmp_path):
    training = write_folder(tmp_path / "train", labelled_files(per_class=8, seed=0))
    config = TrainConfig(epochs=1, batch_size=8, lr=5e-3, val_fraction=0.0, threads=2)
    train("compact-cnn", str(training), tmp_path / "cnn", config, load_settings(), progress=False)
    archive = write_folder(tmp_path / "archive", labelled_files(per_class=2, seed=50))
    assert main(["scan", str(archive), "--detector", str(tmp_path / "cnn")]) == 0
    app = create_app(load_settings())
    with TestClient(app) as client:
        item = client.get("/api/v1/objects", params={"limit": 1}).json()["items"][0]
        detector = next(d["detector"] for d in item["detectors"] if d["detector"] != "provenance")
        first = client.get(f"/api/v1/objects/{item['object_id']}/overlays/{detector}")
        assert first.status_code == 200, first.text
        overlays = first.json()["overlays"]
        assert set(overlays) == {"gradcam-real", "gradcam-fake"}
        png = client.get(overlays["gradcam-fake"])
        assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content)).size[0] > 0
        cached = load_settings().home / "overlays"
        assert len(list(cached.rglob("*.png"))) == 2
        assert client.get(f"/api/v1/objects/{item['object_id']}/overlays/{detector}").json() == first.json()
        none = client.get(f"/api/v1/objects/{item['object_id']}/overlays/provenance")
        assert none.status_code == 404 and "no explanation maps" in none.json()["detail"]
        assert client.get(f"/api/v1/objects/{item['object_id']}/overlays/nosuch").status_code == 404
    app.state.engine.dispose()
