"""The real images an ensemble is fitted on: a folder, a ``.zip`` or an ``s3://`` prefix.

Only real images are wanted. With ``class_dir`` given, only keys with a folder of that name (any
case) are used; without it, a source that has a ``real`` folder (as CIFAKE's REAL/ and FAKE/) is
narrowed to it, and a source without one is taken whole. Keys are sorted, so a seed picks the
same subset on every machine; the subset's fingerprint goes into the training record.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from fakescan.errors import DataError
from fakescan.settings import Settings
from fakescan.storage import IMAGE_EXTENSIONS, ListFilter, open_store

if TYPE_CHECKING:
    from worker.lab.data import LabelledSet

log = logging.getLogger(__name__)


@dataclass
class RealImages:
    source: str
    keys: list[str]
    sizes: dict[str, int]
    reader: Callable[[str], bytes] = field(repr=False)
    concurrent: bool = False  # object-store reads overlap; zip members are read one by one

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for key in self.keys:
            digest.update(f"{key}\0{self.sizes.get(key, -1)}\n".encode())
        return f"sha256:{digest.hexdigest()[:16]}"

    def limited(self, limit: int | None, seed: int) -> "RealImages":
        if not limit or limit >= len(self.keys):
            return self
        chosen = np.random.default_rng(seed).choice(len(self.keys), size=limit, replace=False)
        keys = [self.keys[i] for i in sorted(chosen)]
        return RealImages(self.source, keys, self.sizes, self.reader, self.concurrent)

    def read_all(self) -> Iterator[tuple[str, bytes]]:
        if not self.concurrent:
            yield from ((key, self.reader(key)) for key in self.keys)
            return
        with ThreadPoolExecutor(max_workers=16) as pool:
            yield from zip(self.keys, pool.map(self.reader, self.keys), strict=True)


def _selected(keys: list[str], class_dir: str | None) -> list[str]:
    images = [key for key in keys if key.lower().endswith(IMAGE_EXTENSIONS)]
    wanted = class_dir or "real"
    chosen = [key for key in images if wanted.lower() in (part.lower() for part in key.split("/")[:-1])]
    if class_dir is None and not chosen:
        return sorted(images)  # no class folders at all: every image is taken as real
    return sorted(chosen)


def open_real_images(source: str, settings: Settings, class_dir: str | None = None) -> RealImages:
    if source.startswith("s3://"):
        images = _from_store(source, settings)
    else:
        path = Path(source).expanduser()
        if path.is_file() and path.suffix.lower() == ".zip":
            images = _from_zip(path)
        elif path.is_dir():
            images = _from_store(str(path.resolve()), settings)
        else:
            raise DataError(f"cannot read images from {source!r}: give a folder, a .zip or an s3:// prefix")
    images.keys = _selected(images.keys, class_dir)
    if not images.keys:
        where = f" in a {class_dir!r} folder" if class_dir else ""
        raise DataError(f"no images{where} in {source}")
    return images


def _from_zip(path: Path) -> RealImages:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise DataError(f"{path} is not a readable zip file: {error}") from None
    sizes = {info.filename: info.file_size for info in archive.infolist() if not info.is_dir()}
    return RealImages(str(path), list(sizes), sizes, archive.read)


def _from_store(source: str, settings: Settings) -> RealImages:
    store = open_store(source, settings)
    sizes = {info.key: info.size for info in store.list(ListFilter())}
    return RealImages(source, list(sizes), sizes, lambda key: store.read(key, settings.max_object_bytes),
                      concurrent=source.startswith("s3://"))


def load_array(images: RealImages, size: int, settings: Settings, progress: bool) -> tuple[np.ndarray, list[str]]:
    """Decode and resize every image into a uint8 (n, size, size, 3) array; returns it and the skip reasons."""
    array, _, skipped = decode_stream(images.read_all(), len(images.keys), size, settings, progress)
    return array, skipped


def load_labelled_array(labelled: LabelledSet, size: int, settings: Settings,
                        progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """A labelled set decoded like the real images (same resize), and its labels (1 = fake)."""
    stream = zip((item.key for item in labelled.items), labelled.read_many(labelled.items), strict=True)
    array, kept, _ = decode_stream(stream, len(labelled.items), size, settings, progress)
    return array, np.array([labelled.items[i].label for i in kept], dtype=np.int64)


def decode_stream(stream: Iterable[tuple[str, bytes]], total: int, size: int, settings: Settings,
                  progress: bool) -> tuple[np.ndarray, list[int], list[str]]:
    """(key, bytes) pairs decoded into a uint8 (n, size, size, 3) array; also the positions kept
    and the skip reasons of undecodable images, which are logged and left out."""
    from tqdm import tqdm

    from worker.decode import DecodeError, decode_image
    from worker.detectors.ensemble.features import to_array

    array = np.empty((total, size, size, 3), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[str] = []
    for position, (key, data) in enumerate(tqdm(stream, total=total, desc="reading", disable=not progress)):
        try:
            array[len(kept)] = to_array([decode_image(data, settings.max_image_pixels)], size)[0]
            kept.append(position)
        except DecodeError as error:
            skipped.append(f"{key}: {error}")
    if skipped:
        log.warning("skipped %d undecodable images, first: %s", len(skipped), skipped[0])
    return array[:len(kept)], kept, skipped
