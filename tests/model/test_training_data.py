"""Labelled sets from a folder, a zip and a CSV: same items, same order, same fingerprint."""

from __future__ import annotations

import pytest

from fakescan.errors import DataError
from fakescan.settings import load_settings
from tests.model.labelled_images import labelled_files, write_folder, write_zip
from worker.lab.data import FAKE, REAL, label_from_key, open_labelled

pytestmark = pytest.mark.model


def test_folder_zip_and_csv_agree(tmp_path):
    files = labelled_files(per_class=3)
    folder = write_folder(tmp_path / "set", files)
    archive = write_zip(tmp_path / "set.zip", files)
    rows = ["path,label"] + [f"{key},{'fake' if key.startswith('fake') else 'real'}" for key in sorted(files)]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    settings = load_settings()

    sets = [open_labelled(str(source), settings) for source in (folder, archive, folder / "labels.csv")]

    assert [item.key for item in sets[0].items] == sorted(files)
    for labelled in sets:
        assert [(i.key, i.label, i.size) for i in labelled.items] == [(i.key, i.label, i.size) for i in sets[0].items]
        assert labelled.fingerprint() == sets[0].fingerprint()
        assert labelled.counts() == {"real": 3, "fake": 3}
        assert labelled.read(labelled.items[0]) == files[labelled.items[0].key]


def test_labels_come_from_any_case_folder_names():
    assert label_from_key("batch1/Real/x.jpg") == REAL
    assert label_from_key("FAKE/x.jpg") == FAKE
    assert label_from_key("fake.jpg") is None  # a file name is not a class folder
    assert label_from_key("other/x.jpg") is None


def test_limit_keeps_both_classes(tmp_path):
    labelled = open_labelled(str(write_folder(tmp_path, labelled_files(per_class=5))), load_settings())
    assert labelled.limited(4).counts() == {"real": 2, "fake": 2}


def test_limit_is_a_seeded_random_draw(tmp_path):
    labelled = open_labelled(str(write_folder(tmp_path, labelled_files(per_class=40))), load_settings())
    keys = {seed: [item.key for item in labelled.limited(10, seed).items] for seed in (0, 1)}
    assert [item.key for item in labelled.limited(10, 0).items] == keys[0]  # same seed, same draw
    assert labelled.limited(10, 1).counts() == {"real": 5, "fake": 5}
    assert keys[0] != keys[1]
    reals = sorted(item.key for item in labelled.items if item.label == 0)
    stride = [reals[int(i * len(reals) / 5)] for i in range(5)]
    assert sorted(k for k in keys[0] if k in reals) != stride  # not every n-th sorted name


def test_unlabelled_and_malformed_sources_are_data_errors(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.png").write_bytes(b"x")
    (tmp_path / "bad.csv").write_text("a.png,maybe\n")
    for source in (tmp_path / "plain", tmp_path / "bad.csv", tmp_path / "missing"):
        with pytest.raises(DataError):
            open_labelled(str(source), load_settings())
