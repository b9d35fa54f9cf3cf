"""``fakescan evaluate`` for a detector that reads no pixels (provenance): each file judged as stored.

Decoding and re-encoding would drop the metadata such a detector reads, so it gets the bytes
undecoded, as the worker hands them over. Its "no evidence" (a file without provenance metadata)
is an abstention, neither real nor fake: counted in ``abstained`` and left out of the metrics,
which therefore describe the files that carried evidence; ``coverage`` says how many did.
"""

from __future__ import annotations

from typing import Sequence

from tqdm import tqdm

from fakescan.errors import UsageError
from worker.detectors import Detector, Sample
from worker.lab.data import LabelledSet
from worker.lab.evaluate import CHUNK, CLEAN, Scored, _add
from worker.lab.perturb import Perturbation


def score_files(detector: Detector, labelled: LabelledSet, perturbations: Sequence[Perturbation] = (),
                progress: bool = True) -> dict[str, Scored]:
    """The clean condition only: a perturbation changes pixels, which this detector does not read."""
    if perturbations:
        raise UsageError(f"--perturb changes pixels; {detector.name} judges the file's metadata, not its pixels")
    scored = Scored()
    items = labelled.items
    with tqdm(total=len(items), desc="scoring", unit="file", disable=not progress, mininterval=5) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            files = [Sample(item.key, data) for item, data in zip(chunk, labelled.read_many(chunk), strict=True)]
            _add(scored, [item.label for item in chunk], [item.key for item in chunk], detector.predict_samples(files))
            bar.update(len(chunk))
    return {CLEAN: scored}
