"""Member ``lite-knn``: how far an image lies from its nearest real photos in ImageNet EfficientNet-Lite features.

The features are those of the photo-scale ``default``: the per-channel mean and standard deviation
of an ImageNet EfficientNet-Lite's 1x1 head convolution (2 x 1,280 numbers for Lite0), here of the
ensemble's working-size image (fit with ``--size 224``: the network's own input size; at the
default 32 px the head sees one pixel and the member learns little). They are standardised,
PCA-whitened to 32 dimensions on the fit images, and the raw score is the mean distance to the 5
nearest fit images (deep nearest-neighbour anomaly detection, Bergman et al. 2020): a photo
unlike every real photo of the archive is far from all of them.

The backbone is taken from a ``photo-crops`` detector (``fakescan fit-ensemble --lite-backbone``,
default: the bundled ``default``, whose backbone is the frozen ImageNet Lite0), so fitting needs no
package and no download; the member saves its own copy as ``lite-knn-backbone.safetensors``
beside ``lite-knn.skops`` (scaler, PCA, neighbour index). Opt-in: ``--members ...,lite-knn``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from fakescan.errors import DetectorError, UsageError
from worker.detectors.base import Preprocessing
from worker.detectors.ensemble.classical import SklearnMember
from worker.detectors.ensemble.features import FeatureBank
from worker.detectors.ensemble.members import FitContext, register_member
from worker.detectors.ensemble.neural import load_state, save_state
from worker.detectors.photo_crops import LITE_MEAN, LITE_STD, StageStatistics
from worker.detectors.torch_classifier import normalise, read_weights

if TYPE_CHECKING:
    from fakescan.settings import Settings

BACKBONE_FILE = "lite-knn-backbone.safetensors"
HEAD_STAGE = 7  # StageStatistics' index of the 1x1 head convolution
PASS = 16  # images per backbone pass
COMPONENTS = 32
NEIGHBOURS = 5


def backbone_config(source: str, settings: Settings) -> dict[str, Any]:
    """The member config for ``--lite-backbone SOURCE`` (a photo-crops detector), checked before any image is read."""
    from fakescan.catalog import local_folder, resolve

    ref = resolve(source, settings)
    if ref.family != "photo-crops":
        raise UsageError(f"--lite-backbone {source!r} is a {ref.family!r} detector; give a photo-crops detector "
                         "(e.g. the bundled 'default')")
    folder = local_folder(ref, settings)
    architecture = str((ref.manifest.get("options") or {}).get("architecture", "tf_efficientnet_lite0"))
    return {"backbone": {"source": source, "version": ref.version, "architecture": architecture,
                         "folder": str(folder)}}


def backbone_from_detector(folder: Path, architecture: str) -> StageStatistics:
    """The head-statistics network with the backbone weights of a photo-crops detector's ``model.safetensors``."""
    prefix = "features.backbone."
    state = {key[len(prefix):]: value for key, value in read_weights(folder / "model.safetensors").items()
             if key.startswith(prefix)}
    network = StageStatistics(architecture, [HEAD_STAGE])
    try:
        network.backbone.load_state_dict(state)
    except RuntimeError as error:
        raise DetectorError(f"the backbone in {folder} does not fit {architecture}: {str(error).splitlines()[0]}") \
            from None
    return network.eval()


@register_member("lite-knn", default=False)
class LiteNearestNeighbours(SklearnMember):
    features = ("lite-head",)  # computed by the member's own backbone, not the shared feature registry
    summary = (f"mean distance to the {NEIGHBOURS} nearest fit images in ImageNet EfficientNet-Lite head "
               f"statistics (standardised, PCA-whitened to {COMPONENTS})")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.network: StageStatistics | None = None
        self.device = "cpu"

    def inputs(self, bank: FeatureBank) -> np.ndarray:
        return bank.computed(f"lite-head:{self.config['backbone']['version']}", self.head_statistics)

    @torch.inference_mode()
    def head_statistics(self, images: np.ndarray) -> np.ndarray:
        if self.network is None:
            raise DetectorError("lite-knn has no backbone: fit or load it first")
        preprocessing = Preprocessing(images.shape[1:3], LITE_MEAN, LITE_STD)
        found = []
        for start in range(0, len(images), PASS):
            pixels = torch.from_numpy(np.ascontiguousarray(images[start:start + PASS])).to(self.device)
            found.append(self.network(normalise(pixels, preprocessing)).float().cpu().numpy())
        return np.concatenate(found).astype(np.float32)

    def build(self, context: FitContext, n_samples: int) -> Any:
        from sklearn.decomposition import PCA
        from sklearn.neighbors import NearestNeighbors
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(),
                             PCA(n_components=min(COMPONENTS, n_samples - 1), whiten=True, random_state=context.seed),
                             NearestNeighbors(n_neighbors=min(NEIGHBOURS, n_samples)))

    def raw_score(self, inputs: np.ndarray) -> np.ndarray:
        distances, _ = self.model[-1].kneighbors(self.model[:-1].transform(inputs))
        return np.asarray(distances.mean(axis=1), dtype=np.float64)

    def fit(self, bank: FeatureBank, context: FitContext) -> None:
        backbone = self.config["backbone"] = dict(self.config.get("backbone") or {})
        if "folder" not in backbone:
            raise UsageError("lite-knn needs a photo-crops detector's backbone (fit-ensemble --lite-backbone)")
        folder = Path(backbone.pop("folder"))  # a local copy: not part of the record
        self.device = context.device
        self.network = backbone_from_detector(folder, str(backbone["architecture"])).to(self.device)
        super().fit(bank, context)

    def save(self, folder: Path) -> list[str]:
        if self.network is None:
            raise DetectorError("lite-knn is not fitted")
        names = super().save(folder)
        save_state(self.network.backbone, folder / BACKBONE_FILE)
        return [*names, BACKBONE_FILE]

    @classmethod
    def load(cls, folder: Path, config: dict[str, Any], device: str) -> "LiteNearestNeighbours":
        member = cast(LiteNearestNeighbours, super().load(folder, config, device))
        network = StageStatistics(str(config["backbone"]["architecture"]), [HEAD_STAGE])
        load_state(network.backbone, folder / BACKBONE_FILE)
        member.network, member.device = network.eval().to(device), device
        return member
