"""Benchmark: a default scan (provenance + the photo-scale ``default``) vs the same scan with ``cifake``, in one run.

Not a test (pytest does not collect ``bench_*``). Builds photo-sized JPEGs (2, 4, 8 and 12 MP,
smooth content plus sensor-like noise), then runs two embedded ``fakescan scan`` passes over the
same folder, each in a fresh home after a one-image warm-up: provenance + ``default`` (the scan
default) and provenance + ``cifake`` (the CIFAKE compact CNN that was the default before). Prints
images/s of the whole scans and of the detector stage (decode + inference, from the rows'
timings), and the ratio default/cifake; the photo default's target is a ratio of at least 0.5.

    .venv/bin/python -m tests.benchmarks.bench_photo_default [--images 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from tests import provenance_support as files
from tests.benchmarks.bench_provenance import SIZES, Measurement, photo, run_scan


def build_photos(folder: Path, count: int) -> int:
    """``count`` plain camera-like JPEGs (quality 90) cycling through 2-12 MP; returns their bytes."""
    total = 0
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        data = files.jpeg(None, quality=90, image=photo(width, height, index))
        (folder / f"photo{index:03d}-{width}x{height}.jpg").write_bytes(data)
        total += len(data)
    return total


def report(default: Measurement, cifake: Measurement, megabytes: float) -> None:
    print(f"archive: {default.images} JPEGs, 2-12 MP, {megabytes:.0f} MB")
    print(f"{'scan':<28} {'wall s':>8} {'images/s':>10} {'detector-stage images/s':>25}")
    for item in (default, cifake):
        print(f"{item.label:<28} {item.seconds:>8.2f} {item.scan_rate:>10.3f} {item.detector_rate:>25.3f}")
    print(f"ratio default/cifake: whole scan {default.scan_rate / cifake.scan_rate:.2f}, "
          f"detector stage {default.detector_rate / cifake.detector_rate:.2f} (target: whole scan >= 0.5)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-photo-default-") as temp:
        workdir = Path(temp)
        archive, warmup = workdir / "archive", workdir / "warmup"
        archive.mkdir()
        warmup.mkdir()
        (warmup / "warmup.jpg").write_bytes(files.jpeg())
        megabytes = build_photos(archive, args.images) / 1e6
        # each scan stores two rows per photo (provenance and the pixel detector): rates are per photo
        default = replace(run_scan(archive, warmup, workdir / "home-default", "default", True,
                                   "provenance + default"), images=args.images)
        cifake = replace(run_scan(archive, warmup, workdir / "home-cifake", "cifake", True,
                                  "provenance + cifake"), images=args.images)
        report(default, cifake, megabytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
