"""The worker's Celery app: ``celery -A worker.celery_app worker`` (``fakescan worker`` uses the same).

``app`` is built from the environment when Celery first asks for it at worker start (the one place
this module reads settings; the signal handlers and batches use the settings the app was built with). Models are
not loaded here: each process that runs batches builds them on its first batch.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, signals

from fakescan.logs import configure_logging
from fakescan.queue import make_celery_app
from fakescan.settings import Settings, load_settings
from worker import metrics
from worker.runtime import read_ahead_refused, use_read_ahead, use_settings, worker_settings

log = logging.getLogger(__name__)
POOLS = ("prefork", "solo", "threads")


def worker_app(settings: Settings) -> Any:
    """The shared app with the batch task, a CUDA-safe default pool, and a prompt redelivery sweep.

    Refuses (UsageError) a visibility timeout that live batches could outlast (worker/delivery.py).
    ``settings`` are kept for the worker's signal handlers and its batches (``worker/runtime.py``).
    """
    from worker.delivery import check_visibility_timeout

    check_visibility_timeout(settings)
    use_settings(settings)
    app = make_celery_app(settings, include_tasks=True)
    app.conf.worker_pool = default_pool(settings)
    # Redis hands an unacknowledged batch to another worker only when a worker sweeps for
    # expired ones; kombu sweeps every 10 s x 10 by default, which would add up to 100 s to
    # every redelivery. Sweep at a fifth of the visibility timeout, at most every 10 s.
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 5)),
        "unacked_restore_throttle": 1,
    }
    metrics.install(settings)  # FAKESCAN_METRICS_PORT: the endpoint starts with the worker
    return app


def default_pool(settings: Settings) -> str:
    """``solo`` on CUDA (a CUDA context does not survive fork: one process per GPU), else ``prefork``."""
    return "solo" if settings.resolved_device().startswith("cuda") else "prefork"


def check_pool(pool: str, settings: Settings) -> None:
    from fakescan.errors import UsageError

    if pool not in POOLS:
        raise UsageError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
    if pool == "prefork" and settings.resolved_device().startswith("cuda"):
        raise UsageError("the prefork pool forks, and CUDA does not survive a fork: with FAKESCAN_DEVICE=cuda "
                         "use --pool solo (one worker per GPU, scale with replicas) or --pool threads")


def read_ahead_refusal(settings: Settings, pool: str, concurrency: int | None) -> str | None:
    """Why a worker with this pool and concurrency does not read the next batch ahead; None when it does.

    Reading ahead needs the batch the worker holds next in the process that runs batches: the
    threads pool has it (the consumer and the task threads share a process), prefork keeps it in the
    parent and solo does not receive it while a batch runs. One thread only: with several, the
    threads already overlap each other's fetches and inference. The held batch waits for the running
    one with its visibility clock running, so the timeout must cover two batch budgets."""
    from worker.delivery import visibility_needed

    if not settings.read_ahead:
        return "FAKESCAN_READ_AHEAD=false"
    if pool != "threads" or concurrency != 1:
        return f"the {pool} pool with concurrency {concurrency} (read-ahead needs --pool threads --concurrency 1)"
    needed = visibility_needed(settings, batches_held=2)
    if settings.visibility_timeout <= needed:
        return (f"FAKESCAN_VISIBILITY_TIMEOUT={settings.visibility_timeout}s is not above the longest retry wait "
                f"plus two batch budgets ({needed}s): a batch held behind the running one could be redelivered "
                "while it waits")
    return None


def pool_name(pool_cls: Any) -> str:
    """``prefork``, ``threads``, ``solo`` ... from a pool class or name as Celery hands it over."""
    module = str(getattr(pool_cls, "__module__", pool_cls))
    return {"celery.concurrency.prefork": "prefork", "celery.concurrency.thread": "threads",
            "celery.concurrency.solo": "solo"}.get(module, module.rsplit(".", 1)[-1])


@signals.setup_logging.connect
def _fakescan_logging(loglevel: Any = None, **_: Any) -> None:
    """Celery keeps fakescan's log format (plain or JSON lines) instead of installing its own."""
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    configure_logging(worker_settings(), level)


@signals.worker_init.connect
def _no_prefork_on_cuda(sender: Any = None, **_: Any) -> None:
    """``celery -A worker.celery_app worker -P prefork`` on a GPU: run solo rather than fork CUDA."""
    pool = getattr(sender, "pool_cls", None)
    if "prefork" in str(getattr(pool, "__module__", pool)) and worker_settings().resolved_device().startswith("cuda"):
        log.warning("FAKESCAN_DEVICE resolves to CUDA, which does not survive fork: using the solo pool")
        sender.pool_cls = "solo"


@signals.worker_init.connect
def _read_ahead(sender: Any = None, **_: Any) -> None:
    """Prefetch multiplier 2 and next-batch read-ahead on a threads worker of one thread (else neither).

    Runs after the worker resolved its pool and concurrency (and after ``_no_prefork_on_cuda``),
    before its consumer reads the prefetch multiplier."""
    if sender is None:
        return
    refusal = read_ahead_refusal(worker_settings(), pool_name(sender.pool_cls), sender.concurrency)
    use_read_ahead(refusal)
    if refusal is None:
        sender.prefetch_multiplier = 2


@signals.worker_ready.connect
def _log_read_ahead(**_: Any) -> None:
    """Said once logging is set up (``celery -A worker.celery_app worker`` configures it after worker_init)."""
    refusal = read_ahead_refused()
    if refusal is None:
        log.info("read-ahead on: this worker holds one batch beyond the one it runs and fetches its objects "
                 "while the running batch is scored")
    else:
        log.info("read-ahead off: %s", refusal)


@signals.worker_init.connect
def _warm_imports(**_: Any) -> None:
    """Import torch and transformers before consuming (models still load after fork, per process).

    Importing them takes seconds; done on the first batch, that time would count against the
    visibility timeout, and prefork children would each pay it instead of sharing the pages.
    Importing starts no threads and touches no GPU, so forking afterwards is safe.
    """
    from worker.memory import prepare_worker_process

    prepare_worker_process(worker_settings())  # before torch: see worker/memory.py
    started = time.perf_counter()
    import torch  # noqa: F401

    from worker.detectors.hf_classifier import import_transformers

    import_transformers()  # without the packages a scan does not use: see worker/memory.py

    log.info("imported torch and transformers in %.1fs", time.perf_counter() - started)


@signals.worker_init.connect
def _broker_durability(**_: Any) -> None:
    """A warning in the worker's log when Redis would lose queued batches on a restart."""
    from worker.delivery import warn_if_broker_not_durable

    warn_if_broker_not_durable(worker_settings())


@signals.celeryd_init.connect
def _heartbeat(sender: Any = None, **_: Any) -> None:
    """Busy-since files for ``fakescan worker-ping`` (a solo pool cannot answer a ping mid-batch)."""
    from worker.health import install_heartbeat, register_node

    settings = worker_settings()
    if sender:
        register_node(settings, str(sender))  # worker-ping finds this host's worker by it
    install_heartbeat(settings, str(sender) if sender else None)


app: Celery  # declared, not bound: the module __getattr__ below builds it on first access


def __getattr__(name: str) -> Any:
    """``app`` is built on first access (Celery's ``-A worker.celery_app``), so importing this module is cheap."""
    if name != "app":
        raise AttributeError(name)
    global app
    app = worker_app(load_settings())
    return app
