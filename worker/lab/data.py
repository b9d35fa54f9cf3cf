"""The lab's one source of images: training, evaluation, calibration and ensemble fitting all read here.

A source is a folder, a ``.zip`` (members read in place, never extracted), an ``s3://`` prefix,
or a CSV of ``path,label`` rows (paths relative to the CSV's folder, absolute, or ``s3://`` URIs).
Keys are relative to the folder, archive or prefix and sorted, so every run sees the same order
and a seed draws the same subset on every machine. Labels come from a ``real``/``fake`` folder in
the key (any case) or the CSV's column. :func:`open_labelled` keeps the labelled images;
:func:`open_real` takes the real ones a one-class ensemble is fitted on. The set's fingerprint (a
hash of keys, sizes and labels) goes into the training record. Every image is decoded by the
scan's decoder with the scan's pixel limit (:meth:`LabelledSet.decode`), so a threshold is chosen
on the pixels the worker scores.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import random
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from fakescan.errors import DataError
from fakescan.settings import Settings
from fakescan.storage import IMAGE_EXTENSIONS, ListFilter, S3Store, Store, open_store, parse_s3_uri, s3_client

if TYPE_CHECKING:
    from PIL import Image  # imported where used: listing a data set needs no decoder

REAL, FAKE = 0, 1
LABELS = ("real", "fake")  # index = class id; "fake" is the positive class everywhere
_LABEL_WORDS = {"real": REAL, "fake": FAKE, "0": REAL, "1": FAKE}
READ_THREADS = 16  # concurrent object-store reads; local files and zip members are read one by one


@dataclass(frozen=True)
class LabelledItem:
    key: str  # relative path, member name, or CSV path as written
    label: int  # REAL or FAKE
    size: int  # bytes; -1 when unknown (CSV rows pointing at S3)


def label_from_key(key: str) -> int | None:
    """The first path component naming a class (``real``/``fake`` in any case), or None."""
    for part in key.replace("\\", "/").split("/")[:-1]:
        if part.lower() in LABELS:
            return LABELS.index(part.lower())
    return None


class LabelledSet:
    """Sorted labelled items, one way to read their bytes, and the scan's decoder for them."""

    def __init__(self, source: str, items: list[LabelledItem], reader: Callable[[str], bytes], settings: Settings,
                 concurrent: bool) -> None:
        self.source, self.items = source, sorted(items, key=lambda item: item.key)
        self.reader, self.concurrent = reader, concurrent
        self.max_pixels = settings.max_image_pixels

    def decode(self, data: bytes) -> Image.Image:
        """The pixels a scan would score: ``fakescan.decode.decode_image`` (EXIF orientation, alpha on
        white, 16-bit rescale, pixel limit). Raises ``DecodeError`` for bad input, nothing else."""
        from fakescan.decode import decode_image

        return decode_image(data, self.max_pixels)

    def read(self, item: LabelledItem) -> bytes:
        return self.reader(item.key)

    def read_many(self, items: Sequence[LabelledItem]) -> Iterator[bytes]:
        """The items' bytes in order; object-store reads overlap on one pool per call."""
        if not self.concurrent:
            yield from map(self.read, items)
            return
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            yield from pool.map(self.read, items)

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
        """At most ``limit`` items, split evenly over the classes present, drawn at random with ``seed``.

        A random draw, not a stride over the sorted keys: CIFAKE-style names sort by generation
        batch or source class, so every n-th name would over-sample some of them.
        """
        if not limit or limit >= len(self.items):
            return self
        rng = random.Random(seed)
        classes = sorted(set(self.labels))
        chosen: list[LabelledItem] = []
        for position, label in enumerate(classes):
            members = [item for item in self.items if item.label == label]
            want = limit // len(classes) + (1 if position < limit % len(classes) else 0)
            chosen += rng.sample(members, min(want, len(members)))
        return self.with_items(chosen)

    def without(self, keys: set[str]) -> "LabelledSet":
        """The items whose keys are not in ``keys`` (for example images already used for fitting)."""
        return self.with_items([item for item in self.items if item.key not in keys])

    def with_items(self, items: list[LabelledItem]) -> "LabelledSet":
        subset = copy.copy(self)  # the same reader (and its one client or archive handle)
        subset.items = sorted(items, key=lambda item: item.key)
        return subset


@dataclass
class _Listing:
    """Every image of a source: (key, size, label or None when the key names no class), and a reader."""

    source: str
    entries: list[tuple[str, int, int | None]]
    reader: Callable[[str], bytes]
    concurrent: bool


