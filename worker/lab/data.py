"""Labelled image sets for training and evaluation.

A data set is a folder, a ``.zip`` (members read in place, never extracted), an ``s3://`` prefix
(each with ``real/`` and ``fake/`` sub-folders in any case), or a CSV of ``path,label`` rows.
Items are sorted by key so every run sees the same order, and the set's fingerprint (a hash of
keys, sizes and labels) goes into the trained detector's manifest.
"""

from __future__ import annotations

import csv
import hashlib
import random
import zipfile
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from fakescan.errors import DataError
from fakescan.settings import Settings
from fakescan.storage import IMAGE_EXTENSIONS, ListFilter, open_store

if TYPE_CHECKING:
    from PIL import Image  # imported where used: listing a data set needs no decoder

REAL, FAKE = 0, 1
LABELS = ("real", "fake")  # index = class id; "fake" is the positive class everywhere
_LABEL_WORDS = {"real": REAL, "fake": FAKE, "0": REAL, "1": FAKE}


@dataclass(frozen=True)
class LabelledItem:
    key: str  # member name, relative path, or CSV path as written
    label: int  # REAL or FAKE
    size: int  # bytes; -1 when unknown (CSV rows pointing at S3)


def label_from_key(key: str) -> int | None:
    """The first path component naming a class (``real``/``fake`` in any case), or None."""
    for part in key.replace("\\", "/").split("/")[:-1]:
        if part.lower() in LABELS:
            return LABELS.index(part.lower())
    return None


def _is_image(key: str) -> bool:
    return key.lower().endswith(IMAGE_EXTENSIONS)


class LabelledSet(ABC):
    """Sorted labelled items, a way to read their bytes, and the scan's decoder for them."""

    source: str
    items: list[LabelledItem]
    max_pixels: int = Settings.model_fields["max_image_pixels"].default  # open_labelled sets the configured limit

    def decode(self, data: bytes) -> Image.Image:
        """The pixels a scan would score: ``worker.decode.decode_image`` (EXIF orientation, alpha on
        white, 16-bit rescale, pixel limit). Raises ``DecodeError`` for bad input, nothing else."""
        from worker.decode import decode_image

        return decode_image(data, self.max_pixels)

    @abstractmethod
    def read(self, item: LabelledItem) -> bytes:
        """The item's encoded bytes."""

    def read_many(self, items: Sequence[LabelledItem]) -> Iterator[bytes]:
        for item in items:
            yield self.read(item)

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(f"{item.key}\0{item.size}\0{item.label}\n".encode())
        return f"sha256:{digest.hexdigest()[:16]}"

    def counts(self) -> dict[str, int]:
        fakes = sum(self.labels)
        return {"real": len(self.items) - fakes, "fake": fakes}

    def limited(self, limit: int | None, seed: int = 0) -> "LabelledSet":
        """At most ``limit`` items, balanced across classes, drawn at random with ``seed``.

        A random draw, not a stride over the sorted keys: CIFAKE-style names sort by generation
        batch or source class, so every n-th name would over-sample some of them.
        """
        if not limit or limit >= len(self.items):
            return self
        rng = random.Random(seed)
        chosen: list[LabelledItem] = []
        for label in (REAL, FAKE):
            members = [item for item in self.items if item.label == label]
            want = limit // 2 + (limit % 2 if label == REAL else 0)
            chosen += rng.sample(members, min(want, len(members)))
        return _Subset(self, sorted(chosen, key=lambda item: item.key))

    def without(self, keys: set[str]) -> "LabelledSet":
        """The items whose keys are not in ``keys`` (for example images already used for fitting)."""
        return _Subset(self, [item for item in self.items if item.key not in keys])

    def _finish(self) -> None:
        self.items.sort(key=lambda item: item.key)
        if not self.items:
            raise DataError(f"no labelled images in {self.source}: expected real/ and fake/ folders "
                            "(any case) or a CSV of path,label")


class _Subset(LabelledSet):
    def __init__(self, parent: LabelledSet, items: list[LabelledItem]) -> None:
        self.parent, self.source, self.items = parent, parent.source, items
        self.max_pixels = parent.max_pixels

    def read(self, item: LabelledItem) -> bytes:
        return self.parent.read(item)

    def read_many(self, items: Sequence[LabelledItem]) -> Iterator[bytes]:
        return self.parent.read_many(items)


class FolderSet(LabelledSet):
    def __init__(self, folder: Path) -> None:
        self.folder, self.source = folder, str(folder)
        self.items = []
        for path in folder.rglob("*"):
            key = path.relative_to(folder).as_posix()
            label = label_from_key(key)
            if label is not None and path.is_file() and _is_image(key):
                self.items.append(LabelledItem(key, label, path.stat().st_size))
        self._finish()

    def read(self, item: LabelledItem) -> bytes:
        return (self.folder / item.key).read_bytes()


