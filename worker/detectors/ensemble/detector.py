"""The fitted one-class ensemble as a fakescan detector (family ``one-class-ensemble``).

Folder layout::

    fakescan.json                 manifest: members, weights, score scales, threshold, training record
    members/<member>.safetensors  torch members
    members/deep-svdd-backbone/   Deep SVDD's fine-tuned vision tower (save_pretrained), when fitted from a backbone
    members/<member>.skops        scikit-learn members (loaded with an explicit trusted-type list)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from fakescan.errors import DetectorError
from worker.detectors import register_family
from worker.detectors.base import Detector, InputNeed, Prediction
from worker.detectors.ensemble.calibration import ScoreScale, to_detector_score, vote_method, weighted_vote
from worker.detectors.ensemble.features import FeatureBank, to_array
from worker.detectors.ensemble.members import Member, member_class

if TYPE_CHECKING:
    from fakescan.settings import Settings

MEMBERS_DIR = "members"


@register_family("one-class-ensemble")
class OneClassEnsemble(Detector):
    """Nine (or fewer) anomaly detectors fitted on real images only, combined by a weighted vote."""

    def __init__(self, name: str, version: str, manifest: dict[str, Any], members: dict[str, Member]) -> None:
        super().__init__(name, version, manifest)
        self.members = members
        section = manifest["ensemble"]
        self.size = int(section["size"])
        self.weights = {entry["name"]: float(entry["weight"]) for entry in section["members"]}
        self.scales = {entry["name"]: ScoreScale.from_json(entry["scale"]) for entry in section["members"]}
        self.vote_threshold = float(section["vote_threshold"])
        self.vote = vote_method(section.get("vote"))

    def member_scores(self, bank: FeatureBank) -> dict[str, np.ndarray]:
        """Each member's normalised score in [0, 1]: the share of held-out real images it ranks below."""
        return {name: self.scales[name](member.score(bank)) for name, member in self.members.items()}

    def score_array(self, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Detector scores (0.5 = the fitted threshold) and per-member normalised scores of a uint8 batch."""
        parts = self.member_scores(FeatureBank(images))
        return to_detector_score(weighted_vote(parts, self.weights, self.vote), self.vote_threshold), parts

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        if not images:
            return []
        scores, parts = self.score_array(to_array(images, self.size))
        return [Prediction(float(scores[i]), {name: round(float(values[i]), 6) for name, values in parts.items()})
                for i in range(len(images))]

    def input_need(self) -> InputNeed:
        return InputNeed("size", self.size)

    @classmethod
    def load(cls, folder: Path | None, settings: "Settings", manifest: dict[str, Any]) -> "OneClassEnsemble":
        if folder is None or "ensemble" not in manifest:
            raise DetectorError("a one-class-ensemble detector needs its folder and an 'ensemble' manifest section "
                                "(fit one with `fakescan fit-ensemble`)")
        members = {}
        for entry in manifest["ensemble"]["members"]:
            members[entry["name"]] = member_class(entry["name"]).load(folder / MEMBERS_DIR, entry["config"],
                                                                         settings.resolved_device())
        return cls(manifest["name"], str(manifest["version"]), manifest, members)

    def save(self, folder: Path) -> None:
        """Write the members, then the manifest with a version hashed from everything fitted."""
        target = folder / MEMBERS_DIR
        target.mkdir(parents=True, exist_ok=True)
        for entry in self.manifest["ensemble"]["members"]:
            entry["files"] = self.members[entry["name"]].save(target)
        self.version = self.manifest["version"] = fitted_state_hash(folder, self.manifest["ensemble"])
        self.write_manifest(folder)


def fitted_state_hash(folder: Path, section: dict[str, Any]) -> str:
    """The version: a hash of the member files and of the scales, weights and threshold.

    The same data and seed give the same version: skops files are hashed by content, not bytes
    (see :func:`skops_content_digest`)."""
    digest = hashlib.sha256(json.dumps(section, sort_keys=True).encode())
    for entry in section["members"]:
        for name in entry["files"]:
            path = folder / MEMBERS_DIR / name
            digest.update(name.encode())
            digest.update(skops_content_digest(path) if path.suffix == ".skops" else
                          hashlib.sha256(path.read_bytes()).digest())
    return f"oce-{digest.hexdigest()[:12]}"


def skops_content_digest(path: Path) -> bytes:
    """A hash of what a skops file holds, independent of the run that wrote it.

    skops names each array file and node after the ``id()`` of the Python object it came from
    and zips them with timestamps, so two dumps of equal models differ byte for byte. Walking the
    schema in key order, renumbering ids by first appearance and hashing each array file where it
    is referenced gives the same digest for equal models."""
    import zipfile

    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        ids: dict[Any, int] = {}

        def canonical(node: Any) -> Any:
            if isinstance(node, list):
                return [canonical(item) for item in node]
            if not isinstance(node, dict):
                return node
            out = {}
            for key in sorted(node):
                value = node[key]
                if key == "__id__":
                    value = ids.setdefault(value, len(ids))
                elif key == "file" and isinstance(value, str):
                    digest.update(hashlib.sha256(archive.read(value)).digest())
                    value = "array"
                else:
                    value = canonical(value)
                out[key] = value
            return out

        schema = canonical(json.loads(archive.read("schema.json")))
    digest.update(json.dumps(schema, sort_keys=True).encode())
    return digest.digest()
