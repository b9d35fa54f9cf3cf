"""The Celery application both roles share: the scheduler sends batches, the worker runs them.

Delivery settings are deliberate (see docs/operations.md, "Delivery guarantees"):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a batch is acknowledged only after its
  results are committed; a worker that dies mid-batch leaves it to be redelivered.
- ``worker_prefetch_multiplier=1``: with late acks a running batch counts against the limit, so a
  worker process holds only the batch it runs: a dying worker strands one batch and batches
  spread evenly over the fleet (a threads worker that reads ahead raises it to 2: worker/celery_app.py).
- ``visibility_timeout``: how long Redis waits before redelivering an unacknowledged batch. It must
  exceed the slowest batch, or a live worker's batch is handed to a second worker (harmless,
  since results are upserts, but wasted GPU time).
"""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Protocol

from fakescan.errors import UsageError
from fakescan.settings import Settings

SCAN_BATCH_TASK = "fakescan.scan_batch"


def make_celery_app(settings: Settings, *, include_tasks: bool = False) -> Any:
    from celery import Celery

    if not settings.broker_url:
        raise UsageError("no broker configured: set FAKESCAN_BROKER_URL (e.g. redis://host:6379/0)")
    app = Celery("fakescan", broker=settings.broker_url)  # results go to the database, not a backend
    transport_options = {"visibility_timeout": settings.visibility_timeout}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    if include_tasks:
        app.conf.include = ["worker.tasks"]
    return app


class CeleryDispatcher:
    """Sends one ``scan_batch`` task per batch of object ids (never bytes)."""

    # each send is two round trips to Redis (the message, the task-sent event): a scan sends from a
    # thread of its own while it lists and records the next chunk (``sending_ahead``)
    sends_from_any_thread = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_celery_app(settings)

    def __call__(self, scan_id: int, batch: int, object_ids: list[int]) -> None:
        self.app.send_task(SCAN_BATCH_TASK, args=[scan_id, object_ids], kwargs={"batch": batch},
                           queue=self.settings.queue)

    def close(self) -> None:
        self.app.close()


class SendBatch(Protocol):
    def __call__(self, scan_id: int, batch: int, object_ids: list[int]) -> None: ...


@contextmanager
def sending_ahead(send: SendBatch, depth: int = 256) -> Iterator[SendBatch]:
    """``send`` run in order by a background thread, up to ``depth`` batches behind the caller, when
    the dispatcher allows it (``sends_from_any_thread``); otherwise ``send`` itself (the embedded
    dispatcher runs the batch in the caller's thread). A failed send is raised by the next call or at
    the end of the block, where every batch handed over has been sent."""
    if not getattr(send, "sends_from_any_thread", False):
        yield send
        return
    pending: queue.Queue[tuple[int, int, list[int]] | None] = queue.Queue(maxsize=depth)
    failures: list[BaseException] = []

    def sender() -> None:
        while (batch := pending.get()) is not None:
            if not failures:
                try:
                    send(*batch)
                except BaseException as error:  # raised in the caller's thread
                    failures.append(error)

    def handed_over(scan_id: int, batch: int, object_ids: list[int]) -> None:
        if failures:
            raise failures[0]
        pending.put((scan_id, batch, object_ids))

    thread = threading.Thread(target=sender, name="enqueue", daemon=True)
    thread.start()
    try:
        yield handed_over
    finally:
        pending.put(None)
        thread.join()
    if failures:
        raise failures[0]


# kombu's Redis transport keeps priority levels other than 0 in sibling lists "<queue>\x06\x16<n>"
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)


def queue_depth(settings: Settings) -> int:
    """Batches waiting in the Celery queue (Redis list lengths); batches a worker holds are not counted."""
    import redis

    if not settings.broker_url:
        raise UsageError("no broker configured: set FAKESCAN_BROKER_URL (e.g. redis://host:6379/0)")
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        names = [settings.queue] + [f"{settings.queue}{_PRIORITY_SEPARATOR}{step}" for step in _PRIORITY_STEPS[1:]]
        pipeline = client.pipeline(transaction=False)
        for name in names:
            pipeline.llen(name)
        return sum(int(length) for length in pipeline.execute())
    finally:
        client.close()


