"""The skip rule: done means every detector of the scan scored the object's current content."""

from scheduler.skip import PriorResult, objects_to_scan

DETECTORS = [("a", "1"), ("b", "2")]
LISTED = {1: "etag:x:10", 2: "etag:y:20", 3: "sha256:zz"}


def rows(object_id, fingerprint, *detectors, status="ok"):
    return [PriorResult(object_id, name, version, fingerprint, status) for name, version in detectors]


def test_nothing_stored_means_everything_is_scanned():
    assert objects_to_scan(LISTED, [], DETECTORS) == [1, 2, 3]


def test_skipped_only_when_every_detector_scored_this_content():
    prior = (rows(1, "etag:x:10", *DETECTORS)  # complete: skipped
             + rows(2, "etag:y:20", ("a", "1"))  # detector b missing
             + rows(3, "sha256:old", *DETECTORS))  # content changed since
    assert objects_to_scan(LISTED, prior, DETECTORS) == [2, 3]


def test_a_new_detector_version_rescans():
    prior = rows(1, "etag:x:10", ("a", "1"), ("b", "1"))
    assert 1 in objects_to_scan(LISTED, prior, DETECTORS)


def test_results_of_other_detectors_do_not_count():
    prior = rows(1, "etag:x:10", *DETECTORS, ("c", "7"))
    assert objects_to_scan(LISTED, prior, DETECTORS) == [2, 3]


def test_error_rows_count_as_done_unless_retrying_errors():
    prior = rows(1, "etag:x:10", ("a", "1")) + rows(1, "etag:x:10", ("b", "2"), status="error")
    assert 1 not in objects_to_scan(LISTED, prior, DETECTORS)
    assert 1 in objects_to_scan(LISTED, prior, DETECTORS, retry_errors=True)


def test_rescan_enqueues_everything_in_listing_order():
    prior = [row for object_id, fp in LISTED.items() for row in rows(object_id, fp, *DETECTORS)]
    assert objects_to_scan(LISTED, prior, DETECTORS) == []
    assert objects_to_scan(LISTED, prior, DETECTORS, rescan=True) == [1, 2, 3]
