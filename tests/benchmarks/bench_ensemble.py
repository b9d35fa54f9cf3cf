"""Benchmark: a fitted one-class ensemble and each of its members on a labelled set (fake = positive).

Not a test (pytest does not collect ``bench_*``). ``fakescan evaluate`` measures the ensemble's
score; this also measures every member on its own, each flagging an image when its normalised
score passes the ensemble's percentile (by default the 95th percentile of held-out real images),
so an operator can see what each member contributes.

    .venv/bin/python -m tests.benchmarks.bench_ensemble DETECTOR_DIR DATA [--limit 4000] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fakescan.settings import load_settings
from worker.lab.metrics import classification_metrics

CHUNK = 512
COLUMNS = ("accuracy", "precision", "recall", "f1", "roc_auc", "false_positive_rate")


def decoded(labelled: Any, items: list[Any]) -> tuple[list[int], list[Any]]:
    """The labels and decoded images (the scan's decoder) of items, undecodable ones left out."""
    from fakescan.decode import DecodeError

    labels, images = [], []
    for item, data in zip(items, labelled.read_many(items), strict=True):
        try:
            images.append(labelled.decode(data))
            labels.append(item.label)
        except DecodeError:
            continue
    return labels, images


def score_all(detector: Any, labelled: Any) -> tuple[list[int], list[float], dict[str, list[float]]]:
    labels: list[int] = []
    scores: list[float] = []
    parts: dict[str, list[float]] = {name: [] for name in detector.members}
    for start in range(0, len(labelled.items), CHUNK):
        chunk_labels, images = decoded(labelled, labelled.items[start:start + CHUNK])
        for label, prediction in zip(chunk_labels, detector.predict(images), strict=True):
            labels.append(label)
            scores.append(prediction.score)
            for name, value in prediction.parts.items():
                parts[name].append(value)
    return labels, scores, parts


def measure(folder: str, data: str, limit: int, seed: int) -> dict[str, Any]:
    from fakescan.catalog import ref_from_folder
    from worker.detectors import load_detector
    from worker.lab.data import open_labelled

    settings = load_settings()
    detector = load_detector(ref_from_folder(Path(folder).resolve()), settings)
    sample = open_labelled(data, settings).limited(limit, seed)  # the lab's seeded, balanced draw
    started = time.perf_counter()
    labels, scores, parts = score_all(detector, sample)
    seconds = time.perf_counter() - started
    member_threshold = detector.manifest["ensemble"]["percentile"] / 100
    rows = {"ensemble": classification_metrics(labels, scores, detector.thresholds.threshold)}
    rows.update({name: classification_metrics(labels, values, member_threshold) for name, values in parts.items()})
    return {"detector": detector.name, "version": detector.version, "data": data, "n": len(labels),
            "n_real": labels.count(0), "n_fake": labels.count(1), "images_per_second": round(len(labels) / seconds, 1),
            "training": detector.manifest.get("training", {}),
            "metrics": {name: {k: m[k] for k in COLUMNS} for name, m in rows.items()}}


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['detector']} {result['version']} on {result['data']}: {result['n_real']} real + "
          f"{result['n_fake']} fake, {result['images_per_second']} images/s")
    print(f"{'':<20}" + "".join(f"{c[:9]:>10}" for c in COLUMNS))
    for name, m in result["metrics"].items():
        print(f"{name:<20}" + "".join(f"{m[c]:>10.4f}" for c in COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detector", help="a fitted one-class-ensemble folder")
    parser.add_argument("data", help="labelled set with real/ and fake/ folders (folder, .zip, s3://)")
    parser.add_argument("--limit", type=int, default=4000, help="images in all, balanced (default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args.detector, args.data, args.limit, args.seed)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