def queue_depth_or_none(settings: Settings) -> int | None:
    """``queue_depth`` for a report that must not fail with the broker (``fakescan status``)."""
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import RedisError

    try:
        return queue_depth(settings)
    except (OSError, RedisError, KombuOperationalError):
        return None


# --- where a batch is: waiting, reserved, running (the reconciler's view of the broker) ---------

LEASE_SECONDS = 30  # a running batch's lease expires this long after its worker stops renewing it
UNACKED_HASH = "unacked"  # kombu's Redis transport: reserved messages (running, prefetched, awaiting retry)
DELIVERY_COUNT_SECONDS = 7 * 86400


def redis_client(settings: Settings) -> Any:
    import redis

    if not settings.broker_url:
        raise UsageError("no broker configured: set FAKESCAN_BROKER_URL (e.g. redis://host:6379/0)")
    return redis.Redis.from_url(settings.broker_url, socket_timeout=10, socket_connect_timeout=5)


def lease_key(queue: str, scan_id: int, batch: int) -> str:
    return f"fakescan:lease:{queue}:{scan_id}:{batch}"


def delivery_key(queue: str, scan_id: int, batch: int, retries: int) -> str:
    return f"fakescan:deliveries:{queue}:{scan_id}:{batch}:{retries}"


def batch_of_message(message: dict[str, Any]) -> tuple[int, int] | None:
    """(scan_id, batch) of a kombu message dict carrying ``fakescan.scan_batch``; None for others."""
    import base64
    import json

    if (message.get("headers") or {}).get("task") != SCAN_BATCH_TASK:
        return None
    body = message.get("body", "")
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    try:
        args, kwargs, _ = json.loads(body)
        return int(args[0]), int(kwargs.get("batch", 0))
    except (ValueError, TypeError, IndexError, KeyError):
        return None


def batches_in_broker(settings: Settings) -> set[tuple[int, int]]:
    """(scan_id, batch) of every batch of this queue the broker holds or a worker runs right now:
    messages waiting in the queue lists, messages reserved by workers (the unacked hash), and
    running batches' leases. Raises redis errors: an unreachable broker proves nothing."""
    import json

    client = redis_client(settings)
    found: set[tuple[int, int]] = set()
    try:
        names = [settings.queue] + [f"{settings.queue}{_PRIORITY_SEPARATOR}{step}" for step in _PRIORITY_STEPS[1:]]
        for name in names:
            for start in range(0, int(client.llen(name)), 1000):
                for raw in client.lrange(name, start, start + 999):
                    _add(found, json.loads(raw))
        for raw in client.hvals(UNACKED_HASH):
            message, _exchange, routing_key = json.loads(raw)
            if routing_key == settings.queue:
                _add(found, message)
        prefix = lease_key(settings.queue, 0, 0).rsplit(":", 2)[0] + ":"
        for key in client.scan_iter(match=prefix + "*", count=1000):
            scan_id, batch = key.decode().rsplit(":", 2)[1:]
            found.add((int(scan_id), int(batch)))
    finally:
        client.close()
    return found


def _add(found: set[tuple[int, int]], message: dict[str, Any]) -> None:
    batch = batch_of_message(message)
    if batch is not None:
        found.add(batch)


def broker_persistence(settings: Settings) -> dict[str, bool]:
    """What the broker says of its own durability: ``aof`` (appendonly) and ``rdb`` (save points)."""
    client = redis_client(settings)
    try:
        info = client.info("persistence")
        try:
            saves = str(client.config_get("save").get("save", "")).strip()
        except Exception:  # CONFIG may be renamed or disabled on a managed Redis: trust INFO alone
            saves = ""
    finally:
        client.close()
    return {"aof": bool(int(info.get("aof_enabled", 0))), "rdb": bool(saves)}
