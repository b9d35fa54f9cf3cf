"""Scan options: --since parsing, extension lists, size bounds, detector resolution."""

from datetime import datetime, timedelta, timezone

import pytest

from fakescan.catalog import UnknownDetector
from fakescan.errors import UsageError
from fakescan.settings import load_settings
from fakescan.storage import IMAGE_EXTENSIONS
from scheduler.options import build_filter, parse_extensions, parse_since, resolve_detectors
from tests.scheduler_support import make_detector_folder

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("text", "expected"), [
    ("36h", NOW - timedelta(hours=36)),
    ("7d", NOW - timedelta(days=7)),
    ("2w", NOW - timedelta(weeks=2)),
    ("90m", NOW - timedelta(minutes=90)),
    ("1.5h", NOW - timedelta(minutes=90)),
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
    ("2024-05-01T06:30", datetime(2024, 5, 1, 6, 30, tzinfo=timezone.utc)),
    ("2024-05-01T06:30Z", datetime(2024, 5, 1, 6, 30, tzinfo=timezone.utc)),
    ("2024-05-01T08:30+02:00", datetime(2024, 5, 1, 6, 30, tzinfo=timezone.utc)),
])
def test_since_accepts_iso_and_ages(text, expected):
    parsed = parse_since(text, now=NOW)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "36", "h36", "2024-13-01", "-3d", ""])
def test_since_rejects_anything_else(text):
    with pytest.raises(UsageError, match="--since"):
        parse_since(text, now=NOW)


def test_extensions_normalised():
    assert parse_extensions(".JPG, png") == (".jpg", ".png")
    assert parse_extensions(None) == IMAGE_EXTENSIONS
    assert parse_extensions("any") == ()
    with pytest.raises(UsageError):
        parse_extensions(" , ")


def test_filter_from_options():
    filters = build_filter(".png", ["cats/*"], 10, 1000, "1d", now=NOW)
    assert filters.admits("cats/a.png", 100, NOW)
    assert not filters.admits("dogs/a.png", 100, NOW)
    assert not filters.admits("cats/a.jpg", 100, NOW)
    assert not filters.admits("cats/a.png", 5, NOW)
    assert not filters.admits("cats/a.png", 1001, NOW)
    assert not filters.admits("cats/a.png", 100, NOW - timedelta(days=2))


@pytest.mark.parametrize(("low", "high"), [(-1, None), (None, -5), (100, 10)])
def test_impossible_sizes_rejected(low, high):
    with pytest.raises(UsageError):
        build_filter(None, None, low, high, None)


def test_detectors_resolved_and_deduplicated(tmp_path):
    settings = load_settings()
    make_detector_folder(settings.home, "tiny", "t1")
    make_detector_folder(settings.home, "other", "v9")
    refs = resolve_detectors(["tiny", "other", "tiny"], settings)
    assert [(ref.name, ref.version, ref.family) for ref in refs] == [("tiny", "t1", "hf-classifier"),
                                                                   ("other", "v9", "hf-classifier")]
    assert refs[0].as_json()["location"].endswith("detectors/tiny")


def test_unknown_detector_names_the_known_ones():
    settings = load_settings()
    make_detector_folder(settings.home, "tiny", "t1")
    with pytest.raises(UnknownDetector, match="known: cifake, default, provenance, tiny"):
        resolve_detectors(["nope"], settings)


def test_two_detectors_with_one_identity_are_refused(tmp_path):
    settings = load_settings()
    make_detector_folder(settings.home, "tiny", "t1")
    elsewhere = make_detector_folder(tmp_path / "elsewhere", "tiny", "t1")
    with pytest.raises(UsageError, match="both 'tiny' version 't1'"):
        resolve_detectors(["tiny", str(elsewhere)], settings)
