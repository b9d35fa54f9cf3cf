"""The feature probe benchmark (tests/benchmarks/bench_feature_probe.py) end to end on a small folder."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tests.benchmarks.bench_feature_probe import FEATURES, measure
from tests.model.ensemble_images import planted_anomalies, smooth_scenes


def test_probe_fits_on_real_only_and_scores_both_ways(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for folder, images in (("REAL", smooth_scenes(80, seed=5)), ("FAKE", planted_anomalies(30, seed=6))):
        (data / folder).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(data / folder / f"{i}.png")
    result = measure(str(data), str(data), class_dir="REAL", fit_limit=50, limit=60, seed=0)
    assert (result["n_fit"], result["n_real"], result["n_fake"]) == (50, 30, 30)
    assert list(result["features"]) == [*FEATURES, "all"]
    together = result["features"]["all"]
    assert together["dimensions"] == sum(result["features"][name]["dimensions"] for name in FEATURES)
    # the planted grid and swapped colours lie outside every real image: both scores find them
    assert together["one_class_auc"] > 0.9 and together["supervised_probe_auc"] > 0.9
