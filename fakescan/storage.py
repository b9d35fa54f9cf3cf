"""Object-storage access shared by the scheduler (listing) and the worker (fetching).

``open_store("s3://bucket/prefix")`` or ``open_store("/some/folder")`` returns a :class:`Store`.
Listings are generators over pages, so a prefix with millions of keys is never held in memory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar
from urllib.parse import urlparse

from fakescan.errors import SourceError, UsageError
from fakescan.settings import Settings

T = TypeVar("T")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif")


@dataclass(frozen=True)
class ObjectInfo:
    uri: str  # s3://bucket/key or file:///abs/path
    store: str  # s3://bucket or file:///abs/root
    key: str  # relative to the store
    size: int
    last_modified: datetime
    etag: str | None = None
    content_hash: str | None = None

    @property
    def fingerprint(self) -> str:
        if self.content_hash:
            return f"sha256:{self.content_hash}"
        return f"etag:{self.etag}:{self.size}"


@dataclass(frozen=True)
class ListFilter:
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS  # lower-case, with dot; empty means any
    globs: tuple[str, ...] = ()  # fnmatch patterns on the key; any match admits
    min_size: int = 0
    max_size: int | None = None
    since: datetime | None = None  # only objects modified at or after this instant

    def admits(self, key: str, size: int, modified: datetime) -> bool:
        if self.extensions and not key.lower().endswith(self.extensions):
            return False
        if self.globs and not any(fnmatch.fnmatch(key, pattern) for pattern in self.globs):
            return False
        if size < self.min_size or (self.max_size is not None and size > self.max_size):
            return False
        return self.since is None or modified >= self.since


class ObjectTooLarge(ValueError):
    pass


class Store(ABC):
    root: str

    @abstractmethod
    def list(self, filters: ListFilter = ListFilter()) -> Iterator[ObjectInfo]:
        """Objects under the store's prefix that pass the filter, page by page."""

    @abstractmethod
    def read(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes; ObjectTooLarge past max_bytes (checked from metadata, then while reading)."""

    def read_head(self, key: str, length: int, max_bytes: int) -> tuple[bytes, int]:
        """The first ``length`` bytes and the object's size (ranged GET / partial read); ObjectTooLarge
        when the whole object is over max_bytes. Stores that cannot read part of an object read it all."""
        data = self.read(key, max_bytes)
        return data[:length], len(data)

    @abstractmethod
    def check(self) -> None:
        """Raise SourceError when the store cannot be reached or read."""


@dataclass
class LocalStore(Store):
    folder: Path
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.folder = self.folder.expanduser().resolve()
        self.root = self.folder.as_uri()

    def check(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"no such folder: {self.folder}")

    def list(self, filters: ListFilter = ListFilter()) -> Iterator[ObjectInfo]:
        self.check()
        for directory, subdirs, files in os.walk(self.folder):
            subdirs.sort()
            for name in sorted(files):
                path = Path(directory) / name
                key = path.relative_to(self.folder).as_posix()
                stat = path.stat()
                modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
                if filters.admits(key, stat.st_size, modified):
                    yield ObjectInfo(path.as_uri(), self.root, key, stat.st_size, modified,
                                     content_hash=_sha256_file(path))

    def read(self, key: str, max_bytes: int) -> bytes:
        path = self.folder / key
        if path.stat().st_size > max_bytes:
            raise ObjectTooLarge(f"object is {path.stat().st_size} bytes, over the {max_bytes}-byte limit")
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ObjectTooLarge(f"object grew past the {max_bytes}-byte limit while reading")
        return data

    def read_head(self, key: str, length: int, max_bytes: int) -> tuple[bytes, int]:
        with (self.folder / key).open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ObjectTooLarge(f"object is {size} bytes, over the {max_bytes}-byte limit")
            return handle.read(length), size


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise UsageError(f"malformed S3 URL {uri!r}: expected s3://bucket[/prefix]")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    # a stalled connection is a transfer fault after s3_timeout seconds (botocore waits 60 s by default)
    config = Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=32,
                    connect_timeout=settings.s3_timeout, read_timeout=settings.s3_timeout)
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
                        config=config)


@dataclass
class S3Store(Store):
    bucket: str
    prefix: str
    client: Any
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.root = f"s3://{self.bucket}"

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "?")
            raise SourceError(f"cannot read bucket {self.bucket!r}: {code}") from None
        except BotoCoreError as error:
            raise SourceError(f"cannot reach S3 for bucket {self.bucket!r}: {error}") from None

    def list(self, filters: ListFilter = ListFilter()) -> Iterator[ObjectInfo]:
        self.check()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                key, size, modified = item["Key"], item["Size"], item["LastModified"]
                if key.endswith("/") or not filters.admits(key, size, modified):
                    continue
                yield ObjectInfo(f"s3://{self.bucket}/{key}", self.root, key, size, modified,
                                 etag=item.get("ETag", "").strip('"'))

    def read(self, key: str, max_bytes: int) -> bytes:
        """A body cut off mid-transfer raises botocore's IncompleteReadError (a transfer fault, retried),
        never short bytes: those would be stored as a ``corrupt:`` verdict on a sound object."""
        from botocore.exceptions import IncompleteReadError

        response = self.client.get_object(Bucket=self.bucket, Key=key)
        length = response.get("ContentLength")
        body = response["Body"]
        if length is not None and length > max_bytes:
            body.close()
            raise ObjectTooLarge(f"object is {length} bytes, over the {max_bytes}-byte limit")
        # botocore checks the byte count against Content-Length only when read() is given no size;
        # the length checked above bounds that read. Without a length, read one byte past the limit.
        data = body.read() if length is not None else body.read(max_bytes + 1)
        if length is not None and len(data) != length:
            raise IncompleteReadError(actual_bytes=len(data), expected_bytes=length)
        if len(data) > max_bytes:
            raise ObjectTooLarge(f"object grew past the {max_bytes}-byte limit while reading")
        return data

    def read_head(self, key: str, length: int, max_bytes: int) -> tuple[bytes, int]:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{max(0, length - 1)}")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "InvalidRange":  # a 0-byte object has no range
                raise
            data = self.read(key, max_bytes)
            return data, len(data)
        size = _total_size(response)
        if size > max_bytes:
            response["Body"].close()
            raise ObjectTooLarge(f"object is {size} bytes, over the {max_bytes}-byte limit")
        data = response["Body"].read()  # botocore checks the length of a read without a size
        return data, size


def _total_size(response: dict[str, Any]) -> int:
    """The whole object's size from a ranged GET's ``Content-Range: bytes 0-N/SIZE`` (or its length
    when the store answered the whole object: a 0-byte object has no satisfiable range)."""
    content_range = str(response.get("ContentRange") or "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    return int(response.get("ContentLength") or 0)


def open_store(source: str, settings: Settings) -> Store:
    """``s3://bucket/prefix``, ``file:///abs/folder`` or a plain folder path."""
    if "://" in source:
        scheme = source.split("://", 1)[0]
        if scheme == "s3":
            bucket, prefix = parse_s3_uri(source)
            return S3Store(bucket, prefix, s3_client(settings))
        if scheme == "file":
            return LocalStore(Path(urlparse(source).path))
        raise UsageError(f"unsupported source {source!r}: use s3://bucket/prefix or a local folder")
    if source.lower().startswith(("s3:", "file:")):  # "s3:/bucket", "s3:bucket": a mistyped URL, not a folder
        raise UsageError(f"malformed URL {source!r}: expected s3://bucket[/prefix] or file:///folder")
    return LocalStore(Path(source))


def store_for_root(root: str, settings: Settings) -> Store:
    """The store an ObjectInfo.root names (what the worker gets from a task)."""
    return open_store(root, settings)


def download_prefix(uri: str, destination: Path, settings: Settings) -> Path:
    """Copy every object under an ``s3://`` prefix into a folder (model checkpoints); returns it."""
    bucket, prefix = parse_s3_uri(uri)
    client = s3_client(settings)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    found = False
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix):]
            if not relative or relative.endswith("/"):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(target))
            found = True
    if not found:
        raise SourceError(f"nothing under {uri}")
    return destination
