"""The lab's one image source: a folder, a zip and a CSV give the same items, order, fingerprint and draws."""

from __future__ import annotations

import pytest

from fakescan.errors import DataError
from fakescan.settings import load_settings
from tests.model.labelled_images import labelled_files, write_folder, write_zip
from worker.lab.data import FAKE, REAL, label_from_key, open_labelled, open_real
from worker.lab.images import decode_all, load_array

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


def test_real_images_come_from_the_same_source_and_keys_as_labelled_ones(tmp_path):
    files = labelled_files(per_class=4)
    folder, archive = write_folder(tmp_path / "set", files), write_zip(tmp_path / "set.zip", files)
    settings = load_settings()
    for source in (folder, archive):
        reals = [item.key for item in open_labelled(str(source), settings).items if item.label == REAL]
        assert [item.key for item in open_real(str(source), settings).items] == reals  # the REAL/ folder only
    assert [item.key for item in open_real(str(folder), settings, class_dir="FAKE").items] == sorted(
        key for key in files if key.startswith("fake/"))
    flat = write_folder(tmp_path / "flat", {f"{i}.png": data for i, data in enumerate(files.values())})
    assert len(open_real(str(flat), settings).items) == 8  # no class folders: the whole source is real
    assert len(open_real(str(folder), settings).limited(3, seed=0).items) == 3  # one class: the whole limit
    with pytest.raises(DataError, match="no images in a 'other' folder"):
        open_real(str(folder), settings, class_dir="other")


def test_bad_images_are_skipped_with_their_reason_and_bugs_are_not(tmp_path):
    files = labelled_files(per_class=3)
    files["fake/truncated.png"] = files["fake/000.png"][:40]
    labelled = open_labelled(str(write_folder(tmp_path, files)), load_settings())

    array, labels, skipped = load_array(labelled, 16, progress=False)

    assert array.shape == (6, 16, 16, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(skipped) == 1 and skipped[0].startswith("fake/truncated.png: ")

    def broken(image):
        raise TypeError("a bug in preparing an image")

    with pytest.raises(TypeError, match="a bug"):
        decode_all(labelled, (16, 16), broken, progress=False)
