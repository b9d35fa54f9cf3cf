"""The one-class ensemble on generated images: every member, the vote, saving and refusing."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from fakescan.catalog import DuplicateName, UnknownDetector, ref_from_folder
from fakescan.errors import DataError, DetectorError
from fakescan.settings import load_settings
from tests.model.ensemble_images import planted_anomalies, probe_set, smooth_scenes
from worker.detectors import InputNeed, load_detector
from worker.detectors.ensemble import member_names, parse_members
from worker.detectors.ensemble.detector import MEMBERS_DIR, OneClassEnsemble
from worker.detectors.ensemble.members import Member, register_member
from worker.lab.ensemble.fitting import FitOptions, fit_ensemble

pytestmark = pytest.mark.model

QUICK_EPOCHS = {name: {"epochs": 4} for name in ("frequency-vae", "edge-flow", "deep-svdd")}


@pytest.fixture(scope="module")
def fitted() -> OneClassEnsemble:
    members = member_names()
    options = FitOptions(members=members, weights={name: 1.0 for name in members}, progress=False,
                         member_config=QUICK_EPOCHS)
    detector, _ = fit_ensemble(smooth_scenes(200, seed=0), options)
    return detector


@pytest.fixture(scope="module")
def probe() -> tuple[np.ndarray, np.ndarray]:
    return probe_set()


@pytest.fixture(scope="module")
def saved(fitted: OneClassEnsemble, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ensemble")
    fitted.save(folder)
    return folder


def test_nine_members_in_model_card_order() -> None:
    assert member_names() == ["frequency-vae", "edge-flow", "deep-svdd", "texture-ocsvm", "isolation-forest",
                              "patch-lof", "colour-gmm", "colour-mahalanobis", "edge-colour-stats"]


@pytest.mark.parametrize("name", member_names())
def test_member_scores_planted_anomalies_above_held_out_normals(fitted: OneClassEnsemble, probe, name: str) -> None:
    images, labels = probe
    from worker.detectors.ensemble.features import FeatureBank

    raw = fitted.members[name].score(FeatureBank(images))
    assert raw.shape == (len(images),)
    assert roc_auc_score(labels, raw) > 0.9
    assert np.median(raw[labels == 1]) > np.quantile(raw[labels == 0], 0.9)


def test_ensemble_flags_anomalies_and_passes_normals(fitted: OneClassEnsemble, probe) -> None:
    images, labels = probe
    scores, parts = fitted.score_array(images)
    assert set(parts) == set(member_names())
    assert ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc_score(labels, scores) > 0.95
    assert (scores[labels == 1] >= 0.5).mean() > 0.9
    assert (scores[labels == 0] >= 0.5).mean() < 0.25  # threshold at the 95th percentile of held-out normals


def test_predict_reports_each_member(fitted: OneClassEnsemble, probe) -> None:
    images, _ = probe
    predictions = fitted.predict([Image.fromarray(images[0]), Image.fromarray(images[-1]).resize((64, 48))])
    assert [p.error for p in predictions] == [None, None]
    assert predictions[1].score > predictions[0].score
    assert set(predictions[1].parts) == set(member_names())
    assert all(0 <= value <= 1 for value in predictions[1].parts.values())


def test_saved_ensemble_reloads_with_identical_scores(fitted: OneClassEnsemble, saved: Path, probe) -> None:
    images, _ = probe
    ref = ref_from_folder(saved)
    assert ref.family == "one-class-ensemble" and ref.version == fitted.version and ref.version.startswith("oce-")
    manifest = ref.manifest
    assert [entry["name"] for entry in manifest["ensemble"]["members"]] == member_names()
    assert all(entry["config"]["features"] == entry["features"] for entry in manifest["ensemble"]["members"])
    assert sorted(p.name for p in (saved / MEMBERS_DIR).iterdir()) == sorted(
        name for entry in manifest["ensemble"]["members"] for name in entry["files"])
    umask = os.umask(0o022)
    os.umask(umask)
    weights = sorted((saved / MEMBERS_DIR).glob("*.safetensors"))
    assert weights and {stat.S_IMODE(path.stat().st_mode) for path in weights} == {0o666 & ~umask}
    reloaded = load_detector(ref, load_settings())
    assert reloaded.decode_need() == InputNeed("size", reloaded.size)  # decoded to its input size, no more
    before, before_parts = fitted.score_array(images)
    after, after_parts = reloaded.score_array(images)
    np.testing.assert_array_equal(before, after)
    for name in before_parts:
        np.testing.assert_array_equal(before_parts[name], after_parts[name])


def test_same_data_and_seed_give_the_same_version(tmp_path: Path) -> None:
    """skops names its files after object ids, so the version hashes what the files hold."""
    members = ["texture-ocsvm", "isolation-forest", "patch-lof", "colour-mahalanobis"]
    images = smooth_scenes(120, seed=1)
    fitted = []  # kept alive, so no two runs' objects can share an id()
    for run, seed in enumerate((0, 0, 1)):
        options = FitOptions(members=members, weights={name: 1.0 for name in members}, progress=False, seed=seed)
        detector, _ = fit_ensemble(images, options)
        detector.save(tmp_path / str(run))
        fitted.append(detector)
    versions = [detector.version for detector in fitted]
    first, second = (tmp_path / str(run) / MEMBERS_DIR / "patch-lof.skops" for run in (0, 1))
    assert first.read_bytes() != second.read_bytes()  # what skops writes differs from run to run ...
    assert versions[0] == versions[1] != versions[2]  # ... the version does not, unless the fit does


def _copy(saved: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(saved, tmp_path / "copy"))


def test_tampered_skops_file_is_refused(saved: Path, tmp_path: Path) -> None:
    import os

    import skops.io as sio
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    folder = _copy(saved, tmp_path)
    sio.dump(make_pipeline(FunctionTransformer(os.system)), folder / MEMBERS_DIR / "texture-ocsvm.skops")
    with pytest.raises(DetectorError, match=r"refusing texture-ocsvm\.skops.*system"):
        load_detector(ref_from_folder(folder), load_settings())


def test_pickle_in_place_of_skops_is_refused(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    (folder / MEMBERS_DIR / "patch-lof.skops").write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(DetectorError, match=r"patch-lof\.skops: not a readable skops file"):
        load_detector(ref_from_folder(folder), load_settings())


def test_stouffer_vote_adds_up_members_that_agree() -> None:
    from worker.detectors.ensemble.calibration import weighted_vote

    weights = {"a": 1.0, "b": 1.0, "c": 1.0, "off": 0.0}
    agreeing = {name: np.array([0.9, 0.5]) for name in weights}
    stouffer, fisher = weighted_vote(agreeing, weights), weighted_vote(agreeing, weights, "fisher")
    # three members each at their own 90th percentile: Stouffer's z adds up, Fisher's mean stays at 0.9
    np.testing.assert_allclose(stouffer, [0.98678, 0.5], atol=1e-5)
    np.testing.assert_allclose(fisher, [0.9, 0.5], atol=1e-9)
    # a zero weight is no vote at all
    muted = dict(agreeing, off=np.array([1e-9, 1e-9]))
    np.testing.assert_allclose(weighted_vote(muted, weights), stouffer)


def test_saved_manifest_names_its_vote_and_older_ones_keep_fishers(saved: Path, tmp_path: Path, probe) -> None:
    import json

    from worker.detectors.ensemble.calibration import fisher_vote, to_detector_score

    images, _ = probe
    folder = _copy(saved, tmp_path)
    path = folder / "fakescan.json"
    manifest = json.loads(path.read_text())
    assert manifest["ensemble"]["vote"] == "stouffer"
    manifest["ensemble"]["vote"] = "1 - weighted geometric mean of (1 - per-member empirical-CDF score)"
    path.write_text(json.dumps(manifest))
    older = load_detector(ref_from_folder(folder), load_settings())
    scores, parts = older.score_array(images)
    assert older.vote == "fisher"
    np.testing.assert_array_equal(scores, to_detector_score(fisher_vote(parts, older.weights), older.vote_threshold))
    manifest["ensemble"]["vote"] = "majority"
    path.write_text(json.dumps(manifest))
    with pytest.raises(DetectorError, match="unknown ensemble vote 'majority'"):
        load_detector(ref_from_folder(folder), load_settings())


def test_tuning_keeps_the_weighting_with_the_best_validation_auc() -> None:
    from worker.lab.ensemble.tuning import tune_weights

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200), np.ones(200)]
    parts = {"sharp": np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.15, 400), 0, 1),
             "noise": rng.uniform(0, 1, 400),
             "backwards": np.clip(0.5 - 0.2 * (labels - 0.5) + rng.normal(0, 0.15, 400), 0, 1)}
    weights, record = tune_weights(parts, labels, "stouffer")
    assert record["member_auc"]["sharp"] > 0.9 and record["member_auc"]["backwards"] < 0.5
    assert set(record["candidate_auc"]) == {"equal", "(auc-0.5)^1", "(auc-0.5)^2", "(auc-0.5)^3", "top-1", "top-2"}
    assert record["candidate_auc"][record["chosen"]] == max(record["candidate_auc"].values())
    assert record["candidate_auc"]["equal"] < record["candidate_auc"][record["chosen"]]
    assert weights["backwards"] == 0 and weights["sharp"] == 1  # a member that ranks fakes lower never votes
    assert (record["n_real"], record["n_fake"]) == (200, 200)
    with pytest.raises(DataError, match="needs real and fake images"):
        tune_weights(parts, np.zeros(400), "stouffer")


def test_unknown_member_names_the_valid_ones() -> None:
    with pytest.raises(UnknownDetector, match="unknown ensemble member 'svm'; valid: frequency-vae, edge-flow"):
        parse_members("deep-svdd,svm")
    assert parse_members(" deep-svdd , patch-lof ") == ["deep-svdd", "patch-lof"]
    assert parse_members(None) == member_names()


def test_duplicate_member_registration_raises() -> None:
    with pytest.raises(DuplicateName, match="'deep-svdd' is already registered"):
        register_member("deep-svdd")(type("Again", (Member,), {}))


def _write_dataset(root: Path) -> None:
    """CIFAKE-like layout: REAL/ holds smooth scenes, FAKE/ holds anomalies the fit must not see."""
    for folder, images in (("REAL", smooth_scenes(60, seed=3)), ("FAKE", planted_anomalies(20, seed=4))):
        (root / folder).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / folder / f"{i}.png")
    (root / "REAL" / "broken.png").write_bytes(b"not an image")


def test_fit_ensemble_command_uses_only_real_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from fakescan.cli import main

    _write_dataset(tmp_path / "data")
    out = tmp_path / "detector"
    code = main(["fit-ensemble", str(tmp_path / "data"), "--out", str(out), "--members",
                 "colour-mahalanobis,patch-lof", "--weights", "patch-lof=2", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "fakescan.json").read_text())
    training = manifest["training"]
    assert (training["n_images"], training["n_skipped"]) == (60, 1)
    assert training["n_fit"] + training["n_scale"] + training["n_threshold"] == 60
    assert training["fingerprint"].startswith("sha256:") and training["peak_memory_mb"] > 0
    assert {e["name"]: e["weight"] for e in manifest["ensemble"]["members"]} == {"colour-mahalanobis": 1.0,
                                                                                "patch-lof": 2.0}
    assert json.loads(capsys.readouterr().out)["version"] == manifest["version"]


def test_fit_ensemble_command_tunes_weights_on_images_it_did_not_fit(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from fakescan.cli import main

    _write_dataset(tmp_path / "data")
    out = tmp_path / "detector"
    members = "colour-mahalanobis,patch-lof,texture-ocsvm"
    code = main(["fit-ensemble", str(tmp_path / "data"), "--class-dir", "REAL", "--limit", "45", "--members", members,
                 "--tune-weights", str(tmp_path / "data"), "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "fakescan.json").read_text())
    tuning = manifest["ensemble"]["tuning"]
    # REAL/ holds 60 images and a broken file; the 45 drawn for fitting are never validation images
    assert manifest["training"]["n_images"] + tuning["n_real"] == 60 and tuning["n_fake"] == 20
    assert tuning["data"] == str(tmp_path / "data") and tuning["fingerprint"].startswith("sha256:")
    assert tuning["candidate_auc"][tuning["chosen"]] == max(tuning["candidate_auc"].values())
    weights = {entry["name"]: entry["weight"] for entry in manifest["ensemble"]["members"]}
    assert json.loads(capsys.readouterr().out)["weights"] == weights
    code = main(["fit-ensemble", str(tmp_path / "data"), "--tune-weights", str(tmp_path / "data"),
                 "--weights", "patch-lof=2", "--out", str(tmp_path / "other")])
    assert code == 2 and "give --weights or --tune-weights, not both" in capsys.readouterr().err


def test_fit_ensemble_command_names_valid_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fakescan.cli import main

    code = main(["fit-ensemble", str(tmp_path), "--out", str(tmp_path / "out"), "--members", "svm"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "valid: frequency-vae, edge-flow, deep-svdd" in err


def test_fit_ensemble_command_refuses_an_unknown_vote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fakescan.cli import main

    _write_dataset(tmp_path / "data")
    code = main(["fit-ensemble", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--vote", "majority",
                 "--members", "patch-lof", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--vote 'majority': use one of stouffer, fisher" in err
    assert not (tmp_path / "out").exists()
