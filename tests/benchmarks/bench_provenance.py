"""Benchmark: a scan with the provenance detector alone vs one with a pixel detector, in one run.

Not a test (pytest does not collect ``bench_*``). Builds photo-sized JPEGs (2-12 MP, smooth
content plus sensor-like noise; some with camera EXIF, IPTC AI labels, A1111 parameters or a
C2PA manifest), then runs two embedded ``fakescan scan`` passes over the same folder, each in a
fresh home: ``--detector provenance`` and the pixel baseline (the bundled ``default`` detector
when it exists, else a stand-in named in the output). Reports images/s for whole scans and for
the detector stage alone (decode + inference, from the rows' timings) and their ratios.

    .venv/bin/python -m tests.benchmarks.bench_provenance [--images 24] [--baseline NAME_OR_FOLDER]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests import provenance_support as files

SIZES = ((1632, 1224), (2304, 1728), (3264, 2448), (4000, 3000))  # 2, 4, 8, 12 MP
EXTRAS = ("camera", "iptc-ai", "none", "a1111", "c2pa-capture", "none")


@dataclass
class Measurement:
    label: str
    seconds: float
    images: int
    detector_ms: float  # decode + inference summed over this detector's rows

    @property
    def scan_rate(self) -> float:
        return self.images / self.seconds

    @property
    def detector_rate(self) -> float:
        return self.images / (self.detector_ms / 1000.0) if self.detector_ms else float("inf")


def photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    phases = rng.uniform(0, 6.28, 3).astype(np.float32)
    channels = [110 + 80 * np.sin(6 * x + 4 * y + phase) * np.cos(3 * y - 2 * x) for phase in phases]
    image = np.stack(channels, axis=-1) + rng.normal(0, 8, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def build_archive(folder: Path, count: int) -> int:
    """``count`` JPEGs cycling through SIZES and EXTRAS; returns their total size in bytes."""
    signer = files.TestSigner.create()
    total = 0
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        extra = EXTRAS[index % len(EXTRAS)]
        exif = files.camera_exif() if extra in ("camera", "c2pa-capture") else None
        if extra == "a1111":
            exif = files.exif_tags({}, {0x9286: b"UNICODE\x00" + files.A1111_PARAMETERS.encode("utf-16-be")})
        data = files.jpeg(exif, quality=90, image=photo(width, height, index))
        if extra == "iptc-ai":
            data = files.with_segment(data, 0xE1, files.XMP_HEADER + files.xmp_packet("trainedAlgorithmicMedia"))
        if extra == "c2pa-capture":
            data = signer.sign(data, "image/jpeg", "digitalCapture")
        (folder / f"img{index:03d}-{width}x{height}-{extra}.jpg").write_bytes(data)
        total += len(data)
    return total


def run_scan(folder: Path, warmup: Path, home: Path, detector: str, provenance_first: bool,
             label: str) -> Measurement:
    """A warm-up scan of one small image (imports, schema, caches), then the timed scan, in a fresh home."""
    os.environ["FAKESCAN_HOME"] = str(home)
    os.environ["FAKESCAN_SCAN_PROVENANCE"] = "true" if provenance_first else "false"
    _scan(warmup, detector)
    before = _stage_totals(detector)
    started = time.perf_counter()
    _scan(folder, detector)
    seconds = time.perf_counter() - started
    after = _stage_totals(detector)
    return Measurement(label, seconds, after[0] - before[0], after[1] - before[1])


def _scan(folder: Path, detector: str) -> None:
    from fakescan.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["scan", str(folder), "--detector", detector])
    if code != 0:
        raise SystemExit(f"scan of {folder} with {detector} exited {code}")


def _stage_totals(detector: str) -> tuple[int, float]:
    from sqlalchemy import select

    from fakescan.db.engine import make_engine, make_sessionmaker
    from fakescan.db.models import Result
    from fakescan.settings import load_settings

    engine = make_engine(load_settings())
    try:
        with make_sessionmaker(engine)() as session:
            rows = session.execute(select(Result.status, Result.timings)).all()
    finally:
        engine.dispose()
    failed = [status for status, _ in rows if status != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} result rows of the {detector} scan are errors")
    total = sum((timings or {}).get("decode_ms", 0.0) + (timings or {}).get("inference_ms", 0.0)
                for _, timings in rows)
    return len(rows), total


def baseline_detector(requested: str | None, workdir: Path) -> tuple[str, str]:
    """(detector spec, description): the bundled default if present, else a tiny SigLIP stand-in."""
    from fakescan.catalog import UnknownDetector, resolve
    from fakescan.settings import load_settings

    spec = requested or "default"
    try:
        ref = resolve(spec, load_settings(home=workdir / "probe"))
        return spec, f"{ref.name} (family {ref.family}, version {ref.version})"
    except UnknownDetector:
        if requested:
            raise
    from tests.tiny_models import build_tiny_siglip_checkpoint

    folder = build_tiny_siglip_checkpoint(workdir / "stand-in-siglip", image_size=224)
    return str(folder), ("STAND-IN: no bundled 'default' detector yet; a tiny random SigLIP (224x224, 2 layers), "
                         "cheaper per image than any real pixel detector, so the ratio is a lower bound")


def report(measurements: list[Measurement], baseline: str, megabytes: float) -> None:
    print(f"archive: {measurements[0].images} JPEGs, 2-12 MP, {megabytes:.0f} MB; baseline: {baseline}")
    print(f"{'scan':<24} {'wall s':>8} {'images/s':>10} {'detector-stage images/s':>25}")
    for item in measurements:
        print(f"{item.label:<24} {item.seconds:>8.2f} {item.scan_rate:>10.2f} {item.detector_rate:>25.1f}")
    provenance, pixels = measurements
    print(f"ratio provenance/pixel: whole scan {provenance.scan_rate / pixels.scan_rate:.1f}x, "
          f"detector stage {provenance.detector_rate / pixels.detector_rate:.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--baseline", help="pixel detector name or folder (default: the bundled 'default')")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-provenance-") as temp:
        workdir = Path(temp)
        archive = workdir / "archive"
        archive.mkdir()
        warmup = workdir / "warmup"
        warmup.mkdir()
        (warmup / "warmup.jpg").write_bytes(files.jpeg())
        megabytes = build_archive(archive, args.images) / 1e6
        baseline, description = baseline_detector(args.baseline, workdir)
        measurements = [
            run_scan(archive, warmup, workdir / "home-provenance", "provenance", True, "provenance alone"),
            run_scan(archive, warmup, workdir / "home-pixels", baseline, False, "pixel detector alone"),
        ]
        report(measurements, description, megabytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
