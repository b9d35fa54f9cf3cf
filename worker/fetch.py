"""Fetch a batch's objects concurrently; sort each failure into bad input (a row) or a fault (a retry).

A missing, denied, archived or oversized object is a fact about that object: retrying will not
change it, so it becomes an ``error`` row. A 5xx, a throttle or an unreachable endpoint is a fact
about the infrastructure: :class:`InfrastructureFault` propagates and the task retries the batch
(boto3 has already retried the single request with adaptive backoff by then).
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

from botocore.exceptions import BotoCoreError, ClientError

from fakescan.settings import Settings
from fakescan.storage import ObjectTooLarge

if TYPE_CHECKING:
    from worker.cache import ProcessCache
    from worker.pipeline import BatchObject

MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})
DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
ARCHIVED_CODES = frozenset({"InvalidObjectState"})
EMPTY_REASON = "empty: the object has 0 bytes"


class InfrastructureFault(Exception):
    """Storage or network trouble that says nothing about the object: retry the batch later."""


@dataclass(frozen=True)
class FetchedObject:
    object: "BatchObject"
    data: bytes | None
    error: str | None  # the reason stored in the result row when the object could not be read
    seconds: float
    complete: bool = True  # False: data is the object's head only (see fetch_one's head_bytes)


def fetch_one(item: "BatchObject", settings: Settings, cache: "ProcessCache",
              head_bytes: int | None = None) -> FetchedObject:
    """The object's bytes, or with ``head_bytes`` only its first bytes (a ranged GET) when it is larger."""
    started = time.perf_counter()
    data, error, complete = None, None, True
    try:
        store = cache.store(item.store)
        if head_bytes is None:
            data = store.read(item.key, settings.max_object_bytes)
        else:
            data, size = store.read_head(item.key, head_bytes, settings.max_object_bytes)
            complete = len(data) >= size
    except ObjectTooLarge as too_large:
        error = f"too-large: {too_large}"
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        error = "not-found: the file is gone"
    except PermissionError:
        error = "access-denied: the file cannot be read"
    except ClientError as client_error:
        error = _client_error_reason(item, client_error)
    except BotoCoreError as fault:
        raise InfrastructureFault(f"cannot reach object storage for {item.uri}: {fault}") from fault
    except OSError as fault:  # EIO, a stale NFS handle: the disk, not the object
        raise InfrastructureFault(f"cannot read {item.uri}: {fault}") from fault
    if data is not None and not data:  # decided here, so every detector stores the same reason
        data, error = None, EMPTY_REASON
    return FetchedObject(item, data, error, time.perf_counter() - started, complete)


@dataclass
class FetchedAhead:
    """A batch whose objects were fetched before it ran (``worker.prefetch``): futures by object."""

    scan_id: int
    batch: int
    object_ids: frozenset[int]
    head_bytes: int | None
    futures: dict["BatchObject", Future[FetchedObject]] = field(default_factory=dict)

    def discard(self) -> None:
        """Drop the fetches nobody will use (those already running finish and are forgotten)."""
        for future in self.futures.values():
            future.cancel()
        self.futures.clear()


class FetchWindow:
    """A batch's fetches in order, each started at most ``ahead`` fetches before it is taken.

    The bytes a batch holds stay bounded whatever its size: ``ahead`` objects fetched and not yet
    taken, plus those taken and not yet decoded (the decode window, ``worker.stream``); the window
    forgets each fetch it hands over, so an object's bytes go as soon as its decode drops them.
    An item is a running fetch (read ahead, ``worker.prefetch``) or a function that starts one."""

    def __init__(self, items: Sequence["Future[FetchedObject] | Callable[[], Future[FetchedObject]]"],
                 ahead: int) -> None:
        self._items: list[Any] = list(items)
        self.fetched_ahead = sum(1 for item in self._items if isinstance(item, Future))  # made before the batch
        self._ahead = max(1, ahead)
        self._taken = 0
        self._start_up_to(self._ahead)

    def __len__(self) -> int:
        return len(self._items)

    def take(self) -> Future[FetchedObject]:
        """The next object's fetch (IndexError past the last); starts the fetches up to ``ahead`` beyond it."""
        self._start_up_to(self._taken + 1 + self._ahead)
        future, self._items[self._taken] = self._items[self._taken], None
        self._taken += 1
        return cast("Future[FetchedObject]", future)

    def take_all(self) -> list[Future[FetchedObject]]:
        return [self.take() for _ in range(len(self) - self._taken)]

    def _start_up_to(self, end: int) -> None:
        for index in range(self._taken, min(end, len(self._items))):
            item = self._items[index]
            if not isinstance(item, Future):
                self._items[index] = item()


def fetch_all(objects: Sequence["BatchObject"], settings: Settings, cache: "ProcessCache", head_bytes: int | None,
              ahead: FetchedAhead | None = None) -> FetchWindow:
    """Every object's fetch, in the process's fetch threads, ``fetch_concurrency`` ahead of the
    decoding (:class:`FetchWindow`): the one fetched ahead when it read the same object the same way
    (same row: key, store, fingerprint; same head), else a new one.

    A fetch fetched ahead carries its own outcome: bad input is its row, a fault raises when this
    batch reads it, so a prefetched object's failure is always its own batch's."""
    reuse = ahead.futures if ahead is not None and ahead.head_bytes == head_bytes else {}
    pool = cache.fetch_pool()
    items = [reuse.pop(item) if item in reuse else partial(pool.submit, fetch_one, item, settings, cache, head_bytes)
             for item in objects]
    if ahead is not None:
        ahead.discard()  # objects no longer in the batch (deleted, or not items of the scan any more)
    return FetchWindow(items, settings.fetch_concurrency)


def rest_of(item: "BatchObject", settings: Settings, cache: "ProcessCache") -> Callable[[], bytes]:
    """The whole object, read when a detector given only its head needs more; bad input raises
    :class:`IncompleteRead` with the reason, faults raise :class:`InfrastructureFault`."""
    def read() -> bytes:
        fetched = fetch_one(item, settings, cache)
        if fetched.error is not None:
            raise IncompleteRead(fetched.error)
        return fetched.data or b""

    return read


class IncompleteRead(ValueError):
    """The rest of an object read from its head could not be read (it went away meanwhile ...)."""


def _client_error_reason(item: "BatchObject", error: ClientError) -> str:
    code = str(error.response.get("Error", {}).get("Code", ""))
    if code in MISSING_CODES:
        return f"not-found: {code}"
    if code in DENIED_CODES:
        return f"access-denied: {code}"
    if code in ARCHIVED_CODES:
        return f"archived: {code} (restore the object from its archive storage class first)"
    raise InfrastructureFault(f"object storage answered {code or 'an error'} for {item.uri}") from error