def open_labelled(source: str, settings: Settings) -> LabelledSet:
    """The labelled images of a folder, a zip, an ``s3://`` prefix or a CSV file."""
    listing = _listing(source, settings)
    items = [LabelledItem(key, label, size) for key, size, label in listing.entries if label is not None]
    if not items:
        raise DataError(f"no labelled images in {listing.source}: expected real/ and fake/ folders "
                        "(any case) or a CSV of path,label")
    return LabelledSet(listing.source, items, listing.reader, settings, listing.concurrent)


def open_real(source: str, settings: Settings, class_dir: str | None = None) -> LabelledSet:
    """The real images of a source, for the one-class ensemble.

    With ``class_dir``, the images under a folder of that name (any case); without it, a source
    with ``real`` images (a ``real`` folder, as CIFAKE's REAL/ and FAKE/, or real CSV rows) is
    narrowed to them, and a source without any is taken whole.
    """
    listing = _listing(source, settings)
    if class_dir is not None:
        chosen = [(key, size) for key, size, _ in listing.entries if _in_folder(key, class_dir)]
    else:
        chosen = [(key, size) for key, size, label in listing.entries if label == REAL]
        chosen = chosen or [(key, size) for key, size, _ in listing.entries]
    if not chosen:
        where = f" in a {class_dir!r} folder" if class_dir else ""
        raise DataError(f"no images{where} in {listing.source}")
    items = [LabelledItem(key, REAL, size) for key, size in chosen]
    return LabelledSet(listing.source, items, listing.reader, settings, listing.concurrent)


def _in_folder(key: str, folder: str) -> bool:
    return folder.lower() in (part.lower() for part in key.replace("\\", "/").split("/")[:-1])


def _is_image(key: str) -> bool:
    return key.lower().endswith(IMAGE_EXTENSIONS)


def _listing(source: str, settings: Settings) -> _Listing:
    if source.startswith("s3://"):
        return _from_store(source, settings)
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_folder(path.resolve())
    if path.is_file() and path.suffix.lower() == ".zip":
        return _from_zip(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _from_csv(path, settings)
    raise DataError(f"cannot read images from {source!r}: give a folder, a .zip, a .csv or an s3:// prefix")


def _from_folder(folder: Path) -> _Listing:
    entries: list[tuple[str, int, int | None]] = []
    for path in folder.rglob("*"):
        key = path.relative_to(folder).as_posix()
        if _is_image(key) and path.is_file():
            entries.append((key, path.stat().st_size, label_from_key(key)))
    return _Listing(str(folder), entries, lambda key: (folder / key).read_bytes(), concurrent=False)


def _from_zip(path: Path) -> _Listing:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise DataError(f"{path} is not a readable zip file: {error}") from None
    entries = [(info.filename, info.file_size, label_from_key(info.filename)) for info in archive.infolist()
               if not info.is_dir() and _is_image(info.filename)]
    # one archive handle, read sequentially: ZipFile is not thread-safe
    return _Listing(str(path), entries, archive.read, concurrent=False)


def _from_store(uri: str, settings: Settings) -> _Listing:
    store = open_store(uri, settings)
    prefix = getattr(store, "prefix", "").rstrip("/")
    prefix += "/" if prefix else ""
    entries: list[tuple[str, int, int | None]] = []
    for info in store.list(ListFilter()):
        key = info.key[len(prefix):] if info.key.startswith(prefix) else info.key
        if _is_image(key):
            entries.append((key, info.size, label_from_key(key)))
    return _Listing(uri, entries, lambda key: store.read(prefix + key, settings.max_object_bytes), concurrent=True)


def _from_csv(path: Path, settings: Settings) -> _Listing:
    """Rows of ``path,label``; S3 rows are read through one client for the whole set."""
    entries: list[tuple[str, int, int | None]] = []
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#") or (number == 1 and row[-1].strip().lower() == "label"):
                continue
            if len(row) < 2 or row[1].strip().lower() not in _LABEL_WORDS:
                raise DataError(f"{path}:{number}: expected path,label with label real/fake/0/1, got {row!r}")
            key = row[0].strip()
            entries.append((key, _local_size(path, key), _LABEL_WORDS[row[1].strip().lower()]))
    buckets = {parse_s3_uri(key)[0] for key, _, _ in entries if key.startswith("s3://")}
    client = s3_client(settings) if buckets else None
    stores: dict[str, Store] = {bucket: S3Store(bucket, "", client) for bucket in buckets}

    def read(key: str) -> bytes:
        if key.startswith("s3://"):
            bucket, object_key = parse_s3_uri(key)
            return stores[bucket].read(object_key, settings.max_object_bytes)
        return (path.parent / key).read_bytes()

    return _Listing(str(path), entries, read, concurrent=bool(buckets))


def _local_size(csv_path: Path, key: str) -> int:
    if key.startswith("s3://"):
        return -1
    local = csv_path.parent / key
    if not local.is_file():
        raise DataError(f"{csv_path}: no such image {local}")
    return local.stat().st_size


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
