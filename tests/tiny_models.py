"""Tiny random Hugging Face checkpoints, built in code so no test ever touches the Hub.

``google/siglip2-base-patch16-224`` is a fixed-resolution SigLIP2 checkpoint: its config says
``model_type: "siglip"`` and its image processor is ``SiglipImageProcessor`` (224x224, bilinear,
mean = std = 0.5), so a fine-tuned classifier of it is a ``SiglipForImageClassification``. The
tiny checkpoint here has the same architecture and processor, only small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

TINY_IMAGE_SIZE = 32
TINY_LAYERS = 2


def build_tiny_siglip_checkpoint(folder: Path, labels: Sequence[str] = ("real", "fake"), seed: int = 0,
                                 image_size: int = TINY_IMAGE_SIZE, layers: int = TINY_LAYERS,
                                 head: bool = True) -> Path:
    """Save a random ``SiglipForImageClassification`` (safetensors) and its image processor into ``folder``.

    ``labels`` become ``id2label`` in order; a single label gives a one-logit (sigmoid) head.
    ``head=False`` saves a bare image-text ``SiglipModel`` instead, as the published
    ``google/siglip2-base-patch16-224`` is: a base to fine-tune, not yet a classifier.
    """
    import torch
    from transformers import SiglipConfig, SiglipForImageClassification, SiglipImageProcessor, SiglipModel

    id2label = {index: label for index, label in enumerate(labels)}
    config = SiglipConfig(
        vision_config={
            "image_size": image_size, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
            "num_hidden_layers": layers, "num_attention_heads": 2,
        },
        text_config={"vocab_size": 99, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 2},
        num_labels=len(labels), id2label=id2label, label2id={label: index for index, label in id2label.items()},
    )
    torch.manual_seed(seed)
    model = (SiglipForImageClassification if head else SiglipModel)(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    processor = SiglipImageProcessor(
        size={"height": image_size, "width": image_size}, resample=2,  # PIL bilinear, as siglip2-base-patch16-224
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, do_resize=True,
    )
    processor.save_pretrained(folder)
    return folder


def build_tiny_siglip_vision_checkpoint(folder: Path, seed: int = 0, image_size: int = TINY_IMAGE_SIZE,
                                        layers: int = TINY_LAYERS) -> Path:
    """Save a random bare ``SiglipVisionModel`` (config + safetensors, no image processor) into ``folder``."""
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=37,
                                num_hidden_layers=layers, num_attention_heads=2)
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    SiglipVisionModel(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_images(count: int, seed: int = 0, size: int = 40) -> list:
    """Deterministic RGB images of mixed sizes: half smooth gradients, half noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        height, width = size + index % 3 * 4, size + index % 2 * 6
        if index % 2:
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        else:
            ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
            pixels = np.broadcast_to(ramp * rng.uniform(0.3, 1.0, 3), (height, width, 3)).astype(np.uint8)
        images.append(Image.fromarray(pixels, "RGB"))
    return images


def write_labelled_folder(folder: Path, per_class: int = 8, seed: int = 0) -> Path:
    """``real/`` smooth gradients and ``fake/`` noise as PNG files: an easy, deterministic training set."""
    images = tiny_images(4 * per_class, seed=seed)
    for label, parity in (("real", 0), ("fake", 1)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for number, image in enumerate(images[parity::2][:per_class]):
            image.save(folder / label / f"{label}-{number:03d}.png")
    return folder
