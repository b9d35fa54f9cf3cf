"""The Celery application both roles share: the scheduler sends batches, the worker runs them.

Delivery settings are deliberate (see docs/operations.md, "Delivery guarantees"):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a batch is acknowledged only after its
  results are committed; a worker that dies mid-batch leaves it to be redelivered.
- ``worker_prefetch_multiplier=1``: a worker holds one batch beyond the one it runs, so a dying
  worker strands little work and batches spread evenly over the fleet.
- ``visibility_timeout``: how long Redis waits before redelivering an unacknowledged batch. It must
  exceed the slowest batch, or a live worker's batch is handed to a second worker (harmless,
  since results are upserts, but wasted GPU time).
"""

from __future__ import annotations

from typing import Any

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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_celery_app(settings)

    def __call__(self, scan_id: int, batch: int, object_ids: list[int]) -> None:
        self.app.send_task(SCAN_BATCH_TASK, args=[scan_id, object_ids], kwargs={"batch": batch},
                           queue=self.settings.queue)

    def close(self) -> None:
        self.app.close()


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
