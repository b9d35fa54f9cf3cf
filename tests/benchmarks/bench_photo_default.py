"""Benchmark: today's default scan of 2-12 MP photos against the CIFAKE default of the release it replaced, in one run.

Not a test (pytest does not collect ``bench_*``). Writes photo-like JPEGs (2, 4, 8 and 12 MP,
quality 90, see :mod:`tests.benchmarks.photos`), then runs embedded ``fakescan scan FOLDER``
passes over the same folder, each in a child process with a fresh home (see
:func:`tests.benchmarks.bench_scan.scan_rate`), provenance on as in a default scan:

- **default**: this tree's default scan (provenance + the photo-scale ``default``);
- **cifake**: this tree's scan with ``--detector cifake`` (the CIFAKE compact CNN);
- **release REV** (``--release``, default ``612466c``): the default scan of that revision,
  exported with ``git archive`` as ``bench_scan --baseline`` does; at ``612466c`` the CIFAKE
  compact CNN was the default, so this is "the CIFAKE default today" of issue 11;
- with ``--compare REV``: also the default scan of another revision (e.g. the commit before a
  speed change), so a change is measured against its parent in the same run.

Prints photos/s of each scan (over the time its batches ran, without the model load, and end to
end) and the ratios against the release's default scan; the target is default/release >= 0.5.

    nice -n 10 .venv/bin/python -m tests.benchmarks.bench_photo_default [--images 16] [--compare HEAD~1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.benchmarks.bench_provenance import SIZES
from tests.benchmarks.bench_scan import REPO, export_revision, scan_rate
from tests.benchmarks.photos import jpeg, photo

PROVENANCE_ON = {"FAKESCAN_SCAN_PROVENANCE": "true", "FAKESCAN_DEVICE": "cpu"}


def build_photos(folder: Path, count: int) -> int:
    """``count`` camera-like JPEGs (quality 90) cycling through 2, 4, 8 and 12 MP; returns their bytes."""
    total = 0
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        data = jpeg(photo(width, height, index))
        (folder / f"photo{index:03d}-{width}x{height}.jpg").write_bytes(data)
        total += len(data)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--release", default="612466c", help="the revision whose default scan is the baseline")
    parser.add_argument("--compare", metavar="REV", help="also run the default scan of this revision")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-photo-default-") as temp:
        scratch = Path(temp)
        archive = scratch / "archive"
        archive.mkdir()
        megabytes = build_photos(archive, args.images) / 1e6
        print(f"archive: {args.images} JPEGs, 2-12 MP, {megabytes:.0f} MB", flush=True)
        scans = {"default scan (provenance + default)": scan_rate(REPO, archive, None, scratch / "h-default",
                                                                   PROVENANCE_ON),
                 "provenance + cifake": scan_rate(REPO, archive, "cifake", scratch / "h-cifake", PROVENANCE_ON)}
        release = export_revision(args.release, scratch / "release")
        scans[f"{args.release}: default scan (CIFAKE CNN)"] = scan_rate(release, archive, None, scratch / "h-release",
                                                                        PROVENANCE_ON)
        if args.compare:
            compared = export_revision(args.compare, scratch / "compare")
            scans[f"{args.compare}: default scan"] = scan_rate(compared, archive, None, scratch / "h-compare",
                                                               PROVENANCE_ON)
        report(scans, f"{args.release}: default scan (CIFAKE CNN)")
    return 0


def report(scans: dict[str, dict[str, float]], baseline: str) -> None:
    base = scans[baseline]["rate"]
    print(f"\n{'scan':<42} {'photos/s':>9} {'end to end':>11} {'x release default':>18}")
    for label, figures in scans.items():
        print(f"{label:<42} {figures['rate']:>9.3f} {figures['end_to_end_rate']:>11.3f} "
              f"{figures['rate'] / base:>18.2f}")
    print("target: default scan >= 0.5x the release's default scan")


if __name__ == "__main__":
    sys.exit(main())
