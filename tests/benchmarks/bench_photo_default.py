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
  speed change), so a change is measured against its parent in the same run;
- with ``--inference-threads N ...``: also this tree's default scan with that many torch threads.

Every scan runs ``--rounds`` times, interleaved and rotated (A B C, B C A, ...), and the best
round of each is reported: on a shared machine the least disturbed run is the closest to the
scan's own cost.
Prints photos/s of each scan (over the time its batches ran, without the model load, and end to
end) and the ratios against the release's default scan; the target is default/release >= 0.5.

    nice -n 10 .venv/bin/python -m tests.benchmarks.bench_photo_default [--images 16] [--rounds 2] \
        [--compare REV] [--inference-threads 2]
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
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every scan; the best is kept")
    parser.add_argument("--inference-threads", type=int, nargs="*", default=[], metavar="N",
                        help="also this tree's default scan with FAKESCAN_INFERENCE_THREADS=N")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-photo-default-") as temp:
        scratch = Path(temp)
        archive = scratch / "archive"
        archive.mkdir()
        megabytes = build_photos(archive, args.images) / 1e6
        print(f"archive: {args.images} JPEGs, 2-12 MP, {megabytes:.0f} MB", flush=True)
        baseline = f"{args.release}: default scan (CIFAKE CNN)"
        runs = {"default scan (provenance + default)": (REPO, None),
                "provenance + cifake": (REPO, "cifake"),
                baseline: (export_revision(args.release, scratch / "release"), None)}
        if args.compare:
            runs[f"{args.compare}: default scan"] = (export_revision(args.compare, scratch / "compare"), None)
        variants = {label: PROVENANCE_ON for label in runs}
        for threads in args.inference_threads:
            label = f"default scan, {threads} inference threads"
            runs[label] = (REPO, None)
            variants[label] = {**PROVENANCE_ON, "FAKESCAN_INFERENCE_THREADS": str(threads)}
        scans: dict[str, list[dict[str, float]]] = {label: [] for label in runs}
        labels = list(runs)
        for round_number in range(args.rounds):  # interleaved, so a change in the machine's load hits every scan
            start = round_number % len(labels)  # and rotated: no scan always runs first
            for number, label in enumerate(labels[start:] + labels[:start]):
                tree, detector = runs[label]
                home = scratch / f"home-{round_number}-{number}"
                scans[label].append(scan_rate(tree, archive, detector, home, variants[label]))
        report(scans, baseline)
    return 0


def report(scans: dict[str, list[dict[str, float]]], baseline: str) -> None:
    """The best round of each scan (the least disturbed by other work on the machine) and its ratio."""
    best = {label: max(rounds, key=lambda figures: figures["rate"]) for label, rounds in scans.items()}
    base = best[baseline]["rate"]
    print(f"\n{'scan (best of ' + str(len(scans[baseline])) + ' rounds)':<42} {'photos/s':>9} {'end to end':>11} "
          f"{'x release default':>18}  all rounds photos/s")
    for label, figures in best.items():
        rounds = ", ".join(f"{item['rate']:.3f}" for item in scans[label])
        print(f"{label:<42} {figures['rate']:>9.3f} {figures['end_to_end_rate']:>11.3f} "
              f"{figures['rate'] / base:>18.2f}  {rounds}")
    print("target: default scan >= 0.5x the release's default scan")


if __name__ == "__main__":
    sys.exit(main())