class ZipSet(LabelledSet):
    def __init__(self, path: Path) -> None:
        self.source = str(path)
        try:
            self.archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as error:
            raise DataError(f"{path} is not a readable zip file: {error}") from None
        self.items = []
        for info in self.archive.infolist():
            label = label_from_key(info.filename)
            if label is not None and not info.is_dir() and _is_image(info.filename):
                self.items.append(LabelledItem(info.filename, label, info.file_size))
        self._finish()

    def read(self, item: LabelledItem) -> bytes:
        return self.archive.read(item.key)  # one archive handle, read sequentially: ZipFile is not thread-safe


class StoreSet(LabelledSet):
    """An ``s3://`` prefix (or any fakescan store); objects are fetched concurrently."""

    def __init__(self, uri: str, settings: Settings) -> None:
        self.source, self.store, self.max_bytes = uri, open_store(uri, settings), settings.max_object_bytes
        self.prefix = getattr(self.store, "prefix", "").rstrip("/")
        self.prefix += "/" if self.prefix else ""
        self.items = []
        for info in self.store.list(ListFilter()):
            key = info.key[len(self.prefix):] if info.key.startswith(self.prefix) else info.key
            label = label_from_key(key)
            if label is not None:
                self.items.append(LabelledItem(key, label, info.size))
        self._finish()

    def read(self, item: LabelledItem) -> bytes:
        return self.store.read(self.prefix + item.key, self.max_bytes)

    def read_many(self, items: Sequence[LabelledItem]) -> Iterator[bytes]:
        with ThreadPoolExecutor(max_workers=16) as pool:
            yield from pool.map(self.read, items)


class CsvSet(LabelledSet):
    """Rows of ``path,label``; paths relative to the CSV's folder, absolute, or ``s3://`` URIs."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.source, self.base, self.settings = str(path), path.parent, settings
        self.items = []
        with path.open(newline="") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or row[0].startswith("#") or (number == 1 and row[-1].strip().lower() == "label"):
                    continue
                if len(row) < 2 or row[1].strip().lower() not in _LABEL_WORDS:
                    raise DataError(f"{path}:{number}: expected path,label with label real/fake/0/1, got {row!r}")
                key = row[0].strip()
                self.items.append(LabelledItem(key, _LABEL_WORDS[row[1].strip().lower()], self._size(key)))
        self._finish()

    def _size(self, key: str) -> int:
        if key.startswith("s3://"):
            return -1
        local = self.base / key
        if not local.is_file():
            raise DataError(f"{self.source}: no such image {local}")
        return local.stat().st_size

    def read(self, item: LabelledItem) -> bytes:
        if item.key.startswith("s3://"):
            bucket_prefix, _, key = item.key[5:].partition("/")
            return open_store(f"s3://{bucket_prefix}", self.settings).read(key, self.settings.max_object_bytes)
        return (self.base / item.key).read_bytes()


def open_labelled(source: str, settings: Settings) -> LabelledSet:
    """A labelled set from a folder, a zip, an ``s3://`` prefix or a CSV file, decoding as a scan does."""
    labelled = _open_labelled(source, settings)
    labelled.max_pixels = settings.max_image_pixels
    return labelled


def _open_labelled(source: str, settings: Settings) -> LabelledSet:
    if source.startswith("s3://"):
        return StoreSet(source, settings)
    path = Path(source).expanduser()
    if path.is_dir():
        return FolderSet(path.resolve())
    if path.is_file() and path.suffix.lower() == ".zip":
        return ZipSet(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return CsvSet(path, settings)
    raise DataError(f"cannot read labelled data from {source!r}: give a folder, a .zip, a .csv or an s3:// prefix")


def item_groups(spec: str, items: Sequence[LabelledItem]) -> list[str]:
    """Each item's value of a manifest column, from ``CSV:COLUMN`` (e.g. ``manifest.csv:generator``).

    A CSV row belongs to an item when its ``id`` is the item's file stem, or its ``path`` the
    item's key; items without a row are grouped as ``"(none)"``."""
    location, sep, column = spec.rpartition(":")
    if not sep or not location or not column:
        raise DataError(f"expected CSV:COLUMN (e.g. manifest.csv:generator), got {spec!r}")
    path = Path(location).expanduser()
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}") from None
    if rows and column not in rows[0]:
        raise DataError(f"{path} has no column {column!r}; columns: {', '.join(rows[0])}")
    by_id = {row["id"]: row[column] for row in rows if row.get("id")}
    by_path = {row["path"]: row[column] for row in rows if row.get("path")}
    return [by_path.get(item.key) or by_id.get(Path(item.key).stem) or "(none)" for item in items]
