"""``fakescan evaluate provenance``: files judged by their metadata, undecoded; no metadata is an abstention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakescan.cli import main
from tests.provenance_support import A1111_PARAMETERS, camera_exif, jpeg, pixels, png_with_text


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    files = {
        "fake/sd-1.png": png_with_text({"parameters": A1111_PARAMETERS}),
        "fake/sd-2.png": png_with_text({"parameters": A1111_PARAMETERS.replace("1234", "99")}),
        "fake/sd-3.png": png_with_text({"parameters": A1111_PARAMETERS.replace("1234", "7")}),
        "fake/stripped.jpg": jpeg(image=pixels(seed=2)),  # a generated image whose metadata was removed
        "real/canon-1.jpg": jpeg(camera_exif()),
        "real/canon-2.jpg": jpeg(camera_exif(), quality=80),
        "real/relabelled.png": png_with_text({"parameters": A1111_PARAMETERS.replace("1234", "5")}),
        "real/plain.jpg": jpeg(image=pixels(seed=3)),
        "real/broken.jpg": b"this is not an image at all",
    }
    for key, data in files.items():
        (tmp_path / "data" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / key).write_bytes(data)
    return tmp_path / "data"


def test_evaluate_provenance_scores_the_files_with_evidence_and_counts_the_rest(labelled, capsys):
    assert main(["evaluate", "provenance", str(labelled), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["detector"], result["family"]) == ("provenance", "provenance")
    # scored: 3 generator PNGs under fake/, 2 camera JPEGs and 1 generator PNG under real/
    assert (result["n"], result["n_fake"], result["n_real"]) == (6, 3, 3)
    assert (result["abstained"], result["errors"]) == (2, 1)  # no metadata either way; not an image
    assert result["coverage"] == pytest.approx(6 / 8)
    assert result["accuracy"] == pytest.approx(5 / 6)
    assert result["false_positive_rate"] == pytest.approx(1 / 3)
    assert result["recall"] == 1.0


def test_evaluate_provenance_text_summary_says_what_the_metrics_cover(labelled, capsys):
    assert main(["evaluate", "provenance", str(labelled), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "scored 6, no evidence either way 2 (coverage 75.0%), unreadable 1" in out


def test_perturbations_are_refused_for_a_detector_that_reads_no_pixels(labelled, capsys):
    assert main(["evaluate", "provenance", str(labelled), "--perturb", "jpeg:75", "--no-progress"]) == 2
    assert "judges the file's metadata, not its pixels" in capsys.readouterr().err
